"""WriteResults and the output layout (a contract, documented in README.md).

    OUTPUT/images/<id>.png            the stylized image
    OUTPUT/logs/<id>.json             inputs, resolved configuration, per-iteration history, ...
    OUTPUT/failures/<run_id>.jsonl    one record per failed row or pair of that run
    OUTPUT/summary.json               counts, wall time, configuration of the latest run

An image is written before its log, and each atomically: a log under its final name means the
pair is complete, which is what reruns check to skip work.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms import storage
from transforms.records import Failure, Outcome

NAMESPACE = "style_transfer"
WRITE_FAILURES = "write_failures"


def image_location(output: str, pair_id: str) -> str:
    return storage.join(output, "images", f"{pair_id}.png")


def log_location(output: str, pair_id: str) -> str:
    return storage.join(output, "logs", f"{pair_id}.json")


def failures_location(output: str, run_id: str) -> str:
    return storage.join(output, "failures", f"{run_id}.jsonl")


def summary_location(output: str) -> str:
    return storage.join(output, "summary.json")


def is_complete(output: str, pair_id: str, fingerprint: str) -> bool:
    """Whether a previous run finished this pair with the same inputs and configuration."""
    try:
        log = json.loads(storage.read_bytes(log_location(output, pair_id)))
    except (OSError, ValueError):
        return False  # a missing or unreadable log is redone, not trusted
    return log.get("fingerprint") == fingerprint and storage.exists(image_location(output, pair_id))


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


class _WritePairFn(beam.DoFn):
    def __init__(self, output: str) -> None:
        self._output = output
        self._succeeded = Metrics.counter(NAMESPACE, "pairs_succeeded")
        self._write_failed = Metrics.counter(NAMESPACE, "pairs_failed")

    def process(self, item: Stylized) -> Iterator[Any]:
        try:
            storage.write_atomic(image_location(self._output, item.id), item.png)
            storage.write_atomic(log_location(self._output, item.id), to_json(item.log))
        except Exception as exc:  # noqa: BLE001 - any storage error fails this pair only
            self._write_failed.inc()
            yield pvalue.TaggedOutput(WRITE_FAILURES, Failure.from_exception("write", exc, item.source, item.id))
            return
        self._succeeded.inc()
        yield Outcome(item.id, "succeeded", item.log["seconds"])


class _WriteSummaryFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, started: float, configuration: dict[str, Any]) -> None:
        self._output = output
        self._run_id = run_id
        self._started = started
        self._configuration = configuration
        self._failed = Metrics.counter(NAMESPACE, "rows_or_pairs_failed")

    def process(self, _: object, outcomes: list[Outcome], failures: list[Failure]) -> Iterator[dict[str, Any]]:
        failures_file = None
        if failures:
            self._failed.inc(len(failures))
            failures_file = failures_location(self._output, self._run_id)
            ordered = sorted(failures, key=lambda f: (f.source, f.id or ""))
            storage.write_atomic(failures_file, "".join(json.dumps(f.to_dict()) + "\n" for f in ordered).encode())
        counts = {"succeeded": 0, "skipped": 0}
        for outcome in outcomes:
            counts[outcome.status] += 1
        seconds = [o.seconds for o in outcomes if o.status == "succeeded"]
        finished = time.time()
        summary = {
            "run_id": self._run_id,
            "started_at": utc_iso(self._started),
            "finished_at": utc_iso(finished),
            "wall_seconds": round(finished - self._started, 3),
            "counts": {**counts, "failed": len(failures), "total": len(outcomes) + len(failures)},
            "seconds_per_pair": {"median": statistics.median(seconds), "max": max(seconds)} if seconds else None,
            "failures_file": failures_file,
            "configuration": self._configuration,
        }
        storage.write_atomic(summary_location(self._output), to_json(summary))
        yield summary


class WriteResults(beam.PTransform):
    """Writes each stylized pair as it arrives, then the run's failures and summary.

    Input: a dict with ``stylized`` (Stylized), ``skipped`` (Outcome) and ``failures`` (a tuple of
    Failure PCollections from earlier stages). Output: the summary dict (one element).
    """

    def __init__(self, output: str, run_id: str, started: float, configuration: dict[str, Any]) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._started = started
        self._configuration = configuration

    def expand(self, inputs: dict[str, Any]) -> beam.PCollection:
        written = inputs["stylized"] | "WritePairs" >> beam.ParDo(_WritePairFn(self._output)).with_outputs(
            WRITE_FAILURES, main="written"
        )
        outcomes = (written.written, inputs["skipped"]) | "AllOutcomes" >> beam.Flatten()
        failures = (*inputs["failures"], written[WRITE_FAILURES]) | "AllFailures" >> beam.Flatten()
        pipeline = inputs["skipped"].pipeline
        return (
            pipeline
            | "SummaryTrigger" >> beam.Create([None])
            | "WriteSummary"
            >> beam.ParDo(
                _WriteSummaryFn(self._output, self._run_id, self._started, self._configuration),
                outcomes=pvalue.AsList(outcomes),
                failures=pvalue.AsList(failures),
            )
        )
