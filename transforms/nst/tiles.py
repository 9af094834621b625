"""Overlapping tiles for images larger than a device holds, and their seamless blend.

An image is cut into tiles of at most ``tile`` px a side that overlap by ``overlap`` px; each is
optimized as a task of its own (tasks.plan, in a request's tiling) and put back with weights that ramp linearly
across every overlap, so that neighbouring tiles fade into each other instead of meeting at a
seam. Pure PyTorch.

Imports: torch only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one side: evenly spread, the first at 0 and the last at length - tile."""
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))  # ceil: enough tiles to cover the side
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def tile_boxes(width: int, height: int, tile: int, overlap: int) -> list[Box]:
    """Boxes covering a ``width`` x ``height`` image, each at most ``tile`` px a side, row by row;
    neighbours overlap by at least ``overlap`` px."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be >= 0 and smaller than the tile ({tile} px), got {overlap}")
    return [
        (left, top, min(left + tile, width), min(top + tile, height))
        for top in _starts(height, tile, overlap)
        for left in _starts(width, tile, overlap)
    ]


def _ramp(length: int, start: int, end: int, total: int, overlap: int) -> Tensor:
    """Weights along one side of a tile spanning [start, end) of ``total``: rising over the
    first ``overlap`` px unless the tile starts at the image's edge, falling over the last."""
    weights = torch.ones(length, dtype=torch.float64)
    if overlap == 0:
        return weights
    position = torch.arange(length, dtype=torch.float64)
    if start > 0:
        weights = torch.minimum(weights, (position + 1) / (overlap + 1))
    if end < total:
        weights = torch.minimum(weights, (length - position) / (overlap + 1))
    return weights


def blend_weights(box: Box, width: int, height: int, overlap: int) -> Tensor:
    """The (H, W) weight of a tile's pixels where they are put back; positive everywhere."""
    left, top, right, bottom = box
    across = _ramp(right - left, left, right, width, overlap)
    down = _ramp(bottom - top, top, bottom, height, overlap)
    return down[:, None] * across[None, :]


class Canvas:
    """The image being assembled from tiles: a weighted sum and the sum of weights, on the CPU.

    Before any tile is put back the canvas shows ``start``; after, each pixel is the weighted
    average of the tiles that cover it.
    """

    def __init__(self, start: Tensor, overlap: int) -> None:
        self.start = start.double().cpu()  # (3, H, W)
        self.overlap = overlap
        self._sum = torch.zeros_like(self.start)
        self._weights = torch.zeros(self.start.shape[1:], dtype=torch.float64)

    def put(self, box: Box, tile: Tensor) -> None:
        left, top, right, bottom = box
        height, width = self.start.shape[1:]
        weights = blend_weights(box, width, height, self.overlap)
        self._sum[:, top:bottom, left:right] += tile.double().cpu() * weights
        self._weights[top:bottom, left:right] += weights

    def image(self) -> Tensor:
        covered = self._weights > 0
        return torch.where(covered, self._sum / self._weights.clamp_min(1e-12), self.start)

    def crop(self, box: Box) -> Tensor:
        left, top, right, bottom = box
        weights = self._weights[top:bottom, left:right]
        mixed = self._sum[:, top:bottom, left:right] / weights.clamp_min(1e-12)
        return torch.where(weights > 0, mixed, self.start[:, top:bottom, left:right])


def blend(start: Tensor, tiles: Sequence[tuple[Box, Tensor]], overlap: int) -> Tensor:
    """``tiles`` put back onto ``start`` (3, H, W), blended across their overlaps."""
    canvas = Canvas(start, overlap)
    for box, tile in tiles:
        canvas.put(box, tile)
    return canvas.image().to(start.dtype)
