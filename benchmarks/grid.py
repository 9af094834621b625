"""The look grid: every photo x every painting, under several settings, judged and put on contact
sheets to be looked at.

    python -m benchmarks.grid --size 256 --iterations 100 --settings one default
    python -m benchmarks.grid --size 512 --settings one default --out out/grid

Photos: the example photos (examples/images: astronaut, cat, coffee, Tübingen). Paintings: the
example paintings (The Starry Night, The Scream, The Shipwreck, Woman with a Hat) and two made from
them to stress what a studio meets: ``shipwreck_faded``, The Shipwreck with its contrast cut to a
third around its mean (a low-contrast painting: a faded canvas, a pastel), and ``starry_sky``, the
top left quarter of The Starry Night (one swirl filling the frame: strokes as large as the
picture). Settings (each a StyleConfig from the defaults at ``--size``, with ``--iterations``
where it is given):

- ``default``: the defaults as they ship (coarse to fine, 200 iterations a scale);
- ``one``: one scale (``scales=()``), the defaults before coarse to fine (500 iterations);
- ``NAME=field:value;field:value``: those fields changed (``c2f=scales:((64,100),(128,100))``).

Each picture is written to ``OUT/SIZE/SETTING/PHOTO__PAINTING.png`` and judged (benchmarks/judge.py)
against its photo and painting; figures and seconds go to ``OUT/SIZE/results.json``, so a grid can
be run a setting or a photo at a time, and a rerun only runs what is missing. Printed: a Markdown
table of the judge's figures, each setting's median seconds per pair, and one contact sheet per
setting (``OUT/SIZE/SETTING.jpg``, photos down, paintings across) to look at.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageEnhance

from benchmarks.judge import SCALES, Judge
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fit_longest_side
from transforms.nst.precision import describe_device

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
PHOTOS = ("astronaut", "cat", "coffee", "tubingen")
PAINTINGS = ("starry_night", "the_scream", "shipwreck", "woman_with_hat", "shipwreck_faded", "starry_sky")
# One scale's iterations in the defaults before coarse to fine.
ONE_SCALE_ITERATIONS = 500


def painting(name: str) -> Image.Image:
    """A painting of the grid by name: an example painting, or one of the two made from them."""
    if name == "shipwreck_faded":
        return ImageEnhance.Contrast(painting("shipwreck")).enhance(1 / 3)
    if name == "starry_sky":
        image = painting("starry_night")
        return image.crop((0, 0, image.width // 2, image.height // 2))
    return Image.open(EXAMPLES / f"{name}.jpg").convert("RGB")


def photo(name: str) -> Image.Image:
    return Image.open(EXAMPLES / f"{name}.jpg").convert("RGB")


def named_config(spec: str, base: StyleConfig, iterations: int | None = None) -> StyleConfig:
    """``default``, ``one`` (one scale, as the defaults before coarse to fine) or
    ``NAME=field:value;...`` applied to ``base`` (a tuple or None field's value is a Python
    literal); ``iterations``, where given, for every setting."""
    if spec == "one":
        return base.replace(scales=(), iterations=iterations or ONE_SCALE_ITERATIONS)
    if iterations is not None:
        base = base.replace(iterations=iterations)
    if spec == "default":
        return base
    _, _, fields = spec.partition("=")
    changes: dict[str, Any] = {}
    for item in fields.split(";"):
        key, _, value = item.partition(":")
        current = getattr(base, key)
        literal = current is None or isinstance(current, tuple) or value == "None"
        changes[key] = ast.literal_eval(value) if literal else type(current)(value)
    return base.replace(**changes)


def stylize(
    engine: StyleTransfer, config: StyleConfig, content: Image.Image, style: Image.Image
) -> tuple[Image.Image, float, int]:
    """One pair: its picture, its seconds and the iterations it ran at every scale."""
    started = time.perf_counter()
    targets = engine.encode_styles([style], size=config.style_size)
    coarse = tuple(
        engine.encode_styles([style], size=config.at_stage(i).style_size) for i in range(len(config.coarse_scales))
    )
    result = engine.stylize(content, targets, config, coarse_styles=coarse)
    seconds = time.perf_counter() - started
    return result.image, seconds, result.final.iteration + sum(c.final.iteration for c in result.coarse)


def contact_sheet(folder: Path, setting: str, cell: int = 200) -> Path:
    """Photos down, paintings across, each cell a picture of ``setting`` (blank where missing)."""
    label = 18
    sheet = Image.new("RGB", ((len(PAINTINGS) + 1) * cell, label + (len(PHOTOS) + 1) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), f"{setting}: photos down, paintings across", fill="black")
    for column, name in enumerate(PAINTINGS, start=1):
        sheet.paste(fit_longest_side(painting(name), cell), (column * cell, label))
    for row, content in enumerate(PHOTOS, start=1):
        sheet.paste(fit_longest_side(photo(content), cell), (0, label + row * cell))
        for column, name in enumerate(PAINTINGS, start=1):
            path = folder / setting / f"{content}__{name}.png"
            if path.exists():
                sheet.paste(
                    fit_longest_side(Image.open(path).convert("RGB"), cell), (column * cell, label + row * cell)
                )
    path = folder / f"{_file_name(setting)}.jpg"
    sheet.save(path, quality=88)
    return path


def comparison_sheet(
    folder: Path,
    settings: list[str],
    photos: Sequence[str] = PHOTOS,
    paintings: Sequence[str] = PAINTINGS,
    cell: int = 170,
) -> Path:
    """Paintings across; for each photo, one row per setting, the photo at the start of its first
    row and the setting's name at the start of the others: the settings' pictures of a pair are
    one above the other."""
    label, rows = 18, [(content, setting) for content in photos for setting in settings]
    sheet = Image.new("RGB", ((len(paintings) + 1) * cell, label + (len(rows) + 1) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), f"each photo: {' / '.join(settings)} (rows); paintings across", fill="black")
    for column, name in enumerate(paintings, start=1):
        sheet.paste(fit_longest_side(painting(name), cell), (column * cell, label))
    for row, (content, setting) in enumerate(rows, start=1):
        top = label + row * cell
        if setting == settings[0]:
            sheet.paste(fit_longest_side(photo(content), cell), (0, top))
        draw.text(
            (4, top + cell - 14 if setting == settings[0] else top + 4),
            setting,
            fill="black" if setting != settings[0] else "white",
        )
        for column, name in enumerate(paintings, start=1):
            path = folder / setting / f"{content}__{name}.png"
            if path.exists():
                sheet.paste(fit_longest_side(Image.open(path).convert("RGB"), cell), (column * cell, top))
    path = folder / f"{'_vs_'.join(settings)}.jpg"
    sheet.save(path, quality=82)
    return path


def _file_name(setting: str) -> str:
    return setting.partition("=")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=StyleConfig().image_size)
    parser.add_argument("--iterations", type=int, help="for every setting (default: each setting's own)")
    parser.add_argument("--settings", nargs="+", default=["one", "default"])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--paintings", nargs="+", default=list(PAINTINGS), choices=PAINTINGS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("out/grid"))
    parser.add_argument(
        "--rejudge", action="store_true", help="judge the pictures already written again (after a change to the judge)"
    )
    args = parser.parse_args()

    base = StyleConfig(device=args.device, image_size=args.size)
    engine = StyleTransfer(base)
    judge = Judge()
    folder = args.out / str(args.size)
    cache_path = folder / "results.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    print(
        f"# {describe_device(engine.device)}; torch {torch.__version__}; {args.size} px, "
        f"{args.iterations or 'each setting its own'} iterations at most; judged in fp32 on {engine.config.weights} {engine.config.model}"
    )
    for setting in args.settings:
        config = named_config(setting, base, args.iterations)
        for content in args.photos:
            for name in args.paintings:
                key = f"{_file_name(setting)} | {content}__{name} | {args.iterations or 'own'}"
                if key in cache:
                    if args.rejudge:
                        written = Image.open(folder / _file_name(setting) / f"{content}__{name}.png").convert("RGB")
                        cache[key].update(judge(written, photo(content), painting(name)).to_dict())
                        cache_path.write_text(json.dumps(cache, indent=1))
                    continue
                image, seconds, iterations = stylize(engine, config, photo(content), painting(name))
                (folder / _file_name(setting)).mkdir(parents=True, exist_ok=True)
                image.save(folder / _file_name(setting) / f"{content}__{name}.png")
                verdict = judge(image, photo(content), painting(name))
                cache[key] = {
                    "seconds": seconds,
                    "iterations": iterations,
                    "stages": [list(s) for s in config.stages],
                    **verdict.to_dict(),
                }
                cache_path.write_text(json.dumps(cache, indent=1))
                print(
                    f"  {key}: {seconds:.0f} s, {iterations} iterations, style "
                    + " ".join(f"{s}={v:.2f}" for s, v in verdict.style.items())
                    + f", content {verdict.content:.2f}",
                    flush=True,
                )
                contact_sheet(folder, _file_name(setting))  # after every picture: a run cut short keeps its sheet
        print(f"contact sheet: {contact_sheet(folder, _file_name(setting))}")
    if len(args.settings) > 1:
        sheet = comparison_sheet(folder, [_file_name(s) for s in args.settings], args.photos, args.paintings)
        print(f"comparison sheet: {sheet}")
    _table(cache, args)


def _table(cache: dict[str, Any], args: argparse.Namespace) -> None:
    settings = [_file_name(s) for s in args.settings]
    print(
        f"\n## {args.size} px: style distance at "
        + ", ".join(SCALES)
        + " / content distance (lower: more painted / closer to the photo)\n"
    )
    print("| pair | " + " | ".join(settings) + " |")
    print("|---" * (len(settings) + 1) + "|")
    for content in args.photos:
        for name in args.paintings:
            cells = []
            for setting in settings:
                entry = cache.get(f"{setting} | {content}__{name} | {args.iterations or 'own'}")
                cells.append(
                    ""
                    if entry is None
                    else " ".join(f"{v:.2f}" for v in entry["style"].values()) + f" / {entry['content']:.2f}"
                )
            print(f"| {content} x {name} | " + " | ".join(cells) + " |")
    print(
        "\n| setting | pairs | median style "
        + " | median style ".join(SCALES)
        + " | median content | median s per pair | median iterations |"
    )
    print("|---" * (5 + len(SCALES)) + "|")
    for setting in settings:
        entries = [
            v
            for k, v in cache.items()
            if k.startswith(f"{setting} | ") and k.endswith(f" | {args.iterations or 'own'}")
        ]
        if not entries:
            continue
        styles = [f"{statistics.median(e['style'][s] for e in entries):.2f}" for s in SCALES]
        print(
            f"| {setting} | {len(entries)} | "
            + " | ".join(styles)
            + f" | {statistics.median(e['content'] for e in entries):.2f} | {statistics.median(e['seconds'] for e in entries):.1f}"
            + f" | {statistics.median(e['iterations'] for e in entries):.0f} |"
        )


if __name__ == "__main__":
    main()
