"""Pure-PyTorch neural style transfer (Gatys, Ecker, Bethge 2015): no Beam, no fsspec.

Typical use::

    from beam_style_transfer.transforms.nst import StyleConfig, StyleTransfer
    engine = StyleTransfer(StyleConfig(iterations=300))   # the embedded Caffe VGG19
    targets = engine.encode_styles([style_image])   # cache and reuse for many contents
    result = engine.stylize(content_image, targets)
    result.image.save("out.png")

The names below load on first use (PEP 562): importing this package, or its torch-free modules
``config`` and ``families``, does not import torch, which keeps the command line's --help fast.

Imports: nothing until one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAMILIES": "beam_style_transfer.transforms.nst.families",
    "WeightsFamily": "beam_style_transfer.transforms.nst.families",
    "StyleConfig": "beam_style_transfer.transforms.nst.config",
    "ImageDecodeError": "beam_style_transfer.transforms.nst.images",
    "decode_image": "beam_style_transfer.transforms.nst.images",
    "encode_png": "beam_style_transfer.transforms.nst.images",
    "ImageTooSmallError": "beam_style_transfer.transforms.nst.optimize",
    "IterationRecord": "beam_style_transfer.transforms.nst.optimize",
    "NonFiniteLossError": "beam_style_transfer.transforms.nst.optimize",
    "StyleRequest": "beam_style_transfer.transforms.nst.optimize",
    "StyleResult": "beam_style_transfer.transforms.nst.optimize",
    "batch_key": "beam_style_transfer.transforms.nst.optimize",
    "StyleTargets": "beam_style_transfer.transforms.nst.optimize",
    "StyleTransfer": "beam_style_transfer.transforms.nst.optimize",
    "TimeLimitError": "beam_style_transfer.transforms.nst.optimize",
    "stylize": "beam_style_transfer.transforms.nst.optimize",
    "WeightsError": "beam_style_transfer.transforms.nst.vgg",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
