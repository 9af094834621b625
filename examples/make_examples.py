"""Draws the bundled example images (the project's own work, no third-party pictures).

    python examples/make_examples.py   # rewrites examples/images/*.png
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = (160, 120)
FOLDER = Path(__file__).parent / "images"


def landscape() -> Image.Image:
    """Content: sky gradient, sun, hills, a house."""
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    for y in range(SIZE[1]):
        t = y / SIZE[1]
        draw.line([(0, y), (SIZE[0], y)], fill=(int(90 + 120 * t), int(150 + 80 * t), 235))
    draw.ellipse([112, 12, 142, 42], fill=(255, 214, 80))
    draw.polygon([(0, 85), (50, 60), (100, 82), (160, 58), (160, 120), (0, 120)], fill=(70, 140, 60))
    draw.rectangle([30, 70, 62, 98], fill=(200, 80, 60))
    draw.polygon([(26, 70), (46, 52), (66, 70)], fill=(120, 40, 30))
    draw.rectangle([42, 82, 50, 98], fill=(70, 40, 20))
    return image.filter(ImageFilter.SMOOTH)


def portrait() -> Image.Image:
    """Content: a simple face on a plain background, portrait orientation."""
    image = Image.new("RGB", (SIZE[1], SIZE[0]), (230, 225, 210))
    draw = ImageDraw.Draw(image)
    draw.ellipse([25, 30, 95, 115], fill=(240, 200, 170))
    draw.ellipse([42, 58, 52, 68], fill=(40, 60, 90))
    draw.ellipse([68, 58, 78, 68], fill=(40, 60, 90))
    draw.arc([45, 75, 75, 100], 20, 160, fill=(150, 50, 50), width=3)
    draw.pieslice([20, 15, 100, 75], 180, 360, fill=(90, 60, 30))
    return image.filter(ImageFilter.SMOOTH)


def swirls() -> Image.Image:
    """Style: blue and yellow concentric swirls with brush-like stripes."""
    image = Image.new("RGB", SIZE)
    pixels = image.load()
    for y in range(SIZE[1]):
        for x in range(SIZE[0]):
            dx, dy = x - 80, y - 60
            angle = math.atan2(dy, dx)
            radius = math.hypot(dx, dy)
            wave = math.sin(radius / 4 + 3 * angle) * 0.5 + 0.5
            stripe = math.sin((x + 2 * y) / 2.5) * 0.5 + 0.5
            pixels[x, y] = (int(40 + 200 * wave * stripe), int(60 + 150 * wave), int(200 - 120 * wave))
    return image


def mosaic() -> Image.Image:
    """Style: warm tiles with dark grout, like a mosaic."""
    image = Image.new("RGB", SIZE, (30, 20, 20))
    draw = ImageDraw.Draw(image)
    palette = [(220, 90, 40), (240, 180, 60), (180, 40, 60), (250, 230, 180), (120, 60, 30)]
    for row in range(0, SIZE[1], 12):
        for column in range(0, SIZE[0], 12):
            colour = palette[(row * 7 + column * 3) // 12 % len(palette)]
            shift = 6 if (row // 12) % 2 else 0
            draw.rectangle([column + shift + 1, row + 1, column + shift + 10, row + 10], fill=colour)
    return image


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, draw in {"landscape": landscape, "portrait": portrait, "swirls": swirls, "mosaic": mosaic}.items():
        draw().save(FOLDER / f"{name}.png", optimize=True)


if __name__ == "__main__":
    main()
