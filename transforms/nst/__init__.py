"""Pure-PyTorch neural style transfer (Gatys, Ecker, Bethge 2015): no Beam, no fsspec.

Typical use::

    from transforms.nst import StyleConfig, StyleTransfer
    engine = StyleTransfer(StyleConfig(iterations=300))   # the embedded Caffe VGG19
    targets = engine.encode_styles([style_image])   # cache and reuse for many contents
    result = engine.stylize(content_image, targets)
    result.image.save("out.png")

The names below load on first use (PEP 562): importing this package, or its torch-free modules
``config``, ``families``, ``layers`` and ``records``, does not import torch, which keeps the
command line's --help fast and lets the pipeline's DoFns name the engine's records without it.

Imports: nothing until one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAMILIES": "transforms.nst.families",
    "WeightsFamily": "transforms.nst.families",
    "StyleConfig": "transforms.nst.config",
    "ImageDecodeError": "transforms.nst.images",
    "decode_image": "transforms.nst.images",
    "ImageTooSmallError": "transforms.nst.records",
    "IterationRecord": "transforms.nst.records",
    "ReadyQueue": "transforms.nst.records",
    "NonFiniteLossError": "transforms.nst.records",
    "PairFinished": "transforms.nst.records",
    "PairTaken": "transforms.nst.records",
    "SlotUse": "transforms.nst.records",
    "StyleRequest": "transforms.nst.records",
    "StyleResult": "transforms.nst.records",
    "batch_key": "transforms.nst.memory",
    "StyleTargets": "transforms.nst.records",
    "StyleTransfer": "transforms.nst.optimize",
    "TimeLimitError": "transforms.nst.records",
    "stylize": "transforms.nst.optimize",
    "WeightsError": "transforms.nst.vgg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
