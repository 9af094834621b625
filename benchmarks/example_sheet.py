"""README's picture: content, style and result of each example pair, from a run of README's
first command.

    python -m pipeline --manifest examples/manifest.csv --output out/example --image_size 256 --iterations 100
    python -m benchmarks.example_sheet out/example docs/images/results.jpg

Each row is one pair of examples/manifest.csv; the result is read from the run's images/, and the
caption says the settings its log records.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

from transforms.nst.images import fit_longest_side

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the run's --output folder")
    parser.add_argument("sheet", type=Path, help="the picture to write")
    parser.add_argument("--cell", type=int, default=256)
    args = parser.parse_args()

    with (EXAMPLES / "manifest.csv").open(newline="") as rows:
        pairs = [(row["id"], row["content"], row["style"]) for row in csv.DictReader(rows)]
    log = json.loads((args.output / "logs" / f"{pairs[0][0]}.json").read_text())
    config = log["config"]
    scales = " then ".join(str(size) for size, _ in config["scales"])
    settings = f"{config['image_size']} px, {config['iterations']} iterations" + (
        f", from {scales} px" if scales else ""
    )
    label, cell = 20, args.cell
    sheet = Image.new("RGB", (3 * cell, label + len(pairs) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for column, caption in enumerate(("content", "style", f"result ({settings})")):
        draw.text((column * cell + 4, 4), caption, fill="black")
    for row, (pair_id, content, style) in enumerate(pairs):
        result = next((args.output / "images").glob(f"{pair_id}.*"))
        for column, path in enumerate((EXAMPLES / content, EXAMPLES / style, result)):
            image = fit_longest_side(Image.open(path).convert("RGB"), cell)
            offset = ((cell - image.width) // 2, (cell - image.height) // 2)
            sheet.paste(image, (column * cell + offset[0], label + row * cell + offset[1]))
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.sheet, quality=90)
    print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
