"""Pre-flight: job-wide inputs checked once, before the pipeline is built.

A mistake that would fail every pair (weights that cannot load, a device that is not there, an
init image that does not exist, an output that cannot be written) is found here in seconds and
reported once, instead of as one failure record per pair after hours of work. Per-row and per-pair
problems are not checked here: they keep their failure records.

Imports: storage, the manifest reader, and the engine's weights, VGG (to load the weights once
here) and image headers (the sizes an estimate at each content's own size goes by); it builds
no pipeline.
"""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass
from typing import Final

from pipeline.config import PipelineConfig
from transforms import claims, storage
from transforms.limits import Limits
from transforms.manifest import outside_output, read_manifest, validate_rows
from transforms.nst.config import INIT_MODES, StyleConfig
from transforms.nst.images import decoded_size
from transforms.nst.vgg import VGGFeatures
from transforms.nst.weights import load_features_state_dict
from transforms.records import Pair

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

# A temporary file younger than this may be another run's write in progress; older ones were
# left by a killed write (a write takes seconds).
STALE_TEMPORARY_SECONDS: Final = 900.0
# What the output probe writes: about one result image, so that a disk too full for one fails
# the job here instead of failing every pair.
PROBE_BYTES: Final = 1 << 20
# The folders the job writes pairs, claims, the index and run records in: each must be a real
# folder where it exists. (failures/ is not among them: a run whose failures file cannot be
# written puts the records in its summary.)
OUTPUT_FOLDERS: Final = ("images", "logs", "claims", "index", "runs")
# The files at the top of the output that a run (or a dry run: plan.json) must write or replace.
# (report.html and contact_sheet.png are views: one that cannot be replaced is a warning.)
OUTPUT_FILES: Final = ("summary.json", "index.json", "plan.json")


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
    source = weights if style.weights_location is None else storage.local_copy(weights)
    try:
        state = load_features_state_dict(style.model, source, style.seed)
        VGGFeatures(style.model, style.content_layers + style.style_layers, state, style.family, style.pooling)
    except ValueError as exc:  # WeightsError is a ValueError
        raise PreflightError(f"--weights {weights}: {exc}") from exc


def check_output(output: str) -> None:
    """The output folder can be written: a probe of ``PROBE_BYTES`` is written and removed.

    The probe has content, so that a full disk fails here (an empty file needs no free space).
    Its name is a ``.tmp-`` one, so that a run killed before removing it leaves nothing that
    the next run's stale-temporary sweep does not remove.
    """
    for folder in OUTPUT_FOLDERS:
        location = storage.join(output, folder)
        if storage.is_file_or_link(location):
            raise PreflightError(
                f"--output {output}: {location} is not a real folder (a file or a link); the job writes "
                "only into real folders inside its output: move it away"
            )
    # Each file the end of a run replaces: a folder in its place would fail every rerun only
    # after all the work, at the summary or the index switch.
    for name in OUTPUT_FILES:
        location = storage.join(output, name)
        if storage.is_folder(location):
            raise PreflightError(
                f"--output {output}: {location} is a folder, where the job writes a file; move it away"
            )
    probe = storage.join(output, f"{storage.TEMPORARY_PREFIX}preflight-{secrets.token_hex(4)}")
    try:
        storage.write_atomic(probe, secrets.token_bytes(PROBE_BYTES), inside=output)
        storage.remove(probe, inside=output)
    except OSError as exc:
        raise PreflightError(f"--output {output}: cannot be written ({exc}); choose a writable folder") from exc


def check_manifest(config: PipelineConfig) -> tuple[int, list[str]]:
    """The manifest is a regular file of a known format with at least one data row.

    Returns how many of its rows are valid pairs (for the progress display), and their contents;
    invalid rows are not an error here, they become failure records when the job reads them.
    """
    location = str(config.manifest)
    try:
        rows = read_manifest(location, config.manifest_format, config.limits)
    except FileNotFoundError as exc:
        raise PreflightError(f"--manifest {location}: no such file") from exc
    except OSError as exc:
        raise PreflightError(f"--manifest {exc} (see --max_input_mb for the size limit)") from exc
    except ValueError as exc:
        raise PreflightError(f"--manifest {exc}") from exc
    if not rows:
        raise PreflightError(
            f"--manifest {location}: no rows (a CSV manifest needs a header row and at least one "
            "data row; JSON Lines one object per line)"
        )
    items = validate_rows(rows, storage.parent(location), config.style, config.limits, output=config.output)
    contents = [item.content for item in items if isinstance(item, Pair)]
    return len(contents), contents


def remove_leftovers(output: str) -> tuple[int, int]:
    """Remove what killed runs left in the output: temporary files of writes (in every output
    folder and the subfolders the tree layout makes) and expired claims (a run killed between
    writing a pair and releasing its claim). How many of each went."""
    removed = len(storage.remove_stale_temporaries(output, STALE_TEMPORARY_SECONDS))
    for folder in (*OUTPUT_FOLDERS, "failures"):
        removed += len(
            storage.remove_stale_temporaries(storage.join(output, folder), STALE_TEMPORARY_SECONDS, recursive=True)
        )
    return removed, claims.remove_expired(output)


@dataclass(frozen=True)
class Checked:
    """What pre-flight found: the pairs the job expects (the manifest's valid rows, or the glob
    combinations), and, for a run here at each content's own size (``--image_size 0``), the
    (width, height) of a seeded sample of contents from their headers, which its estimate goes by."""

    pairs: int
    content_sizes: list[tuple[int, int]]


def check(config: PipelineConfig, workers_here: bool = True) -> int:
    """:func:`check_job`'s pairs: the number of pairs the job expects."""
    return check_job(config, workers_here).pairs


def check_job(config: PipelineConfig, workers_here: bool = True) -> Checked:
    """Every job-wide check; raises PreflightError on the first that fails.

    ``workers_here``: the pairs run on this machine (a local runner). Otherwise (Dataflow) the
    device is the workers', not the launcher's, and is not checked here.

    Returns what it found (:class:`Checked`).
    """
    locations = {
        "--manifest": config.manifest,
        "--output": config.output,
        "--contents": config.contents,
        "--styles": config.styles,
        "--init": config.style.init_location,
        "--weights": config.style.weights_location,
    }
    for flag, location in locations.items():
        if location:
            try:
                storage.check_filesystem(location)
            except ValueError as exc:
                raise PreflightError(f"{flag} {exc}") from exc
    try:
        if workers_here:
            config.style.torch_device()
    except ValueError as exc:
        raise PreflightError(f"--device {config.style.device}: {exc} (use --device auto or cpu)") from exc
    if config.style.init_location is not None and not storage.exists(config.style.init_location):
        raise PreflightError(f"--init {config.style.init}: no such file (use {', '.join(INIT_MODES)} or an image URL)")
    expected, contents = check_manifest(config) if config.manifest else check_globs(config)
    if not config.dry_run:  # a dry run loads no model
        check_weights(config.style)
    # Last: the probe makes the output folder, which only a job that passed every check should.
    check_output(config.output)
    estimated_here = workers_here and not config.dry_run and not config.style.image_size
    return Checked(expected, sample_content_sizes(contents, config.limits) if estimated_here else [])


# Contents whose headers the estimate of a run at each content's own size reads.
SIZES_SAMPLED: Final = 32


def sample_content_sizes(contents: list[str], limits: Limits, sample: int = SIZES_SAMPLED) -> list[tuple[int, int]]:
    """(width, height) of up to ``sample`` of ``contents``, a seeded choice, from their headers.
    Contents that cannot be read are left out here (they fail their pairs in the run)."""
    distinct = sorted(set(contents))
    chosen = random.Random(0).sample(distinct, min(sample, len(distinct)))
    sizes = []
    for location in chosen:
        try:
            data = storage.read_bytes(location, limits.max_input_bytes)
            sizes.append(decoded_size(data, location, limits.max_input_pixels))
        except (OSError, ValueError):
            continue
    return sizes


def check_globs(config: PipelineConfig) -> tuple[int, list[str]]:
    """Both globs match files outside the output, and there are as many styles as each content
    draws; the pairs, and the contents. Matches inside the output are left out, said in one line."""
    matches = {}
    for flag, pattern in (("--contents", config.contents), ("--styles", config.styles)):
        everything = storage.glob(str(pattern))
        matches[flag] = outside_output(everything, config.output)
        if len(everything) > len(matches[flag]):
            logger.warning(
                "%d files matching %s are inside --output %s and are left out: the job never reads its own outputs",
                len(everything) - len(matches[flag]),
                flag,
                config.output,
            )
        if not matches[flag]:
            where = " outside --output" if everything else ""
            raise PreflightError(f"{flag} {pattern!r}: no files match{where} (check the pattern and quote it)")
    drawn, styles = config.styles_per_content, len(matches["--styles"])
    if drawn > styles:
        raise PreflightError(f"--styles_per_content {drawn}: --styles {config.styles!r} matches only {styles} files")
    return len(matches["--contents"]) * (drawn or styles), matches["--contents"]
