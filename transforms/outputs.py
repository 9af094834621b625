"""The output contract (docs/outputs.md): where a pair's files go, what its log holds, how a
rerun tells a finished pair from one to redo, and how a finished pair is written.

    OUTPUT/images/<id>.png            the stylized image (.jpg, .webp with --output_format)
    OUTPUT/logs/<id>.json             inputs, resolved configuration, the history in columns, ...
    OUTPUT/failures/<run_id>.jsonl    one record per failed row or pair of that run
    OUTPUT/summary.json               counts, wall time, configuration of the latest run
    OUTPUT/index.json, index/*.jsonl  one line per image in images/, for data loaders (index.py)
    OUTPUT/plan.json                  what --dry_run found to do
    OUTPUT/report.html                the latest run for people: thumbnails, loss curves, failures (report.py)
    OUTPUT/contact_sheet.png          content, style and result of the latest run's pairs
    OUTPUT/claims/<id>.json           while a run computes the pair (claims.py)

An image is written before its log, and each atomically. The log records the image's SHA-256
and size: a rerun skips a pair only when its log is complete, was made with the same inputs
and settings, and the image on storage matches the log's digest. Anything else is redone.

Read by the stylize step (skip checks, logs, writes) and the results step (summary, report).

Imports: storage, reading, logs, records and the engine's torch-free records; no Beam, no torch, no HTML.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import platform
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from PIL import Image

from transforms import logs, reading, storage
from transforms.nst.records import IterationRecord, StyleResult
from transforms.records import IMAGE_FORMATS, Pair, without_user_info

# Packages whose versions every log records.
_PACKAGES: Final = ("torch", "torchvision", "apache-beam", "pillow", "fsspec", "beam-style-transfer")
# The report page's file name, in OUTPUT/ and in each run's folder (report.py renders it).
REPORT_NAME: Final = "report.html"
# The log's layout: 2 holds the history in columns (1, a list of records, is still read).
LOG_FORMAT: Final = 2
# The largest summary or plan the launcher reads back (a summary may carry every failure record
# of a run whose failures file could not be written).
MAX_RUN_RECORD_BYTES: Final = 256 * 2**20


@dataclass(frozen=True)
class OutputSpec:
    """How each pair is written: the image's format and quality, and which iterations its log keeps.

    ``log_every`` N keeps iteration 0, every Nth, the first of each phase (the in-range restart),
    and the last; 1 keeps them all.
    """

    image_format: str = "png"
    # JPEG and WebP quality, 1-100 (PNG is lossless).
    quality: int = 95
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"unknown --output_format {self.image_format!r}: choose one of {', '.join(IMAGE_FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--output_quality must be from 1 to 100, got {self.quality}")
        if self.log_every < 1:
            raise ValueError(f"--log_every must be 1 or more, got {self.log_every}")

    @property
    def extension(self) -> str:
        return IMAGE_FORMATS[self.image_format]

    def fingerprint_settings(self) -> dict[str, object]:
        """What of the output decides whether a finished pair is redone: its format and quality
        (PNG, the default, adds nothing, so that earlier fingerprints hold)."""
        return {} if self.image_format == "png" else {"image_format": self.image_format, "quality": self.quality}

    def encode(self, image: Image.Image) -> bytes:
        """``image`` as the file that is written."""
        data = io.BytesIO()
        if self.image_format == "png":
            image.save(data, format="PNG")
        else:
            image.save(data, format=self.image_format.upper(), quality=self.quality)
        return data.getvalue()


def image_location(output: str, pair_id: str, extension: str = "png") -> str:
    return storage.join(output, "images", f"{pair_id}.{extension}")


def log_location(output: str, pair_id: str) -> str:
    return storage.join(output, "logs", f"{pair_id}.json")


def failures_location(output: str, run_id: str) -> str:
    return storage.join(output, "failures", f"{run_id}.jsonl")


def run_folder(output: str, run_id: str) -> str:
    """``OUTPUT/runs/<run_id>``: each run's own summary and report, kept beside the latest ones
    (a rerun that finds everything done must not erase the record of the run that did it)."""
    return storage.join(output, "runs", run_id)


def summary_location(output: str, run_id: str | None = None) -> str:
    """The latest run's summary, or with ``run_id`` that run's own."""
    return storage.join(run_folder(output, run_id) if run_id else output, "summary.json")


def plan_location(output: str) -> str:
    return storage.join(output, "plan.json")


def report_location(output: str, run_id: str | None = None) -> str:
    """The latest run's report page, or with ``run_id`` that run's own."""
    return storage.join(run_folder(output, run_id) if run_id else output, REPORT_NAME)


@dataclass(frozen=True)
class PriorOutputs:
    """What a previous run left for a pair: ``done``, ``absent``, ``stale`` or ``damaged``.

    ``stale``: complete, but from other inputs or settings (redone, as asked). ``damaged``:
    outputs that cannot be trusted (redone, and counted as a repair); ``reason`` says why.
    """

    state: str
    reason: str = ""
    # stale: the log of the earlier work, so that the caller can say what changed (changes);
    # done: the verified log (its index line)
    log: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.state == "done"


def changes(log: dict[str, Any], pair: Pair, signatures: dict[str, str], spec: OutputSpec) -> str:
    """What differs between the work a stale log records and ``pair`` now, for people:
    ``settings changed: style_weight 100 -> 3``, ``input replaced: cat.jpg``, ...; the first
    kinds of change found, each with up to three examples."""
    found = []
    before, now = log.get("inputs") or {}, pair_inputs(pair)
    moved = [key for key in now if before.get(key) != now[key]]
    if moved:
        found.append(f"inputs changed: {', '.join(moved)}")
    else:
        earlier = before.get("signatures") or {}
        replaced = [
            storage.stem(location)
            for location, token in signatures.items()
            if earlier.get(without_user_info(location)) != token
        ]
        if replaced:
            found.append(f"input replaced: {', '.join(replaced[:3])}{' ...' if len(replaced) > 3 else ''}")
    # Both as the log writes them (config.to_dict, through JSON), so that only values differ.
    settings, recorded = json.loads(json.dumps(pair.config.to_dict(), default=str)), log.get("config") or {}
    # image_size 0, and the pyramid derived from it, are resolved per content before the log
    # records them: not a change.
    per_content = [("image_size", 0), ("scales", "auto")]
    differing = [k for k, v in settings.items() if k in recorded and recorded[k] != v and (k, v) not in per_content]
    differing += [k for k in settings if k not in recorded]
    if differing:
        shown = [f"{k} {_short_value(recorded.get(k))} -> {_short_value(settings[k])}" for k in differing[:3]]
        found.append(f"settings changed: {', '.join(shown)}{' ...' if len(differing) > 3 else ''}")
    written = (log.get("image") or {}).get("format", "png")
    if written != spec.image_format:
        found.append(f"output format changed: {written} -> {spec.image_format}")
    return "; ".join(found) or "made from other inputs or settings"


def _short_value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def inspect_outputs(output: str, pair_id: str, fingerprint: str, extension: str = "png") -> PriorOutputs:
    """Check a pair's outputs against its log (logs.read_log: its size, its JSON and its schema),
    reading the image to compare its digest.

    The image is read only up to the size its log recorded, which the schema bounds by the
    image's width and height, and neither is read through a link inside ``output``: whoever can
    write the output folder cannot make a rerun read without bound.
    """
    image_file = image_location(output, pair_id, extension)
    try:
        log = logs.read_log(log_location(output, pair_id), pair_id, inside=output)
    except FileNotFoundError:
        if storage.exists(image_file):
            return PriorOutputs("damaged", "an image without a log (a run stopped between the two writes)")
        return PriorOutputs("absent")
    except reading.DamagedError as exc:
        return PriorOutputs("damaged", str(exc).removeprefix(f"{log_location(output, pair_id)}: "))
    except OSError as exc:
        return PriorOutputs("damaged", f"the log cannot be read ({exc})")
    if log["fingerprint"] != fingerprint:
        return PriorOutputs("stale", "made from other inputs or settings", log)
    try:
        image = storage.read_bytes(image_file, log["image"]["bytes"], inside=output)
    except FileNotFoundError:
        return PriorOutputs("damaged", "the image is missing")
    except OSError as exc:
        return PriorOutputs("damaged", f"the image cannot be read ({exc})")
    if len(image) != log["image"]["bytes"] or storage.sha256(image) != log["image"]["sha256"]:
        return PriorOutputs("damaged", "the image does not match its log's digest (damaged, or written by another run)")
    return PriorOutputs("done", log=log)


def utc_iso(seconds: float) -> str:
    """``2026-11-24T08:10:29Z`` for a ``time.time()`` value."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def to_json(data: Any, compact: bool = False) -> bytes:
    """JSON as the job writes it: indented for people (summary, plan), or ``compact`` (logs,
    where the history's columns would otherwise take a line per number)."""
    text = json.dumps(data, separators=(",", ":"), default=str) if compact else json.dumps(data, indent=2, default=str)
    return (text + "\n").encode()


def pair_inputs(pair: Pair) -> dict[str, Any]:
    """The images a pair is made from (not where in the manifest it was written)."""
    return {
        "content": without_user_info(pair.content),
        "styles": [without_user_info(style) for style in pair.styles],
        "style_weights": list(pair.style_weights) if pair.style_weights else None,
    }


def input_signatures(pair: Pair) -> dict[str, str]:
    """Every input image of a pair -> its storage signature (changes when the file is replaced)."""
    locations = [pair.content, *pair.styles, *filter(None, [pair.config.init_location])]
    return {location: storage.signature(location) for location in locations}


def fingerprint(pair: Pair, signatures: dict[str, str], spec: OutputSpec = OutputSpec()) -> str:
    """Identifies the work a pair's outputs came from: inputs, their versions, every setting.

    ``pair.config`` as the job or row gave it: ``image_size`` 0 stays 0 (the size it resolves to
    follows from the content, whose signature is here), so a rerun's skip check reads no image.
    """
    described = {**pair_inputs(pair), "signatures": signatures, "config": pair.config.fingerprint_settings()}
    described.update(spec.fingerprint_settings())
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def kept_iterations(
    records: Sequence[IterationRecord], every: int, phase_starts: Sequence[int] = ()
) -> list[IterationRecord]:
    """The records a log keeps: all with ``every`` 1; else iteration 0, every ``every``-th, the
    first of each phase and the one before it, and the last (the written image's)."""
    if every == 1:
        return list(records)
    marks = {iteration for start in phase_starts for iteration in (start - 1, start)}
    last = len(records) - 1
    return [r for i, r in enumerate(records) if i in (0, last) or r.iteration % every == 0 or r.iteration in marks]


def shortest_float32(value: Any) -> Any:
    """A float32 value (the engine computes its losses in float32) as the shortest decimal that
    reads back as the same float32: ``22233.01171875`` is written ``22233.012``, and
    ``float32(22233.012)`` is that float32 bit for bit. Any other value is kept as it is."""
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    try:
        if _as_float32(value) != value:
            return value  # not a float32 (a float64 engine's): kept exactly
    except OverflowError:
        return value
    for digits in range(1, 10):
        text = float(f"{value:.{digits}g}")
        if _as_float32(text) == value:
            return text
    return value


def _as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def record_dict(record: IterationRecord) -> dict[str, Any]:
    """One record as a log writes it: losses in their shortest float32 form (None where not finite)."""
    data = record.to_dict()
    for name in ("total", "content", "style", "tv"):
        data[name] = shortest_float32(data[name])
    data["style_layers"] = {layer: shortest_float32(value) for layer, value in data["style_layers"].items()}
    return data


def history_columns(records: Sequence[IterationRecord]) -> dict[str, Any]:
    """A history as columns (LOG_FORMAT 2): one list per quantity instead of one object per
    iteration, a quarter of the bytes (benchmarks/log_size.py). ``rejected`` lists the rejected
    iterations; seconds are kept to the millisecond; losses as ``record_dict`` writes them."""
    rows = [record_dict(record) for record in records]
    layers = list(records[0].style_layers) if records else []
    return {
        "iteration": [row["iteration"] for row in rows],
        **{name: [row[name] for row in rows] for name in ("total", "content", "style", "tv")},
        "style_layers": {layer: [row["style_layers"][layer] for row in rows] for layer in layers},
        "seconds": [round(row["seconds"], 3) for row in rows],
        "rejected": [row["iteration"] for row in rows if row["rejected"]],
    }


@functools.cache
def versions() -> dict[str, str]:
    """Package versions for the logs; looked up once per process."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def history_records(history: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A log's history as one record per kept iteration, from either layout (LOG_FORMAT 2's
    columns, or 1's records): what a reader of logs iterates over."""
    if isinstance(history, list):
        return history
    layers = history.get("style_layers", {})
    rejected = set(history.get("rejected", []))
    return [
        {
            "iteration": iteration,
            **{name: history[name][k] for name in ("total", "content", "style", "tv")},
            "style_layers": {layer: values[k] for layer, values in layers.items()},
            "seconds": history["seconds"][k],
            "rejected": iteration in rejected,
        }
        for k, iteration in enumerate(history["iteration"])
    ]


def pair_log(
    pair: Pair,
    signatures: dict[str, str],
    work: str,
    image: bytes,
    result: StyleResult,
    batch_size: int,
    seconds: float,
    repairing: str | None,
    spec: OutputSpec = OutputSpec(),
) -> dict[str, Any]:
    """``logs/<id>.json`` of a finished pair: the schema docs/outputs.md documents."""
    config = pair.config

    def history(scale: StyleResult) -> dict[str, Any]:
        return history_columns(kept_iterations(scale.history, spec.log_every, scale.phase_starts))

    log = {
        "id": pair.id,
        # --output_layout tree: the content's folder as the input names it (the index's label).
        "label": pair.label,
        "log_format": LOG_FORMAT,
        "inputs": {
            **pair_inputs(pair),
            "signatures": {without_user_info(location): token for location, token in signatures.items()},
            "source": pair.source,
        },
        "config": config.to_dict(),
        "fingerprint": work,
        "image": {
            "path": f"images/{pair.id}.{spec.extension}",
            "format": spec.image_format,
            "size": list(result.image.size),
            "sha256": storage.sha256(image),
            "bytes": len(image),
        },
        "history": history(result),
        "history_every": spec.log_every,
        "final": record_dict(result.final),
        "chosen_iteration": result.chosen_iteration,
        # Why the last scale stopped: "converged" (docs/method.md: stopping) or "iterations".
        "stopped": result.stop_reason,
        # The network's precision as run (--precision auto resolved on the worker's device).
        "precision": result.precision,
        # Coarse-to-fine: each coarser scale's own history, at its own size.
        "scales": [
            {
                "size": list(coarse.image.size),
                "history": history(coarse),
                "final": record_dict(coarse.final),
                "chosen_iteration": coarse.chosen_iteration,
                "stopped": coarse.stop_reason,
            }
            for coarse in result.coarse
        ],
        "device": result.device,
        "model": config.model,
        "weights": config.weights,
        "weights_family": config.weights_family,
        "preprocessing": config.family.to_dict(),
        "versions": versions(),
        "batch_size": batch_size,
        # Tiles the last scale ran in (1: the whole image at once; docs/large-prints.md).
        "tiles": result.tiles,
        "seconds": round(seconds, 3),
        "finished_at": utc_iso(time.time()),
    }
    if repairing:
        log["repaired"] = repairing
    return log


def write_pair(output: str, pair_id: str, image: bytes, log: dict[str, Any], extension: str = "png") -> None:
    """The pair's image, then its log, each atomically: a log always describes an image that is
    there (a run stopped between the two leaves an image without a log, which a rerun redoes).
    The image is read back and checked against its digest before the log is written; once both
    are, the pair's images in other formats (an earlier run's, superseded) are removed: one
    image per pair. Nothing is written through a link inside ``output``.

    Raises:
        OSError: naming the file that could not be written, and why.
    """
    image_file = image_location(output, pair_id, extension)
    for location, data in ((image_file, image), (log_location(output, pair_id), to_json(log, compact=True))):
        try:
            storage.write_atomic(location, data, inside=output)
            if location == image_file and storage.sha256(
                storage.read_bytes(location, len(data), inside=output)
            ) != storage.sha256(data):
                raise OSError("it reads back other bytes than were written")
        except OSError as exc:
            raise OSError(exc.errno, f"{location}: {exc.strerror or exc}") from exc
    for other in IMAGE_FORMATS.values():
        if other != extension:
            storage.remove_if_regular(image_location(output, pair_id, other), inside=output)
