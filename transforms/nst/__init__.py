"""Pure-PyTorch neural style transfer (Gatys, Ecker, Bethge 2015): no Beam, no fsspec.

Typical use::

    from transforms.nst import StyleConfig, StyleTransfer
    engine = StyleTransfer(StyleConfig(iterations=300))   # the embedded Caffe VGG19
    targets = engine.encode_styles([style_image])   # cache and reuse for many contents
    result = engine.stylize(content_image, targets)
    result.image.save("out.png")
"""

from transforms.nst.config import StyleConfig
from transforms.nst.images import ImageDecodeError, decode_image, encode_png
from transforms.nst.optimize import (
    ImageTooSmallError,
    IterationRecord,
    NonFiniteLossError,
    StyleResult,
    StyleTargets,
    StyleTransfer,
    stylize,
)
from transforms.nst.vgg import WeightsError
from transforms.nst.weights import FAMILIES, WeightsFamily

__all__ = [
    "FAMILIES",
    "ImageDecodeError",
    "ImageTooSmallError",
    "IterationRecord",
    "NonFiniteLossError",
    "StyleConfig",
    "StyleResult",
    "StyleTargets",
    "StyleTransfer",
    "WeightsError",
    "WeightsFamily",
    "decode_image",
    "encode_png",
    "stylize",
]
