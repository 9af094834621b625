"""StylizePairs: the Beam side of the engine. Batching, model lifecycle, style-target cache, metrics.

    pairs | Prepare (skip check, output size) | GroupByKey (batch key, shard) | Stylize (claims, engine)

Prepare needs no model: a rerun whose pairs are all done never loads it. Pairs that can share a
``stylize_batch`` call (same output size, network, optimizer, precision and iterations) are
grouped, and each group is optimized in batches of ``--batch_size`` on the worker's device. One
StyleTransfer (a frozen VGG on the worker's GPU, or CPU) is loaded lazily per worker process and
shared by every DoFn instance in it (``apache_beam.utils.shared``). Every per-pair error becomes
a Failure record; the other pairs, in the batch too, go on. A model that cannot load is not a
per-pair error: it fails the bundle, so the runner retries it and then fails the job (the
launcher's pre-flight check catches most such cases before anything runs).

Imports: Beam, torch (device memory, out-of-memory errors), the engine, storage, claims, progress,
devices, records and results; nothing of pipeline/.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import apache_beam as beam
import torch
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils import shared
from PIL import Image

from beam_style_transfer.transforms import claims, devices, progress, storage
from beam_style_transfer.transforms.limits import Limits
from beam_style_transfer.transforms.nst import (
    IterationRecord,
    StyleConfig,
    StyleRequest,
    StyleResult,
    StyleTargets,
    StyleTransfer,
    TimeLimitError,
    batch_key,
    decode_image,
    encode_png,
)
from beam_style_transfer.transforms.nst.images import decoded_size, fitted_size
from beam_style_transfer.transforms.nst.optimize import (
    estimated_pair_bytes,
    estimated_style_bytes,
    free_memory_bytes,
    largest_fitting_size,
    tile_plan,
)
from beam_style_transfer.transforms.nst.tiles import tile_boxes
from beam_style_transfer.transforms.records import Failure, Outcome, Pair, Stage
from beam_style_transfer.transforms.results import NAMESPACE, Stylized, fingerprint, input_signatures, inspect_outputs, pair_log

logger = logging.getLogger(__name__)

SKIPPED: Final = "skipped"
FAILURES: Final = "failures"
_STYLE_CACHE_SIZE: Final = 16
# Pairs per group of one batch key (on average), and the largest batch auto chooses.
MAX_BATCH: Final = 32
# --batch_size auto on a CPU (README, Performance: batching gains little there).
CPU_BATCH_SIZE: Final = 1


class ModelLoadError(RuntimeError):
    """The network could not be built on this worker: a job-level failure, not a pair's."""


@dataclass(frozen=True)
class StylizeSettings:
    """What StylizePairs takes from the job's configuration (pipeline/options.py builds it)."""

    defaults: StyleConfig
    limits: Limits
    output: str
    overwrite: bool = False
    run_id: str = ""
    # For the progress display only.
    expected_pairs: int | None = None
    # Pairs per batch on a device; None: auto_batch_size.
    batch_size: int | None = None


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


class PreparePairsFn(beam.DoFn):
    """Pair -> (batch key, Prepared), Outcome (``skipped``: done) or Failure (``failures``).

    Loads no model: the skip check reads logs and images, and the content image's header gives
    the output size the batch key needs.
    """

    def __init__(self, settings: StylizeSettings) -> None:
        self._settings = settings
        self._skipped = Metrics.counter(NAMESPACE, "pairs_skipped")
        self._failed = Metrics.counter(NAMESPACE, "pairs_failed")

    def process(self, pair: Pair) -> Iterator[Any]:
        tracker = progress.for_run(self._settings.run_id, self._settings.expected_pairs)
        stage = Stage.READ  # a missing input fails here, before any work
        try:
            signatures = input_signatures(pair)
            work = fingerprint(pair, signatures)
            stage = Stage.CHECK
            prior = inspect_outputs(self._settings.output, pair.id, work)
            if prior.done and not self._settings.overwrite:
                self._skipped.inc()
                tracker.pair_finished(pair.id, "skipped", "already done")
                yield pvalue.TaggedOutput(SKIPPED, Outcome(pair.id, "skipped"))
                return
            stage = Stage.READ
            size = decoded_size(
                storage.read_bytes(pair.content, self._settings.limits.max_input_bytes), pair.content, self._settings.limits.max_input_pixels
            )
        except Exception as exc:  # noqa: BLE001 - one bad pair must never stop the batch
            self._failed.inc()
            yield pvalue.TaggedOutput(FAILURES, _failure(tracker, pair, stage, exc))
            return
        repairing = prior.reason if prior.state == "damaged" else None
        config = pair.config
        output_size = fitted_size(*size, config.image_size)
        # Pairs of one batch key are spread over shards of about MAX_BATCH pairs, so that a
        # collection of one size is grouped into many groups that workers share, not one.
        shards = max(1, math.ceil((self._settings.expected_pairs or 1) / MAX_BATCH))
        shard = zlib.crc32(pair.id.encode()) % shards
        key = f"{batch_key(config, size)!r} shard {shard}"
        yield key, Prepared(pair, signatures, work, output_size, repairing)


def _failure(tracker: progress.Progress, pair: Pair, stage: Stage, exc: BaseException) -> Failure:
    """The failure record of ``pair``, reported on the progress display."""
    failure = Failure.from_exception(stage, exc, pair.source, pair.id, pair.row)
    tracker.pair_finished(pair.id, "failed", f"at {stage}: {failure.error}")
    return failure


@dataclass
class _Running:
    """A pair of the batch in progress: its claim, and its request once its inputs are read."""

    prepared: Prepared
    claim: claims.Claim
    request: StyleRequest | None = None
    # Iteration records seen so far, over all scales (for the progress display).
    records: int = 0
    # Records the pair will make: each scale's iterations and written image, each tile's too.
    expected_records: int = 0


class StylizeBatchesFn(beam.DoFn):
    """(batch key, [Prepared]) -> Stylized (main), Outcome (``skipped``: done meanwhile, or
    claimed by another run) or Failure (``failures``), one per pair."""

    def __init__(self, settings: StylizeSettings) -> None:
        self._settings = settings
        self._shared = shared.Shared()
        self._skipped = Metrics.counter(NAMESPACE, "pairs_skipped")
        self._claimed = Metrics.counter(NAMESPACE, "pairs_claimed_elsewhere")
        self._failed = Metrics.counter(NAMESPACE, "pairs_failed")
        self._pair_ms = Metrics.distribution(NAMESPACE, "pair_milliseconds")
        self._batch_sizes = Metrics.distribution(NAMESPACE, "batch_size")
        # Beam distributions hold integers: the final loss is recorded in thousandths.
        self._final_loss = Metrics.distribution(NAMESPACE, "final_loss_thousandths")
        # The worker process's engine, from ``Shared`` (which keeps a weak reference to it).
        self._loaded: StyleTransfer | None = None
        self._styles: OrderedDict[tuple[Any, ...], StyleTargets] = OrderedDict()

    def _load_engine(self) -> StyleTransfer:
        defaults = self._settings.defaults
        # gs://... weights land in the temp folder once.
        local = storage.local_copy(defaults.weights_location) if defaults.weights_location else None
        started = time.perf_counter()
        pinned = None
        if defaults.device != "cpu":
            pinned = devices.pin_cuda_device()  # several GPUs, several worker processes: one each
        engine = StyleTransfer(defaults, weights_file=local)
        logger.info(
            "loaded %s (%s weights) on %s in %.1f s",
            defaults.model, defaults.weights,
            engine.device if pinned is None or engine.device.type != "cuda" else f"cuda:{pinned}",
            time.perf_counter() - started,
        )
        return engine

    def _engine(self) -> StyleTransfer:
        # A method, not a property: Beam inspects DoFn attributes when it builds the graph,
        # and evaluating this there would load the model into the pickled DoFn.
        if self._loaded is None:
            tag = repr(self._settings.defaults.network_key())
            try:
                self._loaded = self._shared.acquire(self._load_engine, tag=tag)
            except Exception as exc:
                raise ModelLoadError(f"the model could not be loaded ({type(exc).__name__}: {exc})") from exc
        return self._loaded

    def _style_targets(
        self, engine: StyleTransfer, pair: Pair, config: StyleConfig, content: Image.Image, budget: int | None
    ) -> tuple[StyleTargets, tuple[StyleTargets, ...]]:
        """Targets at the last scale's style size, and at each coarser scale's; the style images
        are read at most once for all of them, and not at all when every size is cached. A style
        image too large to encode within ``budget`` bytes raises PairTooLargeError first."""
        # Histogram colour control gives each content its own targets (styles in its colours).
        matched = config.color_control == "histogram"
        images: list[Image.Image] = []
        found = []
        for stage in range(len(config.stages)):
            size = config.at_stage(stage).style_size
            key = (pair.styles, pair.style_weights, size, pair.content if matched else None)
            if key in self._styles:
                self._styles.move_to_end(key)
            else:
                if not images:
                    images = [self._read_image(s) for s in pair.styles]
                    # Checked once, at the last scale's style size (the largest), before any scale's work.
                    for location, image in zip(pair.styles, images, strict=True):
                        if refusal := style_refusal(location, image.size, config, engine.device, budget):
                            raise refusal
                self._styles[key] = engine.encode_styles(
                    images, pair.style_weights, size, names=pair.styles, colors_of=content if matched else None
                )
                if len(self._styles) > _STYLE_CACHE_SIZE:
                    self._styles.popitem(last=False)
            found.append(self._styles[key])
        return found[-1], tuple(found[:-1])

    def _read_image(self, location: str) -> Image.Image:
        data = storage.read_bytes(location, self._settings.limits.max_input_bytes)
        return decode_image(data, location, self._settings.limits.max_input_pixels)

    def process(self, element: tuple[str, Iterable[Prepared]]) -> Iterator[Any]:
        _, group = element
        engine = self._engine()  # ModelLoadError fails the bundle, not the pairs
        prepared = list(group)
        limit = self._settings.limits.device_memory_gb
        budget = int(limit * 2**30) if limit is not None else free_memory_bytes(engine.device)
        fitting = []
        for item in prepared:
            refusal = memory_refusal(item, engine.device, budget)
            if refusal is None:
                fitting.append(item)
                continue
            tiling = tile_plan(item.pair.config, item.output_size, budget)  # too large at once: tiles
            if tiling is not None:
                yield from self._run_batch(engine, [item], budget, tiling)
                continue
            self._failed.inc()
            tracker = progress.for_run(self._settings.run_id, self._settings.expected_pairs)
            yield pvalue.TaggedOutput(FAILURES, _failure(tracker, item.pair, Stage.STYLIZE, refusal))
        if not fitting:
            return
        size = self._settings.batch_size or auto_batch_size(engine, fitting[0], budget)
        for start in range(0, len(fitting), size):
            yield from self._run_batch(engine, fitting[start : start + size], budget)

    def _run_batch(
        self, engine: StyleTransfer, batch: list[Prepared], budget: int | None, tiling: tuple[int, int] | None = None
    ) -> Iterator[Any]:
        """Claims, a last skip check, the inputs, the engine, the results; ``budget``: the bytes a
        pair may use (None: unknown); ``tiling`` (tile px, overlap px): one pair, whose last scale
        runs in tiles."""
        tracker = progress.for_run(self._settings.run_id, self._settings.expected_pairs)
        running: list[_Running] = []
        try:
            for item in batch:
                pair = item.pair
                claim = claims.acquire(self._settings.output, pair.id, self._settings.run_id)
                if not claim:
                    self._claimed.inc()
                    tracker.pair_finished(pair.id, "claimed", f"being computed by {claim.describe()}")
                    yield pvalue.TaggedOutput(SKIPPED, Outcome(pair.id, "claimed"))
                    continue
                if not self._settings.overwrite and inspect_outputs(self._settings.output, pair.id, item.fingerprint).done:
                    claims.release(self._settings.output, pair.id, self._settings.run_id)  # done by another run meanwhile
                    self._skipped.inc()
                    tracker.pair_finished(pair.id, "skipped", "done by another run meanwhile")
                    yield pvalue.TaggedOutput(SKIPPED, Outcome(pair.id, "skipped"))
                    continue
                entry = _Running(item, claim, expected_records=expected_records(item, tiling))
                running.append(entry)
                try:
                    config = pair.config
                    content = self._read_image(pair.content)
                    init_image = self._read_image(config.init_location) if config.init_location else None
                    targets, coarse = self._style_targets(engine, pair, config, content, budget)
                except Exception as exc:  # noqa: BLE001 - a bad input fails its own pair
                    running.remove(entry)
                    claims.release(self._settings.output, pair.id, self._settings.run_id)
                    self._failed.inc()
                    stage = Stage.STYLIZE if isinstance(exc, PairTooLargeError) else Stage.READ
                    yield pvalue.TaggedOutput(FAILURES, _failure(tracker, pair, stage, exc))
                    continue
                entry.request = StyleRequest(content, targets, config, init_image, pair.content, coarse)
            if not running:
                return
            self._batch_sizes.update(len(running))
            started = time.perf_counter()
            for entry, outcome in zip(running, self._stylize(engine, running, tracker, tiling), strict=True):
                if isinstance(outcome, Exception):
                    claims.release(self._settings.output, entry.prepared.pair.id, self._settings.run_id)
                    self._failed.inc()
                    yield pvalue.TaggedOutput(FAILURES, _failure(tracker, entry.prepared.pair, Stage.STYLIZE, outcome))
                else:
                    yield self._stylized(entry, outcome, time.perf_counter() - started, len(running), tracker)
        except BaseException:
            # An interrupt: give the claims back (releasing one already released is a no-op).
            for entry in running:
                claims.release(self._settings.output, entry.prepared.pair.id, self._settings.run_id)
            raise

    def _stylize(
        self, engine: StyleTransfer, running: list[_Running], tracker: progress.Progress, tiling: tuple[int, int] | None
    ) -> list[StyleResult | Exception]:
        """The batch's results, one per pair; a batch that runs out of GPU memory is redone one
        pair at a time, and a batch over the time limit fails each of its pairs."""
        requests = [entry.request for entry in running if entry.request is not None]

        def on_record(index: int, record: IterationRecord) -> None:
            entry = running[index]
            pair = entry.prepared.pair
            # Counted over all scales and tiles (each restarts its iterations at 0).
            entry.records += 1
            tracker.iteration(pair.id, entry.records, entry.expected_records, record.total)
            entry.claim = claims.renew_if_due(self._settings.output, pair.id, entry.claim)

        try:
            return engine.stylize_batch(requests, on_record, self._settings.limits.pair_time_limit, tiling)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            if len(requests) == 1:
                return [exc]
            logger.warning("a batch of %d pairs ran out of GPU memory; running them one at a time", len(requests))
            results: list[StyleResult | Exception] = []
            for index, request in enumerate(requests):
                try:
                    results += engine.stylize_batch(
                        [request], lambda _, record, index=index: on_record(index, record), self._settings.limits.pair_time_limit
                    )
                except (torch.cuda.OutOfMemoryError, TimeLimitError) as single:
                    torch.cuda.empty_cache()
                    results.append(single)
            return results
        except TimeLimitError as exc:
            timeout = TimeLimitError(f"{exc} (--pair_time_limit {self._settings.limits.pair_time_limit:g} s)")
            return [timeout] * len(requests)

    def _stylized(
        self, entry: _Running, result: StyleResult, seconds: float, batch_size: int, tracker: progress.Progress
    ) -> Stylized:
        prepared, pair = entry.prepared, entry.prepared.pair
        png = encode_png(result.image)
        self._pair_ms.update(int(seconds * 1000))
        self._final_loss.update(int(result.final.total * 1000))
        tracker.pair_finished(
            pair.id, "succeeded",
            f"{seconds:.1f} s (a batch of {batch_size}), final loss {result.final.total:.6g} on {result.device}",
        )
        log = pair_log(
            pair, prepared.signatures, prepared.fingerprint, png, result, batch_size, seconds, prepared.repairing
        )
        return Stylized(pair.id, png, log, pair.source, repaired=prepared.repairing is not None)


def auto_batch_size(engine: StyleTransfer, prepared: Prepared, budget: int | None) -> int:
    """Pairs per batch for ``--batch_size auto``: on a GPU as many as 80% of its memory
    ``budget`` holds (``estimated_pair_bytes``), up to MAX_BATCH; on the CPU, where batching
    gains little, the measured best (README, Performance)."""
    if engine.device.type != "cuda" or budget is None:
        return CPU_BATCH_SIZE
    return max(1, min(MAX_BATCH, int(0.8 * budget // estimated_pair_bytes(prepared.pair.config, prepared.output_size))))


def expected_records(prepared: Prepared, tiling: tuple[int, int] | None) -> int:
    """Iteration records a pair makes (for progress): iterations + 1 per scale, per tile at the last."""
    config, (width, height) = prepared.pair.config, prepared.output_size
    tiles = len(tile_boxes(width, height, *tiling)) if tiling else 1
    return sum(n + 1 for _, n in config.scales) + tiles * (config.iterations + 1)


class PairTooLargeError(MemoryError):
    """A pair whose estimated memory is more than its device has: refused before it starts."""


def _mebibytes(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def memory_refusal(prepared: Prepared, device: torch.device, budget: int | None) -> PairTooLargeError | None:
    """Why ``prepared`` cannot run within ``budget`` bytes (with the size it needs and the size
    that would fit), or None when it fits or the budget is unknown."""
    config, (width, height) = prepared.pair.config, prepared.output_size
    needed = estimated_pair_bytes(config, (width, height))
    if budget is None or needed <= budget:
        return None
    fits = largest_fitting_size(functools.partial(estimated_pair_bytes, config), (width, height), budget)
    cure = f"the largest image_size that fits is {fits} px" if fits else "no image_size fits"
    return PairTooLargeError(
        f"{prepared.pair.content}: a {width}x{height} result needs about {_mebibytes(needed)} on {device} "
        f"({config.precision}, estimated), more than the {_mebibytes(budget)} there; {cure} "
        "(README, 'Large prints': memory)"
    )


def style_refusal(
    location: str, image_size: tuple[int, int], config: StyleConfig, device: torch.device, budget: int | None
) -> PairTooLargeError | None:
    """Why the style image at ``location`` (``image_size`` as read) cannot be encoded at the
    config's style size within ``budget`` bytes (with the style_scale that would fit), or None.

    Checked apart from the pair's estimate because a tiled pair's tiles shrink with the budget
    while its style targets are still computed whole, at the full style size."""
    width, height = fitted_size(*image_size, config.style_size)
    needed = estimated_style_bytes((width, height))
    if budget is None or needed <= budget:
        return None
    fits = largest_fitting_size(estimated_style_bytes, image_size, budget)
    # Rounded down, so that the scale named does fit.
    scale = math.floor(fits / config.image_size * 100) / 100
    cure = f"a style_scale of {scale:g} or less fits" if scale > 0 else "no style size fits"
    return PairTooLargeError(
        f"{location}: encoding this style at {width}x{height} px (image_size {config.image_size} x style_scale "
        f"{config.style_scale:g}) needs about {_mebibytes(needed)} on {device}, more than the {_mebibytes(budget)} "
        f"there; {cure} (README, 'Large prints': memory)"
    )


class StylizePairs(beam.PTransform):
    """Pairs -> {"stylized": Stylized, "skipped": Outcome, "failures": Failure}."""

    def __init__(self, settings: StylizeSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, pairs: beam.PCollection) -> dict[str, Any]:
        prepared = pairs | "Prepare" >> beam.ParDo(PreparePairsFn(self._settings)).with_outputs(
            SKIPPED, FAILURES, main="ready"
        )
        stylized = (
            prepared.ready
            # Pairs that can share a batch, gathered per key and shard; a worker splits each
            # group into batches that fit its device (auto) or of --batch_size. A plain
            # GroupByKey, not GroupIntoBatches: the latter's timers let the DirectRunner compute
            # the summary before the last batches were written.
            | "GroupByBatchKey" >> beam.GroupByKey().with_input_types(tuple[str, Prepared])
            | "Stylize" >> beam.ParDo(StylizeBatchesFn(self._settings)).with_outputs(
                SKIPPED, FAILURES, main="stylized"
            )
        )
        return {
            "stylized": stylized.stylized,
            "skipped": (prepared[SKIPPED], stylized[SKIPPED]) | "AllSkipped" >> beam.Flatten(),
            "failures": (prepared[FAILURES], stylized[FAILURES]) | "StylizeFailures" >> beam.Flatten(),
        }
