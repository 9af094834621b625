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
    with pytest.raises(ImageDecodeError, match=r"cut\.png: not a readable image"):
        decode_image(data[: len(data) // 2], "cut.png")


def test_fit_longest_side_keeps_aspect() -> None:
    assert fit_longest_side(Image.new("RGB", (300, 150)), 64).size == (64, 32)
    assert fit_longest_side(Image.new("RGB", (20, 40)), 64).size == (32, 64)


def _noise(mode: str, size: tuple[int, int]) -> Image.Image:
    return (
        Image.effect_noise(size, 80).convert(mode)
        if mode != "RGB"
        else Image.merge("RGB", [Image.effect_noise(size, 60 + 10 * band) for band in range(3)])
    )


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_decoding_at_the_size_needed_gives_what_fitting_the_whole_image_gives(mode: str, orientation: int) -> None:
    # What the engine used to get by decoding everything and then fitting: the same size in
    # every case, the same pixels wherever no JPEG scaling is involved.
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_noise(mode, (301, 203)), "PNG", exif=exif)
    whole = fit_longest_side(decode_image(data, "in.png"), 64)
    needed = decode_image(data, "in.png", longest_side=64)
    assert needed.mode == "RGB" and needed.size == whole.size == ((64, 43) if orientation == 1 else (43, 64))
    assert needed.tobytes() == whole.tobytes()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_to_the_same_size() -> None:
    data = encode(_noise("RGB", (1600, 1200)), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as drafted:
        drafted.draft(None, (2 * 64, 2 * 48))
        assert drafted.size == (200, 150)  # decoded at 1/8 scale: 1/64 of the pixels
        expected = drafted.resize((64, 48), Image.Resampling.LANCZOS)
    needed = decode_image(data, "photo.jpg", longest_side=64)
    assert needed.size == fit_longest_side(decode_image(data, "photo.jpg"), 64).size == (64, 48)
    assert needed.tobytes() == expected.tobytes()  # made from the reduced decode
