"""Shared fixtures: seeded random VGG weights in files, loaded the way users load theirs; a finished
run and an engine, made once per session."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision import models

from tests.helpers import FinishedRun, engine_config, job_args, write_images
from transforms.nst.optimize import StyleTransfer

# With pytest-xdist's workers (the README's test command runs two), each worker's torch takes
# one thread: two workers with two threads each on two cores run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


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


@pytest.fixture
def two_pairs(tmp_path: Path) -> Path:
    """A manifest of two pairs, ``cat`` and ``dog``, each with ``waves``, in ``tmp_path/in``."""
    write_images(tmp_path / "in", {"cat.png": 1, "dog.png": 2, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("id,content,style\ncat,cat.png,waves.png\ndog,dog.png,waves.png\n")
    return manifest


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, weights_file: Callable[[str], str]) -> FinishedRun:
    """One two-pair job, run once for the session's tests that damage or reread a copy of it."""
    from pipeline.main import run

    folder = tmp_path_factory.mktemp("finished-run")
    write_images(folder / "in", {"cat.png": 1, "dog.png": 2, "waves.png": 3})
    manifest = folder / "in" / "manifest.csv"
    manifest.write_text("id,content,style\ncat,cat.png,waves.png\ndog,dog.png,waves.png\n")
    finished = FinishedRun(manifest, folder / "out", weights_file("vgg19"))
    assert run(job_args(finished.weights, finished.output, f"--manifest={manifest}")) == 0
    return finished


@pytest.fixture(scope="session")
def engine_fp32(weights_file: Callable[[str], str]) -> StyleTransfer:
    """An engine on seeded random VGG19 weights with the engine tests' config (helpers.engine_config)."""
    return StyleTransfer(engine_config(weights_file))
