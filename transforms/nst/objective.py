"""The objective of Gatys et al.: weighted content, style and total-variation losses of N pairs.

Imports: torch, config, losses and vgg; no Beam, no storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from transforms.nst.config import StyleConfig
from transforms.nst.losses import content_loss, style_loss, tv_loss
from transforms.nst.vgg import VGGFeatures


class Objective(nn.Module):
    """The weighted loss of Gatys et al. for N (content, style) pairs: targets held as buffers.

    ``content`` holds the N content images (NCHW, family units); their activations become the
    content targets.

    ``forward(images)`` takes N NCHW images in the family's pixel units and returns an
    ``(N, 4 + style layers)`` tensor, one row ``[total, content, style, tv, *style per layer]``
    per pair, every term weighted by that pair's own config. Pairs share the network and layers.
    ``precision`` (``fp32`` or ``bf16``, resolved: precision.py) is the network's.
    """

    def __init__(
        self,
        network: VGGFeatures,
        content: Tensor,
        style_grams: Sequence[dict[str, Tensor]],
        configs: Sequence[StyleConfig],
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.network = network
        self.content_layers = configs[0].content_layers
        self.style_layers = configs[0].style_layers
        for layer in self.style_layers:
            self.register_buffer(f"gram_{layer}", torch.cat([grams[layer] for grams in style_grams]))
        device = style_grams[0][self.style_layers[0]].device

        def per_pair(values: list[Any]) -> Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.register_buffer(
            "style_layer_weights",
            per_pair([[c.style_weight * w for w in c.layer_weights.values()] for c in configs]),
        )
        self.register_buffer("content_weight", per_pair([c.content_weight for c in configs]))
        self.register_buffer("tv_weight", per_pair([c.tv_weight for c in configs]))
        self.use_tv = any(c.tv_weight for c in configs)
        self.pixel_scale = configs[0].family.pixel_scale
        self.bf16 = precision == "bf16"
        with torch.no_grad():
            # At the objective's own precision, so that the content image scores exactly zero.
            features = self.features(content)
        for layer in self.content_layers:
            self.register_buffer(f"content_{layer}", features[layer])

    @torch.no_grad()
    def replace_pair(self, row: int, content: Tensor, style_grams: dict[str, Tensor], config: StyleConfig) -> None:
        """Pair ``row`` becomes another pair (one NCHW ``content``, its Grams, its settings): a
        batch slot refilled with the next waiting pair. The layers and precision stay."""
        features = self.features(content)
        for layer in self.content_layers:
            getattr(self, f"content_{layer}")[row] = features[layer][0]
        for layer in self.style_layers:
            getattr(self, f"gram_{layer}")[row] = style_grams[layer][0]
        self.style_layer_weights[row] = torch.tensor([config.style_weight * w for w in config.layer_weights.values()])
        self.content_weight[row] = config.content_weight
        self.tv_weight[row] = config.tv_weight
        self.use_tv = self.use_tv or bool(config.tv_weight)

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """The network's activations at the precision the configs ask for, returned in float32."""
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.network(images)
        return {layer: value.float() for layer, value in features.items()} if self.bf16 else features

    def forward(self, images: Tensor, rows: Tensor | None = None) -> Tensor:
        """The loss rows of ``images``: one per pair, or, with ``rows`` (indices), of those pairs only."""

        def of_rows(values: Tensor) -> Tensor:
            return values if rows is None else values[rows]

        features = self.features(images)
        content = of_rows(self.content_weight) * sum(
            content_loss(features[layer], of_rows(getattr(self, f"content_{layer}"))) for layer in self.content_layers
        )
        styles = of_rows(self.style_layer_weights) * torch.stack(
            [style_loss(features[layer], of_rows(getattr(self, f"gram_{layer}"))) for layer in self.style_layers], dim=1
        )
        style = styles.sum(dim=1)
        # TV is measured on [0, 1] pixels whatever the family, so tv_weight means the same for both.
        tv = of_rows(self.tv_weight) * tv_loss(images / self.pixel_scale) if self.use_tv else torch.zeros_like(content)
        return torch.cat([torch.stack([content + style + tv, content, style, tv], dim=1), styles], dim=1)
