"""The loss terms of Gatys et al., normalized so that default weights do not depend on image size.

Normalization (a deliberate deviation from the paper, whose sums grow with the image):
- Gram matrix: ``F Fᵀ / (C·H·W)``; content and style terms are mean squared errors. These are the
  conventions of the PyTorch neural-style tutorial and pystiche, the anchors for torchvision
  weights, so their weights (content 1, style 1e6) carry over. Gatys' style term equals ours times
  ``C²/4`` per layer, and their content term ours times ``C·H·W/2``.
- Total variation: mean squared difference of neighbouring pixels (not in Gatys et al.; from
  Mahendran & Vedaldi and neural-style), zero for a constant image.

Every loss is per image: ``(N, ...)`` in, ``(N,)`` out, so that the N images of a batch (N
independent pairs) keep their own losses and their own gradients.

Imports: torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gram_matrix(features: Tensor) -> Tensor:
    """``(N, C, H, W)`` activations -> ``(N, C, C)`` Gram matrices divided by ``C·H·W``."""
    n, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last):
        # NHWC storage: the (N, H·W, C) view is free, so Gram = Fᵀ F without a copy.
        flat = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        gram = flat.transpose(1, 2) @ flat
    else:
        flat = features.reshape(n, c, h * w)
        gram = flat @ flat.transpose(1, 2)
    return gram / (c * h * w)


def _mean_per_image(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Per image: mean squared error between activations and the content image's activations."""
    return _mean_per_image(F.mse_loss(features, target.expand_as(features), reduction="none"))


def style_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """Per image: mean squared error between the Gram matrix of ``features`` and its target
    (``(N, C, C)``, or one ``(1, C, C)`` / ``(C, C)`` target for all)."""
    gram = gram_matrix(features)
    return _mean_per_image(F.mse_loss(gram, target_gram.expand_as(gram), reduction="none"))


def tv_loss(image: Tensor) -> Tensor:
    """Per image: mean squared difference between vertically and horizontally neighbouring pixels."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return _mean_per_image(dy.pow(2)) + _mean_per_image(dx.pow(2))
