"""StylizePairs: the Beam side of the engine. Batching, claims, writing each pair, metrics.

    pairs | Prepare (skip check, batch key) | GroupByKey (batch key, shard) | Stylize (claim, engine, write)

Prepare needs no model: a rerun whose pairs are all done never loads it. Pairs that can share a
batch (same output size, network, optimizer, precision and iterations) are grouped, and each
group is one run of the engine with as many slots per task shape as fit the device: every scale
and tile of a pair is a task, and a task that finishes gives its slot to the next ready one at
once (the same pair's next scale or another pair's first); a pair is written as soon as its last
task is done. Everything about the engine (loading it, placing a pair within the device's
memory, reading inputs and style targets, running a queue) is the injected ``Handler``'s
(handler.py; a narrow protocol, as Beam's ``ModelHandler``); one engine per worker process is
shared by every DoFn instance in it (``apache_beam.utils.shared``). Each pair is claimed while it is computed and written
(claims.py), and written here (outputs.py), so that a pair is reported done only once its files
are. Every per-pair error becomes a Failure record; the other pairs, in the batch too, go on. A
model that cannot load is not a per-pair error: it fails the bundle, so the runner retries it and
then fails the job (the launcher's pre-flight check catches most such cases before anything runs).

Imports: Beam, claims, progress, outputs and records, and the engine's torch-free records: no
torch, so that a fake handler runs these DoFns without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils import shared

from transforms import claims, index, outputs, progress
from transforms.nst.records import PairFinished, PairTaken, ReadyQueue, RunEnded, StyleResult
from transforms.records import NAMESPACE, Failure, Outcome, Pair, Stage

if TYPE_CHECKING:
    from transforms.nst.memory import Placement
    from transforms.nst.records import IterationRecord, KeyedCallback, RunEvent, StyleRequest

SKIPPED: Final = "skipped"
FAILURES: Final = "failures"
# How full each run kept the device's slots (SlotUse), for the summary and report.
SLOT_USE: Final = "slot_use"
# How often the claims of the pairs handed to the engine are looked at for renewal: far below
# claims.RENEW_SECONDS, so none is renewed late.
LEASE_CHECK_SECONDS: Final = 5.0


class Inputs(Protocol):
    """What a pair needs before the model, and its inputs read (handler.PairInputs)."""

    def content_size(self, pair: Pair) -> tuple[int, int]: ...

    def resolve(self, pair: Pair, content_size: tuple[int, int]) -> Pair: ...

    def batch_key(self, pair: Pair, content_size: tuple[int, int]) -> tuple[str, tuple[int, int]]: ...

    def request(self, engine: Any, pair: Pair, placement: Placement) -> StyleRequest: ...


class Handler(Protocol):
    """The engine's side of the stylize step, as Beam's ``ModelHandler`` is RunInference's:
    ``load`` the engine, ``place`` a pair on its device, ``run`` a queue of ready requests
    (handler.EngineHandler; the tests' fake has these and nothing else)."""

    @property
    def share_tag(self) -> str:
        """Engines with equal tags are one engine per worker process."""

    @property
    def group_pairs(self) -> int:
        """Pairs a group of one batch key holds, on average."""

    @property
    def inputs(self) -> Inputs: ...

    def load(self) -> Any: ...

    def place(self, engine: Any, pair: Pair, output_size: tuple[int, int]) -> Placement: ...

    def run(
        self, engine: Any, queue: ReadyQueue[str], slots: int, on_record: KeyedCallback
    ) -> Iterator[RunEvent[str]]: ...


@dataclass(frozen=True)
class RunSettings:
    """What the steps of a run share of the job's configuration: StylizePairs (and PlanPairs)
    and WriteResults take it, pipeline/graph.py builds it once."""

    output: str
    overwrite: bool = False
    run_id: str = ""
    # For the progress display and the spread of batch groups over workers.
    expected_pairs: int | None = None
    # The image format and quality, and the iterations each log keeps.
    spec: outputs.OutputSpec = outputs.OutputSpec()
    # The job's iterations per pair, for the progress display's time left.
    iterations_per_pair: int | None = None

    def tracker(self) -> progress.Progress:
        """This process's progress display of the run."""
        return progress.for_run(self.run_id, self.expected_pairs, self.iterations_per_pair)


@dataclass(frozen=True)
class Prepared:
    """A pair that is not done, with what the skip check learnt, on its way to a batch."""

    pair: Pair
    signatures: dict[str, str]
    fingerprint: str
    # (width, height) of the result: what the batch key and the memory estimate go by.
    output_size: tuple[int, int]
    # Why the earlier outputs were not trusted, when there were damaged ones.
    repairing: str | None = None
    # Why finished outputs are redone: what changed since (outputs.changes), or --overwrite.
    redoing: str | None = None


class PreparePairsFn(beam.DoFn):
    """Pair -> (batch key, Prepared), Outcome (``skipped``: done) or Failure (``failures``).

    Loads no model: the skip check reads logs and images, and the content image's header gives
    the output size the batch key needs.
    """

    def __init__(self, settings: RunSettings, handler: Handler) -> None:
        self._settings = settings
        self._handler = handler
        self._ends = _Ends()

    def process(self, pair: Pair) -> Iterator[Any]:
        tracker = self._settings.tracker()
        settings = self._settings
        stage = Stage.READ  # a missing input fails here, before any work
        try:
            signatures = outputs.input_signatures(pair)
            work = outputs.fingerprint(pair, signatures, settings.spec)
            stage = Stage.CHECK
            prior = outputs.inspect_outputs(settings.output, pair.id, work, settings.spec.extension)
            if prior.done and not settings.overwrite:
                line = index.line_from_log(prior.log) if prior.log is not None else None
                yield self._ends.skipped(tracker, pair.id, "already done", line)
                return
            stage = Stage.READ
            inputs = self._handler.inputs
            content_size = inputs.content_size(pair)
            stage = Stage.STYLIZE  # image_size 0: the content's own size, within the limits
            pair = inputs.resolve(pair, content_size)
            key, output_size = inputs.batch_key(pair, content_size)
        except Exception as exc:  # noqa: BLE001 - one bad pair must never stop the batch
            yield self._ends.failed(tracker, pair, stage, exc)
            return
        repairing = prior.reason if prior.state == "damaged" else None
        redoing = None
        if prior.state == "stale" and prior.log is not None:
            redoing = outputs.changes(prior.log, pair, signatures, settings.spec)
        elif prior.done:
            redoing = "--overwrite"
        # Pairs of one batch key are spread over shards of about group_pairs, so that a
        # collection of one size is grouped into many groups that workers share, not one.
        shards = max(1, math.ceil((self._settings.expected_pairs or 1) / self._handler.group_pairs))
        shard = zlib.crc32(pair.id.encode()) % shards
        yield f"{key} shard {shard}", Prepared(pair, signatures, work, output_size, repairing, redoing)


class _Ends:
    """Where each pair's end is counted (Beam metrics), shown (the progress display) and
    emitted (the DoFn's outputs): one collector for both DoFns, as RunInference keeps one
    metrics collector. Each method returns what the DoFn yields."""

    def __init__(self) -> None:
        self._succeeded = Metrics.counter(NAMESPACE, "pairs_succeeded")
        self._repaired = Metrics.counter(NAMESPACE, "pairs_repaired")
        self._skipped = Metrics.counter(NAMESPACE, "pairs_skipped")
        self._claimed = Metrics.counter(NAMESPACE, "pairs_claimed_elsewhere")
        self._failed = Metrics.counter(NAMESPACE, "pairs_failed")
        self._pair_ms = Metrics.distribution(NAMESPACE, "pair_milliseconds")
        # Beam distributions hold integers: the final loss is recorded in thousandths.
        self._final_loss = Metrics.distribution(NAMESPACE, "final_loss_thousandths")

    def failed(self, tracker: progress.Progress, pair: Pair, stage: Stage, exc: BaseException) -> pvalue.TaggedOutput:
        """The failure record of ``pair``, counted and reported on the progress display."""
        self._failed.inc()
        failure = Failure.from_exception(stage, exc, pair.source, pair.id, pair.row)
        tracker.pair_finished(pair.id, "failed", f"at {stage}: {failure.error}")
        return pvalue.TaggedOutput(FAILURES, failure)

    def skipped(
        self, tracker: progress.Progress, pair_id: str, why: str, line: dict[str, Any] | None = None
    ) -> pvalue.TaggedOutput:
        """A pair found done (``line``: its index line, when its log was verified here)."""
        self._skipped.inc()
        tracker.pair_finished(pair_id, "skipped", why)
        return pvalue.TaggedOutput(SKIPPED, Outcome(pair_id, "skipped", index=line))

    def claimed(self, tracker: progress.Progress, pair_id: str, holder: str) -> pvalue.TaggedOutput:
        """A pair another run is computing now."""
        self._claimed.inc()
        tracker.pair_finished(pair_id, "claimed", f"being computed by {holder}")
        return pvalue.TaggedOutput(SKIPPED, Outcome(pair_id, "claimed"))

    def succeeded(self, tracker: progress.Progress, prepared: Prepared, outcome: Outcome, seconds: float) -> Outcome:
        """A pair written: its seconds and loss, and why it was redone or repaired, if it was."""
        self._succeeded.inc()
        if outcome.repaired:
            self._repaired.inc()
        self._pair_ms.update(int(seconds * 1000))
        loss = outcome.final_loss or 0.0
        self._final_loss.update(int(loss * 1000))
        why = f"repaired ({prepared.repairing})" if outcome.repaired else ""
        why = why or (f"redone ({prepared.redoing})" if prepared.redoing else "")
        # The batch it ran in and the device are in its log and the report: the line stays short.
        line = f"{seconds:.1f} s, loss {loss:.4g}" + (f"; {why}" if why else "")
        tracker.pair_finished(outcome.id, "succeeded", line)
        return outcome


@dataclass
class _Running:
    """A pair handed to the engine: its lease and its progress. (Its request, the decoded inputs,
    is the engine's and the queue's alone, so that it is freed as soon as the pair finishes.)"""

    prepared: Prepared
    lease: claims.Lease
    # Iterations done so far, over all scales and tiles (for the progress display).
    done: int = 0
    # Iterations the pair runs at most: each scale's, each tile's too.
    iterations: int = 0
    # When the engine took it (perf_counter), for its log's seconds.
    started_at: float = dataclasses.field(default_factory=time.perf_counter)
    # Releases its claim (closed once it is written).
    release: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)


class StylizeBatchesFn(beam.DoFn):
    """(batch key, [Prepared]) -> Outcome (main: ``succeeded``, written; ``skipped``: done
    meanwhile, or claimed by another run) or Failure (``failures``), one per pair; and
    (``slot_use``) how full each run of the engine kept its slots."""

    def __init__(self, settings: RunSettings, handler: Handler) -> None:
        self._settings = settings
        self._handler = handler
        self._shared = shared.Shared()
        self._ends = _Ends()
        self._batch_sizes = Metrics.distribution(NAMESPACE, "batch_size")
        # The worker process's engine, from ``Shared`` (which keeps a weak reference to it).
        self._loaded: Any = None

    def _engine(self) -> Any:
        # A method, not a property: Beam inspects DoFn attributes when it builds the graph,
        # and evaluating this there would load the model into the pickled DoFn.
        if self._loaded is None:
            self._loaded = self._shared.acquire(self._handler.load, tag=self._handler.share_tag)
        return self._loaded

    def process(self, element: tuple[str, Iterable[Prepared]]) -> Iterator[Any]:
        _, group = element
        engine = self._engine()  # ModelLoadError fails the bundle, not the pairs
        whole: list[tuple[Prepared, Placement]] = []
        for item in group:
            placement = self._handler.place(engine, item.pair, item.output_size)
            if placement.whole:
                whole.append((item, placement))
            elif placement.tiling is not None:  # too large at once: in tiles, a run of its own
                yield from self._run(engine, [(item, placement)], placement.slots)
            elif placement.refusal is not None:
                yield self._ends.failed(self._settings.tracker(), item.pair, Stage.STYLIZE, placement.refusal)
        if whole:
            yield from self._run(engine, whole, whole[0][1].slots)

    def _run(self, engine: Any, items: list[tuple[Prepared, Placement]], slots: int) -> Iterator[Any]:
        """Claims, a last skip check, the inputs, the engine, the writes, pair by pair, with
        ``slots`` rows per task shape on the device, each pair written (and its claim released)
        as soon as it finishes. This side prepares each pair (claim, skip check, inputs, style
        targets) and puts it in the engine's queue of ready requests: ``slots`` before the engine
        starts, then one each time the engine takes one (``PairTaken``), so that a freed slot's
        next pair is always ready; the engine only takes from the queue and gives results back
        by pair id. Every claim is released when the run ends, however it ends."""
        tracker = self._settings.tracker()
        queue: ReadyQueue[str] = ReadyQueue()
        running: dict[str, _Running] = {}  # handed to the engine, not yet written
        not_run: list[Any] = []  # outcomes of pairs that never reached the engine, in order
        pending = iter(items)
        drawn = 0  # pairs handed to the engine so far
        with contextlib.ExitStack() as leases:

            def feed() -> None:
                """The next pair that can run, claimed, checked and read, put in the queue; the
                outcomes of those before it that cannot (claimed, done meanwhile, unreadable)."""
                nonlocal drawn
                for item, placement in pending:
                    release = leases.enter_context(contextlib.ExitStack())
                    started = self._start(engine, item, placement, release, tracker)
                    if not isinstance(started, tuple):
                        release.close()
                        not_run.append(started)
                        continue
                    entry, request = started
                    entry.release = release
                    running[item.pair.id] = entry
                    queue.put(item.pair.id, request)
                    drawn += 1
                    return

            lease_checked = time.monotonic()  # when the running pairs' claims were last looked at

            def on_record(pair_id: str, record: IterationRecord) -> None:
                nonlocal lease_checked
                entry = running[pair_id]
                # Counted over all scales and tiles; each records its start as iteration 0,
                # before any iteration is done.
                entry.done += record.iteration > 0
                tracker.iteration(pair_id, entry.done, entry.iterations, record.total)
                # Every pair handed to the engine, not only this one: a pair waiting for a row
                # between its scales records nothing meanwhile. Looked at once every
                # LEASE_CHECK_SECONDS, not at each of the batch's records.
                now = time.monotonic()
                if now - lease_checked >= LEASE_CHECK_SECONDS:
                    lease_checked = now
                    for waiting in running.values():
                        waiting.lease.renew_if_due()

            for _ in range(slots):
                feed()
            for event in self._handler.run(engine, queue, slots, on_record):
                yield from not_run
                not_run.clear()
                if isinstance(event, PairTaken):
                    running[event.key].started_at = time.perf_counter()
                    feed()  # the next pair, ready before a slot frees
                elif isinstance(event, PairFinished):
                    entry = running.pop(event.key)
                    # The engine's count from the pair's first step, when it has a result: a pair
                    # taken early waits for a row, and that wait is not its cost.
                    outcome = event.outcome
                    waited = time.perf_counter() - entry.started_at
                    seconds = outcome.seconds if isinstance(outcome, StyleResult) else waited
                    # The pairs it shared the device with: the slots, or as many pairs as were drawn.
                    yield self._finish(entry, outcome, seconds, min(slots, drawn), tracker)
                    entry.release.close()  # written: the claim goes now, not when the whole group ends
                elif isinstance(event, RunEnded):
                    if drawn:
                        self._batch_sizes.update(min(slots, drawn))
                    yield pvalue.TaggedOutput(SLOT_USE, event.use)
            yield from not_run

    def _start(
        self,
        engine: Any,
        item: Prepared,
        placement: Placement,
        release: contextlib.ExitStack,
        tracker: progress.Progress,
    ) -> tuple[_Running, StyleRequest] | pvalue.TaggedOutput:
        """The pair claimed (its claim released by ``release``) and ready to run, or its outcome
        when it does not run (a claim that cannot be made, claimed elsewhere, done meanwhile, an
        input that fails)."""
        pair = item.pair
        try:
            lease = release.enter_context(claims.claimed(self._settings.output, pair.id, self._settings.run_id))
        except Exception as exc:  # noqa: BLE001 - a claim that cannot be made (a full disk, a folder in its place) fails its pair only
            where = claims.claim_location(self._settings.output, pair.id)
            detail = f"{type(exc).__name__}: {exc}"  # naming the claim's location once
            error = OSError(f"cannot claim the pair{'' if where in detail else f' at {where}'}: {detail}")
            return self._ends.failed(tracker, pair, Stage.WRITE, error)
        if not lease.held:
            return self._ends.claimed(tracker, pair.id, lease.claim.describe())
        settings = self._settings
        if (
            not settings.overwrite
            and outputs.inspect_outputs(settings.output, pair.id, item.fingerprint, settings.spec.extension).done
        ):
            return self._ends.skipped(tracker, pair.id, "done by another run meanwhile")
        try:
            request = self._handler.inputs.request(engine, pair, placement)
        except Exception as exc:  # noqa: BLE001 - a bad input fails its own pair
            # PairTooLargeError (a MemoryError): a style image too large to encode.
            return self._ends.failed(tracker, pair, Stage.STYLIZE if isinstance(exc, MemoryError) else Stage.READ, exc)
        return _Running(item, lease, iterations=placement.iterations), request

    def _finish(
        self,
        entry: _Running,
        result: StyleResult | Exception,
        seconds: float,
        batch_size: int,
        tracker: progress.Progress,
    ) -> Any:
        """The pair's result written (image, then log), or why it has none."""
        prepared, pair = entry.prepared, entry.prepared.pair
        if isinstance(result, Exception):
            return self._ends.failed(tracker, pair, Stage.STYLIZE, result)
        spec = self._settings.spec
        image = spec.encode(result.image)
        log = outputs.pair_log(
            pair,
            prepared.signatures,
            prepared.fingerprint,
            image,
            result,
            batch_size,
            seconds,
            prepared.repairing,
            spec,
        )
        try:
            outputs.write_pair(self._settings.output, pair.id, image, log, spec.extension)
        except Exception as exc:  # noqa: BLE001 - any storage error fails this pair only
            return self._ends.failed(tracker, pair, Stage.WRITE, exc)
        outcome = Outcome(
            pair.id,
            "succeeded",
            log["seconds"],
            prepared.repairing is not None,
            result.final.total,
            batch_size,
            index.line_from_log(log),
        )
        return self._ends.succeeded(tracker, prepared, outcome, seconds)


class StylizePairs(beam.PTransform):
    """Pairs -> {"outcomes": Outcome (succeeded, skipped, claimed), "failures": Failure,
    "slot_use": SlotUse of each run of the engine}."""

    def __init__(self, settings: RunSettings, handler: Handler) -> None:
        super().__init__()
        self._settings = settings
        self._handler = handler

    @no_annotations  # for readers and mypy: Beam 2.78 warns on the console of hints that are not PCollections
    def expand(self, pairs: beam.PCollection) -> dict[str, Any]:
        prepared = pairs | "Prepare" >> beam.ParDo(PreparePairsFn(self._settings, self._handler)).with_outputs(
            SKIPPED, FAILURES, main="ready"
        )
        stylized = (
            prepared.ready
            # Pairs that can share a batch, gathered per key and shard; a worker splits each
            # group into batches that fit its device (auto) or of --batch_size. A plain
            # GroupByKey, not GroupIntoBatches: the latter's timers let the DirectRunner compute
            # the summary before the last batches were written.
            | "GroupByBatchKey" >> beam.GroupByKey().with_input_types(tuple[str, Prepared])
            | "Stylize"
            >> beam.ParDo(StylizeBatchesFn(self._settings, self._handler)).with_outputs(
                SKIPPED, FAILURES, SLOT_USE, main="succeeded"
            )
        )
        return {
            "outcomes": (prepared[SKIPPED], stylized.succeeded, stylized[SKIPPED]) | "AllOutcomes" >> beam.Flatten(),
            "failures": (prepared[FAILURES], stylized[FAILURES]) | "StylizeFailures" >> beam.Flatten(),
            "slot_use": stylized[SLOT_USE],
        }
