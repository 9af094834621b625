"""How full the slots stay: batch steps, the slots they offered, and the row-steps that advanced a pair.

    python -m benchmarks.occupancy                       # the measure of issue #41, on a CPU
    python -m benchmarks.occupancy --feed batches        # the same pairs fed a batch at a time
    python -m benchmarks.occupancy --weights caffe --size 512 --scales auto --pairs 64 --slots 8   # a GPU

Contents of different texture (crops of the bundled photos, blurred or sharpened) stop at
different iterations, so that slots free at different times. They are fed as the pipeline feeds
them (``--feed refill``: ``slots`` ready requests, then one each time the engine takes one) or a
batch at a time (``--feed batches``: the next ``slots`` pairs only once the whole previous batch
has finished, as the engine ran coarse to fine before the run loop). Occupancy does not depend on
the device; seconds and pairs per hour do. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.records import PairFinished, PairTaken, ReadyQueue, RunEnded, StyleRequest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CONTENTS = ("cat.jpg", "astronaut.jpg", "coffee.jpg")


def contents(count: int, size: int) -> list[Image.Image]:
    """``count`` 4:3 pictures of different texture: crops of the example photos, some blurred,
    some sharpened."""
    pictures = []
    for k in range(count):
        image = Image.open(EXAMPLES / CONTENTS[k % len(CONTENTS)]).convert("RGB")
        width, height = image.size
        box = (
            k * 7 % (width // 3),
            k * 11 % (height // 3),
            width - k * 5 % (width // 4),
            height - k * 3 % (height // 4),
        )
        image = ImageOps.fit(image.crop(box), (size, size * 3 // 4))
        if k % 3 == 1:
            image = image.filter(ImageFilter.GaussianBlur(size / 20))
        elif k % 3 == 2:
            image = image.filter(ImageFilter.DETAIL).filter(ImageFilter.EDGE_ENHANCE_MORE)
        pictures.append(image)
    return pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scales", default="32:80", help="coarser scales (size:iterations,...), auto or none")
    parser.add_argument("--iterations", type=int, default=80)
    parser.add_argument("--stop_window", type=int, default=3)
    parser.add_argument("--stop_tolerance", type=float, default=0.1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--weights", default="random", help="random (the issue's measure) or caffe")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--feed", choices=("refill", "batches"), default="refill")
    args = parser.parse_args()
    scales = (
        None
        if args.scales == "auto"
        else ()
        if args.scales == "none"
        else tuple(tuple(int(v) for v in scale.split(":")) for scale in args.scales.split(","))
    )
    config = StyleConfig(
        weights=args.weights,
        weights_family="torchvision" if args.weights == "random" else None,
        image_size=args.size,
        scales=scales,  # type: ignore[arg-type]
        iterations=args.iterations,
        stop_window=args.stop_window,
        stop_tolerance=args.stop_tolerance,
        precision=args.precision,
        device=args.device,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights say so
        engine = StyleTransfer(config)
    style = Image.open(EXAMPLES / "starry_night.jpg").convert("RGB")
    targets = [engine.encode_styles([style], size=config.at_stage(i).style_size) for i in range(len(config.stages))]
    requests = [
        StyleRequest(content, targets[-1], config, content_name=f"c{k}", coarse_styles=tuple(targets[:-1]))
        for k, content in enumerate(contents(args.pairs, args.size))
    ]
    waiting = iter(enumerate(requests))
    queue: ReadyQueue[int] = ReadyQueue([next(waiting) for _ in range(min(args.slots, len(requests)))])
    in_batch = len(queue)
    iterations, finished = 0, 0
    started = time.perf_counter()
    for event in engine.run(queue, args.slots):
        if isinstance(event, PairTaken) and args.feed == "refill":
            ready = next(waiting, None)
            if ready is not None:
                queue.put(*ready)
        elif isinstance(event, PairFinished):
            if isinstance(event.outcome, Exception):
                raise event.outcome
            iterations += sum(len(r.history) - 1 for r in (*event.outcome.coarse, event.outcome))
            finished += 1
            if args.feed == "batches" and finished == in_batch:  # the whole batch is done: the next one
                batch = [ready for _ in range(args.slots) if (ready := next(waiting, None)) is not None]
                for ready in batch:
                    queue.put(*ready)
                in_batch += len(batch)
        elif isinstance(event, RunEnded):
            use = event.use
    seconds = time.perf_counter() - started
    print(
        f"# {args.pairs} pairs at {args.size} px, scales {[s for s, _ in config.stages]}, {args.slots} slots, "
        f"{args.feed}, {config.precision}, on {engine.device}"
    )
    print("| batch steps | slot steps | row steps | iterations in the logs | slots busy | s | pairs per hour |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {use.batch_steps} | {use.slot_steps} | {use.row_steps} | {iterations} | {use.busy:.3f} | {seconds:.1f} | "
        f"{args.pairs / seconds * 3600:.0f} |"
    )


if __name__ == "__main__":
    main()
