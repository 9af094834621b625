"""Colour control (Gatys et al. 2016): luminance-only transfer and colour histogram matching."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import engine_config, synthetic_image
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.color import match_colors
from transforms.nst.config import with_color_alias
from transforms.nst.images import image_to_tensor


def _stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.reshape(3, -1).double()
    return pixels.mean(dim=1), torch.cov(pixels, correction=0)


def test_matching_gives_the_style_the_contents_colour_mean_and_covariance() -> None:
    generator = torch.Generator().manual_seed(0)
    # Pictures whose matched colours stay inside [0, 1] (the clamp would move the statistics).
    style = 0.5 + 0.1 * torch.randn(3, 40, 30, generator=generator) @ torch.eye(30)
    content = 0.4 + 0.08 * torch.randn(3, 20, 25, generator=generator)
    content[0] += 0.1 * content[1]
    matched = match_colors(style, content)
    mean, cov = _stats(matched)
    want_mean, want_cov = _stats(content)
    assert torch.allclose(mean, want_mean, atol=1e-4) and torch.allclose(cov, want_cov, atol=1e-4)
    assert not torch.allclose(_stats(style)[1], want_cov, atol=1e-3)  # it did have to move


def test_histogram_targets_are_the_styles_in_the_contents_colours(weights_file) -> None:
    engine = StyleTransfer(engine_config(weights_file, color_control="histogram"))
    content, style = synthetic_image(1), synthetic_image(3)
    plain = engine.encode_styles([style])
    matched = engine.encode_styles([style], colors_of=content)
    assert all(not torch.allclose(plain.grams[layer], matched.grams[layer]) for layer in plain.grams)
    first = image_to_tensor(matched.first_image)[0]
    assert torch.allclose(_stats(first)[0], _stats(image_to_tensor(content)[0])[0], atol=0.02)
    # The one-shot API and the engine agree: histogram mode uses the matched targets.
    from transforms.nst import stylize

    result = stylize(content, [style], engine.config.replace(iterations=3))
    by_hand = engine.stylize(content, matched, engine.config.replace(iterations=3))
    assert result.final.total == pytest.approx(by_hand.final.total, rel=1e-5)


@pytest.mark.parametrize(
    ("settings", "control"),
    [
        ({"original_colors": True, "color_control": "none"}, "luminance"),
        ({"original_colors": False, "color_control": "histogram"}, "histogram"),
        ({"original_colors": False}, "none"),
        ({"color_control": "histogram"}, "histogram"),
    ],
)
def test_original_colors_is_neural_styles_name_for_luminance(settings, control) -> None:
    assert with_color_alias(settings) == {"color_control": control}


def test_original_colors_with_histogram_is_refused() -> None:
    with pytest.raises(
        ValueError, match="original_colors is color_control luminance; it cannot go with color_control histogram"
    ):
        with_color_alias({"original_colors": True, "color_control": "histogram"})
    with pytest.raises(ValueError, match="unknown color_control 'warm'"):
        StyleConfig(color_control="warm")
