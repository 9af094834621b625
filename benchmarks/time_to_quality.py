"""Time to a good picture: the judge's figures and the judged loss against wall time, one pair at
a time, on real weights.

    python -m benchmarks.time_to_quality --size 256 --methods before one default torch

Three photo x painting pairs (examples/images) on the embedded Caffe VGG19. Methods:

- ``before``: the engine as the release before convergence stopping shipped it: fp32, 500
  iterations, no stop (``precision="fp32", stop_tolerance=0``);
- ``one``: today's defaults at one scale (``scales=()``): the defaults before coarse to fine;
- ``default``: today's ``StyleConfig()`` defaults (coarse to fine, precision ``auto``,
  convergence stop);
- ``torch``: ``torch.optim.LBFGS(history_size=100, lr=1, max_iter=1)`` with no line search, for
  as many iterations as ``before`` runs: the reference optimizer of neural-style's PyTorch ports;
- any ``name=field:value;field:value`` runs the engine with those StyleConfig fields changed
  (experiments: ``bf16=precision:bf16``, ``c2f=scales:((128,300),);iterations:200``).

While a method runs, its image is copied every ``--every`` evaluations (a copy costs a few
microseconds); afterwards every copy is *judged*: clamped and rounded as it would be written,
scaled to the final size when it comes from a coarser scale, and scored by the fp32 objective,
whatever precision the method computed in. A method's loss at time t is that of the best image it
had seen by t (what it would have written, had it stopped there; the engine also writes its best
image). Its result, as written, is the last point. The ``before`` run's final loss is the
reference each method's "time to 1%" is measured against.

A loss at the final size cannot see what coarse scales add (large strokes, colour fields), so
every ``--judge_every``-th copy, and the result, also go to the judge (benchmarks/judge.py): the
style distance at full size, 1/2 and 1/4, and the content distance. "Time to the look" is when a
method's picture first reaches the ``before`` picture's mean style distance (over the three
scales); the figures of each result are printed beside it.

Results are kept per method and pair in ``--cache`` (JSON), so methods can be run at different
times; ``--fresh`` recomputes. Prints Markdown tables and the CPU (or GPU) and its bf16 support.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import transforms.nst.optimize as optimize_module
from benchmarks.grid import named_config
from benchmarks.judge import SCALES, Judge
from benchmarks.quality import run_reference
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.objective import Objective
from transforms.nst.precision import describe_device
from transforms.nst.written import BestImages, as_written

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
PAIRS = (
    ("cat.jpg", "starry_night.jpg"),
    ("astronaut.jpg", "the_scream.jpg"),
    ("coffee.jpg", "woman_with_hat.jpg"),
)
BEFORE = {"precision": "fp32", "stop_tolerance": 0.0, "iterations": 500}
TOLERANCE = 0.01  # "within 1%" of the before run's final loss


class _Snapshots:
    """Copies of the optimized image every ``every`` evaluations, with the time they were seen."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.started = 0.0
        self.calls = 0
        self.images: list[tuple[float, torch.Tensor]] = []

    def see(self, pixels: torch.Tensor, nchw: bool) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            if pixels.is_cuda:
                torch.cuda.synchronize(pixels.device)  # the time the image was computed, not queued
            image = pixels.detach() if nchw else pixels.detach().permute(0, 3, 1, 2)
            self.images.append((time.perf_counter() - self.started, image[:1].float().clone()))


def _engine_class(snapshots: _Snapshots) -> type[BestImages]:
    class Watched(BestImages):
        def update(self, total: torch.Tensor, pixels: torch.Tensor, active: torch.Tensor, iteration: int) -> None:
            super().update(total, pixels, active, iteration)
            snapshots.see(pixels, nchw=False)

    return Watched


def run_engine(
    engine: StyleTransfer, config: StyleConfig, content: Image.Image, style: Image.Image, every: int
) -> dict[str, Any]:
    """One pair with ``config``; its snapshots, written image, seconds and stop record."""
    snapshots = _Snapshots(every)
    targets = engine.encode_styles([style], size=config.style_size)
    coarse = tuple(
        engine.encode_styles([style], size=config.at_stage(i).style_size) for i in range(len(config.coarse_scales))
    )
    original = optimize_module.BestImages
    optimize_module.BestImages = _engine_class(snapshots)  # type: ignore[misc]
    try:
        snapshots.started = time.perf_counter()
        result = engine.stylize(content, targets, config, coarse_styles=coarse)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        seconds = time.perf_counter() - snapshots.started
    finally:
        optimize_module.BestImages = original  # type: ignore[misc]
    written = image_to_tensor(result.image) * engine.family.pixel_scale
    return {
        "snapshots": snapshots.images,
        "written": written,
        "seconds": seconds,
        "iterations": result.final.iteration + sum(c.final.iteration for c in result.coarse),
        "stopped": result.stop_reason,
        "precision": result.precision,
        "records": [(r.seconds, r.total) for r in result.history[:-1]],
        "phase_starts": result.phase_starts,
    }


def run_torch(
    engine: StyleTransfer, objective: Objective, start: torch.Tensor, iterations: int, every: int
) -> dict[str, Any]:
    """``torch.optim.LBFGS`` from ``start``, unconstrained as neural-style runs it (quality.py's reference)."""
    snapshots = _Snapshots(every)
    snapshots.started = time.perf_counter()
    _, pixels = run_reference(
        engine, objective, start, iterations, "torch", seen=lambda image: snapshots.see(image, nchw=True)
    )
    if pixels.is_cuda:
        torch.cuda.synchronize(pixels.device)
    seconds = time.perf_counter() - snapshots.started
    return {
        "snapshots": snapshots.images,
        "written": pixels.clone(),
        "seconds": seconds,
        "iterations": iterations,
        "stopped": "iterations",
        "precision": "fp32",
    }


@torch.no_grad()
def judge(objective: Objective, image: torch.Tensor, size: tuple[int, int], scale: float) -> float:
    """The fp32 loss of ``image`` (NCHW, family units) as written, at the final ``size`` (h, w)."""
    if tuple(image.shape[-2:]) != size:  # a coarser scale's image, upscaled as the next scale starts
        picture = tensor_to_image(image.cpu().clamp(0, scale) / scale).resize(size[::-1], Image.Resampling.LANCZOS)
        image = image_to_tensor(picture) * scale
    image = image.to(objective.content_weight.device).contiguous(memory_format=torch.channels_last)
    return objective(as_written(image, scale))[0, 0].item()


def as_picture(image: torch.Tensor, size: tuple[int, int], scale: float) -> Image.Image:
    """``image`` (NCHW, family units) as the picture it would be written as, at ``size`` (h, w)."""
    picture = tensor_to_image(image.detach().float().cpu().clamp(0, scale) / scale)
    return picture if picture.size == size[::-1] else picture.resize(size[::-1], Image.Resampling.LANCZOS)


def curve_of(
    run: dict[str, Any],
    objective: Objective,
    size: tuple[int, int],
    scale: float,
    looks: tuple[Judge, Image.Image, Image.Image],
    judge_every: int,
) -> dict[str, Any]:
    """The run's best-so-far judged loss at each snapshot, and its written result as the last
    point; the judge's mean style distance at every ``judge_every``-th snapshot and the result."""
    judge_of, photo, painting = looks
    points, best, look = [], math.inf, []
    for index, (seconds, image) in enumerate(run["snapshots"]):
        loss = judge(objective, image, size, scale)
        best = min(best, loss) if math.isfinite(loss) else best
        points.append((seconds, best))
        if index % judge_every == judge_every - 1:
            look.append((seconds, judge_of(as_picture(image, size, scale), photo, painting).mean_style))
    final = judge(objective, run["written"], size, scale)
    points.append((run["seconds"], min(best, final)))
    verdict = judge_of(as_picture(run["written"], size, scale), photo, painting)
    look.append((run["seconds"], verdict.mean_style))
    return {
        "curve": points,
        "final": final,
        "seconds": run["seconds"],
        "iterations": run["iterations"],
        "stopped": run["stopped"],
        "precision": run["precision"],
        "records": run.get("records", []),
        "phase_starts": run.get("phase_starts", ()),
        "look": look,
        "verdict": verdict.to_dict(),
    }


def time_to(curve: list[list[float]], target: float) -> float | None:
    """First time the curve is at or below ``target``; None if it never gets there."""
    return next((seconds for seconds, loss in curve if loss <= target), None)


def loss_at(curve: list[list[float]], seconds: float) -> float:
    """The curve's loss at ``seconds`` (the best seen by then; inf before the first point)."""
    seen = [loss for t, loss in curve if t <= seconds]
    return seen[-1] if seen else math.inf


def _key(pair: str, method: str, args: argparse.Namespace, device: str) -> str:
    """A run's entry in the cache: what it ran, at which size and iterations, where, with which torch."""
    return f"{pair} | {args.size} | {args.iterations} | {method} | {device} | torch {torch.__version__} | judged"


def _method_config(name: str, base: StyleConfig, iterations: int) -> StyleConfig:
    if name == "before":
        return base.replace(**{**BEFORE, "iterations": iterations, "scales": ()})
    # one: as before, with today's precision and stop; default and the rest: their own iterations.
    return named_config(name, base, iterations if name == "one" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=["before", "default", "torch"])
    parser.add_argument("--pairs", type=int, default=len(PAIRS))
    parser.add_argument("--every", type=int, default=5, help="evaluations between snapshots")
    parser.add_argument("--judge_every", type=int, default=4, help="snapshots between the judge's looks")
    parser.add_argument(
        "--iterations",
        type=int,
        default=BEFORE["iterations"],
        help="the before and one runs' (default and the rest run their own)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", default="out/time_to_quality.json")
    parser.add_argument("--fresh", action="store_true", help="recompute cached runs")
    args = parser.parse_args()

    engine = StyleTransfer(StyleConfig(device=args.device))
    judge_of = Judge()
    base = StyleConfig(device=args.device, image_size=args.size)
    scale = engine.family.pixel_scale
    cache_path = Path(args.cache)
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() and not args.fresh else {}
    device = describe_device(engine.device)
    print(
        f"# {device}; torch {torch.__version__}, {platform.python_implementation()} {platform.python_version()}; "
        f"{args.size} px, {engine.config.model} {engine.config.weights}; judged in fp32 as written"
    )
    methods = list(dict.fromkeys(args.methods))  # "before" may come from the cache, run earlier
    for content_name, style_name in PAIRS[: args.pairs]:
        pair = f"{Path(content_name).stem} x {Path(style_name).stem}"
        content = Image.open(EXAMPLES / content_name).convert("RGB")
        style = Image.open(EXAMPLES / style_name).convert("RGB")
        judge_config = base.replace(precision="fp32")
        content_tensor = engine.to_input(fit_longest_side(content, args.size), content_name)
        targets = engine.encode_styles([style], size=judge_config.style_size)
        objective = Objective(engine.network, content_tensor, [targets.grams], [judge_config])
        size = tuple(content_tensor.shape[-2:])
        for method in methods:
            key = _key(pair, method, args, device)
            if key in cache:
                continue
            if method == "torch":
                run = run_torch(engine, objective, content_tensor, args.iterations, args.every)
            else:
                run = run_engine(engine, _method_config(method, base, args.iterations), content, style, args.every)
            cache[key] = curve_of(run, objective, size, scale, (judge_of, content, style), args.judge_every)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))
            print(f"  ran {key}: {cache[key]['seconds']:.0f} s, judged {cache[key]['final']:.6g}", flush=True)
    _tables(cache, args, device, ["before", *[m for m in methods if m != "before"]])


def _tables(cache: dict[str, Any], args: argparse.Namespace, device: str, methods: list[str]) -> None:
    def entry(pair: str, method: str) -> dict[str, Any]:
        return cache[_key(pair, method, args, device)]

    # The pairs every method has a run of (the before run may come from an earlier invocation).
    pairs = [
        pair
        for pair in (f"{Path(c).stem} x {Path(s).stem}" for c, s in PAIRS[: args.pairs])
        if all(_key(pair, method, args, device) in cache for method in methods)
    ]
    if not pairs:
        print("\n(no pair has a run of every method yet, the before run included: no tables)")
        return
    print("\n## Time to the before run's final loss (within 1%)\n")
    print(
        "| pair | before: loss, s | "
        + " | ".join(f"{m}: s to 1% (x before), final / before, iterations, stop" for m in methods[1:])
        + " |"
    )
    print("|---" * (2 + len(methods) - 1) + "|")
    ratios: dict[str, list[float]] = {m: [] for m in methods[1:]}
    for pair in pairs:
        before = entry(pair, "before")
        target = before["final"] * (1 + TOLERANCE)
        reached_before = time_to(before["curve"], target) or before["seconds"]
        cells = [f"{before['final']:.6g}, {before['seconds']:.0f} s (1% at {reached_before:.0f} s)"]
        for method in methods[1:]:
            run = entry(pair, method)
            reached = time_to(run["curve"], target)
            if reached is not None:
                ratios[method].append(reached / before["seconds"])
            reach = "never" if reached is None else f"{reached:.0f} s ({reached / before['seconds']:.2f}x)"
            cells.append(
                f"{reach}, {run['final'] / before['final']:.4f}, {run['iterations']}, {run['stopped']} ({run['precision']})"
            )
        print(f"| {pair} | " + " | ".join(cells) + " |")
    for method, values in ratios.items():
        if values:
            print(
                f"\n{method}: time to 1% / before's time: median {statistics.median(values):.2f}, worst {max(values):.2f} "
                f"({len(values)} of {len(pairs)} pairs reached it)"
            )
    print(
        "\n## The judge: style distance at "
        + ", ".join(SCALES)
        + " / content distance of each result, and the time to the before picture's look\n"
    )
    print("| pair | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    looks: dict[str, list[float]] = {m: [] for m in methods[1:]}
    for pair in pairs:
        before = entry(pair, "before")
        target = statistics.fmean(before["verdict"]["style"].values())
        cells = []
        for method in methods:
            run = entry(pair, method)
            verdict = run["verdict"]
            cell = " ".join(f"{v:.2f}" for v in verdict["style"].values()) + f" / {verdict['content']:.2f}"
            if method != "before":
                reached = time_to(run["look"], target)
                if reached is not None:
                    looks[method].append(reached / before["seconds"])
                cell += ", look " + ("never" if reached is None else f"at {reached / before['seconds']:.2f}x")
            cells.append(cell)
        print(f"| {pair} | " + " | ".join(cells) + " |")
    for method, values in looks.items():
        if values:
            print(
                f"\n{method}: time to the before picture's look / before's time: median {statistics.median(values):.2f}, "
                f"worst {max(values):.2f} ({len(values)} of {len(pairs)} pairs reached it)"
            )
    print("\n## Loss at equal time, / the before run's final loss\n")
    fractions = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
    print("| pair | method | " + " | ".join(f"{f:.0%} of before's time" for f in fractions) + " |")
    print("|---|---" + "|---" * len(fractions) + "|")
    for pair in pairs:
        before = entry(pair, "before")
        for method in methods:
            run = entry(pair, method)
            cells = [f"{loss_at(run['curve'], f * before['seconds']) / before['final']:.3f}" for f in fractions]
            print(f"| {pair} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
