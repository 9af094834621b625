"""Schedules that wrap the single-scale optimization: coarse to fine, and tiles.

Each calls ``StyleTransfer.stylize_scale`` once per scale (or per tile) and threads the images
between the calls; neither knows how a scale is optimized.

Imports: torch, Pillow and the engine's records, images, colour and tiles; not optimize.py (the
engine comes in as an argument).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor

from transforms.nst.color import keep_colors
from transforms.nst.config import StyleConfig
from transforms.nst.families import WeightsFamily
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.records import BatchCallback, StyleRequest, StyleResult, StyleTargets, summed
from transforms.nst.tiles import Canvas, tile_boxes


class ScaleEngine(Protocol):
    """What a schedule needs of the engine (optimize.StyleTransfer)."""

    config: StyleConfig
    family: WeightsFamily
    device: torch.device

    def clock(self) -> float: ...

    def stylize_scale(
        self, requests: Sequence[StyleRequest], callback: BatchCallback | None, started: float, time_limit: float | None
    ) -> list[StyleResult | Exception]: ...

    def initial_image(
        self, content: Tensor, style: StyleTargets, config: StyleConfig, init_image: Image.Image | None
    ) -> Tensor: ...


def coarse_to_fine(
    engine: ScaleEngine,
    requests: Sequence[StyleRequest],
    callback: BatchCallback | None,
    started: float,
    time_limit: float | None,
) -> list[StyleResult | Exception]:
    """Each scale of ``config.stages`` in turn, as a batch of single-scale pairs starting from the
    previous scale's results (upscaled), as pystiche's pyramid wraps its image optimization; a
    pair that fails at a scale leaves. Returns one result or exception per request, in order."""
    outcomes: list[StyleResult | Exception | None] = [None] * len(requests)
    done: list[list[StyleResult]] = [[] for _ in requests]
    stages = (requests[0].config or engine.config).stages
    for stage in range(len(stages)):
        members, staged = [], []
        for index, request in enumerate(requests):
            config = request.config or engine.config
            if outcomes[index] is not None:
                continue
            if len(request.coarse_styles) != len(config.coarse_scales):
                outcomes[index] = ValueError(_coarse_targets_wanted(len(request.coarse_styles), config))
                continue
            last = stage == len(stages) - 1
            members.append(index)
            staged.append(
                dataclasses.replace(
                    request,
                    config=config.at_stage(stage),
                    style=request.style if last else request.coarse_styles[stage],
                    init_image=done[index][-1].image if done[index] else request.init_image,
                    coarse_styles=(),
                )
            )
        if not staged:
            break
        on_record = None if callback is None else (lambda k, record, members=members: callback(members[k], record))
        for index, result in zip(members, engine.stylize_scale(staged, on_record, started, time_limit), strict=True):
            if isinstance(result, Exception):
                outcomes[index] = result
            else:
                done[index].append(result)
    return [
        outcome if outcome is not None else dataclasses.replace(results[-1], coarse=tuple(results[:-1]))
        for outcome, results in zip(outcomes, done, strict=True)
    ]


def _coarse_targets_wanted(given: int, config: StyleConfig) -> str:
    """What a request with the wrong number of coarse style targets is told: what to pass."""
    sizes = ", ".join(str(size) for size, _ in config.coarse_scales) or "none"
    return (
        f"{given} coarse style targets for {len(config.coarse_scales)} scales (coarser scales: {sizes} px): "
        "pass coarse_styles encoded at each one's config.at_stage(i).style_size, "
        "or scales=() for one scale (transforms.nst.stylize does this for you)"
    )


def tiled(
    engine: ScaleEngine,
    request: StyleRequest,
    tile: int,
    overlap: int,
    callback: BatchCallback | None,
    started: float,
    time_limit: float | None,
) -> StyleResult:
    """One pair whose last scale is too large for the device: its coarser scales (if any) whole,
    then the last scale in overlapping tiles of at most ``tile`` px a side.

    Each tile is optimized from the image so far (the previous scale upscaled, with the tiles done
    before it blended in) against its own part of the content and the whole image's style
    targets, and put back with weights that ramp across the ``overlap`` (tiles.py), so no seam
    shows. Deviation: Gatys et al. optimize the whole image; a tile's style loss compares its own
    Gram matrices with the whole style's. The result's history and ``final`` sum the tiles'
    records (a whole-image loss is what does not fit).

    Raises what ``StyleTransfer.stylize`` raises.
    """
    config = request.config or engine.config
    coarse = _coarse_scales(engine, request, config, callback, started, time_limit)
    init_image = coarse[-1].image if coarse else request.init_image
    last = config.at_stage(len(config.coarse_scales))
    content = fit_longest_side(request.content, last.image_size)
    content_pixels = image_to_tensor(content)[0]
    scale = engine.family.pixel_scale
    # The whole starting image (a few hundred MB at most, never a network's activations).
    start = engine.initial_image(content_pixels[None] * scale, request.style, last, init_image)
    canvas = Canvas(start[0].cpu() / scale, overlap)
    done: list[StyleResult] = []
    for index, box in enumerate(tile_boxes(*content.size, tile, overlap)):  # each blended in before the next starts
        done.append(_tile(engine, request, last, content, canvas, box, index, callback, started, time_limit))
    output = canvas.image().float()
    if last.color_control == "luminance":
        output = keep_colors(output, content_pixels).clamp(0, 1)
    seconds = engine.clock() - started
    history = [summed([r.history[i] for r in done], seconds) for i in range(len(done[0].history))]
    return StyleResult(
        image=tensor_to_image(output[None]),
        history=history,
        final=history[-1],
        chosen_iteration=last.iterations,
        device=str(engine.device),
        seconds=seconds,
        coarse=tuple(coarse),
        tiles=len(done),
        phase_starts=done[0].phase_starts,
    )


def _tile(
    engine: ScaleEngine,
    request: StyleRequest,
    last: StyleConfig,
    content: Image.Image,
    canvas: Canvas,
    box: tuple[int, int, int, int],
    index: int,
    callback: BatchCallback | None,
    started: float,
    time_limit: float | None,
) -> StyleResult:
    """One tile optimized from the canvas so far and blended back into it."""
    side = max(box[2] - box[0], box[3] - box[1])
    # The tile's own size, with the style targets of the whole image (style_size unchanged);
    # luminance transfer is applied once, to the blended whole.
    tile_config = last.replace(
        image_size=side,
        style_scale=last.style_size / side,
        color_control="none" if last.color_control == "luminance" else last.color_control,
    )
    tile_request = StyleRequest(
        content.crop(box),
        request.style,
        tile_config,
        tensor_to_image(canvas.crop(box)[None].float()),
        f"{request.content_name} (tile {index + 1} at {box[0]},{box[1]})",
    )
    (result,) = engine.stylize_scale([tile_request], callback, started, time_limit)
    if isinstance(result, Exception):
        raise result
    canvas.put(box, image_to_tensor(result.image)[0])
    return result


def _coarse_scales(
    engine: ScaleEngine,
    request: StyleRequest,
    config: StyleConfig,
    callback: BatchCallback | None,
    started: float,
    time_limit: float | None,
) -> list[StyleResult]:
    """A tiled pair's coarser scales, whole, each from the previous one's result."""
    if len(request.coarse_styles) != len(config.coarse_scales):
        raise ValueError(_coarse_targets_wanted(len(request.coarse_styles), config))
    coarse: list[StyleResult] = []
    init_image = request.init_image
    for stage, targets in enumerate(request.coarse_styles):
        staged = StyleRequest(request.content, targets, config.at_stage(stage), init_image, request.content_name)
        (result,) = engine.stylize_scale([staged], callback, started, time_limit)
        if isinstance(result, Exception):
            raise result
        coarse.append(result)
        init_image = result.image
    return coarse
