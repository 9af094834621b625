"""Which image a pair writes: the best seen (kept on the device as the optimization goes) or the
last iterate, each scored as it will be stored (clamped, 8-bit); then luminance colour control.

Imports: torch, config, color and objective; no Beam, no storage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from transforms.nst.color import keep_colors
from transforms.nst.config import StyleConfig
from transforms.nst.objective import Objective


def as_written(image: Tensor, scale: float) -> Tensor:
    """``image`` (NCHW, in pixel units of ``scale``) as it will be stored: clamped and rounded to 8 bits."""
    return image.div(scale).clamp(0, 1).mul(255).round().div(255).mul(scale)


class BestImages:
    """The best image seen so far per pair, kept on the device: no step makes a result worse."""

    def __init__(self, pixels: Tensor) -> None:
        self.pixels = pixels.detach().clone()
        self.loss = torch.full((pixels.shape[0],), math.inf, dtype=torch.float64, device=pixels.device)
        self.iteration = torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)

    @torch.no_grad()
    def update(self, total: Tensor, pixels: Tensor, active: Tensor, iteration: int) -> None:
        """Keep the active pairs' ``pixels`` whose ``total`` loss beats their best (NaN never does)."""
        better = (total.double() < self.loss) & active
        self.loss = torch.where(better, total.double(), self.loss)
        self.iteration = torch.where(better, iteration, self.iteration)
        self.pixels.copy_(torch.where(better[:, None, None, None], pixels, self.pixels))

    def keep(self, rows: Sequence[int]) -> None:
        """Only the pairs ``rows`` (indices, in order) go on."""
        index = torch.tensor(rows, device=self.pixels.device)
        self.pixels = self.pixels[index]
        self.loss = self.loss[index]
        self.iteration = self.iteration[index]

    @torch.no_grad()
    def forget(self, row: int) -> None:
        """Pair ``row`` is another pair now: nothing seen so far is its."""
        self.loss[row] = math.inf
        self.iteration[row] = 0


@torch.no_grad()
def written_images(
    objective: Objective,
    last: Tensor,
    best: Tensor,
    content: Tensor,
    configs: Sequence[StyleConfig],
    scale: float,
    rows: Sequence[int] | None = None,
) -> tuple[Tensor, list[list[float]], list[bool]]:
    """The images to write (NCHW, family units), their loss rows, and whether each is the last
    iterate (else the best one seen, when that scores lower as written: no step makes a
    result worse). Luminance colour control is applied here, after the choice. ``rows``: the
    objective's pairs these images are (default: all of them, in order). Every image is scored
    with the network in fp32, whatever precision optimized it: the loss of what is written."""
    last, best = as_written(last, scale), as_written(best, scale)
    last_parts, best_parts = objective(last, rows, fp32=True), objective(best, rows, fp32=True)
    last_totals, best_totals = last_parts[:, 0].tolist(), best_parts[:, 0].tolist()
    take_last = [
        math.isfinite(last_total) and not best_total < last_total
        for last_total, best_total in zip(last_totals, best_totals, strict=True)
    ]
    choose = torch.tensor(take_last, device=last.device)
    output = torch.where(choose[:, None, None, None], last, best)
    parts = torch.where(choose[:, None], last_parts, best_parts)
    recolor = [c.color_control == "luminance" for c in configs]
    if any(recolor):
        colored = as_written(keep_colors(output / scale, content / scale) * scale, scale)
        output = torch.where(torch.tensor(recolor, device=last.device)[:, None, None, None], colored, output)
        parts = objective(output, rows, fp32=True)
    return output, parts.double().tolist(), take_last
