"""Pre-flight: job-wide inputs checked once, before the pipeline is built.

A mistake that would fail every pair (weights that cannot load, a device that is not there, an
init image that does not exist, an output that cannot be written) is found here in seconds and
reported once, instead of as one failure record per pair after hours of work. Per-row and per-pair
problems are not checked here: they keep their failure records.
"""

from __future__ import annotations

import secrets

from pipeline.options import PipelineConfig
from transforms import storage
from transforms.manifest import manifest_format, parse_rows, validate_rows
from transforms.nst.config import INIT_MODES, StyleConfig
from transforms.nst.optimize import resolve_device
from transforms.nst.vgg import VGGFeatures
from transforms.nst.families import NAMED_WEIGHTS
from transforms.nst.weights import load_features_state_dict
from transforms.records import Pair


class PreflightError(ValueError):
    """A job-wide input is unusable; the message names it and the cure."""


def check_weights(style: StyleConfig) -> None:
    """The weights can be had and fit the model.

    Named and local weights are loaded and built into the network on the CPU here (the embedded
    weights are then cached for this process); a remote weights file is only checked to exist,
    since its download is the workers' to do.
    """
    weights = style.weights
    if storage.has_protocol(weights) and not weights.startswith("file://"):
        if not storage.exists(weights):
            raise PreflightError(f"--weights {weights}: no such file (check the URL, or use --weights caffe)")
        return
    source = weights if weights in NAMED_WEIGHTS else storage.local_copy(weights)
    try:
        state = load_features_state_dict(style.model, source, style.seed)
        VGGFeatures(style.model, style.content_layers + style.style_layers, state, style.family, style.pooling)
    except ValueError as exc:  # WeightsError is a ValueError
        raise PreflightError(f"--weights {weights}: {exc}") from exc


def check_output(output: str) -> None:
    """The output folder can be written: a probe object is written and removed."""
    probe = storage.join(output, f".preflight-{secrets.token_hex(4)}")
    try:
        storage.write_atomic(probe, b"")
        storage.remove(probe)
    except OSError as exc:
        raise PreflightError(f"--output {output}: cannot be written ({exc}); choose a writable folder") from exc


def expected_pairs(config: PipelineConfig) -> int:
    """How many pairs the job will see: valid manifest rows, or glob combinations.

    For the progress display only; the manifest is parsed with the pipeline's own functions.
    A manifest that cannot be parsed counts 0 here; the pipeline reports why.
    """
    if config.manifest:
        try:
            fmt = manifest_format(config.manifest, config.manifest_format)
            rows = list(parse_rows(storage.read_bytes(config.manifest), config.manifest, fmt))
        except (OSError, ValueError, UnicodeDecodeError):
            return 0
        items = validate_rows(rows, storage.parent(config.manifest), config.style)
        return sum(isinstance(item, Pair) for item in items)
    return len(storage.glob(str(config.contents))) * len(storage.glob(str(config.styles)))


def check(config: PipelineConfig) -> None:
    """Every job-wide check; raises PreflightError on the first that fails."""
    try:
        resolve_device(config.style.device)
    except ValueError as exc:
        raise PreflightError(f"--device {config.style.device}: {exc} (use --device auto or cpu)") from exc
    if config.style.init not in INIT_MODES and not storage.exists(config.style.init):
        raise PreflightError(
            f"--init {config.style.init}: no such file (use {', '.join(INIT_MODES)} or an image URL)"
        )
    if config.manifest and not storage.exists(config.manifest):
        raise PreflightError(f"--manifest {config.manifest}: no such file")
    for flag, pattern in (("--contents", config.contents), ("--styles", config.styles)):
        if pattern and not storage.glob(pattern):
            raise PreflightError(f"{flag} {pattern!r}: no files match (check the pattern and quote it)")
    check_output(config.output)
    check_weights(config.style)
