"""VGG16/VGG19 layer names as plain tables: torch-free, so a StyleConfig checks its layers
without importing torch (the command line's --help and the Flex Template metadata stay fast).

The tables are torchvision's VGG configurations (``cfgs["D"]`` and ``cfgs["E"]`` in
``torchvision/models/vgg.py``): output channels of each 3x3 convolution, ``"M"`` for a 2x2 max
pool. Each convolution is followed by a ReLU, so the ``features`` stack reads conv, relu, ...,
pool; tests/test_vgg.py checks the names against torchvision's modules.

Imports: nothing of the project; no torch, no Beam, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MODELS: Final = ("vgg16", "vgg19")
# torchvision's max pooling, or the average pooling Gatys et al. report smoother results with.
POOLINGS: Final = ("max", "avg")

_CONFIGURATIONS: Final[dict[str, tuple[int | str, ...]]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _names(configuration: tuple[int | str, ...]) -> tuple[str, ...]:
    """Names in the Gatys/Caffe convention, one per module of the ``features`` stack, in order."""
    names: list[str] = []
    block, index = 1, 1
    for entry in configuration:
        if entry == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return tuple(names)


_LAYER_NAMES: Final = {model: _names(configuration) for model, configuration in _CONFIGURATIONS.items()}


def layer_names(model: str) -> list[str]:
    """Every addressable layer of ``model``, shallowest first (one per ``features`` module)."""
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
            candidate = f"relu{head}_{tail[len('conv') :]}"
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


def parameter_sizes(model: str) -> list[int]:
    """The element count of every tensor of torchvision's whole ``model``: each convolution's
    weight and bias, then the classifier's three layers (what a full state dict holds)."""
    sizes, channels = [], 3
    for entry in _CONFIGURATIONS[model]:
        if entry != "M":
            sizes += [int(entry) * channels * 3 * 3, int(entry)]
            channels = int(entry)
    return [*sizes, 512 * 7 * 7 * 4096, 4096, 4096 * 4096, 4096, 4096 * 1000, 1000]


def conv_indices(model: str) -> dict[str, int]:
    """``conv1_1`` -> its index in torchvision's ``features`` stack, for every convolution."""
    return {name: index for index, name in enumerate(layer_names(model)) if name.startswith("conv")}
