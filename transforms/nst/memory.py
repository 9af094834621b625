"""Memory planning, in one room: what a pair and a style image cost on the device, which pairs
share a batch and how many fit, whether a pair runs whole, in tiles or not at all.

Estimates are bytes per pixel calibrated on measurements (docs/large-prints.md: memory), on
the safe side; a pair that does not fit is tiled or refused before it starts, with the size
that would fit, never left to run out of memory halfway.

Imports: torch (device memory), config, images (sizes), lbfgs (its history size); no Beam, no
storage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch

from transforms.nst.config import StyleConfig
from transforms.nst.images import fitted_size
from transforms.nst.lbfgs import LBFGS_HISTORY

# The largest batch auto chooses.
MAX_BATCH: Final = 32
# Pairs per group of one batch key (on average): four of the largest batches, so that a group
# streams through its batch's slots (each refilled as a pair finishes) and a big job still
# spreads over many workers.
GROUP_PAIRS: Final = 4 * MAX_BATCH
# --batch_size auto on a CPU (docs/performance.md: batching gains little there).
CPU_BATCH_SIZE: Final = 1


class PairTooLargeError(MemoryError):
    """A pair whose estimated memory is more than its device has: refused before it starts."""


def batch_key(config: StyleConfig, content_size: tuple[int, int]) -> tuple[object, ...]:
    """The pipeline groups pairs with equal keys into one run of the engine (StyleTransfer.run),
    whose tasks then share batches without waste: one network, output size, optimizer,
    precision, iteration count and scales give every pair the same task shapes. (Which tasks
    share a batch is the runner's: batch.Task.shape, the resolved precision included.)"""
    return (
        config.network_key(),
        fitted_size(*content_size, config.image_size),
        config.optimizer,
        config.learning_rate if config.optimizer == "adam" else None,
        config.precision,
        config.iterations,
        config.coarse_scales,
    )


# Bytes per output pixel of one pair, for sizing batches: the network's activations kept for the
# backward pass (VGG19 to relu5_1 holds ~290 floats per input pixel per copy, and a few copies
# live at once), and L-BFGS's history of 2 x LBFGS_HISTORY vectors of 3 floats per pixel.
# Calibrated on the CPU's peak resident set (benchmarks/pairs.py, 128 px, batches of 1 to 8:
# 7,100 bytes a pixel a pair in fp32, 3,300 in bf16; docs/performance.md), rounded up.
_ACTIVATION_BYTES_PER_PIXEL = {"fp32": 4700, "bf16": 2400}


def estimated_precision(config: StyleConfig) -> str:
    """The precision memory is planned for: fp32, but for Adam forced to bf16. L-BFGS's last
    phase runs in fp32 whatever the precision (objective.py), and auto may resolve to fp32."""
    return "bf16" if config.precision == "bf16" and config.optimizer == "adam" else "fp32"


def estimated_pair_bytes(config: StyleConfig, size: tuple[int, int]) -> int:
    """Device memory one pair of output ``size`` (width, height) needs in a batch, estimated."""
    history = 2 * LBFGS_HISTORY * 3 * 4 if config.optimizer == "lbfgs" else 3 * 4 * 3
    return size[0] * size[1] * (_ACTIVATION_BYTES_PER_PIXEL[estimated_precision(config)] + history + 100)


# Bytes per pixel of a style image while its Gram targets are computed (no gradients, always
# fp32): the tapped activations kept until the Grams are taken, and the first block's two
# 64-channel maps alive at once. Measured on the CPU's peak resident set (benchmarks/tiles.py's
# style phase, Starry Night at 1024 and 2048 px: 783 and 799), rounded up.
_STYLE_BYTES_PER_PIXEL = 850


def estimated_style_bytes(size: tuple[int, int]) -> int:
    """Device memory encoding one style image of ``size`` (width, height) takes, estimated.

    Small next to a pair's (about a ninth per pixel), but a tiled pair's style targets are still
    computed whole at the full style size: at 4096 px they are what decides the smallest budget."""
    return size[0] * size[1] * _STYLE_BYTES_PER_PIXEL


def largest_fitting_size(estimate: Callable[[tuple[int, int]], int], shape: tuple[int, int], budget: int) -> int:
    """The largest longest side for an image of ``shape``'s proportions whose ``estimate`` (bytes
    for a (width, height), proportional to its pixels) fits ``budget`` bytes; 0 if none does."""
    width, height = shape
    size = math.isqrt(int(budget / estimate((1, 1)) * max(width, height) / min(width, height))) + 1
    while size > 0 and estimate(fitted_size(width, height, size)) > budget:
        size -= 1
    return size


# A tiled pair's tiles are at least this share of its longest side (at most 8 x 8 tiles).
MIN_TILE_FRACTION = 1 / 8


def tile_plan(config: StyleConfig, output_size: tuple[int, int], budget: int | None) -> tuple[int, int] | None:
    """(tile px, overlap px) for a result of ``output_size`` too large for ``budget`` bytes at its
    last scale: the largest square tile that fits, overlapping by an eighth. None when tiles would
    not do: the budget is unknown, a coarser scale does not fit whole, or the tiles would be tiny."""
    width, height = output_size
    if budget is None:
        return None
    for size, _ in config.coarse_scales:
        if estimated_pair_bytes(config, fitted_size(width, height, size)) > budget:
            return None
    tile = largest_fitting_size(functools.partial(estimated_pair_bytes, config), (1, 1), budget)  # a square's side
    if tile < max(width, height) * MIN_TILE_FRACTION or tile < 32:
        return None
    return tile, max(8, tile // 8)


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a pair may take on ``device`` now: a GPU's free memory plus what PyTorch holds
    cached, or the CPU's available RAM (Linux's MemAvailable); None where that is unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def auto_batch_size(device: torch.device, config: StyleConfig, output_size: tuple[int, int], budget: int | None) -> int:
    """Pairs per batch for ``--batch_size auto``: on a GPU as many as 80% of its memory
    ``budget`` holds (``estimated_pair_bytes``), up to MAX_BATCH; on the CPU, where batching
    gains little, the measured best (docs/performance.md)."""
    if device.type != "cuda" or budget is None:
        return CPU_BATCH_SIZE
    return max(1, min(MAX_BATCH, int(0.8 * budget // estimated_pair_bytes(config, output_size))))


def _readable_bytes(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def memory_refusal(
    config: StyleConfig, output_size: tuple[int, int], content_name: str, device: torch.device, budget: int | None
) -> PairTooLargeError | None:
    """Why a pair with a result of ``output_size`` cannot run whole within ``budget`` bytes (with
    the size it needs and the size that would fit), or None when it fits or the budget is unknown."""
    width, height = output_size
    needed = estimated_pair_bytes(config, (width, height))
    if budget is None or needed <= budget:
        return None
    fits = largest_fitting_size(functools.partial(estimated_pair_bytes, config), (width, height), budget)
    cure = f"the largest image_size that fits is {fits} px" if fits else "no image_size fits"
    return PairTooLargeError(
        f"{content_name}: a {width}x{height} result needs about {_readable_bytes(needed)} on {device} "
        f"({estimated_precision(config)}, estimated), more than the {_readable_bytes(budget)} there; {cure} "
        "(docs/large-prints.md: memory)"
    )


def style_refusal(
    location: str, image_size: tuple[int, int], config: StyleConfig, device: torch.device, budget: int | None
) -> PairTooLargeError | None:
    """Why the style image at ``location`` (``image_size`` as read) cannot be encoded at the
    config's style size within ``budget`` bytes (with the style_scale that would fit), or None.

    Checked apart from the pair's estimate because a tiled pair's tiles shrink with the budget
    while its style targets are still computed whole, at the full style size."""
    width, height = fitted_size(*image_size, config.style_size)
    needed = estimated_style_bytes((width, height))
    if budget is None or needed <= budget:
        return None
    fits = largest_fitting_size(estimated_style_bytes, image_size, budget)
    # Rounded down, so that the scale named does fit.
    scale = math.floor(fits / config.image_size * 100) / 100
    cure = f"a style_scale of {scale:g} or less fits" if scale > 0 else "no style size fits"
    return PairTooLargeError(
        f"{location}: encoding this style at {width}x{height} px (image_size {config.image_size} x style_scale "
        f"{config.style_scale:g}) needs about {_readable_bytes(needed)} on {device}, more than the {_readable_bytes(budget)} "
        f"there; {cure} (docs/large-prints.md: memory)"
    )


@dataclass(frozen=True)
class Placement:
    """How a pair runs within a memory budget: whole (in a batch), alone in ``tiling`` (tile px,
    overlap px), or not at all (``refusal``, which names the size that would fit). The handler
    adds the slots its batches have, the iterations it runs at most and the budget it was placed
    within, which its style images are then checked against (handler.place)."""

    tiling: tuple[int, int] | None = None
    refusal: PairTooLargeError | None = None
    slots: int = 1
    iterations: int = 0
    budget: int | None = None  # the device memory it was placed within, bytes (None: unknown)

    @property
    def whole(self) -> bool:
        return self.tiling is None and self.refusal is None


def place(
    config: StyleConfig, output_size: tuple[int, int], content_name: str, device: torch.device, budget: int | None
) -> Placement:
    """Whole when the pair fits ``budget``; else in tiles when they would do; else refused."""
    refusal = memory_refusal(config, output_size, content_name, device, budget)
    if refusal is None:
        return Placement()
    tiling = tile_plan(config, output_size, budget)
    return Placement(tiling=tiling) if tiling is not None else Placement(refusal=refusal)
