"""The output contract (README, "Outputs"): where a pair's files go, what its log holds, how a
rerun tells a finished pair from one to redo, and how a finished pair is written.

    OUTPUT/images/<id>.png            the stylized image
    OUTPUT/logs/<id>.json             inputs, resolved configuration, per-iteration history, ...
    OUTPUT/failures/<run_id>.jsonl    one record per failed row or pair of that run
    OUTPUT/summary.json               counts, wall time, configuration of the latest run
    OUTPUT/report.html                the latest run for people: thumbnails, loss curves, failures (report.py)
    OUTPUT/contact_sheet.png          every result of the latest run on one picture
    OUTPUT/claims/<id>.json           while a run computes the pair (claims.py)

An image is written before its log, and each atomically. The log records the image's SHA-256
and size: a rerun skips a pair only when its log is complete, was made with the same inputs
and settings, and the image on storage matches the log's digest. Anything else is redone.

Read by the stylize step (skip checks, logs, writes) and the results step (summary, report).

Imports: storage, records, report (its file names) and the engine's torch-free records; no Beam,
no torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from transforms import report, storage
from transforms.nst.records import StyleResult
from transforms.records import Pair

# Packages whose versions every log records.
_PACKAGES: Final = ("torch", "torchvision", "apache-beam", "pillow", "fsspec", "beam-style-transfer")


def image_location(output: str, pair_id: str) -> str:
    return storage.join(output, "images", f"{pair_id}.png")


def log_location(output: str, pair_id: str) -> str:
    return storage.join(output, "logs", f"{pair_id}.json")


def failures_location(output: str, run_id: str) -> str:
    return storage.join(output, "failures", f"{run_id}.jsonl")


def summary_location(output: str) -> str:
    return storage.join(output, "summary.json")


def report_location(output: str) -> str:
    return storage.join(output, report.REPORT_NAME)


@dataclass(frozen=True)
class PriorOutputs:
    """What a previous run left for a pair: ``done``, ``absent``, ``stale`` or ``damaged``.

    ``stale``: complete, but from other inputs or settings (redone, as asked). ``damaged``:
    outputs that cannot be trusted (redone, and counted as a repair); ``reason`` says why.
    """

    state: str
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state == "done"


def log_problem(log: object, pair_id: str) -> str | None:
    """Why a parsed log is not a complete record of a finished pair, or None."""
    if not isinstance(log, dict):
        return "the log is not a JSON object"
    if log.get("id") != pair_id:
        return f"the log is for id {log.get('id')!r}"
    image = log.get("image")
    if not isinstance(image, dict) or not isinstance(image.get("sha256"), str) or not isinstance(image.get("bytes"), int):
        return "the log has no image digest"
    history = log.get("history")
    if not isinstance(history, list) or not history or history[-1] != log.get("final"):
        return "the log's history is missing or does not end with the final record"
    return None


def inspect_outputs(output: str, pair_id: str, fingerprint: str) -> PriorOutputs:
    """Check a pair's outputs against its log, reading the image to compare its digest."""
    try:
        raw = storage.read_bytes(log_location(output, pair_id))
    except FileNotFoundError:
        if storage.exists(image_location(output, pair_id)):
            return PriorOutputs("damaged", "an image without a log (a run stopped between the two writes)")
        return PriorOutputs("absent")
    except OSError as exc:
        return PriorOutputs("damaged", f"the log cannot be read ({exc})")
    try:
        log = json.loads(raw)
    except ValueError:
        return PriorOutputs("damaged", "the log is not valid JSON (cut short?)")
    if isinstance(log, dict) and log.get("fingerprint") != fingerprint:
        return PriorOutputs("stale", "made from other inputs or settings")
    problem = log_problem(log, pair_id)
    if problem:
        return PriorOutputs("damaged", problem)
    try:
        image = storage.read_bytes(image_location(output, pair_id))
    except FileNotFoundError:
        return PriorOutputs("damaged", "the image is missing")
    except OSError as exc:
        return PriorOutputs("damaged", f"the image cannot be read ({exc})")
    if len(image) != log["image"]["bytes"] or storage.sha256(image) != log["image"]["sha256"]:
        return PriorOutputs("damaged", "the image does not match its log's digest (damaged, or written by another run)")
    return PriorOutputs("done")


def utc_iso(seconds: float) -> str:
    """``2026-11-24T08:10:29Z`` for a ``time.time()`` value."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def to_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode()


def pair_inputs(pair: Pair) -> dict[str, Any]:
    """The images a pair is made from (not where in the manifest it was written)."""
    return {
        "content": pair.content,
        "styles": list(pair.styles),
        "style_weights": list(pair.style_weights) if pair.style_weights else None,
    }


def input_signatures(pair: Pair) -> dict[str, str]:
    """Every input image of a pair -> its storage signature (changes when the file is replaced)."""
    locations = [pair.content, *pair.styles, *filter(None, [pair.config.init_location])]
    return {location: storage.signature(location) for location in locations}


def fingerprint(pair: Pair, signatures: dict[str, str]) -> str:
    """Identifies the work a pair's outputs came from: inputs, their versions, every setting."""
    described = {**pair_inputs(pair), "signatures": signatures, "config": pair.config.fingerprint_settings()}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


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


def pair_log(
    pair: Pair,
    signatures: dict[str, str],
    work: str,
    png: bytes,
    result: StyleResult,
    batch_size: int,
    seconds: float,
    repairing: str | None,
) -> dict[str, Any]:
    """``logs/<id>.json`` of a finished pair: the schema README's "Outputs" documents."""
    config = pair.config
    log = {
        "id": pair.id,
        "inputs": {**pair_inputs(pair), "signatures": signatures, "source": pair.source},
        "config": config.to_dict(),
        "fingerprint": work,
        "image": {"sha256": storage.sha256(png), "bytes": len(png)},
        "history": [record.to_dict() for record in result.history],
        "final": result.final.to_dict(),
        "chosen_iteration": result.chosen_iteration,
        # Coarse-to-fine: each coarser scale's own history, at its own size.
        "scales": [
            {
                "size": list(coarse.image.size),
                "history": [record.to_dict() for record in coarse.history],
                "final": coarse.final.to_dict(),
                "chosen_iteration": coarse.chosen_iteration,
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
        # Tiles the last scale ran in (1: the whole image at once; README, "Large prints").
        "tiles": result.tiles,
        "seconds": round(seconds, 3),
        "finished_at": utc_iso(time.time()),
    }
    if repairing:
        log["repaired"] = repairing
    return log


def write_pair(output: str, pair_id: str, png: bytes, log: dict[str, Any]) -> None:
    """The pair's image, then its log, each atomically: a log always describes an image that is
    there (a run stopped between the two leaves an image without a log, which a rerun redoes).

    Raises:
        OSError: naming the file that could not be written, and why.
    """
    for location, data in ((image_location(output, pair_id), png), (log_location(output, pair_id), to_json(log))):
        try:
            storage.write_atomic(location, data)
        except OSError as exc:
            raise OSError(exc.errno, f"{location}: {exc.strerror or exc}") from exc
