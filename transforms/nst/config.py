"""StyleConfig: every choice of a style transfer, validated once, with documented defaults.

This module imports no torch (layer names are checked against layers.py's tables), so the
command line can offer its choices and help without loading torch.

Imports: families and layers (torch only inside torch_device); no Beam, no storage.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from transforms.nst.families import FAMILIES, NAMED_WEIGHTS, WeightsFamily, resolve_family
from transforms.nst.layers import MODELS, POOLINGS, canonical_layer

if TYPE_CHECKING:
    import torch

OPTIMIZERS: Final = ("lbfgs", "adam")
INIT_MODES: Final = ("content", "random", "style")
DEVICES: Final = ("auto", "cpu", "cuda")
PRECISIONS: Final = ("auto", "fp32", "bf16")
# Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer": keep the content's
# colours by luminance-only transfer (after optimization, as neural-style's -original_colors),
# or by matching the style images' colour histograms to the content's before optimization.
COLOR_CONTROLS: Final = ("none", "luminance", "histogram")


def with_color_alias(settings: dict[str, object]) -> dict[str, object]:
    """``settings`` with neural-style's ``original_colors`` switch (the flag, the manifest column)
    turned into ``color_control="luminance"``, the one field the engine reads.

    Raises:
        ValueError: ``original_colors`` asked together with another colour control.
    """
    settings = dict(settings)
    if "original_colors" not in settings:
        return settings
    if settings.pop("original_colors"):
        if settings.get("color_control", "none") not in ("none", "luminance"):
            raise ValueError(
                f"original_colors is color_control luminance; it cannot go with color_control {settings['color_control']}"
            )
        settings["color_control"] = "luminance"
    else:
        settings.setdefault("color_control", "none")  # a row's original_colors=false turns it off
    return settings


def blend_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """The blend weights of ``count`` style images normalized to sum 1 (equal when None): the
    one rule for ``--style_weights`` and a manifest's ``style_weights``.

    Raises:
        ValueError: not one finite value >= 0 per image, or all zero.
    """
    if count < 1:
        raise ValueError("at least one style image is needed")
    values = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(values) != count:
        raise ValueError(f"{len(values)} style weights for {count} style images")
    if any(not math.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"style weights must be finite, >= 0 and not all zero: {values}")
    total = sum(values)
    return [w / total for w in values]


# Convergence defaults, chosen by benchmarks/time_to_quality.py (docs/method.md: stopping).
STOP_TOLERANCE: Final = 0.005
STOP_WINDOW: Final = 50

# The default pyramid (scales=None) starts at the last halving of image_size that is at least
# PYRAMID_COARSEST px (128-255 px; docs/method.md: coarse to fine).
PYRAMID_COARSEST: Final = 128


def pyramid(image_size: int, iterations: int) -> tuple[tuple[int, int], ...]:
    """The coarser scales the defaults run before ``image_size``: halvings of it down to the
    last one of at least PYRAMID_COARSEST px, each for ``iterations``, as the last scale (a pair
    stops sooner once converged). Under 256 px there is none: one scale, as Gatys et al.

    Deviation from Gatys et al., who optimize one scale: there the style loss sees the painting's
    strokes only as texture at the picture's own size, and the result is the photo with brush
    texture on top. A picture made first at 128-255 px takes the painting's large strokes and
    colour fields, which the finer scales keep. Not under 128 px: at 64 px ``relu4_2`` holds 8x8
    positions, too few to keep a face, and the painting covered it (docs/method.md).
    """
    sizes: list[int] = []
    size = image_size // 2
    while size >= PYRAMID_COARSEST:
        sizes.insert(0, size)
        size //= 2
    return tuple((size, iterations) for size in sizes)


# The largest input image decoded, in pixels (16 k x 16 k): far beyond what a style transfer can
# use, far below a decompression bomb. images.py enforces it; the pipeline's --max_input_pixels.
MAX_INPUT_PIXELS: Final = 16384 * 16384

# The seeds torch.Generator.manual_seed takes.
SEED_MIN: Final = -(2**63)
SEED_MAX: Final = 2**64 - 1


def _short(value: object) -> str:
    """``value`` as an error names it: a number of thousands of digits by its length."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > 128:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    return repr(value)[:60]


# Fields that shape the network itself: one StyleTransfer instance serves one value of each.
NETWORK_FIELDS: Final = ("model", "weights", "weights_family", "pooling", "content_layers", "style_layers", "device")


@dataclass(frozen=True)
class StyleConfig:
    """All settings of one style transfer.

    Defaults follow Gatys et al. (2015) where the paper is explicit (the original Caffe VGG19,
    content ``relu4_2``, style ``relu1_1 … relu5_1``, L-BFGS). Loss weights left unset take the
    weights family's defaults (weights.py): neural-style's for Caffe weights, the PyTorch
    tutorial's for torchvision's; ``weights_family`` is set from the weights' name, and must be
    given for a weights file. Deviation: the paper starts from white noise; we start from the
    content image by default, which converges in fewer iterations and is what neural-style's
    users and the tutorial do (``init="random"`` gives the paper's start).
    """

    model: str = "vgg19"
    weights: str = "caffe"
    # "caffe" or "torchvision": the pixels the weights expect. Implied by named weights.
    weights_family: str | None = None
    pooling: str = "max"
    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # Per-style-layer weights; None means 1.0 each (the tutorial's plain sum over layers).
    style_layer_weights: tuple[float, ...] | None = None
    # None: the weights family's default (caffe 5 / 100, torchvision 1 / 1e6).
    content_weight: float | None = None
    style_weight: float | None = None
    # Gatys et al. use no total-variation term; raise it (e.g. 1-10) to smooth high-frequency noise.
    tv_weight: float = 0.0
    # "content", "random" (seeded noise), "style", or the location of an init image.
    init: str = "content"
    optimizer: str = "lbfgs"
    # Adam's step size in [0, 1] pixel units (scaled to the family's); L-BFGS takes unit steps.
    learning_rate: float = 0.02
    # The most iterations a pair runs at each scale; it stops sooner once converged. 200: with
    # coarse to fine, more at the last scale undo what the coarse scales laid down
    # (docs/method.md: coarse to fine); one scale converges at about 450 (--scales none).
    iterations: int = 200
    # Convergence: a pair stops (or, with L-BFGS, restarts in range for its last phase) once its
    # best loss improved by less than stop_tolerance (relative) over its last stop_window
    # iterations; 0 runs every iteration, as Gatys et al. Defaults measured (docs/method.md).
    stop_tolerance: float = STOP_TOLERANCE
    stop_window: int = STOP_WINDOW
    seed: int = 0
    # Longest side of the result, px; 0: each content's own size (resolved by for_content).
    image_size: int = 512
    # Coarse-to-fine: (size, iterations) of each coarser scale optimized before the final
    # (image_size, iterations), each starting from the previous result upscaled, with style
    # targets at its own size x style_scale. None: the pyramid derived from image_size
    # (pyramid(), a deviation from Gatys et al.); empty: one scale, as Gatys et al.
    scales: tuple[tuple[int, int], ...] | None = None
    style_scale: float = 1.0
    # "none", "luminance" (neural-style's original_colors) or "histogram": COLOR_CONTROLS.
    color_control: str = "none"
    device: str = "auto"
    # The network's convolutions in fp32, or in bf16 under autocast where the result does not
    # depend on it (objective.py keeps the rest in fp32); auto: bf16 where the device computes
    # bf16 in hardware (precision.py), fp32 elsewhere.
    precision: str = "auto"

    def __post_init__(self) -> None:
        self._check_choice("model", self.model, MODELS)
        self._check_choice("pooling", self.pooling, POOLINGS)
        self._check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self._check_choice("device", self.device, DEVICES)
        self._check_choice("precision", self.precision, PRECISIONS)
        self._check_choice("color_control", self.color_control, COLOR_CONTROLS)
        if not self.weights:
            raise ValueError(f"weights must be one of {', '.join(NAMED_WEIGHTS)} or a state-dict location")
        family = resolve_family(self.weights, self.weights_family)
        object.__setattr__(self, "weights_family", family.name)
        if self.content_weight is None:
            object.__setattr__(self, "content_weight", family.content_weight)
        if self.style_weight is None:
            object.__setattr__(self, "style_weight", family.style_weight)
        if not self.init:
            raise ValueError(f"init must be one of {', '.join(INIT_MODES)} or an image location")
        for name in ("content_layers", "style_layers"):
            layers = tuple(getattr(self, name))
            if not layers:
                raise ValueError(f"{name} must name at least one layer")
            object.__setattr__(self, name, tuple(canonical_layer(self.model, layer) for layer in layers))
        if self.style_layer_weights is not None:
            weights = tuple(float(w) for w in self.style_layer_weights)
            if len(weights) != len(self.style_layers):
                raise ValueError(
                    f"style_layer_weights has {len(weights)} values for {len(self.style_layers)} style layers"
                )
            if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
                raise ValueError(f"style_layer_weights must be finite, >= 0, not all zero: {weights}")
            object.__setattr__(self, "style_layer_weights", weights)
        for name in ("content_weight", "style_weight", "tv_weight", "learning_rate", "style_scale", "stop_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        # torch.Generator.manual_seed's range; every value here also fits a log's 40-digit numbers,
        # so a pair's settings read back as they were written.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer from {SEED_MIN} to {SEED_MAX}, got {_short(self.seed)}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        if int(self.stop_window) != self.stop_window or self.stop_window < 1:
            raise ValueError(f"stop_window must be a positive integer, got {self.stop_window!r}")
        if int(self.image_size) != self.image_size or self.image_size < 0:
            raise ValueError(
                f"image_size must be a positive integer, or 0 for each content's own size, got {self.image_size!r}"
            )
        if self.scales is not None:
            scales = tuple((int(size), int(iterations)) for size, iterations in self.scales)
            # With image_size 0 the last scale's size is known per content (for_content checks it).
            sizes = [size for size, _ in scales] + ([self.image_size] if self.image_size else [])
            if any(b <= a for a, b in itertools.pairwise(sizes)) or any(size < 1 or n < 1 for size, n in scales):
                raise ValueError(
                    f"scales must grow in size up to image_size {self.image_size}, each with iterations >= 1: "
                    + ",".join(f"{size}:{n}" for size, n in scales)
                )
            object.__setattr__(self, "scales", scales)
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.style_scale <= 0:
            raise ValueError(f"style_scale must be > 0, got {self.style_scale}")

    @staticmethod
    def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")

    @property
    def init_location(self) -> str | None:
        """The init image's location, or None when ``init`` is one of INIT_MODES."""
        return None if self.init in INIT_MODES else self.init

    @property
    def weights_location(self) -> str | None:
        """The weights file's location, or None for weights known by name (NAMED_WEIGHTS)."""
        return None if self.weights in NAMED_WEIGHTS else self.weights

    def torch_device(self) -> torch.device:
        """``device`` resolved on this machine: ``auto`` is CUDA when there is a GPU, else CPU.

        Raises:
            ValueError: ``cuda`` without a CUDA GPU.
        """
        import torch  # only where a device is wanted: this module stays free of torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        return torch.device(self.device)

    @property
    def family(self) -> WeightsFamily:
        """The weights family: its pixel units, input normalization and default loss weights."""
        return FAMILIES[str(self.weights_family)]

    @property
    def layer_weights(self) -> dict[str, float]:
        """Style layer -> its weight (1.0 each unless ``style_layer_weights`` says otherwise)."""
        weights = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return dict(zip(self.style_layers, weights, strict=True))

    @property
    def style_size(self) -> int:
        """Longest side, in px, that style images are resized to."""
        return max(1, round(self.image_size * self.style_scale))

    def for_content(self, width: int, height: int) -> StyleConfig:
        """These settings for a content of ``width`` x ``height``: ``image_size`` 0 becomes its
        longest side (the result keeps the content's exact size); any other size is kept.

        Raises:
            ValueError: coarser scales that do not grow up to that size.
        """
        return self if self.image_size else self.replace(image_size=max(width, height))

    @property
    def coarse_scales(self) -> tuple[tuple[int, int], ...]:
        """(size, iterations) of each scale before the last: ``scales`` as given, or, when it is
        None, the pyramid derived from ``image_size`` (none while that is 0, unresolved)."""
        return pyramid(self.image_size, self.iterations) if self.scales is None else self.scales

    @property
    def stages(self) -> tuple[tuple[int, int], ...]:
        """(size, iterations) of every scale, coarse to fine; the last is (image_size, iterations)."""
        return (*self.coarse_scales, (self.image_size, self.iterations))

    @property
    def total_iterations(self) -> int:
        return sum(iterations for _, iterations in self.stages)

    def at_stage(self, index: int) -> StyleConfig:
        """The single-scale settings of stage ``index``. Only the last stage transfers luminance:
        a coarse stage's result is a starting image, and recolouring it would be undone (histogram
        matching, which acts on the style images, applies at every scale)."""
        size, iterations = self.stages[index]
        last = index == len(self.stages) - 1
        control = "none" if self.color_control == "luminance" and not last else self.color_control
        return self.replace(image_size=size, iterations=iterations, scales=(), color_control=control)

    def network_key(self) -> tuple[object, ...]:
        """The values that decide the network; configs with equal keys can share one model."""
        return tuple(getattr(self, name) for name in NETWORK_FIELDS)

    def replace(self, **changes: Any) -> StyleConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def fingerprint_settings(self) -> dict[str, object]:
        """:meth:`to_dict` as releases before scales and colour control wrote it, for the
        fingerprint that decides whether a finished pair is redone: upgrading must not redo
        every pair. Settings added since appear only when they are set. ``scales`` appears
        whenever a coarser scale runs, the default pyramid's included: it changes the picture,
        so a pair made at one scale is redone (``--scales none`` keeps the earlier layout).

        Convergence stopping appears only when it differs from the defaults: a pair finished
        before it existed ran every iteration, which is at least as good, and is not redone;
        asking for another tolerance or window redoes it like any other setting. ``auto``
        precision is written as fp32: auto promises fp32's result (within 1%, docs/method.md),
        so neither an upgrade nor a move to another device redoes a pair; a forced bf16 does.
        """
        data = self.to_dict()
        if data["scales"] == []:
            del data["scales"]
        for name, default in (("stop_tolerance", STOP_TOLERANCE), ("stop_window", STOP_WINDOW)):
            if data[name] == default:
                del data[name]
        if data["precision"] == "auto":
            data["precision"] = "fp32"
        control = data.pop("color_control")
        data["original_colors"] = control == "luminance"
        if control == "histogram":
            data["color_control"] = control
        return data

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view of every setting."""
        data = dataclasses.asdict(self)
        # The scales that run, so that a log says what made its picture and a change to the
        # pyramid's rule redoes the pairs it changes; "auto" only while image_size is 0.
        data["scales"] = "auto" if self.scales is None and not self.image_size else self.coarse_scales
        data["style_layer_weights"] = list(self.layer_weights.values())
        data["preprocessing"] = self.family.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
