"""Engine overhead: ms per style-transfer iteration vs ms per forward+backward of the bare network.

    python -m benchmarks.engine --sizes 256 512 --iterations 20

The bare network is the same cut, frozen VGG the engine uses (same taps); one "bare" step is a
forward, a scalar built from every tapped activation, and a backward to the input image. The
engine's per-iteration time is the median gap between consecutive iteration records. Both are
timed in NCHW and channels_last layouts so the table shows which layout wins on this device.
Weights are random (speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import torch

from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import tensor_to_image
from transforms.nst.lbfgs import LBFGS_HISTORY


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_ms(engine: StyleTransfer, size: int, memory_format: torch.memory_format, repeats: int) -> float:
    """Median ms of forward + backward of the engine's network on a size x size image."""
    network = engine.network.to(memory_format=memory_format)
    image = torch.rand(1, 3, size, size, device=engine.device).contiguous(memory_format=memory_format)
    image.requires_grad_(True)
    times = []
    for step in range(repeats + 3):
        _synchronize(engine.device)
        start = time.perf_counter()
        features = network(image)
        sum(f.square().mean() for f in features.values()).backward()
        image.grad = None
        _synchronize(engine.device)
        if step >= 3:  # warm-up: allocator, oneDNN/cuDNN algorithm choice
            times.append(time.perf_counter() - start)
    engine.network.to(memory_format=engine.memory_format)
    return 1000 * statistics.median(times)


def engine_ms(engine: StyleTransfer, size: int, iterations: int, optimizer: str) -> float:
    """Median ms between consecutive iterations of a real stylize() call, in steady state.

    L-BFGS's cost grows with its history until LBFGS_HISTORY pairs are stored, so only the
    iterations after the history is full are timed.
    """
    warmup = LBFGS_HISTORY + 2 if optimizer == "lbfgs" else 3
    config = engine.config.replace(image_size=size, iterations=warmup + iterations + 1, optimizer=optimizer)
    generator = torch.Generator().manual_seed(0)
    content = tensor_to_image(torch.rand(1, 3, size, size, generator=generator))
    style = tensor_to_image(torch.rand(1, 3, size, size, generator=generator))
    targets = engine.encode_styles([style], size=size)
    result = engine.stylize(content, targets, config)
    stamps = [r.seconds for r in result.history]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps[warmup:])]
    return 1000 * statistics.median(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per run")
    parser.add_argument("--model", default="vgg19", choices=["vgg16", "vgg19"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"])
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message="VGG weights are random")
    device = StyleConfig(device=args.device).torch_device()
    engine = StyleTransfer(StyleConfig(model=args.model, weights="random", device=str(device)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {args.model}, {name}, torch {torch.__version__}")
    print(
        "| size | bare NCHW ms | bare channels_last ms | engine L-BFGS ms | engine Adam ms | L-BFGS / bare | Adam / bare |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        nchw = bare_ms(engine, size, torch.contiguous_format, args.iterations)
        nhwc = bare_ms(engine, size, torch.channels_last, args.iterations)
        bare = nhwc if engine.memory_format == torch.channels_last else nchw
        runs = {opt: engine_ms(engine, size, args.iterations, opt) for opt in args.optimizers}
        lbfgs, adam = runs.get("lbfgs", float("nan")), runs.get("adam", float("nan"))
        print(
            f"| {size} | {nchw:.1f} | {nhwc:.1f} | {lbfgs:.1f} | {adam:.1f} | {lbfgs / bare:.3f} | {adam / bare:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
