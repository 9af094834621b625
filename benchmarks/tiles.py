"""A print larger than the device holds: the pipeline's tile plan for a memory budget, timed.

    python -m benchmarks.tiles --size 4096 --memory_gb 21 --iterations 100 --coarse 1024:300

The pair (default: Tübingen x The Starry Night from examples/images) is planned as the pipeline
plans it (``tile_plan``: the coarser scales whole, the last one in the largest square tiles whose
estimate fits ``--memory_gb``) and run through ``stylize`` with that tiling (or whole when it fits). Printed: the plan,
seconds, final loss, and the peak memory of the style targets and of the run, each over what the
process held before the targets (``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the
peak resident set, VmHWM), beside the estimate and the budget. 21 GiB is what a
24 GB L4 leaves a pair. ``--save`` writes the image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from benchmarks.pairs import peak_memory_mib, peak_memory_reset
from pipeline.flags import scale_list
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fitted_size
from transforms.nst.memory import estimated_pair_bytes, estimated_style_bytes, tile_plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--iterations", type=int, default=100, help="at the last scale (each tile)")
    parser.add_argument("--coarse", type=scale_list, default=(), help="SIZE:ITERATIONS of coarser scales, run whole")
    parser.add_argument("--memory_gb", type=float, default=21.0, help="the budget a pair may use")
    parser.add_argument("--content", type=Path, default=EXAMPLES / "tubingen.jpg")
    parser.add_argument("--style", type=Path, default=EXAMPLES / "starry_night.jpg")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save", type=Path, help="where to write the result (its extension picks the format)")
    args = parser.parse_args()

    config = StyleConfig(image_size=args.size, iterations=args.iterations, scales=args.coarse, device=args.device)
    content, style = Image.open(args.content).convert("RGB"), Image.open(args.style).convert("RGB")
    output_size = fitted_size(*content.size, args.size)
    budget = int(args.memory_gb * 2**30)
    needed = estimated_pair_bytes(config, output_size)
    # As the pipeline decides: whole when the estimate fits, else tiles if they can do.
    plan = None if needed <= budget else tile_plan(config, output_size, budget)
    print(
        f"{output_size[0]}x{output_size[1]}: whole image needs about {needed / 2**30:.1f} GiB (estimate); budget {args.memory_gb:g} GiB"
    )
    if needed > budget and plan is None:
        print("refused: tiles would not do (a coarser scale does not fit, or the tiles would be tiny)")
        return

    engine = StyleTransfer(config)
    what = "GPU peak allocated" if engine.device.type == "cuda" else "resident memory gained"
    peak_memory_reset(engine.device)
    baseline = peak_memory_mib(engine.device)  # right after a reset, the peak is what is held now

    def gained() -> str:
        return f"{what} {(peak_memory_mib(engine.device) - baseline) / 1024:.2f} GiB"

    # The style targets are measured too: at the last scale they are encoded whole, at the full
    # style size, however small the tiles (the pipeline checks them against the budget as well).
    started = time.perf_counter()
    coarse = tuple(
        engine.encode_styles([style], size=config.at_stage(i).style_size) for i in range(len(config.coarse_scales))
    )
    targets = engine.encode_styles([style])
    style_estimate = estimated_style_bytes(fitted_size(*style.size, config.style_size)) / 2**30
    print(
        f"{engine.device}: style targets in {time.perf_counter() - started:.0f} s, {gained()} (estimate {style_estimate:.2f} GiB)"
    )
    peak_memory_reset(engine.device)
    started = time.perf_counter()
    result = engine.stylize(content, targets, config, content_name=str(args.content), coarse_styles=coarse, tiling=plan)
    seconds = time.perf_counter() - started
    tiles = "whole" if plan is None else f"{result.tiles} tiles of {plan[0]} px (overlap {plan[1]})"
    print(
        f"{engine.device}: {tiles}, {seconds:.0f} s, final loss {result.final.total:.4g}, "
        f"{gained()} of the {args.memory_gb:g} GiB budget"
    )
    if args.save:
        result.image.save(args.save)


if __name__ == "__main__":
    main()
