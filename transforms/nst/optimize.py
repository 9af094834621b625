"""The Gatys et al. optimization: an image whose VGG features match content and style targets.

``StyleTransfer`` holds one frozen network; ``encode_styles`` turns style images into reusable
``StyleTargets``; ``stylize`` runs the per-pair optimization and reports every iteration through a
callback and in the result. No I/O happens here: callers bring Pillow images.

The image is optimized in the weights family's pixel units (0-255 for the Caffe VGG, [0, 1] for
torchvision's), as the references do: L-BFGS's first step has an L1 norm of 1 in the variable's
units, so the units set the scale of the whole start. In [0, 1] units the Caffe VGG's first unit
steps were measured to overshoot to an infinite loss; in 0-255 units they converge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from transforms.nst.color import keep_colors
from transforms.nst.config import StyleConfig
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.lbfgs import LBFGS
from transforms.nst.losses import content_loss, gram_matrix, style_loss, tv_loss
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import load_features_state_dict


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
    def from_parts(
        cls, iteration: int, parts: Tensor, layers: Sequence[str], seconds: float, rejected: bool = False
    ) -> IterationRecord:
        """A record from :class:`Objective`'s output (one device->host copy)."""
        total, content, style, tv, *per_layer = parts.tolist()
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


IterationCallback = Callable[[IterationRecord], None]

# Curvature pairs L-BFGS remembers: torch's and neural-style's default.
LBFGS_HISTORY = 100
# The last fraction of L-BFGS iterations, run with the pixels kept in range (see stylize).
IN_RANGE_FRACTION = 0.2


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(name)


def blend_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """Style blend weights normalized to sum 1 (equal weights when None)."""
    if count < 1:
        raise ValueError("at least one style image is needed")
    values = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(values) != count:
        raise ValueError(f"{len(values)} style weights for {count} style images")
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"style weights must be finite, >= 0 and not all zero: {values}")
    total = sum(values)
    return [w / total for w in values]


class Objective(nn.Module):
    """The weighted loss of Gatys et al. for one content and one style: targets held as buffers.

    ``forward(image)`` takes an NCHW image in the family's pixel units and returns the 1-D tensor
    ``[total, content, style, tv, *style per layer]``, every term already weighted.
    """

    def __init__(
        self,
        network: VGGFeatures,
        content_targets: dict[str, Tensor],
        style_grams: dict[str, Tensor],
        config: StyleConfig,
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layers = config.content_layers
        self.style_layers = config.style_layers
        for layer in self.content_layers:
            self.register_buffer(f"content_{layer}", content_targets[layer])
        for layer in self.style_layers:
            self.register_buffer(f"gram_{layer}", style_grams[layer])
        weights = torch.tensor(list(config.layer_weights.values()), device=style_grams[self.style_layers[0]].device)
        self.register_buffer("style_layer_weights", config.style_weight * weights)
        self.content_weight = float(config.content_weight)
        self.tv_weight = config.tv_weight
        self.pixel_scale = config.family.pixel_scale

    def forward(self, image: Tensor) -> Tensor:
        features = self.network(image)
        content = self.content_weight * sum(
            content_loss(features[layer], getattr(self, f"content_{layer}")) for layer in self.content_layers
        )
        styles = self.style_layer_weights * torch.stack(
            [style_loss(features[layer], getattr(self, f"gram_{layer}")) for layer in self.style_layers]
        )
        style = styles.sum()
        # TV is measured on [0, 1] pixels whatever the family, so tv_weight means the same for both.
        tv = self.tv_weight * tv_loss(image / self.pixel_scale) if self.tv_weight else image.new_zeros(())
        return torch.cat([torch.stack([content + style + tv, content, style, tv]), styles])


class StyleTransfer:
    """One frozen VGG on one device, ready to encode styles and stylize many contents.

    Args:
        config: its network fields (model, weights, pooling, layers, device) build the network;
            the others are the defaults of :meth:`stylize`.
        weights_file: a local state-dict file to read instead of ``config.weights``, for callers
            that fetched a remote weights location themselves (``config.weights`` stays the
            name recorded in logs).
    """

    def __init__(self, config: StyleConfig | None = None, weights_file: str | None = None) -> None:
        self.config = config or StyleConfig()
        self.device = resolve_device(self.config.device)
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
        self.network = network.to(self.device, memory_format=self.memory_format)

    def to_input(self, image: Image.Image, what: str) -> Tensor:
        """``image`` as an NCHW tensor in the family's pixel units, checked against the network."""
        tensor = image_to_tensor(image).mul_(self.family.pixel_scale)
        tensor = tensor.to(self.device, memory_format=self.memory_format)
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
    ) -> StyleTargets:
        """Gram targets of ``styles`` blended by ``weights`` (normalized to sum 1).

        Each style image is resized so its longest side is ``size`` (default: the config's
        ``style_size``), and the targets are the weighted average of the per-image Grams.
        ``names`` (URLs, say) are what errors call the images.
        """
        size = size or self.config.style_size
        blend = blend_weights(len(styles), weights)
        resized = [fit_longest_side(image, size) for image in styles]
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
        """The optimization variable, NHWC: ``pixels.permute(0, 3, 1, 2)`` is the image."""
        height, width = content.shape[-2:]
        if config.init == "content":
            start = content.clone()
        elif config.init == "random":
            # Gatys et al. start from white noise: uniform pixels, seeded for reproducibility.
            generator = torch.Generator().manual_seed(config.seed)
            start = torch.rand(content.shape, generator=generator) * self.family.pixel_scale
        else:
            if config.init == "style":
                source = style.first_image
            elif init_image is None:
                raise ValueError(f"init {config.init!r} names an image, but no init_image was given")
            else:
                source = init_image
            # Stretched to the content's exact size: the optimized image must match it.
            resized = source.resize((width, height), Image.Resampling.LANCZOS)
            start = image_to_tensor(resized) * self.family.pixel_scale
        # The optimized parameter is a contiguous NHWC tensor: L-BFGS flattens parameters with
        # view(-1), and its NCHW permutation is exactly the channels_last layout the network wants.
        return start.to(self.device).permute(0, 2, 3, 1).contiguous().requires_grad_(True)

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

        Raises:
            ImageTooSmallError: the content is smaller than the network can handle.
            NonFiniteLossError: no image seen had a finite loss (only from a non-finite start).
            TimeLimitError: ``time_limit`` passed before the last iteration.
            ValueError: the config or targets do not fit this network.
        """
        config = config or self.config
        self._check_network(config.network_key())
        self._check_network(style.network_key)
        if style.size != config.style_size:
            raise ValueError(
                f"style targets were encoded at {style.size} px but the config needs "
                f"{config.style_size} px (image_size x style_scale)"
            )
        started = time.perf_counter()
        scale = self.family.pixel_scale
        content_tensor = self.to_input(fit_longest_side(content, config.image_size), content_name)
        with torch.no_grad():
            features = self.network(content_tensor)
            content_targets = {layer: features[layer] for layer in config.content_layers}
        del features
        objective = Objective(self.network, content_targets, style.grams, config)
        pixels = self._initial_image(content_tensor, style, config, init_image)

        if config.optimizer == "lbfgs":
            # One L-BFGS iteration per step() is one forward and backward per recorded iteration,
            # with unit steps and no line search, as neural-style runs it; our LBFGS computes
            # torch.optim.LBFGS's directions without GPU synchronizations and undoes diverging
            # steps (lbfgs.py).
            optimizer: torch.optim.Optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY)
        else:
            optimizer = torch.optim.Adam([pixels], lr=config.learning_rate * scale)

        # The best image seen so far, kept on the device: no step ever makes the result worse.
        best_pixels = pixels.detach().clone()
        best_loss = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        best_iteration = torch.zeros((), dtype=torch.long, device=self.device)
        latest: list[Tensor] = []  # the loss parts of the step's one evaluation

        def closure() -> Tensor:
            nonlocal best_loss, best_iteration
            optimizer.zero_grad(set_to_none=True)
            parts = objective(pixels.permute(0, 3, 1, 2))
            parts[0].backward()
            with torch.no_grad():
                total = parts[0].double()
                better = total < best_loss  # False for NaN
                best_loss = torch.where(better, total, best_loss)
                best_iteration = torch.where(better, len(history), best_iteration)
                best_pixels.copy_(torch.where(better, pixels, best_pixels))
            latest[:] = [parts.detach()]
            return parts[0]

        history: list[IterationRecord] = []
        in_range_from = config.iterations - round(config.iterations * IN_RANGE_FRACTION)
        for iteration in range(config.iterations):
            if iteration == in_range_from and config.optimizer == "lbfgs":
                # Deviation: Gatys et al. and neural-style leave the pixels unconstrained and clamp
                # the result, which cost 15-55% of the written image's loss in our measurements.
                # Projecting from the start diverged on one of three real pairs (a clamped
                # overshoot the guard cannot see), so the last part of the run restarts L-BFGS
                # from the clamped image with the pixels kept in range (README, "Method").
                with torch.no_grad():
                    pixels.clamp_(0, scale)
                optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY, bounds=(0.0, scale))
            optimizer.step(closure)  # Adam and our L-BFGS both evaluate the closure exactly once
            rejected = getattr(optimizer, "last_rejected", None)
            # One device->host copy per iteration. Reading it one iteration late (asynchronous
            # copy + event) was measured on an H100 and did not help at 512 px, so we keep it simple.
            entry = IterationRecord.from_parts(
                iteration, latest[0], config.style_layers, time.perf_counter() - started,
                rejected=bool(rejected) if rejected is not None else False,
            )
            history.append(entry)
            if callback is not None:
                callback(entry)
            if time_limit is not None and entry.seconds > time_limit:
                raise TimeLimitError(
                    f"{content_name}: over the time limit of {time_limit:g} s at iteration "
                    f"{iteration + 1} of {config.iterations}"
                )

        with torch.no_grad():
            # The last iterate and the best one seen, each scored as it would be written.
            last = self.as_written(pixels.detach().permute(0, 3, 1, 2))
            best = self.as_written(best_pixels.permute(0, 3, 1, 2))
            last_parts, best_parts = objective(last), objective(best)
            last_total, best_total = last_parts[0].item(), best_parts[0].item()
            if math.isfinite(last_total) and not best_total < last_total:
                output, parts, chosen = last, last_parts, config.iterations
            else:
                output, parts, chosen = best, best_parts, int(best_iteration)
            if config.original_colors:
                output = self.as_written(keep_colors(output / scale, content_tensor / scale) * scale)
                parts = objective(output)
        final = IterationRecord.from_parts(
            config.iterations, parts, config.style_layers, time.perf_counter() - started
        )
        if not math.isfinite(final.total):
            raise NonFiniteLossError(
                f"loss is {final.total}: no image seen in {config.iterations} iterations had a finite "
                "loss (non-finite weights or inputs?)"
            )
        history.append(final)
        if callback is not None:
            callback(final)
        return StyleResult(
            image=tensor_to_image(output / scale),
            history=history,
            final=final,
            chosen_iteration=chosen,
            device=str(self.device),
            seconds=time.perf_counter() - started,
        )


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
    targets = engine.encode_styles(styles, style_weights)
    return engine.stylize(content, targets, init_image=init_image, callback=callback)
