"""Bytes of one pair's log at 500 iterations: records (LOG_FORMAT 1, as releases before it wrote
them) against columns (LOG_FORMAT 2, the default now) and columns thinned by --log_every.

    python -m benchmarks.log_size --iterations 500 --size 64

One real pair (the embedded Caffe VGG19, Tübingen x The Starry Night from examples/images), so
the numbers in the history are the floats a real run writes; the log is built by outputs.pair_log
as the pipeline builds it. Printed: bytes of each layout and their ratio to the records' layout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from transforms.nst import StyleConfig, stylize
from transforms.outputs import OutputSpec, pair_log, to_json
from transforms.records import Pair

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    content, style = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg"
    config = StyleConfig(image_size=args.size, iterations=args.iterations, device="cpu")
    result = stylize(Image.open(content), [Image.open(style)], config)
    pair = Pair("tubingen__starry_night", str(content), (str(style),), config)
    image = OutputSpec().encode(result.image)

    def log_bytes(spec: OutputSpec, compact: bool = True) -> int:
        return len(to_json(pair_log(pair, {}, "f" * 64, image, result, 1, result.seconds, None, spec), compact=compact))

    records = pair_log(pair, {}, "f" * 64, image, result, 1, result.seconds, None)
    records["history"] = [record.to_dict() for record in result.history]  # LOG_FORMAT 1
    old = len(to_json(records))
    new, thinned = log_bytes(OutputSpec()), log_bytes(OutputSpec(log_every=args.every))
    print(
        f"{args.iterations} iterations at {args.size} px, final loss {result.final.total:.4g}; image {len(image)} bytes"
    )
    print(f"log as records (format 1, indented): {old} bytes")
    print(f"log as columns (format 2, default):  {new} bytes ({new / old:.2f} of format 1)")
    print(f"columns, --log_every {args.every}:          {thinned} bytes ({thinned / old:.3f} of format 1)")
    print(json.dumps({"records": old, "columns": new, "thinned": thinned}))


if __name__ == "__main__":
    main()
