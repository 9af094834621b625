"""Coarse-to-fine against one scale: time to the same final loss, on the example pairs.

    python -m benchmarks.scales --size 256 --iterations 500 --coarse 128:300 --fine 150

For each example photo x painting pair, the embedded Caffe VGG19 optimizes the image at
``--size`` in one scale (``--iterations``), then coarse to fine (``--coarse`` scales, then
``--fine`` iterations at ``--size``). Both are scored by the same full-size objective: the loss
records of the last scale are at ``--size`` with the same targets. Printed: each run's seconds and
final loss, and how long each took to reach the single-scale run's final loss (from the
per-iteration records' clocks). On a GPU it also prints each run's peak memory
(``torch.cuda.max_memory_allocated``) beside ``estimated_pair_bytes`` (docs/large-prints.md).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from PIL import Image

from pipeline.flags import scale_list
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.memory import estimated_pair_bytes
from transforms.nst.records import StyleResult

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _pairs(content: Path | None, style: Path | None) -> list[tuple[str, Image.Image, Image.Image]]:
    """The example pairs, or the one pair given by ``--content`` and ``--style``."""
    if content is not None and style is not None:
        return [(f"{content.stem}__{style.stem}", Image.open(content).convert("RGB"), Image.open(style).convert("RGB"))]
    rows = (EXAMPLES / "manifest.csv").read_text().splitlines()[1:]
    pairs = []
    for row in rows:
        pair_id, content, style = row.split(",")
        pairs.append(
            (pair_id, Image.open(EXAMPLES / content).convert("RGB"), Image.open(EXAMPLES / style).convert("RGB"))
        )
    return pairs


def _time_to(result: StyleResult, loss: float) -> float | None:
    """Seconds (from the start of the whole run) at which the last scale first reached ``loss``."""
    return next((r.seconds for r in result.history if r.total is not None and r.total <= loss and not r.rejected), None)


def _loss_at(result: StyleResult, seconds: float) -> float:
    """The lowest loss ``result``'s last scale had reached by ``seconds``."""
    seen = [r.total for r in result.history if r.seconds <= seconds and r.total is not None and not r.rejected]
    return min(seen) if seen else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=500, help="single scale")
    parser.add_argument("--coarse", type=scale_list, default=((128, 300),), help="SIZE:ITERATIONS of the coarse scales")
    parser.add_argument("--fine", type=int, default=150, help="iterations at --size after the coarse scales")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--content", type=Path, help="with --style: this one pair instead of the examples")
    parser.add_argument("--style", type=Path)
    parser.add_argument("--save", type=Path, help="folder to write each run's image into (PAIR.one.png, PAIR.many.png)")
    args = parser.parse_args()

    single = StyleConfig(image_size=args.size, iterations=args.iterations, device=args.device, scales=())
    staged = single.replace(iterations=args.fine, scales=args.coarse)
    engine = StyleTransfer(single)
    print(
        f"{engine.device}, {args.size} px: one scale x {args.iterations} vs "
        f"{','.join(f'{s}:{n}' for s, n in args.coarse)} then {args.fine} at {args.size}"
    )
    ratios = []
    for pair_id, content, style in _pairs(args.content, args.style):
        targets = engine.encode_styles([style])
        coarse = tuple(
            engine.encode_styles([style], size=staged.at_stage(i).style_size) for i in range(len(staged.scales))
        )
        peaks = []
        for run in ("one", "many"):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            if run == "one":
                one = engine.stylize(content, targets, single)
            else:
                many = engine.stylize(content, targets, staged, coarse_styles=coarse)
            if torch.cuda.is_available():
                peaks.append(torch.cuda.max_memory_allocated() / 2**30)
        if peaks:
            estimate = estimated_pair_bytes(single, one.image.size) / 2**30
            print(
                f"{pair_id:18s} GPU peak: one scale {peaks[0]:.2f} GiB, coarse to fine {peaks[1]:.2f} GiB; estimate {estimate:.2f} GiB"
            )
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            one.image.save(args.save / f"{pair_id}.one.png")
            many.image.save(args.save / f"{pair_id}.many.png")
        reached = _time_to(many, one.final.total)
        ratio = None if reached is None else reached / one.seconds
        if ratio is not None:
            ratios.append(ratio)
        same_time = _loss_at(one, many.seconds)
        print(
            f"{pair_id:18s} one scale {one.seconds:6.1f} s loss {one.final.total:.4g} | coarse-to-fine "
            f"{many.seconds:6.1f} s loss {many.final.total:.4g} ({many.final.total / one.final.total:.3f}x) | "
            f"one scale at {many.seconds:.0f} s: {same_time:.4g} ({many.final.total / same_time:.3f}x) | "
            f"reached the one-scale loss at "
            + ("never" if reached is None else f"{reached:.1f} s ({ratio:.2f} of the time)")
        )
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if ratios:
        print(f"median time to the one-scale final loss: {statistics.median(ratios):.2f} of one scale's")


if __name__ == "__main__":
    main()
