"""VGG16/VGG19 feature extractors addressed by layer name.

The network is torchvision's own architecture (``torchvision.models.vgg16/vgg19``), cut right
after the deepest layer a caller asks for, frozen, and wrapped so that one forward pass returns
the activations of every requested layer by name (``relu4_2``, ``pool3``, ...). Where weights
come from, and which pixels they expect, is weights.py's business; layer names are layers.py's.

Imports: torch, torchvision, families and layers; no Beam, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import torch
from torch import Tensor, nn
from torchvision import models

from transforms.nst.families import WeightsFamily
from transforms.nst.layers import MODELS, POOLINGS, canonical_layer, layer_names, min_input_side

_CONSTRUCTORS: Final = {"vgg16": models.vgg16, "vgg19": models.vgg19}


class WeightsError(ValueError):
    """The requested VGG weights cannot be obtained or do not fit the architecture."""


def _build_meta(model: str) -> nn.Sequential:
    """torchvision's ``features`` stack, allocated on the meta device (no memory, no init)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    with torch.device("meta"):
        return _CONSTRUCTORS[model](weights=None).features


class VGGFeatures(nn.Module):
    """A frozen VGG cut after the deepest requested layer; ``forward`` returns ``{layer: activation}``.

    The input is an RGB batch in the weights family's pixel units (0-255 for ``caffe``, [0, 1]
    for ``torchvision``); the family's channel order and normalization are applied inside, so
    callers never see normalized pixels.
    """

    # Buffers (register_buffer): typed here for readers and the type checker.
    mean: Tensor
    std: Tensor

    def __init__(
        self,
        model: str,
        layers: Iterable[str],
        state_dict: Mapping[str, Tensor],
        family: WeightsFamily,
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
        self.family = family
        self.register_buffer("mean", torch.tensor(family.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(family.std).view(1, 3, 1, 1))
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
        if self.family.bgr:
            image = image.flip(1)  # RGB -> BGR, the channel order Caffe's VGG was trained on
        x = (image - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for index, module in enumerate(self.stack):
            if index == 0:
                # The first convolution in fp32 even under bf16 autocast: its input is pixels,
                # which bf16 rounds to steps of 1 in 0-255 units, hiding the small steps the end
                # of an optimization takes (bf16 ended 0.4% closer to fp32 with this; docs/method.md).
                with torch.autocast(x.device.type, enabled=False):
                    x = module(x)
            else:
                x = module(x)
            layer = self._taps.get(index)
            if layer is not None:
                out[layer] = x
        return out
