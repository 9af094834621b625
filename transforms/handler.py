"""EngineHandler: everything the stylize step needs of the engine, behind one object.

As Beam's ``ModelHandler`` is to ``RunInference``: the handler knows how to load the engine
(weights fetched once, the worker's own GPU, the network built on it), how much device memory a
pair may use, which pairs share a batch and how many fit, how a pair's inputs become a request
(style targets cached per worker), whether a pair runs whole, in tiles or not at all (``place``),
and how pairs are run (the engine takes ready requests from the DoFn's queue as slots free up;
one pair at a time after running out of GPU memory; a time limit fails its own pair). The DoFns
(stylize.py) only prepare, claim, write and emit; they take a handler, so that tests can give
them a fake one without torch.

Imports: torch, the engine, storage, devices, limits and records; no Beam.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

import torch
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
    BatchCallback,
    ImageTooSmallError,
    IterationRecord,
    KeyedCallback,
    NonFiniteLossError,
    ReadyQueue,
    StyleRequest,
    StyleResult,
    StyleTargets,
    TimeLimitError,
)
from transforms.nst.tiles import tile_boxes
from transforms.records import Pair

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

STYLE_CACHE_SIZE: Final = 16


class ModelLoadError(RuntimeError):
    """The network could not be built on this worker: a job-level failure, not a pair's."""


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


class EngineHandler:
    """Loads and drives one StyleTransfer for the pipeline.

    ``group_pairs``: how many pairs a group of one batch key holds, on average (groups are
    sharded to about it).

    Args:
        defaults: the job's engine settings (the network every pair shares).
        limits: the job's bounds (input sizes, time limit, device memory).
        batch_size: pairs per batch on a device; None: as many as fit (``auto_batch_size``).
    """

    group_pairs: Final = GROUP_PAIRS

    def __init__(self, defaults: StyleConfig, limits: Limits, batch_size: int | None = None) -> None:
        self.defaults = defaults
        self.limits = limits
        self.batch_size_asked = batch_size
        self._styles = StyleTargetCache()

    # -- what the prepare step needs (no model) ---------------------------------------------

    def content_size(self, pair: Pair) -> tuple[int, int]:
        """The content image's (width, height), from its header."""
        data = storage.read_bytes(pair.content, self.limits.max_input_bytes)
        return decoded_size(data, pair.content, self.limits.max_input_pixels)

    def resolve(self, pair: Pair, content_size: tuple[int, int]) -> Pair:
        """``pair`` with ``image_size`` 0 made its content's own size, checked against the limits,
        and every scale of its result checked against the network, from the header alone: a
        thin or huge content fails here, before any image is decoded or style encoded.

        The default pyramid (``scales`` None) leaves out the coarser scales at which a thin
        content would be under that size: one scale would make its picture, so the default must
        not fail it. Scales that were asked for are checked like the last.

        Raises:
            ValueError: that size is over ``--max_image_size`` (or its coarser scales do not fit it).
            ImageTooSmallError: a side of the result, at some scale, under what the network needs.
        """
        config = pair.config.for_content(*content_size)
        smallest = min_input_side(config.model, config.content_layers + config.style_layers)
        if config.scales is None:
            fitting = tuple(
                (size, n) for size, n in config.coarse_scales if min(fitted_size(*content_size, size)) >= smallest
            )
            if fitting != config.coarse_scales:
                config = config.replace(scales=fitting)
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

    def batch_key(self, pair: Pair, content_size: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        """The key of the pairs ``pair`` can share a batch with, and its result's (width, height)."""
        return repr(batch_key(pair.config, content_size)), fitted_size(*content_size, pair.config.image_size)

    # -- the engine's lifecycle ---------------------------------------------------------------

    @property
    def share_tag(self) -> str:
        """Engines with equal tags are one engine (``apache_beam.utils.shared``)."""
        return repr(self.defaults.network_key())

    def load_engine(self) -> StyleTransfer:
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

    # -- memory ---------------------------------------------------------------------------------

    def budget(self, engine: StyleTransfer) -> int | None:
        """Bytes a pair may use on the engine's device: ``--device_memory_gb``, or what is free."""
        limit = self.limits.device_memory_gb
        return int(limit * 2**30) if limit is not None else free_memory_bytes(engine.device)

    def place(self, engine: StyleTransfer, pair: Pair, output_size: tuple[int, int], budget: int | None) -> Placement:
        """Whole, in tiles, or refused (memory.place)."""
        return place(pair.config, output_size, pair.content, engine.device, budget)

    def batch_size(self, engine: StyleTransfer, pair: Pair, output_size: tuple[int, int], budget: int | None) -> int:
        return self.batch_size_asked or auto_batch_size(engine.device, pair.config, output_size, budget)

    @staticmethod
    def expected_iterations(pair: Pair, output_size: tuple[int, int], tiling: tuple[int, int] | None) -> int:
        """Iterations a pair runs (for progress): each scale's, and the last scale's per tile."""
        config = pair.config
        tiles = len(tile_boxes(*output_size, *tiling)) if tiling else 1
        return sum(n for _, n in config.coarse_scales) + tiles * config.iterations

    # -- inputs -----------------------------------------------------------------------------------

    def request(self, engine: StyleTransfer, pair: Pair, budget: int | None) -> StyleRequest:
        """The pair's inputs read and its style targets encoded (or found in the cache).

        Raises:
            PairTooLargeError: a style image too large to encode within ``budget``.
            OSError, ImageDecodeError, ...: an input that cannot be read.
        """
        config = pair.config
        # Each image is decoded at the largest size it is used at (the last scale's): an input far
        # larger than the result is never held whole in RGB (images.decode_image).
        content = self._read_image(pair.content, config.image_size)
        # An init image is resized to the content's exact size, whatever its own shape: read whole.
        init_image = self._read_image(config.init_location, None) if config.init_location else None
        targets = self._styles.targets(
            engine, pair, content, budget, lambda style: self._read_image(style, config.style_size)
        )
        return StyleRequest(content, targets[-1], config, init_image, pair.content, tuple(targets[:-1]))

    def _read_image(self, location: str, longest_side: int | None) -> Image.Image:
        data = storage.read_bytes(location, self.limits.max_input_bytes)
        return decode_image(data, location, self.limits.max_input_pixels, longest_side)

    # -- running ----------------------------------------------------------------------------------

    def stylize(
        self,
        engine: StyleTransfer,
        queue: ReadyQueue[str],
        slots: int,
        on_record: KeyedCallback,
        tiling: tuple[int, int] | None = None,
    ) -> Iterator[tuple[str, StyleResult | Exception]]:
        """(pair id, its result or exception), as each pair of ``queue`` finishes.

        The caller puts ready requests in ``queue`` under their pair ids, and may put another
        whenever a result comes back. Up to ``slots`` pairs run at once, a finished pair's slot
        taken by the next ready request (``StyleTransfer.stylize_stream``). When a batch runs
        out of GPU memory, its unfinished pairs and all later ones run one at a time. A pair over
        the time limit fails alone. ``tiling`` (tile px, overlap px): each request's last scale
        runs in tiles, one pair at a time.
        """
        if tiling is None and slots > 1:
            try:
                for pair_id, result in engine.stylize_stream(queue, slots, on_record, self.limits.pair_time_limit):
                    yield pair_id, self._explained(result)
                return
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                logger.warning("a batch of %d pairs ran out of GPU memory; running the rest one at a time", slots)
        # One at a time: what the batch left unfinished first, then each ready request in turn.
        while (taken := _next_alone(queue)) is not None:
            pair_id, request = taken
            result = self._alone(engine, request, functools.partial(_as_request, on_record, pair_id), tiling)
            queue.done(pair_id)
            yield pair_id, result

    def _alone(
        self, engine: StyleTransfer, request: StyleRequest, on_record: BatchCallback, tiling: tuple[int, int] | None
    ) -> StyleResult | Exception:
        """One pair on its own (whole or in tiles): its result, or the exception that failed it."""
        try:
            if tiling is None:
                (result,) = engine.stylize_batch([request], on_record, self.limits.pair_time_limit)
                return self._explained(result)
            return engine.stylize_tiled(
                request, *tiling, lambda record: on_record(0, record), self.limits.pair_time_limit
            )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            return exc
        except TimeLimitError as exc:  # a tile over the limit
            return self._explained(exc)
        except (ValueError, NonFiniteLossError) as exc:  # the pair's own problem, as a batch returns it
            return exc

    def _explained(self, result: StyleResult | Exception) -> StyleResult | Exception:
        """``result``, a time limit naming the flag that set it."""
        if isinstance(result, TimeLimitError):
            return TimeLimitError(f"{result} (--pair_time_limit {self.limits.pair_time_limit:g} s)")
        return result


def _as_request(on_record: KeyedCallback, pair_id: str, _: int, record: IterationRecord) -> None:
    """A pair run alone reports its records under its pair id, as a stream does."""
    on_record(pair_id, record)


def _next_alone(queue: ReadyQueue[str]) -> tuple[str, StyleRequest] | None:
    """What a batch that ran out of memory left unfinished, else the next ready request."""
    if queue.taken:
        return next(iter(queue.taken.items()))
    return queue.take()
