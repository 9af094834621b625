"""The Gatys et al. optimization: an image whose VGG features match content and style targets.

``StyleTransfer`` holds one frozen network; ``encode_styles`` turns style images into reusable
``StyleTargets``; ``stylize`` runs the per-pair optimization and reports every iteration through a
callback and in the result. No I/O happens here: callers bring Pillow images.

The image is optimized in the weights family's pixel units (0-255 for the Caffe VGG, [0, 1] for
torchvision's), as the references do: L-BFGS's first step has an L1 norm of 1 in the variable's
units, so the units set the scale of the whole start. In [0, 1] units the Caffe VGG's first unit
steps were measured to overshoot to an infinite loss; in 0-255 units they converge.

Imports: torch, Pillow and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from beam_style_transfer.transforms.nst.color import keep_colors, match_colors
from beam_style_transfer.transforms.nst.config import StyleConfig, blend_weights
from beam_style_transfer.transforms.nst.images import fit_longest_side, fitted_size, image_to_tensor, tensor_to_image
from beam_style_transfer.transforms.nst.lbfgs import LBFGS
from beam_style_transfer.transforms.nst.losses import content_loss, gram_matrix, style_loss, tv_loss
from beam_style_transfer.transforms.nst.tiles import Canvas, tile_boxes
from beam_style_transfer.transforms.nst.vgg import VGGFeatures
from beam_style_transfer.transforms.nst.weights import load_features_state_dict


class ImageTooSmallError(ValueError):
    """An image is smaller than the deepest layer used can see."""


class TimeLimitError(TimeoutError):
    """The optimization ran past the caller's time limit (``stylize(time_limit=...)``)."""


class NonFiniteLossError(ArithmeticError):
    """No image seen during the optimization had a finite loss."""


@dataclass(frozen=True)
class IterationRecord:
    """Losses of one evaluated image; each term is weighted, so the terms add up to ``total``.

    ``iteration`` counts the optimizer updates applied before the evaluation: 0 is the initial
    image, and the result's ``final`` record (iteration = ``iterations``) is the image as written.
    ``rejected`` marks an image whose step the divergence guard undid (lbfgs.py).
    """

    iteration: int
    total: float
    content: float
    style: float
    tv: float
    style_layers: dict[str, float]
    seconds: float
    rejected: bool = False

    @classmethod
    def from_values(
        cls, iteration: int, values: Sequence[float], layers: Sequence[str], seconds: float, rejected: bool = False
    ) -> IterationRecord:
        """A record from one row of :class:`Objective`'s output, copied to the host."""
        total, content, style, tv, *per_layer = values
        return cls(
            iteration=iteration,
            total=total,
            content=content,
            style=style,
            tv=tv,
            style_layers=dict(zip(layers, per_layer, strict=True)),
            seconds=seconds,
            rejected=rejected,
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: a non-finite loss (a rejected trial) becomes None, which JSON can hold."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        data = asdict(self)
        for name in ("total", "content", "style", "tv"):
            data[name] = finite(data[name])
        data["style_layers"] = {k: finite(v) for k, v in self.style_layers.items()}
        return data


@dataclass(frozen=True)
class StyleTargets:
    """Blended Gram matrices of one or more style images: encode once, reuse for many contents."""

    grams: dict[str, Tensor]
    # Longest side the style images were encoded at; it must equal the config's style_size.
    size: int
    # The first style image at that size, for init="style".
    first_image: Image.Image
    network_key: tuple[object, ...]


@dataclass(frozen=True)
class StyleResult:
    """The stylized image, one record per iteration, and the record of the written image.

    ``history`` ends with ``final``. ``chosen_iteration`` is the iteration whose pixels were
    written: the last one, unless an earlier image scored lower (then that one is returned).
    """

    image: Image.Image
    history: list[IterationRecord]
    final: IterationRecord
    chosen_iteration: int
    device: str
    seconds: float
    # Coarse-to-fine: the results of the coarser scales, in order (``history`` is the last scale's).
    coarse: tuple[StyleResult, ...] = ()
    # Tiles the last scale ran in (StyleTransfer.stylize_tiled); 1: the whole image at once.
    tiles: int = 1


IterationCallback = Callable[[IterationRecord], None]

# Curvature pairs L-BFGS remembers: torch's and neural-style's default.
LBFGS_HISTORY = 100
# The last fraction of L-BFGS iterations, run with the pixels kept in range (see stylize).
IN_RANGE_FRACTION = 0.2


def batch_key(config: StyleConfig, content_size: tuple[int, int]) -> tuple[object, ...]:
    """Pairs with equal keys can share one :meth:`StyleTransfer.stylize_batch` call, and do so
    without waste: one network, output size, optimizer, precision, iteration count and scales."""
    return (
        config.network_key(),
        fitted_size(*content_size, config.image_size),
        config.optimizer,
        config.learning_rate if config.optimizer == "adam" else None,
        config.precision,
        config.iterations,
        config.scales,
    )


# Bytes per output pixel of one pair, for sizing batches: the network's activations kept for the
# backward pass (VGG19 to relu5_1 holds ~290 floats per input pixel per copy, and a few copies
# live at once), and L-BFGS's history of 2 x LBFGS_HISTORY vectors of 3 floats per pixel.
# Calibrated on the CPU's peak resident set (benchmarks/pairs.py, 128 px, batches of 1 to 8:
# 7,100 bytes a pixel a pair in fp32, 3,300 in bf16; README, Performance), rounded up.
_ACTIVATION_BYTES_PER_PIXEL = {"fp32": 4700, "bf16": 2400}


def estimated_pair_bytes(config: StyleConfig, size: tuple[int, int]) -> int:
    """Device memory one pair of output ``size`` (width, height) needs in a batch, estimated."""
    history = 2 * LBFGS_HISTORY * 3 * 4 if config.optimizer == "lbfgs" else 3 * 4 * 3
    return size[0] * size[1] * (_ACTIVATION_BYTES_PER_PIXEL[config.precision] + history + 100)


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


def _summed(records: Sequence[IterationRecord], seconds: float) -> IterationRecord:
    """One record for several tiles' records of one iteration: their losses added up."""
    first = records[0]
    return IterationRecord(
        iteration=first.iteration,
        total=sum(r.total for r in records),
        content=sum(r.content for r in records),
        style=sum(r.style for r in records),
        tv=sum(r.tv for r in records),
        style_layers={layer: sum(r.style_layers[layer] for r in records) for layer in first.style_layers},
        seconds=seconds,
        rejected=any(r.rejected for r in records),
    )


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
    for size, _ in config.scales:
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


class Objective(nn.Module):
    """The weighted loss of Gatys et al. for N (content, style) pairs: targets held as buffers.

    ``content`` holds the N content images (NCHW, family units); their activations become the
    content targets.

    ``forward(images)`` takes N NCHW images in the family's pixel units and returns an
    ``(N, 4 + style layers)`` tensor, one row ``[total, content, style, tv, *style per layer]``
    per pair, every term weighted by that pair's own config. Pairs share the network and layers.
    """

    def __init__(
        self,
        network: VGGFeatures,
        content: Tensor,
        style_grams: Sequence[dict[str, Tensor]],
        configs: Sequence[StyleConfig],
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layers = configs[0].content_layers
        self.style_layers = configs[0].style_layers
        for layer in self.style_layers:
            self.register_buffer(f"gram_{layer}", torch.cat([grams[layer] for grams in style_grams]))
        device = style_grams[0][self.style_layers[0]].device

        def per_pair(values: list[Any]) -> Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.register_buffer(
            "style_layer_weights",
            per_pair([[c.style_weight * w for w in c.layer_weights.values()] for c in configs]),
        )
        self.register_buffer("content_weight", per_pair([c.content_weight for c in configs]))
        self.register_buffer("tv_weight", per_pair([c.tv_weight for c in configs]))
        self.use_tv = any(c.tv_weight for c in configs)
        self.pixel_scale = configs[0].family.pixel_scale
        self.bf16 = configs[0].precision == "bf16"
        with torch.no_grad():
            # At the objective's own precision, so that the content image scores exactly zero.
            features = self.features(content)
        for layer in self.content_layers:
            self.register_buffer(f"content_{layer}", features[layer])

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """The network's activations at the precision the configs ask for, returned in float32."""
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.network(images)
        return {layer: value.float() for layer, value in features.items()} if self.bf16 else features

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images)
        content = self.content_weight * sum(
            content_loss(features[layer], getattr(self, f"content_{layer}")) for layer in self.content_layers
        )
        styles = self.style_layer_weights * torch.stack(
            [style_loss(features[layer], getattr(self, f"gram_{layer}")) for layer in self.style_layers], dim=1
        )
        style = styles.sum(dim=1)
        # TV is measured on [0, 1] pixels whatever the family, so tv_weight means the same for both.
        tv = self.tv_weight * tv_loss(images / self.pixel_scale) if self.use_tv else torch.zeros_like(content)
        return torch.cat([torch.stack([content + style + tv, content, style, tv], dim=1), styles], dim=1)


@dataclass(frozen=True)
class StyleRequest:
    """One pair of a batch: a content image, its style targets, its settings."""

    content: Image.Image
    style: StyleTargets
    # Per-pair settings (default: the engine's); network fields must match the engine's.
    config: StyleConfig | None = None
    # The starting image: given, it wins over ``config.init`` (which then names its location).
    init_image: Image.Image | None = None
    # What errors call the content image (its URL, say).
    content_name: str = "content image"
    # Coarse-to-fine: style targets for each of ``config.scales``, at its style size.
    coarse_styles: tuple[StyleTargets, ...] = ()


BatchCallback = Callable[[int, IterationRecord], None]


class StyleTransfer:
    """One frozen VGG on one device, ready to encode styles and stylize many contents.

    Args:
        config: its network fields (model, weights, pooling, layers, device) build the network;
            the others are the defaults of :meth:`stylize`.
        weights_file: a local state-dict file to read instead of ``config.weights``, for callers
            that fetched a remote weights location themselves (``config.weights`` stays the
            name recorded in logs).
    """

    def __init__(
        self, config: StyleConfig | None = None, weights_file: str | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        self.config = config or StyleConfig()
        self.device = self.config.torch_device()
        # float32 for work; float64 lets tests compare batched and single-pair runs exactly.
        self.dtype = dtype
        self.family = self.config.family
        # NHWC (channels_last) measured faster at the default 512 px: ~5% with oneDNN on a
        # 2-core CPU, slightly on an H100 (where NCHW wins at 1024 px); see README, Performance.
        # Every tensor entering the network takes this layout.
        self.memory_format = torch.channels_last
        state = load_features_state_dict(
            self.config.model, weights_file or self.config.weights, self.config.seed
        )
        layers = self.config.content_layers + self.config.style_layers
        network = VGGFeatures(self.config.model, layers, state, self.family, self.config.pooling)
        self.network = network.to(self.device, dtype, memory_format=self.memory_format)

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

    def _initial_image(
        self, content: Tensor, style: StyleTargets, config: StyleConfig, init_image: Image.Image | None
    ) -> Tensor:
        """The starting image, NCHW on the engine's device, in the family's pixel units."""
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
        scale = self.family.pixel_scale
        return image.div(scale).clamp(0, 1).mul(255).round().div(255).mul(scale)

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
            coarse_styles: with ``config.scales``, targets for each coarser scale, encoded at
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
        tiling: tuple[int, int] | None = None,
    ) -> list[StyleResult | Exception]:
        """Optimize several independent pairs together: one forward and backward per iteration
        over all of them, each with its own targets, loss weights, iteration count, init and
        L-BFGS state. Each pair's records and result are what :meth:`stylize` gives it alone, up
        to the rounding of batched kernels (tests/test_batching.py).

        All pairs must come out at one size (``image_size`` and aspect ratio) and use one
        optimizer (for Adam, one learning rate) and one precision; the pipeline groups them so
        beforehand (``batch_key``).

        Args:
            callback: called with (index of the request, record) for every iteration of every pair.
            time_limit: seconds for the whole batch, checked after every iteration.
            tiling: (tile px, overlap px) for one request too large for the device: its last
                scale runs in tiles (:meth:`stylize_tiled`).

        Returns:
            one entry per request, in order: its result, or the exception that failed it
            (``ImageTooSmallError``, ``NonFiniteLossError``, ``ValueError`` for targets of
            another network). A failing pair never disturbs the others.

        Raises:
            TimeLimitError: ``time_limit`` passed before the last iteration.
            ValueError: the pairs do not share a size, an optimizer and a precision, or a tiled
                batch is not of one request.
        """
        started = time.perf_counter()
        if tiling is not None:
            if len(requests) != 1:
                raise ValueError(f"a tiled batch is one pair; got {len(requests)}")
            try:
                return [self._stylize_tiled(requests[0], *tiling, callback, started, time_limit)]
            except (ValueError, NonFiniteLossError) as exc:  # the pair's own problem, as below
                return [exc]
        stages = {(request.config or self.config).scales for request in requests}
        if len(stages) > 1:
            raise ValueError(f"a batch needs pairs of one set of scales; got {sorted(stages)}")
        if stages == {()}:
            return self._stylize_scale(requests, callback, started, time_limit)
        return self._stylize_coarse_to_fine(requests, callback, started, time_limit)

    def stylize_tiled(
        self,
        request: StyleRequest,
        tile: int,
        overlap: int,
        callback: IterationCallback | None = None,
        time_limit: float | None = None,
    ) -> StyleResult:
        """One pair whose last scale is too large for the device: its coarser scales (if any)
        whole, then the last scale in overlapping tiles of at most ``tile`` px a side.

        Each tile is optimized from the image so far (the previous scale upscaled, with the
        tiles done before it blended in) against its own part of the content and the whole
        image's style targets, and put back with weights that ramp across the ``overlap``
        (tiles.py), so no seam shows. Deviation: the references optimize the whole image; a
        tile's style loss compares its own Gram matrices with the whole style's, which is
        what crowsonkb's style-transfer-pytorch does for its tiles too. The result's history
        and ``final`` sum the tiles' records (a whole-image loss is what does not fit).

        Raises what :meth:`stylize` raises.
        """
        on_record = None if callback is None else (lambda _, record: callback(record))
        return self._stylize_tiled(request, tile, overlap, on_record, time.perf_counter(), time_limit)

    def _stylize_tiled(
        self,
        request: StyleRequest,
        tile: int,
        overlap: int,
        callback: BatchCallback | None,
        started: float,
        time_limit: float | None,
    ) -> StyleResult:
        """:meth:`stylize_tiled`: the coarser scales whole, then the last scale tile by tile."""
        config = request.config or self.config
        if len(request.coarse_styles) != len(config.scales):
            raise ValueError(f"{len(request.coarse_styles)} coarse style targets for {len(config.scales)} scales")
        coarse: list[StyleResult] = []
        init_image = request.init_image
        for stage, targets in enumerate(request.coarse_styles):
            staged = StyleRequest(request.content, targets, config.at_stage(stage), init_image, request.content_name)
            (result,) = self._stylize_scale([staged], callback, started, time_limit)
            if isinstance(result, Exception):
                raise result
            coarse.append(result)
            init_image = result.image

        last = config.at_stage(len(config.scales))
        content = fit_longest_side(request.content, last.image_size)
        width, height = content.size
        content_pixels = image_to_tensor(content)[0]
        scale = self.family.pixel_scale
        # The whole starting image (a few hundred MB at most, never a network's activations).
        start = self._initial_image(content_pixels[None] * scale, request.style, last, init_image)
        canvas = Canvas(start[0].cpu() / scale, overlap)
        done: list[StyleResult] = []
        for index, box in enumerate(tile_boxes(width, height, tile, overlap)):
            side = max(box[2] - box[0], box[3] - box[1])
            # The tile's own size, with the style targets of the whole image (style_size unchanged);
            # luminance transfer is applied once, to the blended whole.
            tile_config = last.replace(
                image_size=side, style_scale=last.style_size / side,
                color_control="none" if last.color_control == "luminance" else last.color_control,
            )
            tile_request = StyleRequest(
                content.crop(box), request.style, tile_config, tensor_to_image(canvas.crop(box)[None].float()),
                f"{request.content_name} (tile {index + 1} at {box[0]},{box[1]})",
            )
            (result,) = self._stylize_scale([tile_request], callback, started, time_limit)
            if isinstance(result, Exception):
                raise result
            canvas.put(box, image_to_tensor(result.image)[0])
            done.append(result)
        output = canvas.image().float()
        if last.color_control == "luminance":
            output = keep_colors(output, content_pixels).clamp(0, 1)
        seconds = time.perf_counter() - started
        history = [_summed([r.history[i] for r in done], seconds) for i in range(len(done[0].history))]
        return StyleResult(
            image=tensor_to_image(output[None]),
            history=history,
            final=history[-1],
            chosen_iteration=last.iterations,
            device=str(self.device),
            seconds=seconds,
            coarse=tuple(coarse),
            tiles=len(done),
        )

    def _stylize_coarse_to_fine(
        self, requests: Sequence[StyleRequest], callback: BatchCallback | None, started: float, time_limit: float | None
    ) -> list[StyleResult | Exception]:
        """Each scale of ``config.stages`` in turn, as a batch of single-scale pairs starting
        from the previous scale's results (upscaled); a pair that fails at a scale leaves."""
        outcomes: list[StyleResult | Exception | None] = [None] * len(requests)
        done: list[list[StyleResult]] = [[] for _ in requests]
        stages = (requests[0].config or self.config).stages
        for stage in range(len(stages)):
            members, staged = [], []
            for index, request in enumerate(requests):
                config = request.config or self.config
                if outcomes[index] is not None:
                    continue
                if len(request.coarse_styles) != len(config.scales):
                    outcomes[index] = ValueError(
                        f"{len(request.coarse_styles)} coarse style targets for {len(config.scales)} scales"
                    )
                    continue
                last = stage == len(stages) - 1
                members.append(index)
                staged.append(dataclasses.replace(
                    request,
                    config=config.at_stage(stage),
                    style=request.style if last else request.coarse_styles[stage],
                    init_image=done[index][-1].image if done[index] else request.init_image,
                    coarse_styles=(),
                ))
            if not staged:
                break
            on_record = None if callback is None else (lambda k, record: callback(members[k], record))
            for index, result in zip(members, self._stylize_scale(staged, on_record, started, time_limit), strict=True):
                if isinstance(result, Exception):
                    outcomes[index] = result
                else:
                    done[index].append(result)
        return [
            outcome if outcome is not None else dataclasses.replace(results[-1], coarse=tuple(results[:-1]))
            for outcome, results in zip(outcomes, done, strict=True)
        ]

    def _stylize_scale(
        self, requests: Sequence[StyleRequest], callback: BatchCallback | None, started: float, time_limit: float | None
    ) -> list[StyleResult | Exception]:
        """One scale of a batch: :meth:`stylize_batch` for pairs without coarser scales."""
        outcomes: list[StyleResult | Exception | None] = [None] * len(requests)
        configs: list[StyleConfig] = []
        contents: list[Tensor] = []
        members: list[int] = []  # the requests that get optimized
        for index, request in enumerate(requests):
            config = request.config or self.config
            try:
                self._check_network(config.network_key())
                self._check_network(request.style.network_key)
                if request.style.size != config.style_size:
                    raise ValueError(
                        f"style targets were encoded at {request.style.size} px but the config needs "
                        f"{config.style_size} px (image_size x style_scale)"
                    )
                content = self.to_input(fit_longest_side(request.content, config.image_size), request.content_name)
            except ValueError as exc:  # ImageTooSmallError is a ValueError
                outcomes[index] = exc
                continue
            configs.append(config)
            contents.append(content)
            members.append(index)
        if members:
            shapes = {tuple(c.shape) for c in contents}
            optimizers = {(c.optimizer, c.learning_rate if c.optimizer == "adam" else None, c.precision) for c in configs}
            if len(shapes) > 1 or len(optimizers) > 1:
                raise ValueError(
                    f"a batch needs pairs of one size, one optimizer and one precision; got sizes "
                    f"{sorted(shapes)} and (optimizer, learning rate, precision) {sorted(optimizers, key=str)}"
                )
            batch = [requests[i] for i in members]
            on_record = None if callback is None else (lambda k, record: callback(members[k], record))
            results = self._optimize(batch, configs, torch.cat(contents), started, time_limit, on_record)
            for index, result in zip(members, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def _optimize(
        self,
        requests: list[StyleRequest],
        configs: list[StyleConfig],
        content: Tensor,
        started: float,
        time_limit: float | None,
        callback: BatchCallback | None,
    ) -> list[StyleResult | Exception]:
        """The optimization of N same-size pairs (``content`` is their N content images)."""
        count = len(requests)
        scale = self.family.pixel_scale
        objective = Objective(self.network, content, [r.style.grams for r in requests], configs)
        start = torch.cat([
            self._initial_image(content[k : k + 1], r.style, c, r.init_image)
            for k, (r, c) in enumerate(zip(requests, configs, strict=True))
        ])
        # The optimized parameter is a contiguous NHWC tensor: L-BFGS flattens each pair's
        # pixels, and its NCHW permutation is exactly the channels_last layout the network wants.
        pixels = start.permute(0, 2, 3, 1).contiguous().requires_grad_(True)

        lbfgs = configs[0].optimizer == "lbfgs"
        optimizer: torch.optim.Optimizer
        if lbfgs:
            # One L-BFGS iteration per step() is one forward and backward per recorded iteration,
            # with unit steps and no line search, as neural-style runs it; our LBFGS computes
            # torch.optim.LBFGS's directions without GPU synchronizations and undoes diverging
            # steps (lbfgs.py). Its bounds apply to each pair from its in-range restart on.
            optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY, bounds=(0.0, scale), problems=count)
            optimizer.restart(torch.ones(count, dtype=torch.bool, device=self.device), bounded=False)
        else:
            optimizer = torch.optim.Adam([pixels], lr=configs[0].learning_rate * scale)

        # The best image seen so far per pair, kept on the device: no step makes a result worse.
        best_pixels = pixels.detach().clone()
        best_loss = torch.full((count,), math.inf, dtype=torch.float64, device=self.device)
        best_iteration = torch.zeros(count, dtype=torch.long, device=self.device)
        active = torch.ones(count, dtype=torch.bool, device=self.device)
        latest: list[Tensor] = []  # the loss parts of the step's one evaluation
        iteration = 0

        def closure() -> Tensor:
            nonlocal best_loss, best_iteration
            optimizer.zero_grad(set_to_none=True)
            parts = objective(pixels.permute(0, 3, 1, 2))
            parts[:, 0].sum().backward()  # the pairs are independent: each gets its own gradient
            with torch.no_grad():
                total = parts[:, 0].double()
                better = (total < best_loss) & active  # False for NaN
                best_loss = torch.where(better, total, best_loss)
                best_iteration = torch.where(better, iteration, best_iteration)
                best_pixels.copy_(torch.where(better[:, None, None, None], pixels, best_pixels))
            latest[:] = [parts.detach()]
            return parts[:, 0]

        iterations = [c.iterations for c in configs]
        # Deviation: Gatys et al. and neural-style leave the pixels unconstrained and clamp the
        # result, which cost 15-55% of the written image's loss in our measurements. Projecting
        # from the start diverged on one of three real pairs (a clamped overshoot the guard cannot
        # see), so the last part of each run restarts L-BFGS from the clamped image with the
        # pixels kept in range (README, "Method").
        in_range_from = [n - round(n * IN_RANGE_FRACTION) for n in iterations]
        histories: list[list[IterationRecord]] = [[] for _ in range(count)]
        no_rejections = torch.zeros(count, 1, dtype=torch.float64, device=self.device)
        for iteration in range(max(iterations)):
            running = [iteration < n for n in iterations]
            if iteration in iterations:
                # Pairs past their own iteration count stop moving; they still ride along in the
                # batch's forward pass (the pipeline batches pairs of equal counts).
                active = torch.tensor(running, device=self.device)
                if lbfgs:
                    optimizer.active = active
            restarting = [lbfgs and iteration == first for first in in_range_from]
            if any(restarting):
                mask = torch.tensor(restarting, device=self.device)
                with torch.no_grad():
                    pixels.copy_(torch.where(mask[:, None, None, None], pixels.clamp(0, scale), pixels))
                optimizer.restart(mask, bounded=True)
            frozen = None if lbfgs or all(running) else pixels.detach().clone()
            optimizer.step(closure)  # Adam and our L-BFGS both evaluate the closure exactly once
            if frozen is not None:
                with torch.no_grad():  # Adam moves every row: put the finished ones back
                    pixels.copy_(torch.where(active[:, None, None, None], pixels, frozen))
            rejected = optimizer.last_rejected.reshape(count, 1).double() if lbfgs else no_rejections
            # One device->host copy per iteration for the whole batch. Reading it one iteration
            # late (asynchronous copy + event) was measured on an H100 and did not help at 512 px.
            rows = torch.cat([latest[0].double(), rejected], dim=1).tolist()
            seconds = time.perf_counter() - started
            for k, row in enumerate(rows):
                if running[k]:
                    entry = IterationRecord.from_values(iteration, row[:-1], configs[k].style_layers, seconds, bool(row[-1]))
                    histories[k].append(entry)
                    if callback is not None:
                        callback(k, entry)
            if time_limit is not None and seconds > time_limit:
                raise TimeLimitError(
                    f"over the time limit of {time_limit:g} s at iteration {iteration + 1} of {max(iterations)}"
                    + ("" if count == 1 else f" (a batch of {count} pairs)")
                )

        output, final_rows, take_last = self._written(
            objective, pixels.detach().permute(0, 3, 1, 2), best_pixels.permute(0, 3, 1, 2), content, configs
        )
        chosen = [n if t else i for n, t, i in zip(iterations, take_last, best_iteration.tolist(), strict=True)]
        seconds = time.perf_counter() - started
        results: list[StyleResult | Exception] = []
        for k in range(count):
            final = IterationRecord.from_values(iterations[k], final_rows[k], configs[k].style_layers, seconds)
            if not math.isfinite(final.total):
                results.append(NonFiniteLossError(
                    f"{requests[k].content_name}: loss is {final.total}: no image seen in {iterations[k]} "
                    "iterations had a finite loss (non-finite weights or inputs?)"
                ))
                continue
            histories[k].append(final)
            if callback is not None:
                callback(k, final)
            results.append(StyleResult(
                image=tensor_to_image(output[k : k + 1] / scale),
                history=histories[k],
                final=final,
                chosen_iteration=chosen[k],
                device=str(self.device),
                seconds=seconds,
            ))
        return results

    @torch.no_grad()
    def _written(
        self, objective: Objective, last: Tensor, best: Tensor, content: Tensor, configs: Sequence[StyleConfig]
    ) -> tuple[Tensor, list[list[float]], list[bool]]:
        """The images to write (NCHW, family units), their loss rows, and whether each is the last
        iterate (else the best one seen, when that scores lower as written: no step makes a
        result worse). Luminance colour control is applied here, after the choice."""
        last, best = self.as_written(last), self.as_written(best)
        last_parts, best_parts = objective(last), objective(best)
        last_totals, best_totals = last_parts[:, 0].tolist(), best_parts[:, 0].tolist()
        take_last = [
            math.isfinite(last_total) and not best_total < last_total
            for last_total, best_total in zip(last_totals, best_totals, strict=True)
        ]
        choose = torch.tensor(take_last, device=self.device)
        output = torch.where(choose[:, None, None, None], last, best)
        parts = torch.where(choose[:, None], last_parts, best_parts)
        recolor = [c.color_control == "luminance" for c in configs]
        if any(recolor):
            scale = self.family.pixel_scale
            colored = self.as_written(keep_colors(output / scale, content / scale) * scale)
            output = torch.where(torch.tensor(recolor, device=self.device)[:, None, None, None], colored, output)
            parts = objective(output)
        return output, parts.double().tolist(), take_last


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
    config = engine.config
    colors_of = content if config.color_control == "histogram" else None
    targets = engine.encode_styles(styles, style_weights, colors_of=colors_of)
    coarse = tuple(
        engine.encode_styles(styles, style_weights, config.at_stage(stage).style_size, colors_of=colors_of)
        for stage in range(len(config.scales))
    )
    return engine.stylize(content, targets, init_image=init_image, callback=callback, coarse_styles=coarse)
