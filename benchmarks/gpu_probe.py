"""Bare VGG19 forward+backward on CUDA in fp32, TF32-off fp32 and bf16 autocast, both layouts.

A one-off measurement to decide the GPU defaults; prints a table.
"""

from __future__ import annotations

import statistics
import warnings

import torch

from transforms.nst import StyleConfig, StyleTransfer


def main() -> None:
    warnings.filterwarnings("ignore", message="VGG weights are random")
    engine = StyleTransfer(StyleConfig(weights="random", device="cuda"))
    print("| size | layout | mode | ms fwd+bwd |")
    print("|---|---|---|---|")
    for size in (512, 1024):
        for layout in (torch.contiguous_format, torch.channels_last):
            network = engine.network.to(memory_format=layout)
            for mode in ("tf32 (default)", "strict fp32", "bf16 autocast"):
                torch.backends.cudnn.allow_tf32 = mode != "strict fp32"
                image = torch.rand(1, 3, size, size, device="cuda").contiguous(memory_format=layout)
                image.requires_grad_(True)
                times = []
                for step in range(25):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
                        features = network(image)
                        loss = sum(f.float().square().mean() for f in features.values())
                    loss.backward()
                    image.grad = None
                    end.record()
                    torch.cuda.synchronize()
                    if step >= 5:
                        times.append(start.elapsed_time(end))
                name = "NCHW" if layout == torch.contiguous_format else "channels_last"
                print(f"| {size} | {name} | {mode} | {statistics.median(times):.2f} |", flush=True)
    torch.backends.cudnn.allow_tf32 = True


if __name__ == "__main__":
    main()
