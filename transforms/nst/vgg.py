"""VGG16/VGG19 feature extractors addressed by layer name, and weight resolution.

The network is torchvision's own architecture (``torchvision.models.vgg16/vgg19``), cut right
after the deepest layer a caller asks for, frozen, and wrapped so that one forward pass returns
the activations of every requested layer by name (``relu4_2``, ``pool3``, ...).
"""

from __future__ import annotations

import os
import urllib.error
import warnings
from collections.abc import Iterable, Mapping
from typing import Final

import torch
from torch import Tensor, nn
from torchvision import models


MODELS: Final = ("vgg16", "vgg19")
POOLINGS: Final = ("max", "avg")

_WEIGHT_ENUMS: Final = {
    "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": models.VGG19_Weights.IMAGENET1K_V1,
}
_CONSTRUCTORS: Final = {"vgg16": models.vgg16, "vgg19": models.vgg19}

# torchvision's ImageNet weights expect RGB in [0, 1] normalized with these statistics. The
# original Gatys et al. code used Caffe's VGG (BGR, 0-255, mean subtraction only); we use
# torchvision's weights, so we use torchvision's normalization.
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """The requested VGG weights cannot be obtained or do not fit the architecture."""


def _build_meta(model: str) -> nn.Sequential:
    """torchvision's ``features`` stack, allocated on the meta device (no memory, no init)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    with torch.device("meta"):
        return _CONSTRUCTORS[model](weights=None).features


def _layer_names(features: nn.Sequential) -> list[str]:
    """Names in the Gatys/Caffe convention, one per module of ``features``, in order."""
    names: list[str] = []
    block, index = 1, 1
    for module in features:
        if isinstance(module, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
            index += 1
        elif isinstance(module, nn.MaxPool2d):
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:  # pragma: no cover - torchvision's VGG has no other module kinds
            raise TypeError(f"unexpected module in VGG features: {module!r}")
    return names


_LAYER_NAMES: Final = {name: _layer_names(_build_meta(name)) for name in MODELS}


def layer_names(model: str) -> list[str]:
    """Every addressable layer of ``model``, shallowest first."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    return list(_LAYER_NAMES[model])


def canonical_layer(model: str, name: str) -> str:
    """Resolve ``name`` (``relu4_2``, or a Keras alias such as ``block4_conv2``) for ``model``.

    Keras' VGG folds the ReLU into each convolution layer, so ``blockB_convI`` is the activated
    output, our ``reluB_I``; ``blockB_pool`` is ``poolB``.

    Raises:
        ValueError: the name is unknown or out of range for ``model``; the message lists the
            valid names.
    """
    valid = layer_names(model)
    candidate = name.strip().lower()
    if candidate.startswith("block"):
        head, _, tail = candidate[len("block") :].partition("_")
        if tail.startswith("conv"):
            candidate = f"relu{head}_{tail[len('conv'):]}"
        elif tail == "pool":
            candidate = f"pool{head}"
    if candidate not in valid:
        raise ValueError(
            f"unknown layer {name!r} for {model}: valid names are {', '.join(valid)} "
            "(Keras aliases blockB_convI and blockB_pool are accepted too)"
        )
    return candidate


def min_input_side(model: str, layers: Iterable[str]) -> int:
    """Smallest image side for which the deepest of ``layers`` still has a 1x1 feature map."""
    names = layer_names(model)
    deepest = max(names.index(canonical_layer(model, layer)) for layer in layers)
    pools_before = sum(1 for name in names[:deepest] if name.startswith("pool"))
    # A pool layer itself halves its input, so it needs one doubling more.
    if names[deepest].startswith("pool"):
        pools_before += 1
    return 2**pools_before


def _features_state_dict(raw: object, source: str) -> dict[str, Tensor]:
    """The ``features.*`` tensors of a torchvision VGG state dict, with the prefix removed."""
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise WeightsError(f"weights {source}: not a state dict of tensors (got {type(raw).__name__})")
    unexpected = [k for k in raw if not str(k).startswith(("features.", "classifier."))]
    if unexpected or not any(str(k).startswith("features.") for k in raw):
        shown = ", ".join(map(str, unexpected[:5])) or "no 'features.*' keys"
        raise WeightsError(
            f"weights {source}: not a torchvision VGG state dict ({shown}); expected keys "
            "'features.N.weight'/'features.N.bias', optionally with 'classifier.*'"
        )
    return {k[len("features.") :]: v for k, v in raw.items() if k.startswith("features.")}


def _download_imagenet(model: str) -> dict[str, Tensor]:
    enum = _WEIGHT_ENUMS[model]
    try:
        raw = enum.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        filename = enum.url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not download the {model} ImageNet weights from {enum.url} ({exc}). "
            f"Offline? Download that file on a connected machine and pass its path as weights "
            f"(--weights /path/to/{filename}), or place it in "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}/ where torchvision looks first."
        ) from exc
    return _features_state_dict(raw, enum.url)


def _random_state_dict(model: str, seed: int) -> dict[str, Tensor]:
    warnings.warn(
        "VGG weights are random: stylized images are not meaningful (use for tests and smoke runs)",
        stacklevel=3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = _CONSTRUCTORS[model](weights=None).features
    return features.state_dict()


def load_features_state_dict(model: str, weights: str, seed: int = 0) -> dict[str, Tensor]:
    """Resolve ``weights`` to a ``features`` state dict for ``model`` (keys without the prefix).

    Args:
        model: ``vgg16`` or ``vgg19``.
        weights: ``imagenet`` (torchvision's IMAGENET1K_V1, downloaded and cached by torchvision),
            ``random`` (seeded init; results are meaningless), or a local path to a state-dict
            file in torchvision's layout (a full model, or ``features.*`` keys only).
        seed: seed of the ``random`` initialization.

    Raises:
        WeightsError: the download failed, or the file is not a usable VGG state dict.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    if weights == "imagenet":
        return _download_imagenet(model)
    if weights == "random":
        return _random_state_dict(model, seed)
    if not os.path.isfile(weights):
        raise WeightsError(
            f"weights {weights!r}: no such file (use 'imagenet', 'random' or a state-dict path)"
        )
    try:
        raw = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for unreadable files
        raise WeightsError(f"weights {weights}: cannot be read as a state dict ({exc})") from exc
    return _features_state_dict(raw, weights)


class VGGFeatures(nn.Module):
    """A frozen VGG cut after the deepest requested layer; ``forward`` returns ``{layer: activation}``.

    The input is an RGB batch in [0, 1]; ImageNet normalization happens inside, so callers never
    see normalized pixels.
    """

    def __init__(
        self,
        model: str,
        layers: Iterable[str],
        state_dict: Mapping[str, Tensor],
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        names = layer_names(model)
        self.model = model
        self.layers = tuple(dict.fromkeys(canonical_layer(model, layer) for layer in layers))
        if not self.layers:
            raise ValueError("at least one layer is needed")
        cut = max(names.index(layer) for layer in self.layers) + 1
        self.deepest_layer = names[cut - 1]
        self.min_side = min_input_side(model, self.layers)

        stack = _build_meta(model)[:cut].to_empty(device="cpu")
        self._load(stack, state_dict, model)
        modules: list[nn.Module] = []
        for module in stack:
            if isinstance(module, nn.ReLU):
                # Not in place: a conv output that is itself a requested layer must survive.
                module = nn.ReLU(inplace=False)
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                # Gatys et al. report smoother results with average pooling; max is torchvision's.
                module = nn.AvgPool2d(kernel_size=2, stride=2)
            modules.append(module)
        self.stack = nn.Sequential(*modules)
        self._taps = {names.index(layer): layer for layer in self.layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load(stack: nn.Sequential, state_dict: Mapping[str, Tensor], model: str) -> None:
        expected = stack.state_dict()
        missing = [k for k in expected if k not in state_dict]
        if missing:
            raise WeightsError(
                f"weights do not fit {model}: missing features.{', features.'.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''} (a file for another VGG depth?)"
            )
        for key, tensor in expected.items():
            if state_dict[key].shape != tensor.shape:
                raise WeightsError(
                    f"weights do not fit {model}: features.{key} has shape "
                    f"{tuple(state_dict[key].shape)}, expected {tuple(tensor.shape)}"
                )
        stack.load_state_dict({k: state_dict[k] for k in expected}, strict=True)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = (image - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for index, module in enumerate(self.stack):
            x = module(x)
            layer = self._taps.get(index)
            if layer is not None:
                out[layer] = x
        return out
