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

    # Per-pair weights, one row each (register_buffer; the targets' buffers are named per layer).
    style_layer_weights: Tensor
    content_weight: Tensor
    tv_weight: Tensor

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
            per_pair([[_resolved(c.style_weight) * w for w in c.layer_weights.values()] for c in configs]),
        )
        self.register_buffer("content_weight", per_pair([c.content_weight for c in configs]))
        self.register_buffer("tv_weight", per_pair([c.tv_weight for c in configs]))
        self.use_tv = any(c.tv_weight for c in configs)
        self.pixel_scale = configs[0].family.pixel_scale
        self.bf16 = precision == "bf16"
        # Pairs whose network runs in fp32 although the objective's precision is bf16: L-BFGS's
        # last phase (set by the optimization loop; a host list, so no step waits on the device).
        self.fp32_rows = [False] * len(configs)
        with torch.no_grad():
            # Targets in fp32 whatever the precision (as the style Grams are encoded): bf16 only
            # ever approximates the optimized image's features, never what they must match.
            features = self.features(content, fp32=True)
        for layer in self.content_layers:
            self.register_buffer(f"content_{layer}", features[layer])

    @torch.no_grad()
    def replace_pair(self, row: int, content: Tensor, style_grams: dict[str, Tensor], config: StyleConfig) -> None:
        """Pair ``row`` becomes another pair (one NCHW ``content``, its Grams, its settings): a
        batch slot refilled with the next waiting pair. The layers and precision stay."""
        features = self.features(content, [row], fp32=True)
        for layer in self.content_layers:
            getattr(self, f"content_{layer}")[row] = features[layer][0]
        self.fp32_rows[row] = False
        for layer in self.style_layers:
            getattr(self, f"gram_{layer}")[row] = style_grams[layer][0]
        self.style_layer_weights[row] = torch.tensor(
            [_resolved(config.style_weight) * w for w in config.layer_weights.values()]
        )
        self.content_weight[row] = _resolved(config.content_weight)
        self.tv_weight[row] = config.tv_weight
        self.use_tv = self.use_tv or bool(config.tv_weight)

    def keep(self, rows: Sequence[int]) -> None:
        """Only the pairs ``rows`` (in order) go on: every per-pair target and weight shrinks to them."""
        for name, buffer in list(self.named_buffers(recurse=False)):  # the network's own are shared
            setattr(self, name, buffer[list(rows)])
        self.fp32_rows = [self.fp32_rows[row] for row in rows]

    def features(self, images: Tensor, rows: Sequence[int] | None = None, fp32: bool = False) -> dict[str, Tensor]:
        """The network's activations of ``images`` (the pairs ``rows``, default all), in the
        engine's dtype.

        With bf16, the network runs under bf16 autocast for the pairs not in ``fp32_rows``, and
        in fp32 for those (and for all with ``fp32``): a batch in mixed phases runs as two
        sub-batches, so each pair's arithmetic is what it would be alone.
        """
        indices = range(images.shape[0]) if rows is None else rows
        exact = [fp32 or not self.bf16 or self.fp32_rows[row] for row in indices]
        if all(exact) or not any(exact):
            if exact[0]:
                return self.network(images)
            with torch.autocast(images.device.type, dtype=torch.bfloat16):
                features = self.network(images)
            # bf16 activations back in float32 for the Grams and losses (a float64 engine's,
            # which autocast leaves alone, stay float64)
            return {
                layer: value.float() if value.dtype == torch.bfloat16 else value for layer, value in features.items()
            }
        halves = [[k for k, e in enumerate(exact) if not e], [k for k, e in enumerate(exact) if e]]
        parts = [self.features(images[half], [indices[k] for k in half]) for half in halves]
        order = torch.tensor(halves[0] + halves[1], device=images.device).argsort()
        return {layer: torch.cat([part[layer] for part in parts])[order] for layer in parts[0]}

    def forward(self, images: Tensor, rows: Sequence[int] | None = None, fp32: bool = False) -> Tensor:
        """The loss rows of ``images``: one per pair, or, with ``rows``, of those pairs only;
        ``fp32``: the network in fp32 for all of them (to score images as written)."""

        def of_rows(values: Tensor) -> Tensor:
            return values if rows is None else values[list(rows)]

        features = self.features(images, rows, fp32)
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


def _resolved(weight: float | None) -> float:
    """A loss weight of a config: None only before StyleConfig resolves it to its family's."""
    if weight is None:
        raise ValueError("a loss weight is unresolved (StyleConfig resolves None to the family's)")
    return weight
