"""WriteResults: the run's failures, summary and report, once every pair is written.

Each pair's image and log are written by the stylize step as it finishes (outputs.py holds the
layout and the log's schema); this step gathers the outcomes and failures of the run into
``OUTPUT/failures/<run_id>.jsonl``, ``OUTPUT/summary.json`` and the report.

Imports: Beam, outputs, storage, limits, records and report; nothing of pipeline/, no torch.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms import report, storage
from transforms.limits import Limits
from transforms.outputs import (
    failures_location,
    image_location,
    log_location,
    report_location,
    summary_location,
    to_json,
    utc_iso,
)
from transforms.records import NAMESPACE, Failure, Outcome

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # README, "Logs"


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
    """Writes the run's failures and summary, then the report.

    Input: a dict with ``outcomes`` (Outcome: succeeded, skipped, claimed) and ``failures`` (a tuple
    of Failure PCollections from every stage). Output: the summary dict (one element), emitted
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
        outcomes = inputs["outcomes"]
        failures = inputs["failures"] | "AllFailures" >> beam.Flatten()
        summary = (
            outcomes.pipeline
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
