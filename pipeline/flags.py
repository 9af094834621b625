"""The job's command-line flags: one definition for Beam's option parser and for --help.

Free of Beam and torch at import time, so that ``python -m pipeline --help`` answers at once;
defaults come from StyleConfig's field defaults without building a config.

Imports: no Beam and no torch at import time (tests/test_layout.py checks); limits, records and the
engine's torch-free config and families, for their choices and defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from transforms.limits import Limits
from transforms.nst.config import COLOR_CONTROLS, DEVICES, MODELS, OPTIMIZERS, POOLINGS, PRECISIONS, StyleConfig
from transforms.nst.families import FAMILIES, NAMED_WEIGHTS
from transforms.records import IMAGE_FORMATS, LAYOUTS, MANIFEST_FORMATS

CONSOLE_SCRIPT: Final = "beam-style-transfer"


def program() -> str:
    """How the user ran us: the console script, or ``python -m pipeline``."""
    return CONSOLE_SCRIPT if os.path.basename(sys.argv[0]) == CONSOLE_SCRIPT else "python -m pipeline"


def usage() -> str:
    return f"{program()} (--manifest URL | --contents GLOB --styles GLOB) --output URL [options]"


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(StyleConfig)}
_LIMITS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Limits)}


def comma_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def comma_floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in comma_names(text))


def scale_list(text: str) -> tuple[tuple[int, int], ...] | None:
    """``512:300,1024:200`` -> ((512, 300), (1024, 200)): size and iterations of each coarse
    scale; ``auto`` -> None (the pyramid derived from --image_size); ``none`` -> () (one scale)."""
    if text.strip().lower() == "auto":
        return None
    if text.strip().lower() == "none":
        return ()
    items = text.split(",")
    if not text.strip() or any(not item.strip() for item in items):  # '' or '64:2,': a scale left out
        raise argparse.ArgumentTypeError(
            f"expected auto, none or SIZE:ITERATIONS[,SIZE:ITERATIONS...], got {text!r} (an empty scale)"
        )
    scales = []
    for item in comma_names(text):
        size, colon, iterations = item.partition(":")
        if not (colon and size.isdigit() and iterations.isdigit()):
            raise argparse.ArgumentTypeError(
                f"expected auto, none or SIZE:ITERATIONS[,SIZE:ITERATIONS...], got {text!r}"
            )
        scales.append((int(size), int(iterations)))
    return tuple(scales)


_TRUE: Final = ("true", "yes", "1")
_FALSE: Final = ("false", "no", "0")


def switch(text: str) -> bool:
    """A switch's explicit value: ``--strict=true``, as a Flex Template or Airflow passes it."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_switch(group: argparse._ArgumentGroup, flag: str, help: str) -> None:
    """An on/off flag: ``--strict`` alone, or ``--strict=true`` / ``--strict=false``."""
    group.add_argument(flag, nargs="?", const=True, default=False, type=switch, metavar="true|false", help=help)


def switch_is_on(argv: list[str], flag: str) -> bool:
    """Whether ``flag`` (a switch) is on in ``argv``, before the full parser runs."""
    on = False
    for index, item in enumerate(argv):
        name, equals, value = item.partition("=")
        if name != flag:
            continue
        if not equals and index + 1 < len(argv) and argv[index + 1].lower() in _TRUE + _FALSE:
            value = argv[index + 1]  # "--verbose false", the value as a separate word
        on = not value or value.lower() in _TRUE
    return on


DRY_RUN: Final = "--dry_run"
_DRY_RUN_HELP: Final = (
    "read the inputs and print the plan (pairs to do and skip, batches, memory, device-hours); write "
    "OUTPUT/plan.json; load no model, write no image"
)


def with_dry_run_switch(argv: list[str]) -> list[str]:
    """``argv`` with a bare ``--dry_run`` spelled ``--dry_run=true``.

    The flag is Beam's own (TestOptions: "without submitting the actual job"), which takes a
    value; the job reads it as a switch like its others, so it is spelled out for Beam's parser.
    """
    spelled = []
    for index, item in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else "--"
        bare = item == DRY_RUN and (following.startswith("--") or following.lower() not in _TRUE + _FALSE)
        spelled.append(f"{DRY_RUN}=true" if bare else item)
    return spelled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every flag of the job (not Beam's own) to ``parser``."""
    job = parser.add_argument_group("inputs and outputs")
    job.add_argument(
        "--manifest", help="CSV (header row) or JSON Lines manifest URL: local path, gs://, s3://, memory://"
    )
    job.add_argument(
        "--manifest_format", choices=MANIFEST_FORMATS, help="override the format implied by the manifest's extension"
    )
    job.add_argument("--contents", help="glob of content images; with --styles, stylize every content with every style")
    job.add_argument("--styles", help="glob of style images (used with --contents)")
    job.add_argument(
        "--styles_per_content",
        type=int,
        default=0,
        help="with --contents/--styles: N distinct styles per content, a seeded choice that depends only on "
        "--seed and the content's path below the glob's root (default 0: every style)",
    )
    job.add_argument("--output", help="output folder URL (images/, logs/, failures/, summary.json)")
    job.add_argument(
        "--output_layout",
        choices=LAYOUTS,
        default="flat",
        help="tree: outputs keep each content's folders below the contents glob's root (or the manifest's "
        "folder), images/<folders>/<content>__<style>.<ext>",
    )
    job.add_argument(
        "--output_format", choices=tuple(IMAGE_FORMATS), default="png", help="format of the stylized images"
    )
    job.add_argument("--output_quality", type=int, default=95, help="JPEG and WebP quality, 1-100")
    job.add_argument(
        "--log_every",
        type=int,
        default=1,
        help="keep every Nth iteration in each log (plus the first, each phase's first and the last); 1: all",
    )

    _add_switch(job, "--overwrite", "redo pairs that are already done")
    _add_switch(job, "--strict", "exit with status 1 if any row or pair failed")

    engine = parser.add_argument_group("style transfer (manifest columns may override some per row)")
    engine.add_argument("--model", choices=MODELS, default=_DEFAULTS["model"], help="torchvision VGG architecture")
    engine.add_argument(
        "--weights",
        default=_DEFAULTS["weights"],
        help="'caffe' (the original VGG19, embedded: no download), 'imagenet' (torchvision's, "
        "downloaded), 'random' (tests only), or a state-dict path/URL (with --weights_family)",
    )
    engine.add_argument(
        "--weights_family",
        choices=tuple(FAMILIES),
        default=None,
        help="pixels a weights file expects: caffe (BGR, 0-255, mean pixel) or torchvision "
        f"(RGB, [0, 1], mean/std); implied by {', '.join(NAMED_WEIGHTS)}",
    )
    engine.add_argument(
        "--pooling", choices=POOLINGS, default=_DEFAULTS["pooling"], help="avg is what Gatys et al. prefer"
    )
    engine.add_argument(
        "--content_layers",
        type=comma_names,
        default=",".join(_DEFAULTS["content_layers"]),
        help="comma-separated layer names",
    )
    engine.add_argument(
        "--style_layers",
        type=comma_names,
        default=",".join(_DEFAULTS["style_layers"]),
        help="comma-separated layer names",
    )
    engine.add_argument(
        "--style_layer_weights",
        type=comma_floats,
        default=None,
        help="comma-separated, one per style layer (default 1 each)",
    )
    engine.add_argument(
        "--content_weight",
        type=float,
        default=None,
        help="weight of the content term (default: the weights family's, caffe 5, torchvision 1)",
    )
    engine.add_argument(
        "--style_weight",
        type=float,
        default=None,
        help="weight of the style term (default: the weights family's, caffe 100, torchvision 1e6)",
    )
    engine.add_argument(
        "--tv_weight",
        type=float,
        default=_DEFAULTS["tv_weight"],
        help="total-variation smoothing (0: none, as Gatys et al.)",
    )
    engine.add_argument("--init", default=_DEFAULTS["init"], help="content, random, style, or an image URL")
    engine.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=_DEFAULTS["optimizer"], help="optimizer over the pixels"
    )
    engine.add_argument("--learning_rate", type=float, default=_DEFAULTS["learning_rate"], help="Adam only")
    engine.add_argument(
        "--iterations",
        type=int,
        default=_DEFAULTS["iterations"],
        help="the most a pair runs at each scale, one forward+backward each",
    )
    engine.add_argument(
        "--stop_tolerance",
        type=float,
        default=_DEFAULTS["stop_tolerance"],
        help="a pair stops once its loss improved by less than this fraction over --stop_window "
        "iterations (docs/method.md: stopping); 0 runs every iteration",
    )
    engine.add_argument(
        "--stop_window", type=int, default=_DEFAULTS["stop_window"], help="iterations the convergence test looks back"
    )
    engine.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="seed of random init and random weights")
    engine.add_argument(
        "--image_size",
        type=int,
        default=_DEFAULTS["image_size"],
        help="longest side of the output, px; 0: each content's own size",
    )
    engine.add_argument(
        "--scales",
        type=scale_list,
        default="auto",
        help="coarse to fine: auto (halvings of --image_size down to 128-255 px, each for --iterations), "
        "none (one scale, as Gatys et al.), or SIZE:ITERATIONS of each coarser scale optimized before "
        "--image_size, e.g. 512:300,1024:100 with --image_size 2048; each starts from the previous "
        "result, upscaled (docs/method.md: coarse to fine)",
    )
    engine.add_argument(
        "--style_scale", type=float, default=_DEFAULTS["style_scale"], help="style image size relative to image_size"
    )
    engine.add_argument(
        "--color_control",
        choices=COLOR_CONTROLS,
        default=_DEFAULTS["color_control"],
        help="keep the content's colours (Gatys et al. 2016): luminance (luminance-only transfer, "
        "after optimization) or histogram (styles take the content's colours first)",
    )
    _add_switch(engine, "--original_colors", "neural-style's name for --color_control luminance")
    engine.add_argument("--device", choices=DEVICES, default=_DEFAULTS["device"], help="auto: CUDA when available")
    engine.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_DEFAULTS["precision"],
        help="the network's convolutions: auto (bf16 where the device has it in hardware, for "
        "L-BFGS; else fp32), or force fp32 or bf16; targets, the last phase and written scores stay fp32",
    )
    job.add_argument(
        "--batch_size",
        default="auto",
        help="pairs optimized together on a device: a number, or auto (a GPU: as many as its free "
        "memory holds, up to 32; a CPU: 1)",
    )
    _add_switch(job, "--verbose", "also show Beam's own log lines, and a line for each pair skipped as done")

    limits = parser.add_argument_group("limits (what any manifest row may ask; docs/reliability.md)")
    limits.add_argument(
        "--max_image_size",
        type=int,
        default=_LIMITS["max_image_size"],
        help="largest image_size (and image_size x style_scale) a job or row may ask for, px",
    )
    limits.add_argument(
        "--max_iterations", type=int, default=_LIMITS["max_iterations"], help="most iterations a job or row may ask for"
    )
    limits.add_argument(
        "--pair_time_limit",
        type=float,
        default=_LIMITS["pair_time_limit"],
        help="seconds a pair may run before it fails (the job goes on)",
    )
    limits.add_argument(
        "--max_input_mb",
        type=float,
        default=_LIMITS["max_input_bytes"] / 2**20,
        help="largest input file (image or manifest) read, MiB",
    )
    limits.add_argument(
        "--max_input_pixels",
        type=int,
        default=_LIMITS["max_input_pixels"],
        help="largest input image decoded, in pixels",
    )
    limits.add_argument(
        "--device_memory_gb",
        type=float,
        default=None,
        help="memory a pair may use on its device, GiB (default: what the GPU has free, or the "
        "CPU's available RAM); a pair whose estimate is larger is refused before it starts",
    )
    limits.add_argument(
        "--allowed_schemes",
        type=comma_names,
        default=",".join(_LIMITS["allowed_schemes"]),
        help="where manifest rows may point; add http,https to fetch URLs (never from loopback, "
        "link-local or private hosts)",
    )


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a default only where there is one to show (not "default: None")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, argparse.SUPPRESS, ())
            and action.default is not False
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def help_text() -> str:
    parser = argparse.ArgumentParser(
        prog=program(),
        usage=usage(),
        formatter_class=_HelpFormatter,
        description="Batch neural style transfer (Gatys et al.) on Apache Beam.",
        epilog="Every Apache Beam pipeline option is accepted too (--runner, --project, --region, "
        "--temp_location, --sdk_container_image, --experiments, ...).",
    )
    add_arguments(parser)
    parser.add_argument_group("plan").add_argument(DRY_RUN, nargs="?", metavar="true|false", help=_DRY_RUN_HELP)
    return parser.format_help()


class RaisingParser(argparse.ArgumentParser):
    """A parser that raises ValueError where argparse would print a usage and exit: the command
    line's checks answer in one line, and a launcher calling run() keeps its process."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def did_you_mean(name: str, known: Sequence[str], cutoff: float = 0.6) -> str | None:
    """``unknown flag --iteration; did you mean --iterations?`` for a flag ``name`` that is not
    among ``known``, or None when none of them is ``cutoff`` alike (difflib's ratio)."""
    nearest = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"unknown flag {name}; did you mean {nearest[0]}?" if nearest else None
