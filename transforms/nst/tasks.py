"""A pair as a sequence of single-scale tasks: the one place that decides what a pair runs.

A pair's plan is data (:func:`plan`): each coarser scale of its pyramid whole, then its last
scale whole or, when it does not fit the device, in overlapping tiles. Thin contents that lose a
coarse scale (:func:`fitting_scales`), explicit ``scales``, ``scales=()`` and tiles are all just a
different list. :class:`PairRun` walks one pair through its plan: the inputs of its next task (the
previous task's result, upscaled, is its start; a tile starts from the canvas so far) and, once
the last task is done, the pair's result. Each task is optimized by the slot runner (runner.py),
which knows nothing of scales or tiles; how images become the network's input is
:class:`Pixels`.

Imports: torch, Pillow and the engine's config, colour, images, records and tiles; no Beam, no storage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from transforms.nst.color import keep_colors
from transforms.nst.config import StyleConfig
from transforms.nst.images import fit_longest_side, fitted_size, image_to_tensor, tensor_to_image
from transforms.nst.records import ImageTooSmallError, StyleRequest, StyleResult, StyleTargets, summed
from transforms.nst.tiles import Box, Canvas, tile_boxes


def fitting_scales(config: StyleConfig, content_size: tuple[int, int], smallest: int) -> StyleConfig:
    """``config`` for a content of ``content_size`` (``image_size`` resolved): the default pyramid
    (``scales`` None) without the coarser scales at which the result would have a side under
    ``smallest`` px, the least the network sees. One scale still makes its picture, so the default
    must not fail a thin content; scales that were asked for are kept (and checked like the last).
    """
    if config.scales is not None:
        return config
    fitting = tuple((size, n) for size, n in config.coarse_scales if min(fitted_size(*content_size, size)) >= smallest)
    return config if fitting == config.coarse_scales else config.replace(scales=fitting)


@dataclass(frozen=True)
class Planned:
    """One task of a pair's plan: a single-scale optimization, before its start is known."""

    config: StyleConfig  # single-scale settings: image_size is this task's size, scales ()
    style: StyleTargets
    # A tile of the last scale (left, top, right, bottom, in that scale's pixels); None: whole.
    box: Box | None = None


def plan(request: StyleRequest, config: StyleConfig) -> list[Planned]:
    """The tasks of one pair, in the order they run: each coarser scale (``config.stages``) whole,
    then the last scale whole or in the request's tiles, each tile with the whole image's style
    targets (luminance colour control is applied once, to the blended whole).

    Raises:
        ValueError: style targets that do not match the scales or their sizes, or an overlap no
            smaller than the tile.
    """
    if len(request.coarse_styles) != len(config.coarse_scales):
        raise ValueError(_coarse_targets_wanted(len(request.coarse_styles), config))
    stages = [config.at_stage(i) for i in range(len(config.stages))]
    for stage, style in zip(stages, (*request.coarse_styles, request.style), strict=True):
        if style.size != stage.style_size:
            raise ValueError(
                f"style targets were encoded at {style.size} px but the config needs "
                f"{stage.style_size} px (image_size x style_scale)"
            )
    tasks = [Planned(stage, style) for stage, style in zip(stages[:-1], request.coarse_styles, strict=True)]
    last = stages[-1]
    if request.tiling is None:
        return [*tasks, Planned(last, request.style)]
    width, height = fitted_size(*request.content.size, last.image_size)
    for box in tile_boxes(width, height, *request.tiling):
        side = max(box[2] - box[0], box[3] - box[1])
        # The tile's own size, with the style targets of the whole image (style_size unchanged).
        tile = last.replace(
            image_size=side,
            style_scale=last.style_size / side,
            color_control="none" if last.color_control == "luminance" else last.color_control,
        )
        tasks.append(Planned(tile, request.style, box))
    return tasks


def _coarse_targets_wanted(given: int, config: StyleConfig) -> str:
    """What a request with the wrong number of coarse style targets is told: what to pass."""
    sizes = ", ".join(str(size) for size, _ in config.coarse_scales) or "none"
    return (
        f"{given} coarse style targets for {len(config.coarse_scales)} scales (coarser scales: {sizes} px): "
        "pass coarse_styles encoded at each one's config.at_stage(i).style_size, "
        "or scales=() for one scale (transforms.nst.stylize does this for you)"
    )


@dataclass(frozen=True)
class Pixels:
    """How images become the network's input on one device: the weights family's pixel units,
    the engine's dtype and memory layout, and the smallest side the network can see."""

    device: torch.device
    dtype: torch.dtype
    memory_format: torch.memory_format
    scale: float  # the family's pixel units: 255 (Caffe) or 1 (torchvision)
    min_side: int
    network_name: str  # for errors: "vgg19 up to relu5_1"

    def tensor(self, image: Image.Image, what: str) -> Tensor:
        """``image`` as an NCHW tensor in the family's pixel units, checked against the network."""
        tensor = image_to_tensor(image).mul_(self.scale)
        tensor = tensor.to(self.device, self.dtype, memory_format=self.memory_format)
        height, width = tensor.shape[-2:]
        if min(height, width) < self.min_side:
            raise ImageTooSmallError(
                f"{what} is {width}x{height} px after resizing; {self.network_name} needs at least "
                f"{self.min_side} px on each side (raise image_size, or style_scale for style images)"
            )
        return tensor

    def start(
        self, content: Tensor, style: StyleTargets, config: StyleConfig, init_image: Image.Image | None
    ) -> Tensor:
        """The starting image of a task whose content is ``content`` (NCHW, family units): NCHW on
        the device, in the family's pixel units."""
        height, width = content.shape[-2:]
        if init_image is not None:
            # An init image, or the previous scale's result: stretched to the content's exact size.
            resized = init_image.resize((width, height), Image.Resampling.LANCZOS)
            start = image_to_tensor(resized) * self.scale
        elif config.init == "content":
            start = content.clone()
        elif config.init == "random":
            # Gatys et al. start from white noise: uniform pixels, seeded for reproducibility.
            generator = torch.Generator().manual_seed(config.seed)
            start = torch.rand(content.shape, generator=generator) * self.scale
        elif config.init == "style":
            # Stretched to the content's exact size: the optimized image must match it.
            resized = style.first_image.resize((width, height), Image.Resampling.LANCZOS)
            start = image_to_tensor(resized) * self.scale
        else:
            raise ValueError(f"init {config.init!r} names an image, but no init_image was given")
        return start.to(self.device, content.dtype)


class PairRun:
    """One pair on its way through its plan: which task comes next, what it starts from, and the
    pair's result once the last is done. ``started``: the clock reading its records and time
    limit count from (set when its first task reaches the device)."""

    def __init__(self, key: Hashable, request: StyleRequest, config: StyleConfig) -> None:
        self.key = key
        self.request = request
        self.config = config
        self.tasks = plan(request, config)
        self.done: list[StyleResult] = []
        self.started: float | None = None
        self._wholes = sum(task.box is None for task in self.tasks)  # the scales run whole
        # Tiles: the last scale's content, and the canvas each tile is blended into (made at the
        # first tile from the coarser scales' result, a few hundred MB at most).
        self._last_content = fit_longest_side(request.content, config.image_size) if request.tiling else None
        self._canvas: Canvas | None = None

    @property
    def next(self) -> Planned:
        return self.tasks[len(self.done)]

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.tasks)

    def next_inputs(self, pixels: Pixels) -> tuple[Image.Image, Image.Image | None, str]:
        """The next task's content (at its size: its longest side is the task's image_size), start
        image (None: its config's init) and the name its errors give it."""
        task, name = self.next, self.request.content_name
        previous = self.done[-1].image if self.done else self.request.init_image
        if task.box is None:
            return fit_longest_side(self.request.content, task.config.image_size), previous, name
        assert self._last_content is not None and self.request.tiling is not None
        if self._canvas is None:
            content = (image_to_tensor(self._last_content) * pixels.scale).to(pixels.device, pixels.dtype)
            whole = pixels.start(content, self.request.style, self.tasks[-1].config, previous)
            self._canvas = Canvas(whole[0].cpu() / pixels.scale, self.request.tiling[1])
        tile = tensor_to_image(self._canvas.crop(task.box)[None].float())
        name = f"{name} (tile {len(self.done) - self._wholes + 1} at {task.box[0]},{task.box[1]})"
        return self._last_content.crop(task.box), tile, name

    def add(self, result: StyleResult) -> None:
        """The next task's result; a tile's is blended into the canvas before the next tile starts."""
        box = self.next.box
        if box is not None:
            assert self._canvas is not None
            self._canvas.put(box, image_to_tensor(result.image)[0])
        self.done.append(result)

    def result(self, seconds: float) -> StyleResult:
        """The pair's result: the last scale's, with the coarser scales' results in ``coarse``.

        Tiles: the blended image, and the tiles' records summed iteration by iteration (a tile
        that stopped sooner adds its last record), since a whole-image loss is what does not
        fit. Deviation: Gatys et al. optimize the whole image; a tile's style loss compares its
        own Gram matrices with the whole style's.
        """
        if self._canvas is None:
            return dataclasses.replace(self.done[-1], coarse=tuple(self.done[:-1]), seconds=seconds)
        assert self._last_content is not None
        coarse, tiles = tuple(self.done[: self._wholes]), self.done[self._wholes :]
        output = self._canvas.image().float()
        if self.config.color_control == "luminance":
            output = keep_colors(output, image_to_tensor(self._last_content)[0]).clamp(0, 1)
        longest = max(len(tile.history) for tile in tiles)
        history = [
            dataclasses.replace(summed([t.history[min(i, len(t.history) - 1)] for t in tiles], seconds), iteration=i)
            for i in range(longest)
        ]
        return StyleResult(
            image=tensor_to_image(output[None]),
            history=history,
            final=history[-1],
            chosen_iteration=longest - 1,
            device=tiles[0].device,
            seconds=seconds,
            coarse=coarse,
            tiles=len(tiles),
            phase_starts=tiles[0].phase_starts,
            stop_reason="converged" if all(t.stop_reason == "converged" for t in tiles) else "iterations",
            precision=tiles[0].precision,
        )
