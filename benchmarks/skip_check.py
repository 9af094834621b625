"""The cost of the resume check: a rerun over N pairs that are all done, on local disk.

    python -m benchmarks.skip_check --pairs 10000

It writes N done pairs (an image of --image_kb, a log as the job writes it: the fingerprint,
the image's digest and a history of --iterations records; shared input images), then times the
DoFn's own check for every pair, which is what a rerun does before it would load the model (it
never does here: every pair is done). The check reads each log and each image (to compare the
image with its log's digest), so the image size matters. The first round reads from disk
unless the page cache still holds the files; figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from transforms import storage
from transforms.handler import EngineHandler
from transforms.limits import Limits
from transforms.nst import StyleConfig
from transforms.outputs import fingerprint, image_location, input_signatures, log_location, to_json
from transforms.records import Pair
from transforms.stylize import PreparePairsFn, RunSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--contents", type=int, default=1000, help="distinct content images")
    parser.add_argument("--image_kb", type=int, default=450, help="size of each output image (a 512 px PNG: 400-500)")
    parser.add_argument("--iterations", type=int, default=500, help="records in each log's history")
    args = parser.parse_args()
    record = {
        "iteration": 0,
        "total": 1.0e7,
        "content": 2.0e6,
        "style": 8.0e6,
        "tv": 0.0,
        "seconds": 1.0,
        "rejected": False,
        "style_layers": {f"relu{i}_1": 1.6e6 for i in range(1, 6)},
    }
    history = [{**record, "iteration": i} for i in range(args.iterations + 1)]
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
            pair = Pair(
                f"p{index}",
                str(root / "in" / f"c{index % args.contents}.jpg"),
                (str(root / "in" / "style.jpg"),),
                config,
            )
            work = fingerprint(pair, input_signatures(pair))
            png = os.urandom(args.image_kb * 1024)
            storage.write_atomic(image_location(output, pair.id), png)
            log = {
                "id": pair.id,
                "fingerprint": work,
                "image": {"sha256": storage.sha256(png), "bytes": len(png)},
                "history": history,
                "final": history[-1],
            }
            storage.write_atomic(log_location(output, pair.id), to_json(log))
            pairs.append(pair)
        fn = PreparePairsFn(RunSettings(output), EngineHandler(config, Limits()))
        rounds = []
        for _ in range(3):
            started = time.perf_counter()
            outcomes = [next(iter(fn.process(pair))) for pair in pairs]
            rounds.append(time.perf_counter() - started)
        assert all(o.tag == "skipped" for o in outcomes), "every pair should be skipped"
    median = statistics.median(rounds)
    print(
        f"{args.pairs} done pairs ({args.image_kb} KB images, {args.iterations}-record logs), local disk: "
        f"median {median:.2f} s per rerun check "
        f"({median / args.pairs * 1e3:.3f} ms per pair; rounds {', '.join(f'{r:.2f}' for r in rounds)} s)"
    )


if __name__ == "__main__":
    main()
