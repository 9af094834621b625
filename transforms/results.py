"""WriteResults and the output layout (a contract, documented in README.md).

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

Imports: Beam, storage, limits, records, report and the engine's result types; nothing of
pipeline/.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from beam_style_transfer.transforms import claims, report, storage
from beam_style_transfer.transforms.limits import Limits
from beam_style_transfer.transforms.nst.optimize import StyleResult
from beam_style_transfer.transforms.records import Failure, Outcome, Pair, Stage

logger = logging.getLogger(__name__)

NAMESPACE = "style_transfer"
# Packages whose versions every log records.
_PACKAGES: Final = ("torch", "torchvision", "apache-beam", "pillow", "fsspec", "beam-style-transfer")
WRITE_FAILURES = "write_failures"


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


@dataclass(frozen=True)
class Stylized:
    """A finished pair on its way to storage."""

    id: str
    png: bytes
    log: dict[str, Any]
    source: str
    # Damaged outputs of an earlier run were found and are being replaced.
    repaired: bool = False


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


class _WritePairFn(beam.DoFn):
    def __init__(self, output: str, run_id: str) -> None:
        self._output = output
        self._run_id = run_id
        self._succeeded = Metrics.counter(NAMESPACE, "pairs_succeeded")
        self._repaired = Metrics.counter(NAMESPACE, "pairs_repaired")
        self._write_failed = Metrics.counter(NAMESPACE, "pairs_failed")

    def process(self, item: Stylized) -> Iterator[Any]:
        try:
            storage.write_atomic(image_location(self._output, item.id), item.png)
            storage.write_atomic(log_location(self._output, item.id), to_json(item.log))
        except Exception as exc:  # noqa: BLE001 - any storage error fails this pair only
            self._write_failed.inc()
            yield pvalue.TaggedOutput(WRITE_FAILURES, Failure.from_exception(Stage.WRITE, exc, item.source, item.id))
            return
        finally:
            claims.release(self._output, item.id, self._run_id)
        self._succeeded.inc()
        if item.repaired:
            self._repaired.inc()
        yield Outcome(item.id, "succeeded", item.log["seconds"], item.repaired)


class _WriteSummaryFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, started: float, configuration: dict[str, Any]) -> None:
        self._output = output
        self._run_id = run_id
        self._started = started
        self._configuration = configuration
        self._failed = Metrics.counter(NAMESPACE, "rows_or_pairs_failed")

    def process(self, _: object, outcomes: list[Outcome], failures: list[Failure]) -> Iterator[dict[str, Any]]:
        ordered = sorted(failures, key=lambda f: (f.source, f.id or ""))
        failures_file, failures_error = None, None
        if failures:
            self._failed.inc(len(failures))
            failures_file = failures_location(self._output, self._run_id)
            try:
                storage.write_atomic(failures_file, "".join(json.dumps(f.to_dict()) + "\n" for f in ordered).encode())
            except OSError as exc:
                # The summary still goes out, with the records in it: nothing is lost.
                failures_file, failures_error = None, f"{failures_file}: {type(exc).__name__}: {exc}"
        counts = {status: 0 for status in Outcome.STATUSES}
        for outcome in outcomes:
            counts[outcome.status] += 1
        seconds = [o.seconds for o in outcomes if o.status == "succeeded"]
        finished = time.time()
        summary = {
            "run_id": self._run_id,
            "started_at": utc_iso(self._started),
            "finished_at": utc_iso(finished),
            "wall_seconds": round(finished - self._started, 3),
            "counts": {
                "succeeded": counts["succeeded"],
                "skipped": counts["skipped"],
                "failed": len(failures),
                "claimed_elsewhere": counts["claimed"],
                "repaired": sum(o.repaired for o in outcomes),
                "total": len(outcomes) + len(failures),
            },
            "seconds_per_pair": {"median": statistics.median(seconds), "max": max(seconds)} if seconds else None,
            "failures_file": failures_file,
            "configuration": self._configuration,
        }
        if failures_error:
            summary["failures_file_error"] = failures_error
            summary["failures"] = [f.to_dict() for f in ordered]
        storage.write_atomic(summary_location(self._output), to_json(summary))
        yield summary


class _ReportEntryFn(beam.DoFn):
    """Outcome -> report.ReportEntry: the pair's log and thumbnails of its pictures.

    Style thumbnails are cached per worker: a few styles are usually shared by many pairs.
    """

    STYLE_CACHE_SIZE = 64

    def __init__(self, output: str, limits: Limits) -> None:
        self._output = output
        self._limits = limits
        self._cache: dict[str, bytes] = {}

    def _picture(self, location: str) -> bytes:
        cached = self._cache.get(location)
        if cached is not None:
            return cached
        data = storage.read_bytes(location, self._limits.max_input_bytes)
        picture = report.thumbnail(data, self._limits.max_input_pixels)
        if len(self._cache) >= self.STYLE_CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[location] = picture
        return picture

    def process(self, outcome: Outcome) -> Iterator[report.ReportEntry]:
        if outcome.status == "claimed":
            yield report.ReportEntry(outcome.id, "claimed elsewhere", note="another run is computing it")
            return
        try:
            log = json.loads(storage.read_bytes(log_location(self._output, outcome.id)))
        except Exception as exc:  # noqa: BLE001 - a report shows what it can
            yield report.ReportEntry(outcome.id, outcome.status, note=f"log unreadable: {type(exc).__name__}: {exc}")
            return
        yield report.entry_from_log(
            outcome.id, outcome.status, log, image_location(self._output, outcome.id), self._picture, outcome.repaired
        )


class _WriteReportFn(beam.DoFn):
    """summary -> OUTPUT/report.html and OUTPUT/contact_sheet.png.

    A report that cannot be written is logged, not raised: it is a view of outputs that are
    already safe, and the run's status is the summary's.
    """

    def __init__(self, output: str) -> None:
        self._output = output

    def process(self, summary: dict[str, Any], entries: list[report.ReportEntry], failures: list[Failure]) -> Iterator[str]:
        records = [f.to_dict() for f in sorted(failures, key=lambda f: (f.source, f.id or ""))]
        failures_file = summary.get("failures_file")
        link = failures_file[len(self._output):].lstrip("/") if failures_file and failures_file.startswith(self._output) else None
        try:
            sheet = report.contact_sheet(entries)
            if sheet is not None:
                storage.write_atomic(storage.join(self._output, report.CONTACT_SHEET_NAME), sheet)
            page = report.render_html(summary, entries, records, link)
            storage.write_atomic(report_location(self._output), page.encode())
        except Exception as exc:  # noqa: BLE001
            logger.warning("the report could not be written to %s: %s: %s", self._output, type(exc).__name__, exc)
            return
        yield report_location(self._output)


class StrictFailure(RuntimeError):
    """Rows or pairs failed and the job is strict: raised by the job's last step, after the
    summary and report are written, so that a job nobody waits on (Dataflow, launched from a
    Flex Template) ends failed, and the scheduler watching it fails its task."""


class _FailIfFailedFn(beam.DoFn):
    def process(self, summary: dict[str, Any], reported: list[str]) -> Iterator[None]:
        failed = summary["counts"]["failed"]
        if failed:
            where = summary["failures_file"] or "summary.json"
            raise StrictFailure(f"{failed} rows or pairs failed and --strict is set (see {where})")
        return iter(())


class WriteResults(beam.PTransform):
    """Writes each stylized pair as it arrives, then the run's failures and summary.

    Input: a dict with ``stylized`` (Stylized), ``skipped`` (Outcome) and ``failures`` (a tuple of
    Failure PCollections from earlier stages). Output: the summary dict (one element), emitted
    once the summary is written; the report is written from it. ``fail_job_if_failed``: the job
    fails at the end, after both, if any row or pair failed (StrictFailure).
    """

    def __init__(
        self, output: str, run_id: str, started: float, configuration: dict[str, Any], limits: Limits,
        fail_job_if_failed: bool = False,
    ) -> None:
        super().__init__()
        self._output = output
        self._limits = limits
        self._fail_job_if_failed = fail_job_if_failed
        self._run_id = run_id
        self._started = started
        self._configuration = configuration

    def expand(self, inputs: dict[str, Any]) -> beam.PCollection:
        written = inputs["stylized"] | "WritePairs" >> beam.ParDo(_WritePairFn(self._output, self._run_id)).with_outputs(
            WRITE_FAILURES, main="written"
        )
        outcomes = (written.written, inputs["skipped"]) | "AllOutcomes" >> beam.Flatten()
        failures = (*inputs["failures"], written[WRITE_FAILURES]) | "AllFailures" >> beam.Flatten()
        pipeline = inputs["skipped"].pipeline
        summary = (
            pipeline
            | "SummaryTrigger" >> beam.Create([None])
            | "WriteSummary"
            >> beam.ParDo(
                _WriteSummaryFn(self._output, self._run_id, self._started, self._configuration),
                outcomes=pvalue.AsList(outcomes),
                failures=pvalue.AsList(failures),
            )
        )
        entries = outcomes | "ReportEntries" >> beam.ParDo(_ReportEntryFn(self._output, self._limits))
        reported = summary | "WriteReport" >> beam.ParDo(
            _WriteReportFn(self._output), entries=pvalue.AsList(entries), failures=pvalue.AsList(failures)
        )
        if self._fail_job_if_failed:
            _ = summary | "FailIfFailed" >> beam.ParDo(_FailIfFailedFn(), reported=pvalue.AsList(reported))
        return summary
