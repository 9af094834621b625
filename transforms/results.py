"""WriteResults: the index, the run's failures, summary and report, once every pair is written.

Each pair's image and log are written by the stylize step as it finishes (outputs.py holds the
layout, logs.py the log's schema). This step gathers the run in bounded memory, whatever its size:

    OUTPUT/index.json, index/*.jsonl             one line per image in images/ (index.py), replaced whole
    OUTPUT/failures/<run_id>.jsonl               every failed row or pair of the run
    OUTPUT/summary.json                          counts and timing (tally.py: combiners, no list of outcomes)
    OUTPUT/report.html, contact_sheet.png        totals, distributions, failures (capped), a sample of pairs

Imports: Beam, claims, index, logs, outputs, reading, storage, limits, records, report, tally and
stylize's RunSettings; nothing of pipeline/, no torch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.typehints.decorators import no_annotations

from transforms import claims, index, logs, reading, report, storage
from transforms.limits import Limits
from transforms.nst.records import SlotUse
from transforms.outputs import (
    REPORT_NAME,
    failures_location,
    image_location,
    log_location,
    run_folder,
    summary_location,
    to_json,
    utc_iso,
)
from transforms.records import NAMESPACE, Failure, Outcome, bounded_message
from transforms.stylize import RunSettings
from transforms.tally import ReportChoice, Tally

A = TypeVar("A")

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)


class MergeFn(beam.CombineFn, Generic[A]):
    """Items -> one accumulator: ``new()`` on each worker, ``add(accumulator, item)`` for each
    item, ``merged(accumulators)`` across workers, then ``finish(accumulator)``. The run's tally,
    the report's choice and the dry run's plan (plan.py) are each such an accumulator, in bounded
    memory whatever the run's size."""

    def __init__(
        self,
        new: Callable[[], A],
        add: Callable[[A, Any], A],
        merged: Callable[[list[A]], A],
        finish: Callable[[A], Any],
    ) -> None:
        self._new, self._add, self._merged, self._finish = new, add, merged, finish

    def create_accumulator(self) -> A:
        return self._new()

    def add_input(self, accumulator: A, item: Any) -> A:
        return self._add(accumulator, item)

    def merge_accumulators(self, accumulators: Iterable[A]) -> A:
        return self._merged(list(accumulators))

    def extract_output(self, accumulator: A) -> Any:
        return self._finish(accumulator)


def _trimmed(tally: Tally) -> Tally:
    return Tally.merged([tally])  # trimmed to the sample size


def _chosen(choice: ReportChoice) -> list[Outcome]:
    return ReportChoice.merged([choice]).outcomes()


class _ListImagesFn(beam.DoFn):
    """-> (pair id, (image path below OUTPUT, bytes)) of every image in ``OUTPUT/images``, listed
    once every pair of the run is written (the ``written`` side input is that barrier)."""

    def __init__(self, output: str) -> None:
        self._output = output

    def process(self, _: object, written: object) -> Iterator[tuple[str, tuple[str, int]]]:
        for pair_id, image, size in index.listed_images(self._output):
            yield pair_id, (image, size)


class _PreviousLinesFn(beam.DoFn):
    """-> (pair id, line) of the index being replaced; none when there is no pointer (an
    earlier release's shards: each pair's log is read instead) or it cannot be read."""

    def __init__(self, output: str) -> None:
        self._output = output

    def process(self, _: object, written: object) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            pointer = index.read_pointer(self._output)
            for line in index.lines_of(self._output, pointer) if pointer else ():  # none for the first index here
                if isinstance(line, dict) and isinstance(line.get("id"), str):
                    yield line["id"], line
        except (OSError, ValueError) as exc:  # reading.DamagedError is a ValueError
            logger.info("the index being replaced is not read (%s): logs are read instead", exc)


class _IndexLinesFn(beam.DoFn):
    """(pair id, {listed, entries, previous}) -> (shard, line) of each of its images
    (index.choose_lines); superseded images of pairs this run wrote or found done are removed."""

    def __init__(self, output: str, shards: int) -> None:
        self._output = output
        self._shards = shards

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[tuple[int, str]]:
        pair_id, found = element
        lines, superseded = index.choose_lines(
            pair_id, list(found["listed"]), list(found["entries"]), list(found["previous"]), self._line_from_log
        )
        for image in superseded:
            if storage.remove_if_regular(storage.join(self._output, image), inside=self._output):
                logger.debug("%s: removed %s, superseded by %s", pair_id, image, lines[0]["image"])
        for line in lines:
            yield index.shard_of(pair_id, self._shards), index.encode_line(line)

    def _line_from_log(self, pair_id: str) -> dict[str, Any] | None:
        try:
            log = logs.read_log(log_location(self._output, pair_id), pair_id, inside=self._output)
        except (OSError, reading.DamagedError):
            return None
        return index.line_from_log(log)


class _WriteIndexShardFn(beam.DoFn):
    """(shard, [line]) -> (``index/<run_id>-SSSSS.jsonl``, lines), lines in order. A shard is
    rewritten whole if its bundle is retried, so a retry leaves no duplicate line."""

    def __init__(self, output: str, run_id: str) -> None:
        self._output = output
        self._run_id = run_id

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[tuple[str, int]]:
        shard, lines = element
        ordered = sorted(lines)
        location = index.shard_location(self._output, self._run_id, shard)
        storage.write_atomic(location, "".join(f"{line}\n" for line in ordered).encode(), inside=self._output)
        yield f"{index.FOLDER}/{location.rsplit('/', 1)[-1]}", len(ordered)


class _SwitchIndexFn(beam.DoFn):
    """Once every shard is written: the pointer switched to them (index.write_pointer)."""

    def __init__(self, output: str, run_id: str) -> None:
        self._output = output
        self._run_id = run_id

    def process(self, _: object, shards: list[tuple[str, int]]) -> Iterator[dict[str, Any]]:
        yield index.write_pointer(self._output, self._run_id, [name for name, _ in shards], sum(n for _, n in shards))


class WriteIndex(beam.PTransform):
    """Outcomes -> the index rewritten whole, once every pair is written: a listing of
    ``OUTPUT/images`` joined by pair id with this run's lines and the previous index's (logs
    read only for images neither has), written as new shards, then switched to in one atomic
    write. Output: the new pointer (one element)."""

    def __init__(self, output: str, run_id: str, limits: Limits, expected_pairs: int | None) -> None:
        super().__init__()
        self._output = output
        self._run_id = run_id
        self._limits = limits
        self._shards = max(1, math.ceil((expected_pairs or 1) / index.LINES_PER_SHARD))

    def expand(self, outcomes: beam.PCollection) -> beam.PCollection:
        pipeline = outcomes.pipeline
        # One element once every outcome is in: each pair is written before its outcome exists.
        written = pvalue.AsSingleton(outcomes | "Written" >> beam.combiners.Count.Globally())
        start = pipeline | "IndexStart" >> beam.Create([None])
        grouped = {
            "listed": start | "ListImages" >> beam.ParDo(_ListImagesFn(self._output), written=written),
            "entries": outcomes | "RunLines" >> beam.FlatMap(lambda o: [(o.id, o.index)] if o.index else []),
            "previous": start | "PreviousLines" >> beam.ParDo(_PreviousLinesFn(self._output), written=written),
        } | "ByPair" >> beam.CoGroupByKey()
        shards = (
            grouped
            | "IndexLines" >> beam.ParDo(_IndexLinesFn(self._output, self._shards))
            | "GroupIndexShards" >> beam.GroupByKey()
            | "WriteIndexShards" >> beam.ParDo(_WriteIndexShardFn(self._output, self._run_id))
        )
        return start | "SwitchIndex" >> beam.ParDo(
            _SwitchIndexFn(self._output, self._run_id), shards=pvalue.AsList(shards)
        )


class _WriteSummaryFn(beam.DoFn):
    def __init__(self, output: str, run_id: str, started: float, configuration: dict[str, Any]) -> None:
        self._output = output
        self._run_id = run_id
        self._started = started
        self._configuration = configuration
        self._failed = Metrics.counter(NAMESPACE, "rows_or_pairs_failed")

    def process(
        self, tally: Tally, failures: list[Failure], pointer: dict[str, Any], slot_use: SlotUse
    ) -> Iterator[dict[str, Any]]:
        # Every pair is written or failed by now, and each released its claim as it ended.
        claims.remove_empty_folders(self._output)
        ordered = sorted(failures, key=lambda f: (f.source, f.id or ""))
        failures_file, failures_error = None, None
        if failures:
            self._failed.inc(len(failures))
            failures_file = failures_location(self._output, self._run_id)
            try:
                storage.write_atomic(
                    failures_file,
                    # UTF-8, as every record is bounded: an emoji is 4 bytes, not a 12-byte escape.
                    "".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in ordered).encode(),
                    inside=self._output,
                )
            except OSError as exc:
                # The summary still goes out, with the records in it: nothing is lost.
                failures_file, failures_error = None, f"{failures_file}: {type(exc).__name__}: {exc}"
        counts = tally.counts
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
                "repaired": tally.repaired,
                "total": sum(counts.values()) + len(failures),
            },
            "seconds_per_pair": tally.seconds_per_pair(),
            # How full the device's slots were: batch steps, the slots they offered, and the
            # rows that advanced a pair (the iterations the logs record); busy is their ratio.
            "slots": {
                "batch_steps": slot_use.batch_steps,
                "slot_steps": slot_use.slot_steps,
                "row_steps": slot_use.row_steps,
                "busy": None if slot_use.busy is None else round(slot_use.busy, 4),
            },
            # The whole output's index, as this run left it (index.py).
            "index": {"pointer": index.POINTER, "images": pointer["images"], "shards": pointer["shards"]},
            "failures_file": failures_file,
            "configuration": self._configuration,
        }
        if failures_error:
            summary["failures_file_error"] = failures_error
            summary["failures"] = [f.to_dict() for f in ordered]
        data = to_json(summary)
        storage.write_atomic(summary_location(self._output, self._run_id), data, inside=self._output)
        storage.write_atomic(summary_location(self._output), data, inside=self._output)
        yield summary


class _ReportEntryFn(beam.DoFn):
    """Outcome (one the report shows) -> report.ReportEntry: the pair's log and thumbnails.

    Style thumbnails are cached per worker: a few styles are usually shared by many pairs.
    """

    STYLE_CACHE_SIZE = 64

    def __init__(self, output: str, limits: Limits, extension: str) -> None:
        self._output = output
        self._limits = limits
        self._extension = extension
        self._cache: dict[str, bytes] = {}

    def _picture(self, location: str) -> bytes:
        cached = self._cache.get(location)
        if cached is not None:
            return cached
        # The result image is the job's own output: read as written, never through a link.
        inside = self._output if storage.is_within(location, self._output) else None
        data = storage.read_bytes(location, self._limits.max_input_bytes, inside=inside)
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
            log = logs.read_log(log_location(self._output, outcome.id), outcome.id, inside=self._output)
        except (OSError, reading.DamagedError) as exc:  # a report shows what it can
            yield report.ReportEntry(outcome.id, outcome.status, note=bounded_message(f"log unreadable: {exc}"))
            return
        yield report.entry_from_log(
            outcome.id,
            outcome.status,
            log,
            image_location(self._output, outcome.id, self._extension),
            self._picture,
            outcome.repaired,
        )


class _WriteReportFn(beam.DoFn):
    """summary -> report.html and contact_sheet.png, in the run's own folder (runs/<run_id>/),
    then at the top of the output as the latest; yields the run's own page once written.

    A report that cannot be written is logged, not raised: it is a view of outputs that are
    already safe, and the run's status is the summary's. A contact sheet that cannot be written
    does not keep the page from being written.
    """

    def __init__(self, output: str, extension: str) -> None:
        self._output = output
        self._extension = extension

    def process(
        self, summary: dict[str, Any], tally: Tally, entries: list[report.ReportEntry], failures: list[Failure]
    ) -> Iterator[str]:
        records = [f.to_dict() for f in sorted(failures, key=lambda f: (f.source, f.id or ""))]
        failures_file = summary.get("failures_file")
        link = (
            failures_file[len(self._output) :].lstrip("/")
            if failures_file and failures_file.startswith(self._output)
            else None
        )
        run_id = summary["run_id"]
        try:
            sheet = report.contact_sheet(entries)
        except Exception as exc:  # noqa: BLE001
            logger.warning("the contact sheet could not be made: %s: %s", type(exc).__name__, exc)
            sheet = None
        # The run's own copy first: its links climb out of runs/<run_id>/ to the output's files.
        for folder, to_output in ((run_folder(self._output, run_id), "../../"), (self._output, "")):
            if sheet is not None:
                try:
                    storage.write_atomic(storage.join(folder, report.CONTACT_SHEET_NAME), sheet, inside=self._output)
                except Exception as exc:  # noqa: BLE001
                    logger.warning(
                        "the contact sheet could not be written to %s: %s: %s", folder, type(exc).__name__, exc
                    )
            try:
                page = report.render_html(summary, entries, records, link, tally.sample, self._extension, to_output)
                storage.write_atomic(storage.join(folder, REPORT_NAME), page.encode(), inside=self._output)
            except Exception as exc:  # noqa: BLE001
                logger.warning("the report could not be written to %s: %s: %s", folder, type(exc).__name__, exc)
                continue
            if to_output:  # the run's own page
                yield storage.join(folder, REPORT_NAME)


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
    """Writes the index (WriteIndex), then the run's failures and summary, then the report.

    Input: a dict with ``outcomes`` (Outcome: succeeded, skipped, claimed), ``failures`` (a tuple
    of Failure PCollections from every stage) and ``slot_use`` (SlotUse of each engine run). Output: the summary dict (one element), emitted
    once the summary is written; the report is written from it. ``fail_job_if_failed``: the job
    fails at the end, after both, if any row or pair failed (StrictFailure).
    """

    def __init__(
        self,
        settings: RunSettings,
        started: float,
        configuration: dict[str, Any],
        limits: Limits,
        fail_job_if_failed: bool = False,
    ) -> None:
        super().__init__()
        self._output = settings.output
        self._run_id = settings.run_id
        self._spec = settings.spec
        self._expected_pairs = settings.expected_pairs
        self._limits = limits
        self._fail_job_if_failed = fail_job_if_failed
        self._started = started
        self._configuration = configuration

    @no_annotations  # for readers and mypy: Beam 2.78 warns on the console of hints that are not PCollections
    def expand(self, inputs: dict[str, Any]) -> beam.PCollection:
        outcomes = inputs["outcomes"]
        failures = inputs["failures"] | "AllFailures" >> beam.Flatten()
        pointer = outcomes | "WriteIndex" >> WriteIndex(self._output, self._run_id, self._limits, self._expected_pairs)
        tally = outcomes | "Tally" >> beam.CombineGlobally(MergeFn(Tally, Tally.add, Tally.merged, _trimmed))
        slot_use = inputs["slot_use"] | "SlotUse" >> beam.CombineGlobally(sum, SlotUse()).without_defaults()
        summary = tally | "WriteSummary" >> beam.ParDo(
            _WriteSummaryFn(self._output, self._run_id, self._started, self._configuration),
            failures=pvalue.AsList(failures),
            pointer=pvalue.AsSingleton(pointer),
            slot_use=pvalue.AsSingleton(slot_use, default_value=SlotUse()),
        )
        entries = (
            outcomes
            | "ChooseForReport"
            >> beam.CombineGlobally(MergeFn(ReportChoice, ReportChoice.add, ReportChoice.merged, _chosen))
            | "ReportOutcomes" >> beam.FlatMap(lambda chosen: chosen)
            | "ReportEntries" >> beam.ParDo(_ReportEntryFn(self._output, self._limits, self._spec.extension))
        )
        reported = summary | "WriteReport" >> beam.ParDo(
            _WriteReportFn(self._output, self._spec.extension),
            tally=pvalue.AsSingleton(tally),
            entries=pvalue.AsList(entries),
            failures=pvalue.AsList(failures),
        )
        if self._fail_job_if_failed:
            _ = summary | "FailIfFailed" >> beam.ParDo(_FailIfFailedFn(), reported=pvalue.AsList(reported))
        return summary
