"""Quality on real weights and real pictures: our optimizer against torch.optim.LBFGS.

    python -m benchmarks.quality --sizes 256 512 --iterations 500 --sheet out/quality.png

For each photo x painting pair of examples/images, at each size, with the default settings (the
embedded Caffe VGG19 and its loss weights), it optimizes the same objective three ways:

- ``ours``: the engine as it ships (L-BFGS in 0-255 units with its divergence guard, the last
  20% of iterations restarted with the pixels kept in range, best image kept);
- ``unbounded``: our L-BFGS with its guard, never constrained, clamped only at the end (what
  Gatys et al. and neural-style do);
- ``projected``: our L-BFGS with its guard and the pixels kept in range from the first step;
- ``torch``: ``torch.optim.LBFGS(history_size=100, lr=1, max_iter=1)``, no line search, clamped
  at the end: the reference optimizer of neural-style's PyTorch ports.

Every figure is the loss of the image *as written* (clamped to the pixel range, rounded to 8 bits),
scored by the same objective. It prints one row per pair and size, and writes a contact sheet
(content | style | ours | torch per row) to look at.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fit_longest_side, tensor_to_image
from transforms.nst.lbfgs import LBFGS, LBFGS_HISTORY
from transforms.nst.objective import Objective

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
PAIRS = (
    ("cat.jpg", "starry_night.jpg"),
    ("astronaut.jpg", "the_scream.jpg"),
    ("coffee.jpg", "woman_with_hat.jpg"),
)


def run_reference(
    engine: StyleTransfer,
    objective: Objective,
    start: torch.Tensor,
    iterations: int,
    kind: str,
    seen: Callable[[torch.Tensor], None] | None = None,
) -> tuple[list[float], torch.Tensor]:
    """Optimize ``start`` (NCHW, family units) with a reference optimizer; the loss curve and
    image. ``seen`` is called with the pixels of every evaluation (benchmarks/time_to_quality.py)."""
    pixels = start.detach().contiguous().requires_grad_(True)  # NCHW: torch's LBFGS flattens with view
    if kind == "torch":
        optimizer: torch.optim.Optimizer = torch.optim.LBFGS(
            [pixels],
            lr=1,
            max_iter=1,
            history_size=LBFGS_HISTORY,
            tolerance_grad=-1,
            tolerance_change=-1,
        )
    else:
        bounds = (0.0, engine.family.pixel_scale) if kind == "projected" else None
        optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY, bounds=bounds)
    curve: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = objective(pixels)[0, 0]
        total.backward()
        curve.append(total.item())
        if seen is not None:
            seen(pixels)
        return total

    for _ in range(iterations):
        optimizer.step(closure)
    return curve, pixels.detach()


def iterations_to_within(curve: list[float], final: float, tolerance: float = 0.01) -> int:
    """First iteration from which the loss stays within ``tolerance`` of ``final``."""
    for index in range(len(curve)):
        if all(math.isfinite(v) and v <= final * (1 + tolerance) for v in curve[index:]):
            return index
    return len(curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sheet", default="out/quality.png", help="contact sheet to write")
    parser.add_argument("--pairs", type=int, default=len(PAIRS), help="how many of the example pairs")
    args = parser.parse_args()

    engine = StyleTransfer(StyleConfig(device=args.device))
    print(
        f"# {engine.config.model}, weights {engine.config.weights} ({engine.family.name} family), "
        f"{engine.device}, {args.iterations} iterations, losses of the written image"
    )
    print(
        "| pair | size | ours total | content | style | iters to 1% | unbounded / ours | projected / ours | torch / ours | torch diverged | s ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[list[Image.Image]] = []
    for size in args.sizes:
        # One scale: the optimizers are compared on the same single-scale problem.
        config = engine.config.replace(image_size=size, iterations=args.iterations, scales=())
        for content_name, style_name in PAIRS[: args.pairs]:
            content = Image.open(EXAMPLES / content_name).convert("RGB")
            style = Image.open(EXAMPLES / style_name).convert("RGB")
            targets = engine.encode_styles([style], size=config.style_size)
            started = time.perf_counter()
            ours = engine.stylize(content, targets, config)
            seconds = time.perf_counter() - started

            # The same objective, rebuilt from the engine's network, for the reference runs.
            content_tensor = engine.to_input(fit_longest_side(content, size), content_name)
            objective = Objective(engine.network, content_tensor, [targets.grams], [config])
            scores = {}
            for kind in ("unbounded", "projected", "torch"):
                curve, image = run_reference(engine, objective, content_tensor, args.iterations, kind)
                with torch.no_grad():
                    scores[kind] = objective(engine.as_written(image))[0, 0].item()
                scores[kind + "_diverged"] = not all(math.isfinite(v) for v in curve)
                scores[kind + "_image"] = image
            curve = [r.total for r in ours.history[:-1]]
            final = ours.final
            print(
                f"| {Path(content_name).stem} x {Path(style_name).stem} | {size} | {final.total:.4g} | "
                f"{final.content:.4g} | {final.style:.4g} | {iterations_to_within(curve, final.total)} | "
                f"{scores['unbounded'] / final.total:.3f} | {scores['projected'] / final.total:.3f} | "
                f"{scores['torch'] / final.total:.3f} | "
                f"{'yes' if scores['torch_diverged'] else 'no'} | {seconds:.0f} |",
                flush=True,
            )
            scale = engine.family.pixel_scale
            torch_image = tensor_to_image(engine.as_written(scores["torch_image"]) / scale)
            rows.append(
                [
                    fit_longest_side(content, 256),
                    fit_longest_side(style, 256),
                    fit_longest_side(ours.image, 256),
                    fit_longest_side(torch_image, 256),
                ]
            )
            _contact_sheet(rows, Path(args.sheet))  # after every row: a long run can be looked at early
    print(f"contact sheet: {args.sheet}")


def _contact_sheet(rows: list[list[Image.Image]], path: Path) -> None:
    cell, label = 256, 18
    sheet = Image.new("RGB", (4 * cell, label + len(rows) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(("content", "style", "ours", "torch.optim.LBFGS")):
        draw.text((column * cell + 4, 3), title, fill="black")
    for row, images in enumerate(rows):
        for column, image in enumerate(images):
            sheet.paste(image, (column * cell, label + row * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


if __name__ == "__main__":
    main()
