"""The Gatys et al. optimization: an image whose VGG features match content and style targets.

``StyleTransfer`` holds one frozen network; ``encode_styles`` turns style images into reusable
``StyleTargets``; ``run`` optimizes the requests of a queue, each pair as a sequence of
single-scale tasks (tasks.py: its scales, and tiles) in batches whose freed slots are refilled at
once (runner.py); ``stylize`` is one pair through that same loop. No I/O happens here: callers
bring Pillow images.

The image is optimized in the weights family's pixel units (0-255 for the Caffe VGG, [0, 1] for
torchvision's), as the references do: L-BFGS's first step has an L1 norm of 1 in the variable's
units, so the units set the scale of the whole start. In [0, 1] units the Caffe VGG's first unit
steps were measured to overshoot to an infinite loss; in 0-255 units they converge.

Imports: torch, Pillow and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor

from transforms.nst.color import match_colors
from transforms.nst.config import StyleConfig, blend_weights
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.losses import gram_matrix
from transforms.nst.records import (
    IterationCallback,
    K,
    KeyedCallback,
    PairFinished,
    ReadyQueue,
    RunEvent,
    StyleRequest,
    StyleResult,
    StyleTargets,
)
from transforms.nst.runner import SlotRunner
from transforms.nst.tasks import Pixels
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import load_features_state_dict
from transforms.nst.written import as_written


class StyleTransfer:
    """One frozen VGG on one device, ready to encode styles and stylize many contents.

    Args:
        config: its network fields (model, weights, pooling, layers, device) build the network;
            the others are the defaults of :meth:`stylize`.
        weights_file: a local state-dict file to read instead of ``config.weights``, for callers
            that fetched a remote weights location themselves (``config.weights`` stays the
            name recorded in logs).
    """

    # Seconds, for the records and the time limit: a class attribute, so that a test can put a
    # clock that counts iterations here and never depend on the machine's speed.
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(
        self, config: StyleConfig | None = None, weights_file: str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        self.config = config or StyleConfig()
        self.device = self.config.torch_device()
        # float32 for work; float64 lets tests compare batched and single-pair runs exactly.
        self.dtype = dtype
        self.family = self.config.family
        # NHWC (channels_last) measured faster at the default 512 px: ~5% with oneDNN on a
        # 2-core CPU, slightly on an H100 (where NCHW wins at 1024 px); see docs/performance.md.
        # Every tensor entering the network takes this layout.
        self.memory_format = torch.channels_last
        state = load_features_state_dict(self.config.model, weights_file or self.config.weights, self.config.seed)
        layers = self.config.content_layers + self.config.style_layers
        network = VGGFeatures(self.config.model, layers, state, self.family, self.config.pooling)
        # torch's stubs lack the (device, dtype, memory_format) overload that Module.to takes.
        self.network = network.to(self.device, dtype, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.pixels = Pixels(
            self.device,
            dtype,
            self.memory_format,
            self.family.pixel_scale,
            self.network.min_side,
            f"{self.config.model} up to {self.network.deepest_layer}",
        )

    def to_input(self, image: Image.Image, what: str) -> Tensor:
        """``image`` as an NCHW tensor in the family's pixel units, checked against the network."""
        return self.pixels.tensor(image, what)

    @torch.no_grad()
    def encode_styles(
        self,
        styles: Sequence[Image.Image],
        weights: Sequence[float] | None = None,
        size: int | None = None,
        names: Sequence[str] | None = None,
        colors_of: Image.Image | None = None,
    ) -> StyleTargets:
        """Gram targets of ``styles`` blended by ``weights`` (normalized to sum 1).

        Each style image is resized so its longest side is ``size`` (default: the config's
        ``style_size``), and the targets are the weighted average of the per-image Grams.
        ``names`` (URLs, say) are what errors call the images. ``colors_of``: a content image
        whose colours the styles take first (``color_control="histogram"``; the targets are
        then this content's own).
        """
        size = size or self.config.style_size
        blend = blend_weights(len(styles), weights)
        resized = [fit_longest_side(image, size) for image in styles]
        if colors_of is not None:
            reference = image_to_tensor(colors_of)[0]
            resized = [tensor_to_image(match_colors(image_to_tensor(image)[0], reference)[None]) for image in resized]
        grams: dict[str, Tensor] = {}
        for index, (image, weight) in enumerate(zip(resized, blend, strict=True)):
            name = names[index] if names else f"style image {index + 1}"
            features = self.network(self.to_input(image, name))
            for layer in self.config.style_layers:
                gram = weight * gram_matrix(features[layer])
                grams[layer] = grams[layer] + gram if layer in grams else gram
        return StyleTargets(grams, size, resized[0], self.config.network_key())

    def initial_image(
        self, content: Tensor, style: StyleTargets, config: StyleConfig, init_image: Image.Image | None
    ) -> Tensor:
        """The starting image of a pair whose content is ``content`` (NCHW, family units): NCHW on
        the engine's device, in the family's pixel units."""
        return self.pixels.start(content, style, config, init_image)

    def as_written(self, image: Tensor) -> Tensor:
        """``image`` (NCHW, family units) as it will be stored: clamped and rounded to 8 bits."""
        return as_written(image, self.family.pixel_scale)

    def run(
        self,
        queue: ReadyQueue[K],
        slots: int,
        callback: KeyedCallback | None = None,
        time_limit: float | None = None,
    ) -> Iterator[RunEvent[K]]:
        """Optimize the requests of ``queue``, up to ``slots`` pairs of each task shape on the
        device at once: ``PairTaken(key)`` as each request is taken (the caller may put the next
        one), ``PairFinished(key, result or exception)`` as each pair ends, and ``RunEnded`` with
        how full the slots were (``SlotUse``) once the queue and the slots are empty;
        ``callback(key, record)`` for every iteration of every scale and tile.

        Each pair runs as its tasks (its coarser scales, then its last scale whole or in the
        request's ``tiling``); a slot freed by a task that finished (converged, at its iteration
        cap, over ``time_limit``, failed) is filled at once by the next ready task of its shape
        (runner.py). Each pair's records and result are what it gets alone, up to the rounding of
        batched kernels (tests/test_batching.py). A pair that cannot run (a content too small,
        targets of another network) ends at once with its ValueError; the others go on.
        ``time_limit``: seconds each pair may take from its first step.
        """
        runner: SlotRunner[K] = SlotRunner(
            self.network, self.pixels, self.config, slots, self.clock, str(self.device), callback, time_limit
        )
        return runner.run(queue)

    def stylize(
        self,
        content: Image.Image,
        style: StyleTargets,
        config: StyleConfig | None = None,
        init_image: Image.Image | None = None,
        callback: IterationCallback | None = None,
        content_name: str = "content image",
        time_limit: float | None = None,
        coarse_styles: Sequence[StyleTargets] = (),
        tiling: tuple[int, int] | None = None,
    ) -> StyleResult:
        """Optimize an image with ``content``'s features and ``style``'s Gram statistics.

        Args:
            content: the content image; resized so its longest side is ``config.image_size``.
            style: targets from :meth:`encode_styles` for this network and ``style_size``.
            config: per-pair settings (default: the constructor's); network fields must match.
            init_image: the starting image when ``config.init`` names an image location.
            callback: called with every iteration's record, as it happens.
            content_name: what errors call the content image (its URL, say).
            time_limit: seconds this call may take; checked after every iteration (on the host:
                no device synchronization beyond the one each iteration makes already).
            coarse_styles: with ``config.coarse_scales``, targets for each coarser scale, encoded at
                its ``config.at_stage(i).style_size``.
            tiling: (tile px, overlap px): the last scale in overlapping tiles (Large prints).

        Raises:
            ImageTooSmallError: the content is smaller than the network can handle.
            NonFiniteLossError: no image seen had a finite loss (only from a non-finite start).
            TimeLimitError: ``time_limit`` passed before the last iteration.
            ValueError: the config or targets do not fit this network.
        """
        request = StyleRequest(content, style, config, init_image, content_name, tuple(coarse_styles), tiling)
        on_record = None if callback is None else (lambda _, record: callback(record))
        queue: ReadyQueue[int] = ReadyQueue([(0, request)])
        (result,) = [e.outcome for e in self.run(queue, 1, on_record, time_limit) if isinstance(e, PairFinished)]
        if isinstance(result, Exception):
            raise result
        return result


def stylize(
    content: Image.Image,
    styles: Sequence[Image.Image],
    config: StyleConfig | None = None,
    style_weights: Sequence[float] | None = None,
    init_image: Image.Image | None = None,
    callback: IterationCallback | None = None,
) -> StyleResult:
    """One-shot convenience: build the network, encode ``styles``, stylize ``content``."""
    engine = StyleTransfer(config)
    config = engine.config.for_content(*content.size)
    colors_of = content if config.color_control == "histogram" else None
    targets = engine.encode_styles(styles, style_weights, config.style_size, colors_of=colors_of)
    coarse = tuple(
        engine.encode_styles(styles, style_weights, config.at_stage(stage).style_size, colors_of=colors_of)
        for stage in range(len(config.coarse_scales))
    )
    return engine.stylize(content, targets, config, init_image=init_image, callback=callback, coarse_styles=coarse)
