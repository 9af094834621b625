"""The Gatys et al. optimization: an image whose VGG features match content and style targets.

``StyleTransfer`` holds one frozen network; ``encode_styles`` turns style images into reusable
``StyleTargets``; ``stylize`` runs the per-pair optimization and reports every iteration through a
callback and in the result. No I/O happens here: callers bring Pillow images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torch import Tensor

from transforms.nst.color import keep_colors
from transforms.nst.config import StyleConfig
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.lbfgs import LBFGS
from transforms.nst.losses import content_loss, gram_matrix, style_loss, tv_loss
from transforms.nst.vgg import VGGFeatures, load_features_state_dict


class ImageTooSmallError(ValueError):
    """An image is smaller than the deepest layer used can see."""


class NonFiniteLossError(ArithmeticError):
    """The loss became NaN or infinite during optimization."""


@dataclass(frozen=True)
class IterationRecord:
    """Losses of one evaluated image; each term is weighted, so the terms add up to ``total``.

    ``iteration`` counts the optimizer updates applied before the evaluation: 0 is the initial
    image, and the result's ``final`` record (iteration = ``iterations``) is the returned image.
    """

    iteration: int
    total: float
    content: float
    style: float
    tv: float
    style_layers: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
    """The stylized image, one record per iteration, and the record of the returned image."""

    image: Image.Image
    history: list[IterationRecord]
    final: IterationRecord
    device: str
    seconds: float


IterationCallback = Callable[[IterationRecord], None]

# Curvature pairs L-BFGS remembers: torch's and neural-style's default.
LBFGS_HISTORY = 100


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
        # NHWC (channels_last) measured faster at the default 512 px: ~5% with oneDNN on a
        # 2-core CPU, slightly on an H100 (where NCHW wins at 1024 px); see README, Performance.
        # Every tensor entering the network takes this layout.
        self.memory_format = torch.channels_last
        state = load_features_state_dict(
            self.config.model, weights_file or self.config.weights, self.config.seed
        )
        layers = self.config.content_layers + self.config.style_layers
        network = VGGFeatures(self.config.model, layers, state, self.config.pooling)
        self.network = network.to(self.device, memory_format=self.memory_format)

    def _input(self, image: Image.Image, what: str) -> Tensor:
        tensor = image_to_tensor(image).to(self.device, memory_format=self.memory_format)
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
            features = self.network(self._input(image, name))
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
            start = torch.rand(content.shape, generator=generator)
        else:
            if config.init == "style":
                source = style.first_image
            elif init_image is None:
                raise ValueError(f"init {config.init!r} names an image, but no init_image was given")
            else:
                source = init_image
            # Stretched to the content's exact size: the optimized image must match it.
            start = image_to_tensor(source.resize((width, height), Image.Resampling.LANCZOS))
        # The optimized parameter is a contiguous NHWC tensor: L-BFGS flattens parameters with
        # view(-1), and its NCHW permutation is exactly the channels_last layout the network wants.
        return start.to(self.device).permute(0, 2, 3, 1).contiguous().requires_grad_(True)

    def stylize(
        self,
        content: Image.Image,
        style: StyleTargets,
        config: StyleConfig | None = None,
        init_image: Image.Image | None = None,
        callback: IterationCallback | None = None,
        content_name: str = "content image",
    ) -> StyleResult:
        """Optimize an image with ``content``'s features and ``style``'s Gram statistics.

        Args:
            content: the content image; resized so its longest side is ``config.image_size``.
            style: targets from :meth:`encode_styles` for this network and ``style_size``.
            config: per-pair settings (default: the constructor's); network fields must match.
            init_image: the starting image when ``config.init`` names an image location.
            callback: called with every iteration's record, as it happens.
            content_name: what errors call the content image (its URL, say).

        Raises:
            ImageTooSmallError: the content is smaller than the network can handle.
            NonFiniteLossError: the loss became NaN or infinite.
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
        content_tensor = self._input(fit_longest_side(content, config.image_size), content_name)
        with torch.no_grad():
            features = self.network(content_tensor)
            content_targets = {layer: features[layer] for layer in config.content_layers}
        del features
        layer_weights = torch.tensor(list(config.layer_weights.values()), device=self.device)
        pixels = self._initial_image(content_tensor, style, config, init_image)

        def evaluate() -> tuple[Tensor, Tensor]:
            """The weighted total and [total, content, style, tv, *style per layer]."""
            # A fresh view each time: a view taken once goes stale after in-place updates.
            image = pixels.permute(0, 3, 1, 2)
            features = self.network(image)
            content_term = config.content_weight * sum(
                content_loss(features[layer], content_targets[layer])
                for layer in config.content_layers
            )
            style_terms = config.style_weight * layer_weights * torch.stack(
                [style_loss(features[layer], style.grams[layer]) for layer in config.style_layers]
            )
            style_term = style_terms.sum()
            tv_term = config.tv_weight * tv_loss(image) if config.tv_weight else image.new_zeros(())
            total = content_term + style_term + tv_term
            parts = torch.cat([torch.stack([total, content_term, style_term, tv_term]), style_terms])
            return total, parts

        def record(iteration: int, parts: Tensor) -> IterationRecord:
            total, content_value, style_value, tv_value, *per_layer = parts.tolist()
            if not math.isfinite(total):
                raise NonFiniteLossError(f"loss became {total} at iteration {iteration}")
            return IterationRecord(
                iteration=iteration,
                total=total,
                content=content_value,
                style=style_value,
                tv=tv_value,
                style_layers=dict(zip(config.style_layers, per_layer, strict=True)),
                seconds=time.perf_counter() - started,
            )

        history: list[IterationRecord] = []
        if config.optimizer == "lbfgs":
            # One L-BFGS iteration per step() is one forward and backward per recorded iteration,
            # with unit steps and no line search, as neural-style runs it. Our LBFGS computes
            # torch.optim.LBFGS's directions without its per-pair GPU synchronizations (lbfgs.py),
            # and it never stops early: every requested iteration runs.
            optimizer: torch.optim.Optimizer = LBFGS([pixels], history_size=LBFGS_HISTORY)
        else:
            optimizer = torch.optim.Adam([pixels], lr=config.learning_rate)

        latest: list[Tensor] = []  # the loss parts of the step's one evaluation

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            total, parts = evaluate()
            total.backward()
            latest[:] = [parts.detach()]
            return total

        for iteration in range(config.iterations):
            optimizer.step(closure)  # Adam and our L-BFGS both evaluate the closure exactly once
            # One device->host copy per iteration. Reading it one iteration late (asynchronous
            # copy + event) was measured on an H100 and did not help at 512 px, so we keep it simple.
            entry = record(iteration, latest[0])
            history.append(entry)
            if callback is not None:
                callback(entry)

        with torch.no_grad():
            final = record(config.iterations, evaluate()[1])
            # Deviation: Gatys et al. leave pixel range unconstrained; we clamp once at the end
            # (clamping inside the loop would corrupt L-BFGS's curvature pairs).
            output = pixels.detach().permute(0, 3, 1, 2).clamp(0, 1)
            if config.original_colors:
                output = keep_colors(output, content_tensor).clamp(0, 1)
        return StyleResult(
            image=tensor_to_image(output),
            history=history,
            final=final,
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
