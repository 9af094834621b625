"""Colour control, the two methods of Gatys et al. 2016, "Preserving Color in Neural Artistic
Style Transfer":

- luminance-only transfer (:func:`keep_colors`): the stylized luminance with the content's
  chroma, applied after optimization, as neural-style's ``-original_colors 1``; in full-range
  ITU-R BT.601 YCbCr, the JPEG/Pillow definition. (The paper optimizes on luminance images; the
  after-the-fact variant is what neural-style and its users run.)
- colour histogram matching (:func:`match_colors`): each style image's colours moved to the
  content's mean and covariance before the style targets are computed, by the paper's linear
  transform with A = Σc^½ Σs^-½ (symmetric square roots, from eigendecompositions).

Imports: torch only.
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


def match_colors(style: Tensor, content: Tensor, eps: float = 1e-5) -> Tensor:
    """``style`` (3, H, W RGB in [0, 1]) with the colour mean and covariance of ``content``
    (3, H', W'), clamped to [0, 1]."""

    def stats(image: Tensor) -> tuple[Tensor, Tensor]:
        pixels = image.reshape(3, -1).double()
        mean = pixels.mean(dim=1, keepdim=True)
        centred = pixels - mean
        return mean, centred @ centred.T / pixels.shape[1] + eps * torch.eye(3, dtype=torch.float64)

    def power(matrix: Tensor, exponent: float) -> Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(eps) ** exponent) @ vectors.T

    style_mean, style_cov = stats(style)
    content_mean, content_cov = stats(content)
    transform = power(content_cov, 0.5) @ power(style_cov, -0.5)
    matched = transform @ (style.reshape(3, -1).double() - style_mean) + content_mean
    return matched.reshape(style.shape).clamp(0, 1).to(style.dtype)
