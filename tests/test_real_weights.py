"""The embedded original VGG19 and the optimizer on real weights and real pictures.

Random weights have activations of another scale and hid an optimizer that diverged on real
ones, so these tests use the weights users get by default, at small sizes.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.families import FAMILIES
from transforms.nst.images import fit_longest_side, image_to_tensor, tensor_to_image
from transforms.nst.layers import conv_indices
from transforms.nst.lbfgs import BACKTRACK, LBFGS
from transforms.nst.losses import gram_matrix
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import WeightsError, load_features_state_dict

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def example(name: str, size: int) -> Image.Image:
    return fit_longest_side(Image.open(EXAMPLES / name).convert("RGB"), size)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty torch cache and no network: any connection attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded weights must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_embedded_weights_load_offline_with_vgg19_shapes(offline) -> None:
    state = load_features_state_dict("vgg19", "caffe")
    convs = conv_indices("vgg19")
    assert len(convs) == 16
    assert state[f"{convs['conv1_1']}.weight"].shape == (64, 3, 3, 3)
    assert state[f"{convs['conv5_4']}.weight"].shape == (512, 512, 3, 3)
    # k-means quantized: each layer's weights take at most 256 distinct values
    assert state[f"{convs['conv3_1']}.weight"].unique().numel() <= 256
    assert all(torch.isfinite(t).all() for t in state.values())


def test_embedded_weights_behave_like_a_trained_network(offline) -> None:
    photo = example("cat.jpg", 128)
    activations = {}
    for weights, family in (("caffe", "caffe"), ("random", "torchvision")):
        network = VGGFeatures("vgg19", ["relu5_1"], load_features_state_dict("vgg19", weights), FAMILIES[family])
        deep = network(image_to_tensor(photo) * FAMILIES[family].pixel_scale)["relu5_1"]
        assert torch.isfinite(deep).all()
        activations[weights] = (deep == 0).float().mean().item()
    # Trained deep units fire rarely (about 3 in 4 are off); random ones fire about half the time.
    assert activations["caffe"] > 0.65 > activations["random"]


def test_embedded_weights_are_vgg19_only() -> None:
    with pytest.raises(WeightsError, match="the embedded Caffe weights are VGG19's; for vgg16 pass a weights file"):
        load_features_state_dict("vgg16", "caffe")


def test_real_weights_stylize_a_real_pair() -> None:
    config = StyleConfig(image_size=64, iterations=40, device="cpu")
    assert (config.weights, config.content_weight, config.style_weight) == ("caffe", 5.0, 100.0)
    engine = StyleTransfer(config)
    content, style = example("cat.jpg", 64), example("starry_night.jpg", 64)
    result = engine.stylize(content, engine.encode_styles([style]))

    assert all(math.isfinite(r.total) for r in result.history)
    assert result.final.total < 0.2 * result.history[0].total
    # The written image is the scored one: the final record matches a fresh evaluation of it.
    written = image_to_tensor(result.image)
    assert (written - image_to_tensor(content)).abs().mean() > 0.05

    def style_distance(image: Image.Image) -> float:
        features = engine.network(image_to_tensor(image) * 255.0)
        target = engine.network(image_to_tensor(style) * 255.0)
        return sum(
            (gram_matrix(features[k]) - gram_matrix(target[k])).pow(2).mean().item() for k in config.style_layers
        )

    with torch.no_grad():
        assert style_distance(result.image) < 0.1 * style_distance(content)


def test_final_record_is_the_loss_of_the_written_image() -> None:
    engine = StyleTransfer(StyleConfig(image_size=48, iterations=15, device="cpu"))
    targets = engine.encode_styles([example("the_scream.jpg", 48)])
    content = example("astronaut.jpg", 48)
    result = engine.stylize(content, targets)
    # Score the PNG's pixels independently with the same objective.
    from transforms.nst.objective import Objective

    content_tensor = engine.to_input(content, "content")
    objective = Objective(engine.network, content_tensor, [targets.grams], [engine.config])
    with torch.no_grad():
        rescored = objective(engine.to_input(result.image, "result"))[0, 0].item()
    assert rescored == pytest.approx(result.final.total, rel=1e-4)


def test_guard_undoes_a_step_that_blows_up_and_goes_on() -> None:
    # A convex quadratic; the 4th evaluation is forced to an infinite loss, as a blown-up step is.
    curvature = torch.tensor([100.0, 1.0, 10.0], dtype=torch.float64)
    target = torch.tensor([2.5, -2.0, 1.0], dtype=torch.float64)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = LBFGS([x], history_size=5)
    evaluated, after, rejected = [], [], []
    for step in range(60):

        def closure(step: int = step) -> torch.Tensor:
            optimizer.zero_grad()
            loss = (curvature * (x - target) ** 2).sum()
            loss.backward()
            return torch.full_like(loss, math.inf) if step == 3 else loss

        evaluated.append(x.detach().clone())
        optimizer.step(closure)
        after.append(x.detach().clone())
        rejected.append(bool(optimizer.last_rejected))
    assert rejected == [step == 3 for step in range(60)]
    # Undone: back to the last accepted point, then BACKTRACK of the rejected step, same way.
    accepted, trial = evaluated[2], evaluated[3]
    torch.testing.assert_close(after[3], accepted + BACKTRACK * (trial - accepted))
    # ...and the run goes on to the minimum, nothing non-finite in it.
    torch.testing.assert_close(x.detach(), target, atol=1e-6, rtol=0)


def test_solid_colour_against_noise_finishes_with_random_weights() -> None:
    # Once a NaN at iteration 10: a flat image has zero Gram statistics to start from.
    engine = StyleTransfer(StyleConfig(weights="random", image_size=48, iterations=25, device="cpu"))
    generator = torch.Generator().manual_seed(3)
    noise = tensor_to_image(torch.rand(1, 3, 48, 48, generator=generator))
    result = engine.stylize(Image.new("RGB", (48, 32), (200, 30, 30)), engine.encode_styles([noise]))
    assert all(math.isfinite(r.total) or r.rejected for r in result.history)
    assert math.isfinite(result.final.total)
    # Never worse than the start (in range and 8-bit already, so scored exactly as written).
    assert result.final.total < result.history[0].total
