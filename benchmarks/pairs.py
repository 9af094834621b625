"""Pairs per hour: whole pairs through the engine (decode, style targets, optimize, PNG encode).

    python -m benchmarks.pairs --size 512 --iterations 500 --pairs 4

This is what the Beam DoFn does per pair, minus storage I/O: the first pair encodes the style,
later pairs reuse the cached targets, as the DoFn's style cache does. Weights are random.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings

import torch

from transforms.nst import StyleConfig, StyleTransfer, decode_image, encode_png
from transforms.nst.images import tensor_to_image


def _png(seed: int, width: int, height: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    buffer = io.BytesIO()
    tensor_to_image(torch.rand(1, 3, height, width, generator=generator)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--optimizer", default="lbfgs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="VGG weights are random")

    config = StyleConfig(
        weights="random", image_size=args.size, iterations=args.iterations,
        device=args.device, optimizer=args.optimizer,
    )
    started = time.perf_counter()
    engine = StyleTransfer(config)
    load_seconds = time.perf_counter() - started
    style_png = _png(0, args.size, args.size * 3 // 4)
    targets = None
    seconds = []
    for index in range(args.pairs):
        content_png = _png(index + 1, args.size * 4 // 3, args.size)
        start = time.perf_counter()
        if targets is None:
            targets = engine.encode_styles([decode_image(style_png, "style")])
        result = engine.stylize(decode_image(content_png, "content"), targets)
        encode_png(result.image)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)
    print(f"# {config.model} on {engine.device}, {args.size} px, {args.iterations} {args.optimizer} iterations")
    print(f"model load {load_seconds:.1f} s; per pair: {', '.join(f'{s:.2f}' for s in seconds)} s")
    print(f"median {median:.2f} s per pair -> {3600 / median:.0f} pairs per hour")


if __name__ == "__main__":
    main()
