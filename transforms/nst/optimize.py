"""The Gatys et al. optimization: an image whose VGG features match content and style targets.

``StyleTransfer`` holds one frozen network; ``encode_styles`` turns style images into reusable
``StyleTargets``; ``stylize_scale`` runs the per-pair optimization of a batch at one scale and
reports every iteration through a callback and in the result. Coarse to fine and tiles are
schedules around that one call (schedules.py). No I/O happens here: callers bring Pillow images.

The image is optimized in the weights family's pixel units (0-255 for the Caffe VGG, [0, 1] for
torchvision's), as the references do: L-BFGS's first step has an L1 norm of 1 in the variable's
units, so the units set the scale of the whole start. In [0, 1] units the Caffe VGG's first unit
steps were measured to overshoot to an infinite loss; in 0-255 units they converge.

Imports: torch, Pillow and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor

from transforms.nst import scheduler, schedules
from transforms.nst.adam import MaskedAdam
from transforms.nst.color import match_colors
from transforms.nst.config import StyleConfig, blend_weights
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.lbfgs import LBFGS, LBFGS_HISTORY
from transforms.nst.losses import gram_matrix
from transforms.nst.objective import Objective
from transforms.nst.precision import resolve_precision
from transforms.nst.records import (
    BatchCallback,
    ImageTooSmallError,
    IterationCallback,
    IterationRecord,
    K,
    KeyedCallback,
    ReadyQueue,
    StyleRequest,
    StyleResult,
    StyleTargets,
    TimeLimitError,
)
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import load_features_state_dict
from transforms.nst.written import BestImages, as_written


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

    def to_input(self, image: Image.Image, what: str) -> Tensor:
        """``image`` as an NCHW tensor in the family's pixel units, checked against the network."""
        tensor = image_to_tensor(image).mul_(self.family.pixel_scale)
        tensor = tensor.to(self.device, self.dtype, memory_format=self.memory_format)
        height, width = tensor.shape[-2:]
        if min(height, width) < self.network.min_side:
            raise ImageTooSmallError(
                f"{what} is {width}x{height} px after resizing; {self.config.model} up to "
                f"{self.network.deepest_layer} needs at least {self.network.min_side} px on "
                "each side (raise image_size, or style_scale for style images)"
            )
        return tensor

    def _check_network(self, key: tuple[object, ...]) -> None:
        if key != self.config.network_key():
            raise ValueError(
                "config or style targets were made for another network "
                f"{key}; this StyleTransfer holds {self.config.network_key()}"
            )

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
        height, width = content.shape[-2:]
        if init_image is not None:
            # An init image, or the previous scale's result: stretched to the content's exact size.
            resized = init_image.resize((width, height), Image.Resampling.LANCZOS)
            start = image_to_tensor(resized) * self.family.pixel_scale
        elif config.init == "content":
            start = content.clone()
        elif config.init == "random":
            # Gatys et al. start from white noise: uniform pixels, seeded for reproducibility.
            generator = torch.Generator().manual_seed(config.seed)
            start = torch.rand(content.shape, generator=generator) * self.family.pixel_scale
        elif config.init == "style":
            # Stretched to the content's exact size: the optimized image must match it.
            resized = style.first_image.resize((width, height), Image.Resampling.LANCZOS)
            start = image_to_tensor(resized) * self.family.pixel_scale
        else:
            raise ValueError(f"init {config.init!r} names an image, but no init_image was given")
        return start.to(self.device, content.dtype)

    def as_written(self, image: Tensor) -> Tensor:
        """``image`` (NCHW, family units) as it will be stored: clamped and rounded to 8 bits."""
        return as_written(image, self.family.pixel_scale)

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

        Raises:
            ImageTooSmallError: the content is smaller than the network can handle.
            NonFiniteLossError: no image seen had a finite loss (only from a non-finite start).
            TimeLimitError: ``time_limit`` passed before the last iteration.
            ValueError: the config or targets do not fit this network.
        """
        request = StyleRequest(content, style, config, init_image, content_name, tuple(coarse_styles))
        on_record = None if callback is None else (lambda _, record: callback(record))
        (result,) = self.stylize_batch([request], on_record, time_limit)
        if isinstance(result, Exception):
            raise result
        return result

    def stylize_batch(
        self,
        requests: Sequence[StyleRequest],
        callback: BatchCallback | None = None,
        time_limit: float | None = None,
    ) -> list[StyleResult | Exception]:
        """Optimize several independent pairs together: one forward and backward per iteration
        over all of them, each with its own targets, loss weights, iteration count, init,
        convergence and L-BFGS state. Each pair's records and result are what :meth:`stylize`
        gives it alone, up to the rounding of batched kernels (tests/test_batching.py).

        All pairs must come out at one size (``image_size`` and aspect ratio) and use one
        optimizer (for Adam, one learning rate), one precision and one set of scales; the
        pipeline groups them so beforehand (``memory.batch_key``). With scales, each scale is a
        batch of its own (``schedules.coarse_to_fine``).

        Args:
            callback: called with (index of the request, record) for every iteration of every pair.
            time_limit: seconds each pair may take, checked after every iteration.

        Returns:
            one entry per request, in order: its result, or the exception that failed it
            (``ImageTooSmallError``, ``NonFiniteLossError``, ``TimeLimitError``, ``ValueError``
            for targets of another network). A failing pair never disturbs the others.

        Raises:
            ValueError: the pairs do not share a size, an optimizer, a precision and scales.
        """
        started = self.clock()
        stages = {(request.config or self.config).coarse_scales for request in requests}
        if len(stages) > 1:
            raise ValueError(f"a batch needs pairs of one set of scales; got {sorted(stages)}")
        if stages == {()}:
            return self.stylize_scale(requests, callback, started, time_limit)
        return schedules.coarse_to_fine(self, requests, callback, started, time_limit)

    def stylize_stream(
        self,
        queue: ReadyQueue[K],
        slots: int,
        callback: KeyedCallback | None = None,
        time_limit: float | None = None,
    ) -> Iterator[tuple[K, StyleResult | Exception]]:
        """Optimize the requests of ``queue`` with up to ``slots`` pairs on the device at once,
        yielding (key, its result or exception) as each pair finishes; ``callback(key, record)``
        for every iteration.

        The caller fills the queue, and may put more whenever a result comes back: the engine
        takes a request when a slot is free and never calls back into the caller to get one
        (ReadyQueue). With L-BFGS, a pair that finishes (converged, or at its
        iteration count) leaves the batch and the next ready request takes its slot at once,
        with its own targets, records and L-BFGS state, so the device stays full while pairs
        converge at different times; each pair's records and result are what :meth:`stylize`
        gives it alone. With Adam (whose moments the batch shares) or coarse scales (the default
        pyramid included), the ready requests run in batches of up to ``slots`` one after
        another, each batch scale by scale, with no refill.

        A request that does not fit the batch (another size, optimizer or precision than the
        first) fails alone with a ValueError on the L-BFGS one-scale path; on the batches' path
        it fails its whole batch. ``time_limit``: seconds each pair may take.
        """
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        first = queue.first()
        if first is None:
            return
        config = first.config or self.config
        if config.coarse_scales or config.optimizer != "lbfgs":
            yield from scheduler.in_batches(queue, slots, self.stylize_batch, callback, time_limit)
            return
        admission = scheduler.Admission(self._entry)
        entries: list[scheduler.Entry] = []
        while len(entries) < slots:
            taken = yield from scheduler.next_admitted(queue, admission)
            if taken is None:
                break
            entries.append(taken)
        if entries:
            yield from self._optimize(entries, queue, admission, self.clock(), time_limit, callback)

    def stylize_tiled(
        self,
        request: StyleRequest,
        tile: int,
        overlap: int,
        callback: IterationCallback | None = None,
        time_limit: float | None = None,
    ) -> StyleResult:
        """One pair whose last scale is too large for the device: its coarser scales (if any)
        whole, then the last scale in overlapping tiles of at most ``tile`` px a side
        (``schedules.tiled``). Raises what :meth:`stylize` raises."""
        on_record = None if callback is None else (lambda _, record: callback(record))
        return schedules.tiled(self, request, tile, overlap, on_record, self.clock(), time_limit)

    def stylize_scale(
        self, requests: Sequence[StyleRequest], callback: BatchCallback | None, started: float, time_limit: float | None
    ) -> list[StyleResult | Exception]:
        """One scale of a batch: the single-scale optimization every schedule wraps. ``started``:
        the :attr:`clock` reading the batch's records and ``time_limit`` count from."""
        outcomes: list[StyleResult | Exception | None] = [None] * len(requests)
        batch: list[scheduler.Entry] = []
        for index, request in enumerate(requests):
            try:
                batch.append(self._entry(index, request))
            except ValueError as exc:  # ImageTooSmallError is a ValueError
                outcomes[index] = exc
        admission = scheduler.Admission(self._entry)
        for entry in batch:  # the caller grouped them: a pair that does not fit fails the batch
            admission.check(entry)
        if batch:
            nothing_waits: ReadyQueue[int] = ReadyQueue()
            for index, outcome in self._optimize(batch, nothing_waits, admission, started, time_limit, callback):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _entry(self, key: Hashable, request: StyleRequest) -> scheduler.Entry:
        """The request checked against this engine, with its content image as the network's input."""
        config = request.config or self.config
        self._check_network(config.network_key())
        self._check_network(request.style.network_key)
        if not config.image_size:
            raise ValueError("image_size 0 (each content's own size) needs config.for_content(*content.size) first")
        if request.style.size != config.style_size:
            raise ValueError(
                f"style targets were encoded at {request.style.size} px but the config needs "
                f"{config.style_size} px (image_size x style_scale)"
            )
        content = self.to_input(fit_longest_side(request.content, config.image_size), request.content_name)
        return scheduler.Entry(key, request, config, content, resolve_precision(config, self.device, self.dtype))

    def _optimizer(self, pixels: Tensor, config: StyleConfig) -> LBFGS | MaskedAdam:
        """The batch's optimizer (Adam runs as the references run it)."""
        count, scale = pixels.shape[0], self.family.pixel_scale
        if config.optimizer == "adam":
            return MaskedAdam(pixels, lr=config.learning_rate * scale, problems=count)
        # One L-BFGS iteration per step() is one forward and backward per recorded iteration,
        # with unit steps and no line search, as neural-style runs it; our LBFGS computes
        # torch.optim.LBFGS's directions without GPU synchronizations and undoes diverging
        # steps (lbfgs.py). Its bounds apply to each pair from its in-range restart on.
        optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY, bounds=(0.0, scale), problems=count)
        optimizer.restart(torch.ones(count, dtype=torch.bool, device=self.device), bounded=False)
        return optimizer

    def _optimize(
        self,
        entries: list[scheduler.Entry],
        queue: ReadyQueue[K],
        admission: scheduler.Admission,
        started: float,
        time_limit: float | None,
        callback: KeyedCallback | None,
    ) -> Iterator[tuple[K, StyleResult | Exception]]:
        """The optimization of same-size pairs, ``entries`` at first; as each finishes, its
        result is yielded and the next ready request of ``queue`` takes its slot (scheduler.py:
        refill, and the shrink of an L-BFGS batch when none is ready)."""
        objective = Objective(
            self.network,
            torch.cat([e.content for e in entries]),
            [e.request.style.grams for e in entries],
            [e.config for e in entries],
            entries[0].precision,
        )
        # The optimized parameter is a contiguous NHWC tensor: L-BFGS flattens each pair's
        # pixels, and its NCHW permutation is exactly the channels_last layout the network wants.
        pixels = torch.cat([self._start(e) for e in entries]).requires_grad_(True)
        batch = scheduler.RunningBatch(
            objective,
            pixels,
            self._optimizer(pixels, entries[0].config),
            BestImages(pixels),
            [scheduler.Slot(entry, started, 0) for entry in entries],
            self.clock,
            self._start,
        )
        latest: list[Tensor] = []  # the loss parts of the step's one evaluation
        iteration = 0  # of the batch, for BestImages; each slot counts its own

        def closure() -> Tensor:
            batch.optimizer.zero_grad(set_to_none=True)
            parts = batch.objective(batch.pixels.permute(0, 3, 1, 2))
            parts[:, 0].sum().backward()  # the pairs are independent: each gets its own gradient
            batch.best.update(parts[:, 0].detach(), batch.pixels, batch.optimizer.active, iteration)
            latest[:] = [parts.detach()]
            return parts[:, 0]

        while any(batch.slots):
            self._switch_phase(batch)
            batch.optimizer.step(closure)  # both optimizers evaluate the closure exactly once
            iteration += 1
            finished = self._record(batch, latest[0], callback, time_limit)
            if not finished:
                continue
            for key, outcome in batch.results(finished, self.family.pixel_scale, str(self.device), callback):
                queue.done(key)
                yield key, outcome
            for k in finished:
                entry = yield from scheduler.next_admitted(queue, admission)
                batch.refill(k, entry, iteration)
            batch.shrink()
            batch.mark_active()

    def _switch_phase(self, batch: scheduler.RunningBatch) -> None:
        """The pairs whose L-BFGS last phase begins now restart from the clamped image, kept in range.

        Deviation: Gatys et al. and neural-style leave the pixels unconstrained and clamp the
        result, which cost 15-55% of the written image's loss in our measurements. Projecting
        from the start diverged on one of three real pairs (a clamped overshoot the guard cannot
        see), so each pair's last phase restarts L-BFGS from the clamped image with the pixels
        kept in range (docs/method.md). With bf16 the last phase runs in fp32: bf16 activations
        cannot resolve its small steps (bf16 throughout ended 2.3% above fp32 on a real pair,
        bf16 up to here 0.4%; docs/method.md: precision).
        """
        restarting = [slot is not None and slot.begins_last_phase() for slot in batch.slots]
        if not any(restarting) or not isinstance(batch.optimizer, LBFGS):  # Adam has one phase
            return
        objective = batch.objective
        objective.fp32_rows = [fp32 or now for fp32, now in zip(objective.fp32_rows, restarting, strict=True)]
        mask = torch.tensor(restarting, device=self.device)
        with torch.no_grad():
            batch.pixels.copy_(
                torch.where(mask[:, None, None, None], batch.pixels.clamp(0, self.family.pixel_scale), batch.pixels)
            )
        batch.optimizer.restart(mask, bounded=True)

    def _record(
        self, batch: scheduler.RunningBatch, parts: Tensor, callback: KeyedCallback | None, time_limit: float | None
    ) -> list[int]:
        """Each pair's record of the iteration just made; the rows of the pairs that finished
        (done, or over ``time_limit``)."""
        count = len(batch.slots)
        # One device->host copy per iteration for the whole batch. Reading it one iteration
        # late (asynchronous copy + event) was measured on an H100 and did not help at 512 px.
        rejected = batch.optimizer.last_rejected
        if rejected is None:
            raise RuntimeError("the optimizer has not stepped")
        rows = torch.cat([parts.double(), rejected.reshape(count, 1).double()], dim=1).tolist()
        now = self.clock()
        finished: list[int] = []
        for k, slot in enumerate(batch.slots):
            if slot is None:
                continue
            record = IterationRecord.from_values(
                slot.iteration, rows[k][:-1], slot.entry.config.style_layers, now - slot.started, bool(rows[k][-1])
            )
            slot.history.append(record)
            if callback is not None:
                callback(slot.entry.key, record)
            if slot.advance(record.total):
                finished.append(k)
            elif time_limit is not None and now - slot.started > time_limit:
                slot.failure = TimeLimitError(
                    f"over the time limit of {time_limit:g} s at iteration {slot.iteration} of "
                    f"{slot.entry.config.iterations}" + ("" if count == 1 else f" (in a batch of {count} pairs)")
                )
                finished.append(k)
        return finished

    def _start(self, entry: scheduler.Entry) -> Tensor:
        """A pair's starting pixels: (1, H, W, 3), family units, contiguous."""
        start = self.initial_image(entry.content, entry.request.style, entry.config, entry.request.init_image)
        return start.permute(0, 2, 3, 1).contiguous()


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
