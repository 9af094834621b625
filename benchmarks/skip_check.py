"""The cost of the resume check: a rerun over N pairs that are all done, on local disk.

    python -m benchmarks.skip_check --pairs 10000

It writes N done pairs (an image, a log with the right fingerprint, shared input images), then
times the DoFn's own check for every pair, which is what a rerun does before it would load the
model (it never does here: every pair is done). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from transforms import storage
from transforms.nst import StyleConfig
from transforms.records import Pair
from transforms.results import image_location, log_location, to_json
from transforms.stylize import StylizeDoFn, fingerprint, input_signatures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--contents", type=int, default=1000, help="distinct content images")
    args = parser.parse_args()
    config = StyleConfig(weights="random")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        for index in range(args.contents):
            (root / "in" / f"c{index}.jpg").write_bytes(b"x" * 100)
        (root / "in" / "style.jpg").write_bytes(b"y" * 100)
        output = str(root / "out")
        pairs = []
        for index in range(args.pairs):
            pair = Pair(f"p{index}", str(root / "in" / f"c{index % args.contents}.jpg"), (str(root / "in" / "style.jpg"),))
            work = fingerprint(pair, config, input_signatures(pair, config))
            storage.write_atomic(image_location(output, pair.id), b"png")
            storage.write_atomic(log_location(output, pair.id), to_json({"fingerprint": work}))
            pairs.append(pair)
        fn = StylizeDoFn(config, output, overwrite=False)
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            outcomes = [next(iter(fn.process(pair))) for pair in pairs]
            rounds.append(time.perf_counter() - started)
        assert all(o.tag == "skipped" for o in outcomes), "every pair should be skipped"
    median = statistics.median(rounds)
    print(f"{args.pairs} done pairs, local disk: median {median:.2f} s per rerun check "
          f"({median / args.pairs * 1e3:.3f} ms per pair; rounds {', '.join(f'{r:.2f}' for r in rounds)} s)")


if __name__ == "__main__":
    main()
