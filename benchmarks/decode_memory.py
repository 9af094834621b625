"""Peak memory of reading one input far larger than the result: the whole image decoded and then
fitted against decoding at the size needed (decode_image's ``longest_side``, how the job reads
inputs now). Before, the job decoded whole and also copied every image once more to turn it
upright, EXIF or not: add the decoded size to the first column for the old cost.

    python -m benchmarks.decode_memory --side 16000 --size 512

Three inputs made at run time, each just under the default pixel limit's order of size: a
one-bit PNG, an RGB PNG (both compress to under 1 MB), and an 8000x6000 JPEG photo. Each read
runs in its own process; printed: the process's peak resident memory above its baseline, in MiB,
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

_MEASURE = """
import json, resource, sys
from transforms.nst.images import decode_image, fit_longest_side
path, size, way = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if way == "whole":
    image = fit_longest_side(decode_image(data, path), size)
else:
    image = decode_image(data, path, longest_side=size)
print(json.dumps({"mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "size": image.size}))
"""


def make_inputs(folder: Path, side: int) -> dict[str, Path]:
    noise = Image.merge("RGB", [Image.effect_noise((side // 160, side // 160), 60 + 10 * band) for band in range(3)])
    inputs = {
        f"one-bit PNG {side}x{side}": folder / "bilevel.png",
        f"RGB PNG {side}x{side}": folder / "rgb.png",
        "JPEG 8000x6000": folder / "photo.jpg",
    }
    Image.new("1", (side, side)).save(inputs[f"one-bit PNG {side}x{side}"], optimize=True)
    noise.resize((side, side), Image.Resampling.NEAREST).save(inputs[f"RGB PNG {side}x{side}"])
    noise.resize((8000, 6000), Image.Resampling.BICUBIC).save(inputs["JPEG 8000x6000"], quality=90)
    return inputs


def measure(path: Path, size: int, way: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(size), way], capture_output=True, text=True, check=True
    )
    return float(json.loads(result.stdout)["mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16000)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        inputs = make_inputs(Path(folder), args.side)
        print(f"| input ({args.size} px result) | file | whole, then fitted | at the size needed | ratio |")
        print("|---|---:|---:|---:|---:|")
        for name, path in inputs.items():
            whole, needed = measure(path, args.size, "whole"), measure(path, args.size, "needed")
            print(
                f"| {name} | {path.stat().st_size / 1024:,.0f} KiB | {whole:,.0f} MiB | {needed:,.0f} MiB | {needed / whole:.2f} |"
            )


if __name__ == "__main__":
    main()
