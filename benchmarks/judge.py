"""A judge that sees what a person sees: how much of the painting a picture took, at several
scales, and how much of the photo it kept.

    from benchmarks.judge import Judge
    verdict = Judge()(picture, photo, painting)   # PIL images
    verdict.style["1/4"], verdict.content

A final loss at one scale cannot tell a photo with brush texture on top from a painting: the loss
sees the picture at the size it was optimized at, where texture lives, while large strokes and
colour fields show when the picture is looked at from across a room. So the judge looks at each
picture at full size, at 1/2 and at 1/4 (the picture, the photo and the painting all shrunk
alike), on the original VGG19 in fp32:

- **style distance** at each scale: the distance (Frobenius norm) of the picture's Gram matrices
  from the painting's, as a fraction of the photo's own distance from them, averaged over
  ``relu1_1 … relu5_1``. 1 is "no more painted than the photo", 0 is "the painting's statistics";
- **content distance**: the distance of the picture's ``relu4_2`` features from the photo's, as a
  fraction of the photo's own norm (0: the photo's features exactly). It says whether the subject
  is still there: a result that took the painting by dropping the photo shows it here.

Distances, not their squares: a picture halfway to the painting reads 0.5, not 0.25.

The painting is compared at the picture's own longest side (style scale 1, as the defaults), so
the figures mean the same for every setting a picture was made with.
"""

from __future__ import annotations

import dataclasses

import torch
from PIL import Image

from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fit_longest_side
from transforms.nst.losses import gram_matrix

# The scales the judge looks at, by how much the picture is shrunk.
SCALES = {"1": 1, "1/2": 2, "1/4": 4}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judge's figures for one picture: lower style is more painted, lower content is closer
    to the photo."""

    style: dict[str, float]
    content: float

    @property
    def mean_style(self) -> float:
        """The style distance averaged over the judge's scales: one number to rank pictures by."""
        return sum(self.style.values()) / len(self.style)

    def to_dict(self) -> dict[str, object]:
        return {"style": self.style, "content": self.content}


class Judge:
    """Scores pictures against their photo and painting on an fp32 VGG19 (the embedded Caffe
    weights unless ``engine`` brings another network)."""

    def __init__(self, engine: StyleTransfer | None = None) -> None:
        self.engine = engine or StyleTransfer(StyleConfig(precision="fp32"))
        self.style_layers = self.engine.config.style_layers
        self.content_layer = self.engine.config.content_layers[0]

    @torch.no_grad()
    def _features(self, image: Image.Image) -> dict[str, torch.Tensor]:
        return self.engine.network(self.engine.to_input(image, "a judged picture"))

    @torch.no_grad()
    def _style_distance(self, picture: Image.Image, photo: Image.Image, painting: Image.Image) -> float:
        mine, photos, targets = (self._features(image) for image in (picture, photo, painting))
        fractions = []
        for layer in self.style_layers:
            target = gram_matrix(targets[layer])
            taken = torch.linalg.norm(gram_matrix(mine[layer]) - target)
            start = torch.linalg.norm(gram_matrix(photos[layer]) - target)
            fractions.append((taken / start).item())
        return sum(fractions) / len(fractions)

    def __call__(self, picture: Image.Image, photo: Image.Image, painting: Image.Image) -> Verdict:
        """``picture`` judged against ``photo`` (resized to the picture's exact size) and
        ``painting`` (resized to the picture's longest side)."""
        size = picture.size
        photo = photo.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        painting = fit_longest_side(painting.convert("RGB"), max(size))
        style = {}
        for name, factor in SCALES.items():
            shrunk = (max(1, round(size[0] / factor)), max(1, round(size[1] / factor)))
            style[name] = self._style_distance(
                picture.resize(shrunk, Image.Resampling.LANCZOS),
                photo.resize(shrunk, Image.Resampling.LANCZOS),
                fit_longest_side(painting, max(shrunk)),
            )
        mine, photos = self._features(picture)[self.content_layer], self._features(photo)[self.content_layer]
        content = (torch.linalg.norm(mine - photos) / torch.linalg.norm(photos)).item()
        return Verdict(style, content)
