"""Pairs per hour: batched pairs through the engine, per size, batch size and precision.

    python -m benchmarks.pairs --sizes 256,512,1024 --batch_sizes 1,2,4,8,16,32 --iterations 500
    python -m benchmarks.pairs --sizes 128 --batch_sizes 1,2,4,8 --iterations 100   # a CPU
    python -m benchmarks.pairs --sizes 512 --stop_tolerance 0.002 --rounds 3       # converging, refilled
    python -m benchmarks.pairs --sizes 512 --scales auto --stop_tolerance 0.005 --rounds 3 --feed batches   # the defaults, no refill

Real pictures (the bundled example photos x paintings, cropped to 4:3 so that they batch) and
the embedded Caffe VGG19. For each size it prints, per precision and batch size: seconds for
``rounds x batch`` pairs through ``StyleTransfer.run`` with ``batch`` slots (each freed slot
refilled by the next task; ``--feed batches``: the next ``batch`` pairs only once the whole
previous batch is done), how busy the slots were, pairs per hour, peak memory (GPU: the allocator's peak; CPU: the
process's peak resident set, reset before each run) beside the planner's estimate for the batch
(``memory.estimated_pair_bytes``), and the final losses relative to each pair's single-pair fp32
run, every image rescored with the fp32 objective (median and worst ratio: bf16 must stay within
1%). ``--stop_tolerance`` 0 (the default here) runs every iteration, the fixed work the pairs per
hour goal is stated for. The reference row is torch.optim.LBFGS, one pair at a time, fp32.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from transforms.nst import StyleConfig, StyleRequest, StyleTransfer
from transforms.nst.lbfgs import LBFGS_HISTORY
from transforms.nst.memory import estimated_pair_bytes
from transforms.nst.objective import Objective
from transforms.nst.records import PairFinished, PairTaken, ReadyQueue, RunEnded, SlotUse, StyleResult, StyleTargets

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CONTENTS = ("cat.jpg", "astronaut.jpg", "coffee.jpg")
STYLES = ("starry_night.jpg", "the_scream.jpg", "woman_with_hat.jpg", "shipwreck.jpg")


def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif sys.platform == "linux":
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sys.platform == "linux":
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rescore(engine: StyleTransfer, request: StyleRequest, image: Image.Image) -> float:
    """``image``'s loss under the fp32 objective of ``request``."""
    config = request.config.replace(precision="fp32")
    content = engine.to_input(request.content, "content")
    objective = Objective(engine.network, content, [request.style.grams], [config])
    with torch.no_grad():
        return objective(engine.to_input(image, "result"))[0, 0].item()


def torch_lbfgs_pair(engine: StyleTransfer, request: StyleRequest) -> float:
    """Seconds for one pair with torch.optim.LBFGS (unit steps, no line search), fp32."""
    config = request.config
    content = engine.to_input(request.content, "content")
    started = time.perf_counter()
    objective = Objective(engine.network, content, [request.style.grams], [config])
    pixels = content.detach().clone().contiguous().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [pixels], lr=1, max_iter=1, history_size=LBFGS_HISTORY, tolerance_grad=-1, tolerance_change=-1
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = objective(pixels)[0, 0]
        total.backward()
        return total

    for _ in range(config.iterations):
        optimizer.step(closure)
    synchronize(engine.device)
    return time.perf_counter() - started


def run_fed(engine: StyleTransfer, requests: list[StyleRequest], slots: int, feed: str) -> tuple[dict, SlotUse]:
    """Each request's result and the run's slot use, the requests fed as the pipeline feeds them
    (``refill``: ``slots`` ready, then one each time one is taken) or a batch at a time."""
    waiting = iter(enumerate(requests))
    queue: ReadyQueue[int] = ReadyQueue([item for _ in range(slots) if (item := next(waiting, None)) is not None])
    in_batch, results, use = len(queue), {}, SlotUse()
    for event in engine.run(queue, slots):
        if isinstance(event, PairTaken) and feed == "refill" and (item := next(waiting, None)) is not None:
            queue.put(*item)
        elif isinstance(event, PairFinished):
            results[event.key] = event.outcome
            if feed == "batches" and len(results) == in_batch:
                batch = [item for _ in range(slots) if (item := next(waiting, None)) is not None]
                for item in batch:
                    queue.put(*item)
                in_batch += len(batch)
        elif isinstance(event, RunEnded):
            use = event.use
    return results, use


def alone(engine: StyleTransfer, request: StyleRequest) -> StyleResult:
    config = request.config or engine.config
    return engine.stylize(request.content, request.style, config, coarse_styles=request.coarse_styles)


def _request(
    combos: list[tuple[str, str]],
    targets: dict[str, list[StyleTargets]],
    base: StyleConfig,
    size: int,
    index: int,
    precision: str,
) -> StyleRequest:
    """Pair ``index`` of the size's combinations, at ``precision``."""
    content_name, style_name = combos[index % len(combos)]
    content = ImageOps.fit(Image.open(EXAMPLES / content_name).convert("RGB"), (size, size * 3 // 4))
    *coarse, last = targets[style_name]
    config = base.replace(precision=precision)
    return StyleRequest(content, last, config, content_name=content_name, coarse_styles=tuple(coarse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512", help="comma-separated longest sides, px")
    parser.add_argument("--batch_sizes", default="1,2,4,8,16,32")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--stop_tolerance", type=float, default=0.0, help="0: every iteration runs")
    parser.add_argument("--rounds", type=int, default=1, help="pairs per slot: rounds x batch pairs go through")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no_reference", action="store_true", help="skip the torch.optim.LBFGS row")
    parser.add_argument(
        "--scales", default="none", help="none (one scale, the fixed work) or auto (the default pyramid)"
    )
    parser.add_argument("--feed", choices=("refill", "batches"), default="refill")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")

    engine = StyleTransfer(StyleConfig(device=args.device))
    device = engine.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# vgg19 (caffe weights) on {name}; torch {torch.__version__}; {args.iterations} L-BFGS iterations at most "
        f"a scale, scales {args.scales}, stop_tolerance {args.stop_tolerance:g}, {args.rounds} pair(s) per slot, "
        f"feed {args.feed}"
    )
    print(
        "| size | precision | batch | pairs | s | pairs per hour | slots busy | peak MiB | estimate MiB "
        "| final / single fp32 (median, worst) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        # One scale: the fixed work per pair that pairs per hour are stated for, as other tools
        # count it; auto: the default pyramid.
        base = StyleConfig(
            device=args.device,
            image_size=size,
            iterations=args.iterations,
            stop_tolerance=args.stop_tolerance,
            scales=() if args.scales == "none" else None,
        )
        combos = list(itertools.product(CONTENTS, STYLES))
        targets = {
            style: [
                engine.encode_styles([Image.open(EXAMPLES / style).convert("RGB")], size=base.at_stage(i).style_size)
                for i in range(len(base.stages))
            ]
            for style in STYLES
        }

        request = functools.partial(_request, combos, targets, base, size)

        reference: dict[int, float] = {}  # pair index -> final loss of its single-pair fp32 run
        for precision in precisions:
            for batch in batch_sizes:
                requests = [request(i, precision) for i in range(batch * args.rounds)]
                warm = request(0, precision)
                engine.stylize(
                    warm.content, warm.style, warm.config.replace(iterations=5), coarse_styles=warm.coarse_styles
                )  # kernels, allocator
                synchronize(device)
                peak_memory_reset(device)
                started = time.perf_counter()
                results, use = run_fed(engine, requests, batch, args.feed)
                synchronize(device)
                seconds = time.perf_counter() - started
                peak = peak_memory_mib(device)
                estimate = (
                    batch * estimated_pair_bytes(base.replace(precision=precision), requests[0].content.size) / 2**20
                )
                finals = [rescore(engine, r, results[i].image) for i, r in enumerate(requests)]
                for i in range(min(len(requests), len(combos))):
                    if i not in reference:
                        reference[i] = rescore(engine, request(i, "fp32"), alone(engine, request(i, "fp32")).image)
                ratios = [f / reference[i % len(combos)] for i, f in enumerate(finals)]
                print(
                    f"| {size} | {precision} | {batch} | {len(requests)} | {seconds:.2f} | {len(requests) / seconds * 3600:.0f} | "
                    f"{use.busy:.2f} | {peak:.0f} | {estimate:.0f} | {statistics.median(ratios):.4f}, {max(ratios, key=lambda r: abs(r - 1)):.4f} |",
                    flush=True,
                )
        if not args.no_reference:
            seconds = torch_lbfgs_pair(engine, request(0, "fp32"))
            print(
                f"| {size} | torch.optim.LBFGS fp32 | 1 | 1 | {seconds:.2f} | {3600 / seconds:.0f} | | | |", flush=True
            )


if __name__ == "__main__":
    main()
