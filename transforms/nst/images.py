"""Decoding, resizing and tensor conversion of images, with Pillow and torchvision.

Decoding is strict about what it accepts and generous about what it converts: every mode Pillow
reads becomes 8-bit RGB, EXIF orientation is applied, and oversized images are refused before
their pixels are decoded.

Imports: Pillow, torch, torchvision and config's pixel limit; no storage: callers bring bytes.
"""

from __future__ import annotations

import io

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from transforms.nst.config import MAX_INPUT_PIXELS

# Pillow's own decompression-bomb check refuses above 2 x 89.5 M pixels at open(), whatever
# limit a caller asks for; decode_image applies the caller's limit (default MAX_INPUT_PIXELS)
# to every image instead, so the limit in force is the one we state.
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message names the reason."""


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white: VGG sees RGB only, and white is what viewers show."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB, scaling 16/32-bit integer data rather than clipping it."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # Pillow's own I;16 -> L conversion clips at 255; scale the 16-bit range instead.
        return image.convert("I").point(lambda value: value / 256).convert("L").convert("RGB")
    if image.mode == "I":
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    if image.mode == "F":
        return image.point(lambda value: value * 255).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    return image.convert("RGB")


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The image in ``data`` with its header read and its size checked; pixels not decoded yet."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a readable image (not in a format Pillow reads)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: not a readable image ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{name}: {width}x{height} px is over the limit of {max_pixels} pixels "
            "(refused as a possible decompression bomb; see --max_input_pixels)"
        )
    return image


def decode_image(
    data: bytes, name: str, max_pixels: int = MAX_INPUT_PIXELS, longest_side: int | None = None
) -> Image.Image:
    """Decode ``data`` into an upright 8-bit RGB image; with ``longest_side``, at that size.

    With ``longest_side`` the image is returned as :func:`fit_longest_side` would make it from
    the whole image (the same size, to the pixel), but without holding the whole image in RGB
    when it is far larger: a JPEG is decoded at a reduced scale (its DCT scaling, to at least
    twice the size, as ``Image.thumbnail`` does), and bilevel or grayscale pixels are resized
    before they become RGB. Memory is then about the decoded file's own size (1 byte a pixel for
    bilevel, grayscale and palette images, 4 for RGB as Pillow holds it), not several times it.

    Args:
        data: the encoded file.
        name: what to call the input in error messages (its URL, say).
        max_pixels: images with more pixels are refused before decoding (decompression bombs).
        longest_side: the size the caller needs (None: the image's own).

    Raises:
        ImageDecodeError: empty, unreadable, truncated, or too large.
    """
    image = _open(data, name, max_pixels)
    target = fitted_size(*_upright_size(image, name), longest_side) if longest_side else None
    try:
        if longest_side:  # JPEG only (a no-op for others); the header's orientation, not upright
            width, height = fitted_size(*image.size, longest_side)
            image.draft(None, (2 * width, 2 * height))
        image.load()
        image = _upright(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: not a readable image ({exc})") from exc
    if target is None or longest_side is None:
        return to_rgb(image)
    if image.mode == "1":
        image = image.convert("L")  # the same byte a pixel in Pillow; L resizes, 1 does not
    if image.mode in ("L", "RGB"):  # resized first, then made RGB: the same pixels, a third of the memory
        return to_rgb(image if image.size == target else image.resize(target, Image.Resampling.LANCZOS))
    return fit_longest_side(to_rgb(image), longest_side)


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned by its EXIF orientation; itself (no copy) when it is upright already."""
    if _orientation(image) in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def _orientation(image: Image.Image) -> int | None:
    return image.getexif().get(0x0112)


def _upright_size(image: Image.Image, name: str) -> tuple[int, int]:
    """``(width, height)`` of ``image`` once upright, from its header."""
    try:
        orientation = _orientation(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: not a readable image ({exc})") from exc
    # EXIF orientations 5-8 turn the picture by 90 degrees.
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decoded_size(data: bytes, name: str, max_pixels: int = MAX_INPUT_PIXELS) -> tuple[int, int]:
    """``(width, height)`` that :func:`decode_image` will give, from the header alone (EXIF
    rotations included): enough to batch an image without decoding its pixels.

    Raises:
        ImageDecodeError: empty, not an image, or over ``max_pixels``.
    """
    return _upright_size(_open(data, name, max_pixels), name)


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longest side is ``size`` px, aspect ratio kept."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_longest_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the longest side is ``size`` px, keeping the aspect ratio (up or down)."""
    target = fitted_size(*image.size, size)
    if target == image.size:
        return image
    return image.resize(target, Image.Resampling.LANCZOS)


def image_to_tensor(image: Image.Image) -> Tensor:
    """RGB image -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    return pil_to_tensor(to_rgb(image)).unsqueeze(0).to(torch.float32).div_(255)


def tensor_to_image(tensor: Tensor) -> Image.Image:
    """``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1] -> RGB image (clamped, rounded to 8 bits)."""
    pixels = tensor.detach().squeeze(0).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return to_pil_image(pixels.contiguous(), mode="RGB")
