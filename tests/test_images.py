import io

import pytest
from PIL import Image

from transforms.nst.images import ImageDecodeError, decode_image, decoded_size, fit_longest_side


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif), "rotated.jpg")
    assert decoded.size == (20, 40)
    # the header alone tells the same size (what batching goes by), and an unrotated one is unchanged
    assert decoded_size(encode(image, "JPEG", exif=exif), "rotated.jpg") == (20, 40)
    assert decoded_size(encode(image, "PNG"), "plain.png") == (40, 20)


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("L", (4, 4), 128), "PNG", (128, 128, 128)),
        (Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG", (255, 255, 255)),  # transparent -> white
        (Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "PNG", (255, 0, 0)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", None),
        (Image.new("P", (4, 4), 3), "GIF", None),
        (Image.new("I;16", (4, 4), 65535), "PNG", (255, 255, 255)),  # 16-bit is scaled, not clipped
        (Image.new("I;16", (4, 4), 32768), "PNG", (128, 128, 128)),
    ],
)
def test_every_mode_becomes_8_bit_rgb(image: Image.Image, fmt: str, expected: tuple[int, int, int] | None) -> None:
    decoded = decode_image(encode(image, fmt), f"in.{fmt.lower()}")
    assert decoded.mode == "RGB" and decoded.size == (4, 4)
    if expected is not None:
        assert decoded.getpixel((1, 1)) == expected


def test_cmyk_red_is_red() -> None:
    decoded = decode_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"), "cmyk.jpg")
    red, green, blue = decoded.getpixel((1, 1))
    assert red > 200 and green < 60 and blue < 60


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageDecodeError, match=r"bomb.png: 200x200 px is over the limit of 10000 pixels"):
        decode_image(encode(Image.new("L", (200, 200))), "bomb.png", max_pixels=10_000)


@pytest.mark.parametrize(("data", "reason"), [(b"", "empty file"), (b"GIF89a garbage", "not a readable image")])
def test_unreadable_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"x.png: {reason}"):
        decode_image(data, "x.png")


def test_truncated_image() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageDecodeError, match="cut.png: not a readable image"):
        decode_image(data[: len(data) // 2], "cut.png")


def test_fit_longest_side_keeps_aspect() -> None:
    assert fit_longest_side(Image.new("RGB", (300, 150)), 64).size == (64, 32)
    assert fit_longest_side(Image.new("RGB", (20, 40)), 64).size == (32, 64)
