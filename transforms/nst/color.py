"""Original-colour transfer: the stylized luminance with the content image's chroma.

This is neural-style's ``-original_colors 1`` (Gatys et al. 2016, "Preserving Color in Neural
Artistic Style Transfer", colour-transfer variant applied after optimization), in full-range
ITU-R BT.601 YCbCr, the JPEG/Pillow definition.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_OFFSET = torch.tensor([0.0, 0.5, 0.5])


def rgb_to_ycbcr(image: Tensor) -> Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] -> YCbCr in [0, 1] (chroma centred on 0.5)."""
    matrix = _RGB_TO_YCBCR.to(image)
    return torch.einsum("ij,...jhw->...ihw", matrix, image) + _OFFSET.to(image).view(3, 1, 1)


def ycbcr_to_rgb(image: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (values may leave [0, 1]; the caller clamps)."""
    matrix = torch.linalg.inv(_RGB_TO_YCBCR.double()).to(image)
    return torch.einsum("ij,...jhw->...ihw", matrix, image - _OFFSET.to(image).view(3, 1, 1))


def keep_colors(stylized: Tensor, content: Tensor) -> Tensor:
    """The luminance of ``stylized`` combined with the chroma of ``content`` (same shape)."""
    luma = rgb_to_ycbcr(stylized)[..., :1, :, :]
    chroma = rgb_to_ycbcr(content)[..., 1:, :, :]
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=-3))
