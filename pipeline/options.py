"""StyleTransferOptions (Beam options) -> PipelineConfig, the one configuration of a job."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.manifest import FORMATS
from transforms.nst.config import DEVICES, OPTIMIZERS, StyleConfig
from transforms.nst.vgg import MODELS, POOLINGS
from transforms.nst.weights import FAMILIES, NAMED_WEIGHTS

_DEFAULTS = StyleConfig()


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in _names(text))


class StyleTransferOptions(PipelineOptions):
    """The job's own flags; every other Beam option (--runner, --project, ...) passes through."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        job = parser.add_argument_group("inputs and outputs")
        job.add_argument("--manifest", help="CSV (header row) or JSON Lines manifest URL: local path, gs://, s3://, memory://")
        job.add_argument("--manifest_format", choices=FORMATS, help="override the format implied by the manifest's extension")
        job.add_argument("--contents", help="glob of content images; with --styles, stylize every content with every style")
        job.add_argument("--styles", help="glob of style images (used with --contents)")
        job.add_argument("--output", help="output folder URL (images/, logs/, failures/, summary.json)")
        job.add_argument("--overwrite", action="store_true", help="redo pairs that are already done")
        job.add_argument("--strict", action="store_true", help="exit with status 1 if any row or pair failed")

        engine = parser.add_argument_group("style transfer (manifest columns may override some per row)")
        engine.add_argument("--model", choices=MODELS, default=_DEFAULTS.model, help="torchvision VGG architecture")
        engine.add_argument(
            "--weights", default=_DEFAULTS.weights,
            help="'caffe' (the original VGG19, embedded: no download), 'imagenet' (torchvision's, "
            "downloaded), 'random' (tests only), or a state-dict path/URL (with --weights_family)",
        )
        engine.add_argument(
            "--weights_family", choices=tuple(FAMILIES), default=None,
            help="pixels a weights file expects: caffe (BGR, 0-255, mean pixel) or torchvision "
            f"(RGB, [0, 1], mean/std); implied by {', '.join(NAMED_WEIGHTS)}",
        )
        engine.add_argument("--pooling", choices=POOLINGS, default=_DEFAULTS.pooling, help="avg is what Gatys et al. prefer")
        engine.add_argument("--content_layers", type=_names, default=",".join(_DEFAULTS.content_layers), help="comma-separated layer names")
        engine.add_argument("--style_layers", type=_names, default=",".join(_DEFAULTS.style_layers), help="comma-separated layer names")
        engine.add_argument("--style_layer_weights", type=_floats, default=None, help="comma-separated, one per style layer (default 1 each)")
        engine.add_argument("--content_weight", type=float, default=None, help="weight of the content term (default: the weights family's, caffe 5, torchvision 1)")
        engine.add_argument("--style_weight", type=float, default=None, help="weight of the style term (default: the weights family's, caffe 100, torchvision 1e6)")
        engine.add_argument("--tv_weight", type=float, default=_DEFAULTS.tv_weight, help="total-variation smoothing (0: none, as Gatys et al.)")
        engine.add_argument("--init", default=_DEFAULTS.init, help="content, random, style, or an image URL")
        engine.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULTS.optimizer, help="optimizer over the pixels")
        engine.add_argument("--learning_rate", type=float, default=_DEFAULTS.learning_rate, help="Adam only")
        engine.add_argument("--iterations", type=int, default=_DEFAULTS.iterations, help="one forward+backward each")
        engine.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="seed of random init and random weights")
        engine.add_argument("--image_size", type=int, default=_DEFAULTS.image_size, help="longest side of the output, px")
        engine.add_argument("--style_scale", type=float, default=_DEFAULTS.style_scale, help="style image size relative to image_size")
        engine.add_argument("--original_colors", action="store_true", help="keep the content's colours (luminance-only transfer)")
        engine.add_argument("--device", choices=DEVICES, default=_DEFAULTS.device, help="auto: CUDA when available")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a job needs, validated once at launch and passed down, never mutated."""

    output: str
    style: StyleConfig
    manifest: str | None = None
    manifest_format: str | None = None
    contents: str | None = None
    styles: str | None = None
    overwrite: bool = False
    strict: bool = False
    started: float = field(default_factory=time.time)
    run_id: str = ""

    def __post_init__(self) -> None:
        if not self.output:
            raise ValueError("--output is required")
        if self.manifest and (self.contents or self.styles):
            raise ValueError("give --manifest, or --contents and --styles, not both")
        if not self.manifest and not (self.contents and self.styles):
            raise ValueError("give --manifest, or --contents and --styles together")
        if not self.run_id:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
            object.__setattr__(self, "run_id", f"{stamp}-{secrets.token_hex(3)}")

    @classmethod
    def from_options(cls, options: PipelineOptions) -> PipelineConfig:
        """Raises ValueError naming the bad flag or value."""
        view = options.view_as(StyleTransferOptions)
        style_fields = {f.name for f in dataclasses.fields(StyleConfig)}
        style = StyleConfig(**{name: getattr(view, name) for name in style_fields})
        return cls(
            output=view.output or "",
            style=style,
            manifest=view.manifest,
            manifest_format=view.manifest_format,
            contents=view.contents,
            styles=view.styles,
            overwrite=view.overwrite,
            strict=view.strict,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "contents": self.contents,
            "styles": self.styles,
            "output": self.output,
            "overwrite": self.overwrite,
            "strict": self.strict,
            "run_id": self.run_id,
            "style": self.style.to_dict(),
        }
