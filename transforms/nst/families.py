"""Weights families: the input convention and default loss weights of each way of training VGG.

Plain data, no torch: the command line's choices and help come from here without loading torch.
weights.py explains the families and loads their weights.

Imports: the standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final


@dataclass(frozen=True)
class WeightsFamily:
    """The input convention and default loss weights that belong to one way of training VGG."""

    name: str
    # The optimizer's pixel units: an image in [0, 1] is multiplied by this.
    pixel_scale: float
    # True: the network's first convolution reads channels in B, G, R order.
    bgr: bool
    # Subtracted from, then divided into, each input channel (network channel order, pixel units).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    content_weight: float
    style_weight: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


FAMILIES: Final = {
    "caffe": WeightsFamily(
        name="caffe",
        pixel_scale=255.0,
        bgr=True,
        mean=(103.939, 116.779, 123.68),
        std=(1.0, 1.0, 1.0),
        content_weight=5.0,
        style_weight=100.0,
    ),
    "torchvision": WeightsFamily(
        name="torchvision",
        pixel_scale=1.0,
        bgr=False,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        content_weight=1.0,
        style_weight=1e6,
    ),
}

# Weights known by name, and the family each belongs to.
NAMED_WEIGHTS: Final = {"caffe": "caffe", "imagenet": "torchvision", "random": "torchvision"}


def resolve_family(weights: str, declared: str | None) -> WeightsFamily:
    """The family of ``weights``: implied by a name, declared for a file.

    Raises:
        ValueError: an unknown family, a declaration that contradicts a named family, or a file
            without a declared family.
    """
    if declared is not None and declared not in FAMILIES:
        raise ValueError(f"unknown weights_family {declared!r}: choose one of {', '.join(FAMILIES)}")
    implied = NAMED_WEIGHTS.get(weights)
    if implied is not None:
        if declared is not None and declared != implied:
            raise ValueError(f"weights {weights!r} are of the {implied!r} family, not {declared!r}")
        return FAMILIES[implied]
    if declared is None:
        raise ValueError(
            f"weights {weights!r}: a weights file needs its family declared (weights_family caffe "
            "for Caffe conversions such as vgg19-d01eb7cb.pth: BGR, 0-255, mean pixel; "
            "weights_family torchvision for torchvision's vgg19-dcbb9e9d.pth)"
        )
    return FAMILIES[declared]
