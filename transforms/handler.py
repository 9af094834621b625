"""EngineHandler: what the stylize step needs of the engine, in Beam's ``ModelHandler`` shape.

As a ``ModelHandler`` is to ``RunInference``, the handler is a narrow protocol of three verbs
(stylize.Handler): ``load`` the engine (weights fetched once, the worker's own GPU, the network
built on it), ``place`` a pair (whole, in tiles or refused within the device's memory, how many
pairs share its batches, how many iterations it runs), and ``run`` a queue of ready requests
(StyleTransfer.run: every scale and tile a task in slots refilled as they free). What a pair needs
before the model (its content's size, its resolved settings, its batch key) and its inputs read
into a request, with the worker's style-target cache, are ``inputs`` (PairInputs). The DoFns
(stylize.py) only prepare, claim, write and emit; tests give them a fake handler without torch.

The engine is loaded in ``process``, on the first group a DoFn instance sees, not in ``setup``:
a rerun whose pairs are all done never reaches that step and so never loads the model, and
``apache_beam.utils.shared`` hands every DoFn instance of the worker process the one engine.

Imports: torch, the engine, storage, devices, limits and records; no Beam.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

from PIL import Image

from transforms import devices, storage
from transforms.limits import Limits
from transforms.nst.config import StyleConfig
from transforms.nst.images import decode_image, decoded_size, fitted_size
from transforms.nst.layers import min_input_side
from transforms.nst.memory import (
    GROUP_PAIRS,
    Placement,
    auto_batch_size,
    batch_key,
    free_memory_bytes,
    place,
    style_refusal,
)
from transforms.nst.optimize import StyleTransfer
from transforms.nst.records import (
    ImageTooSmallError,
    KeyedCallback,
    PairFinished,
    ReadyQueue,
    RunEvent,
    StyleRequest,
    StyleTargets,
    TimeLimitError,
)
from transforms.nst.tasks import fitting_scales
from transforms.nst.tiles import tile_boxes
from transforms.records import Pair

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

STYLE_CACHE_SIZE: Final = 16
# The thin-picture rule (PairInputs.resolve) never makes a style smaller than this, px.
MIN_CAPPED_STYLE_SIDE: Final = 512


class ModelLoadError(RuntimeError):
    """The network could not be built on this worker: a job-level failure, not a pair's."""


def device_budget(engine: StyleTransfer, limits: Limits) -> int | None:
    """Bytes a pair may use on the engine's device: ``--device_memory_gb``, or what is free."""
    limit = limits.device_memory_gb
    return int(limit * 2**30) if limit is not None else free_memory_bytes(engine.device)


class StyleTargetCache:
    """The last STYLE_CACHE_SIZE style targets a worker encoded: a few styles are usually shared
    by many pairs, and encoding one costs a forward pass at the style size."""

    def __init__(self) -> None:
        # (styles, weights, size, content for histogram colours) -> targets, oldest first.
        self._entries: OrderedDict[tuple[Any, ...], StyleTargets] = OrderedDict()

    def targets(
        self,
        engine: StyleTransfer,
        pair: Pair,
        content: Image.Image,
        budget: int | None,
        read_image: Callable[[str], Image.Image],
    ) -> list[StyleTargets]:
        """Targets at each scale's style size, coarse to fine; the style images are read at most
        once for all of them, and not at all when every size is cached. A style image too large to
        encode within ``budget`` bytes raises PairTooLargeError first."""
        config = pair.config
        # Histogram colour control gives each content its own targets (styles in its colours).
        matched = config.color_control == "histogram"
        images: list[Image.Image] = []
        found = []
        for stage in range(len(config.stages)):
            size = config.at_stage(stage).style_size
            key = (pair.styles, pair.style_weights, size, pair.content if matched else None)
            if key in self._entries:
                self._entries.move_to_end(key)
            else:
                if not images:
                    images = [read_image(s) for s in pair.styles]
                    # Checked once, at the last scale's style size (the largest), before any scale's work.
                    for location, image in zip(pair.styles, images, strict=True):
                        if refusal := style_refusal(location, image.size, config, engine.device, budget):
                            raise refusal
                self._entries[key] = engine.encode_styles(
                    images, pair.style_weights, size, names=pair.styles, colors_of=content if matched else None
                )
                if len(self._entries) > STYLE_CACHE_SIZE:
                    self._entries.popitem(last=False)
            found.append(self._entries[key])
        return found


class PairInputs:
    """A pair's inputs: what it needs before the model (its content's size from the header, its
    settings resolved for that size, the key of the pairs it can share a batch with), and, once
    the engine is loaded, its images read and its style targets encoded (cached per worker).

    Args:
        limits: the job's bounds on inputs (bytes, pixels, sizes).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._styles = StyleTargetCache()

    def content_size(self, pair: Pair) -> tuple[int, int]:
        """The content image's (width, height), from its header."""
        data = storage.read_bytes(pair.content, self.limits.max_input_bytes)
        return decoded_size(data, pair.content, self.limits.max_input_pixels)

    def resolve(self, pair: Pair, content_size: tuple[int, int]) -> Pair:
        """``pair`` with ``image_size`` 0 made its content's own size, checked against the limits,
        its scales those that fit the content (tasks.fitting_scales), and every scale of its
        result checked against the network, from the header alone: a thin or huge content fails
        here, before any image is decoded or style encoded.

        Raises:
            ValueError: that size is over ``--max_image_size`` (or its coarser scales do not fit it).
            ImageTooSmallError: a side of the result, at some scale, under what the network needs.
        """
        try:
            config = pair.config.for_content(*content_size)
        except ValueError as exc:
            width, height = content_size
            raise ValueError(
                f"{pair.content}: a {width}x{height} content at its own size (image_size 0) is no larger than "
                f"its coarser scales ({exc}): lower --scales, or give an image_size"
            ) from exc
        smallest = min_input_side(config.model, config.content_layers + config.style_layers)
        config = fitting_scales(config, content_size, smallest)
        # The style is encoded at the result's longest side (x style_scale): for a thin content
        # that is a square picture of far more pixels than the result (a 4000x16 content at its
        # own size encoded its style at 4000 px: 13 GB). Deviation: the style's side is at most
        # twice the side of a square of the result's area (x style_scale), or 512 px: only a
        # result past an aspect of 4:1 and over 512 px is ever capped.
        width, height = fitted_size(*content_size, config.image_size)
        most = max(2 * math.sqrt(width * height) * config.style_scale, MIN_CAPPED_STYLE_SIDE)
        if config.style_size > most:
            config = config.replace(style_scale=most / config.image_size)
        if config is not pair.config:
            self.limits.check(config)
            pair = dataclasses.replace(pair, config=config)
        for size, _ in config.stages:
            width, height = fitted_size(*content_size, size)
            if min(width, height) < smallest:
                raise ImageTooSmallError(
                    f"{pair.content}: a {content_size[0]}x{content_size[1]} content gives a {width}x{height} px "
                    f"result at {size} px; {config.model} needs at least {smallest} px on each side "
                    "(raise image_size, or crop the image)"
                )
        return pair

    @staticmethod
    def batch_key(pair: Pair, content_size: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        """The key of the pairs ``pair`` is grouped with (memory.batch_key), and its result's
        (width, height)."""
        return repr(batch_key(pair.config, content_size)), fitted_size(*content_size, pair.config.image_size)

    def request(self, engine: StyleTransfer, pair: Pair, placement: Placement) -> StyleRequest:
        """The pair's inputs read and its style targets encoded (or found in the cache), as
        ``placement`` (EngineHandler.place) put it: whole or in its tiles, within its budget.

        Raises:
            PairTooLargeError: a style image too large to encode within the device's memory.
            OSError, ImageDecodeError, ...: an input that cannot be read.
        """
        config = pair.config
        # Each image is decoded at the largest size it is used at (the last scale's): an input far
        # larger than the result is never held whole in RGB (images.decode_image).
        content = self._read_image(pair.content, config.image_size)
        # An init image is resized to the content's exact size, whatever its own shape: read whole.
        init_image = self._read_image(config.init_location, None) if config.init_location else None
        targets = self._styles.targets(
            engine, pair, content, placement.budget, lambda style: self._read_image(style, config.style_size)
        )
        return StyleRequest(
            content, targets[-1], config, init_image, pair.content, tuple(targets[:-1]), placement.tiling
        )

    def _read_image(self, location: str, longest_side: int | None) -> Image.Image:
        data = storage.read_bytes(location, self.limits.max_input_bytes)
        return decode_image(data, location, self.limits.max_input_pixels, longest_side)


class EngineHandler:
    """Loads, places and runs one StyleTransfer for the pipeline (stylize.Handler).

    Args:
        defaults: the job's engine settings (the network every pair shares).
        limits: the job's bounds (input sizes, time limit, device memory).
        batch_size: slots per task shape on a device; None: as many as fit (``auto_batch_size``).
    """

    # How many pairs a group of one batch key holds, on average (groups are sharded to about it).
    group_pairs: Final = GROUP_PAIRS

    def __init__(self, defaults: StyleConfig, limits: Limits, batch_size: int | None = None) -> None:
        self.defaults = defaults
        self.limits = limits
        self.batch_size = batch_size
        self.inputs = PairInputs(limits)

    @property
    def share_tag(self) -> str:
        """Engines with equal tags are one engine (``apache_beam.utils.shared``)."""
        return repr(self.defaults.network_key())

    def load(self) -> StyleTransfer:
        """The network on this worker's device, weights fetched once.

        Raises:
            ModelLoadError: it cannot be built (weights, device): the job's problem, not a pair's.
        """
        defaults = self.defaults
        try:
            # gs://... weights land in the temp folder once.
            local = storage.local_copy(defaults.weights_location) if defaults.weights_location else None
            started = time.perf_counter()
            pinned = devices.pin_cuda_device() if defaults.device != "cpu" else None  # one GPU per worker process
            engine = StyleTransfer(defaults, weights_file=local)
        except Exception as exc:
            raise ModelLoadError(f"the model could not be loaded ({type(exc).__name__}: {exc})") from exc
        logger.info(
            "loaded %s (%s weights) on %s in %.1f s",
            defaults.model,
            defaults.weights,
            engine.device if pinned is None or engine.device.type != "cuda" else f"cuda:{pinned}",
            time.perf_counter() - started,
        )
        return engine

    def place(self, engine: StyleTransfer, pair: Pair, output_size: tuple[int, int]) -> Placement:
        """Whole, in tiles, or refused within the device's memory (memory.place), with the slots
        its batches have and the iterations it runs at most (each scale's, each tile's)."""
        budget = device_budget(engine, self.limits)
        placement = place(pair.config, output_size, pair.content, engine.device, budget)
        config = pair.config
        tiles = len(tile_boxes(*output_size, *placement.tiling)) if placement.tiling else 1
        slots = self.batch_size or auto_batch_size(engine.device, config, output_size, budget)
        iterations = sum(n for _, n in config.coarse_scales) + tiles * config.iterations
        slots = 1 if placement.tiling else slots
        return dataclasses.replace(placement, slots=slots, iterations=iterations, budget=budget)

    def run(
        self, engine: StyleTransfer, queue: ReadyQueue[str], slots: int, on_record: KeyedCallback
    ) -> Iterator[RunEvent[str]]:
        """The engine's run over ``queue`` (StyleTransfer.run), under the job's time limit, a
        time limit naming the flag that set it."""
        limit = self.limits.pair_time_limit
        for event in engine.run(queue, slots, on_record, limit):
            if isinstance(event, PairFinished) and isinstance(event.outcome, TimeLimitError):
                event = PairFinished(event.key, TimeLimitError(f"{event.outcome} (--pair_time_limit {limit:g} s)"))
            yield event
