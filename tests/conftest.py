"""Shared fixtures: seeded random VGG weights in files, loaded the way users load theirs."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision import models


def _save_random_weights(path: Path, model: str, features_only: bool) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        network = getattr(models, model)(weights=None)
    state = network.state_dict()
    if features_only:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """``weights_file("vgg19")`` -> path of a seeded random ``features.*`` state dict."""
    folder = tmp_path_factory.mktemp("weights")
    cache: dict[str, str] = {}

    def get(model: str) -> str:
        if model not in cache:
            path = folder / f"{model}-random-features.pth"
            cache[model] = str(_save_random_weights(path, model, features_only=True))
        return cache[model]

    return get


@pytest.fixture(scope="session")
def full_vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A full-model (features + classifier) VGG16 state dict, torchvision's layout."""
    path = tmp_path_factory.mktemp("weights-full") / "vgg16-random-full.pth"
    return str(_save_random_weights(path, "vgg16", features_only=False))


@pytest.fixture(autouse=True)
def _no_random_weight_warning_noise() -> None:
    warnings.filterwarnings("ignore", message="VGG weights are random")
