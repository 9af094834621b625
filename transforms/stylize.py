"""StylizePairs: the Beam side of the engine. Model lifecycle, style-target cache, metrics.

One StyleTransfer (a frozen VGG on the worker's GPU, or CPU) is loaded lazily per worker process
and shared by every DoFn instance in it (``apache_beam.utils.shared``); a rerun whose pairs are
all done never loads it. Every per-pair error becomes a Failure record; the batch goes on. A model
that cannot load is not a per-pair error: it fails the bundle, so the runner retries it and then
fails the job (the launcher's pre-flight check catches most such cases before anything runs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import time
from collections import OrderedDict
from collections.abc import Iterator
from importlib import metadata
from typing import Any, Final

import apache_beam as beam
import torch
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from transforms import claims, progress, storage
from transforms.limits import Limits
from transforms.nst import (
    IterationRecord, StyleConfig, StyleTargets, StyleTransfer, TimeLimitError, decode_image, encode_png,
)
from transforms.nst.config import INIT_MODES
from transforms.nst.families import NAMED_WEIGHTS
from transforms.records import Failure, Outcome, Pair
from transforms.results import NAMESPACE, Stylized, inspect_outputs, utc_iso

logger = logging.getLogger(__name__)

SKIPPED: Final = "skipped"
FAILURES: Final = "failures"
_STYLE_CACHE_SIZE: Final = 16
_PACKAGES: Final = ("torch", "torchvision", "apache-beam", "pillow", "fsspec", "beam-style-transfer")


def pair_config(defaults: StyleConfig, pair: Pair) -> StyleConfig:
    """The job's engine settings with this pair's manifest overrides applied."""
    return defaults.replace(**dict(pair.overrides))


def pair_inputs(pair: Pair) -> dict[str, Any]:
    """The images a pair is made from (not where in the manifest it was written)."""
    return {
        "content": pair.content,
        "styles": list(pair.styles),
        "style_weights": list(pair.style_weights) if pair.style_weights else None,
    }


def input_signatures(pair: Pair, config: StyleConfig) -> dict[str, str]:
    """Every input image of a pair -> its storage signature (changes when the file is replaced)."""
    locations = [pair.content, *pair.styles]
    if config.init not in INIT_MODES:
        locations.append(config.init)
    return {location: storage.signature(location) for location in locations}


def fingerprint(pair: Pair, config: StyleConfig, signatures: dict[str, str]) -> str:
    """Identifies the work a pair's outputs came from: inputs, their versions, every setting."""
    described = {**pair_inputs(pair), "signatures": signatures, "config": config.to_dict()}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@functools.cache
def _versions() -> dict[str, str]:
    """Package versions for the logs; looked up once per process."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class ModelLoadError(RuntimeError):
    """The network could not be built on this worker: a job-level failure, not a pair's."""


class _EngineHolder:
    """Weak-referenceable box for the shared engine (``Shared`` keeps only weak references)."""

    def __init__(self, engine: StyleTransfer) -> None:
        self.engine = engine


class StylizeDoFn(beam.DoFn):
    """Pair -> Stylized (main), Outcome (``skipped``: done or claimed by another run) or Failure (``failures``)."""

    def __init__(
        self,
        defaults: StyleConfig,
        limits: Limits,
        output: str,
        overwrite: bool,
        run_id: str = "",
        expected_pairs: int | None = None,
    ) -> None:
        self._defaults = defaults
        self._limits = limits
        self._output = output
        self._overwrite = overwrite
        self._run_id = run_id
        self._expected_pairs = expected_pairs
        self._shared = shared.Shared()
        self._skipped = Metrics.counter(NAMESPACE, "pairs_skipped")
        self._claimed = Metrics.counter(NAMESPACE, "pairs_claimed_elsewhere")
        self._failed = Metrics.counter(NAMESPACE, "pairs_failed")
        self._pair_ms = Metrics.distribution(NAMESPACE, "pair_milliseconds")
        # Beam distributions hold integers: the final loss is recorded in thousandths.
        self._final_loss = Metrics.distribution(NAMESPACE, "final_loss_thousandths")
        self._holder: _EngineHolder | None = None
        self._styles: OrderedDict[tuple[Any, ...], StyleTargets] = OrderedDict()

    def _load_engine(self) -> _EngineHolder:
        weights = self._defaults.weights
        local = None
        if weights not in NAMED_WEIGHTS:
            local = storage.local_copy(weights)  # gs://... weights land in the temp folder once
        started = time.perf_counter()
        engine = StyleTransfer(self._defaults, weights_file=local)
        logger.info(
            "loaded %s (%s weights) on %s in %.1f s",
            self._defaults.model, weights, engine.device, time.perf_counter() - started,
        )
        return _EngineHolder(engine)

    def _engine(self) -> StyleTransfer:
        # A method, not a property: Beam inspects DoFn attributes when it builds the graph,
        # and evaluating this there would load the model into the pickled DoFn.
        if self._holder is None:
            tag = repr(self._defaults.network_key())
            try:
                self._holder = self._shared.acquire(self._load_engine, tag=tag)
            except Exception as exc:
                raise ModelLoadError(f"the model could not be loaded ({type(exc).__name__}: {exc})") from exc
        return self._holder.engine

    def _style_targets(self, engine: StyleTransfer, pair: Pair, config: StyleConfig) -> StyleTargets:
        key = (pair.styles, pair.style_weights, config.style_size)
        if key in self._styles:
            self._styles.move_to_end(key)
            return self._styles[key]
        images = [self._read_image(s) for s in pair.styles]
        targets = engine.encode_styles(images, pair.style_weights, config.style_size, names=pair.styles)
        self._styles[key] = targets
        if len(self._styles) > _STYLE_CACHE_SIZE:
            self._styles.popitem(last=False)
        return targets

    def _read_image(self, location: str):  # -> PIL.Image.Image
        data = storage.read_bytes(location, self._limits.max_input_bytes)
        return decode_image(data, location, self._limits.max_input_pixels)

    def process(self, pair: Pair) -> Iterator[Any]:
        started = time.perf_counter()
        tracker = progress.for_run(self._run_id, self._expected_pairs)
        stage = "configure"
        claimed = False
        try:
            config = pair_config(self._defaults, pair)
            stage = "read"  # a missing input fails here, before any work
            signatures = input_signatures(pair, config)
            work = fingerprint(pair, config, signatures)
            stage = "check"
            prior = inspect_outputs(self._output, pair.id, work)
            if prior.done and not self._overwrite:
                self._skipped.inc()
                tracker.pair_finished(pair.id, "skipped", "already done")
                yield pvalue.TaggedOutput(SKIPPED, Outcome(pair.id, "skipped"))
                return
            if prior.state == "damaged":
                logger.warning("%s: redoing the pair: %s", pair.id, prior.reason)
            engine = self._engine()  # ModelLoadError fails the bundle, not the pair (below)
            claim = claims.acquire(self._output, pair.id, self._run_id)
            if not claim:
                self._claimed.inc()
                tracker.pair_finished(pair.id, "claimed", f"being computed by {claim.describe()}")
                yield pvalue.TaggedOutput(SKIPPED, Outcome(pair.id, "claimed"))
                return
            claimed = True
            stage = "read"
            content = self._read_image(pair.content)
            init_image = self._read_image(config.init) if config.init not in INIT_MODES else None
            targets = self._style_targets(engine, pair, config)
            stage = "stylize"
            time_left = self._limits.pair_time_limit - (time.perf_counter() - started)

            def on_iteration(record: IterationRecord) -> None:
                nonlocal claim
                tracker.iteration(pair.id, record.iteration, config.iterations, record.total)
                claim = claims.renew_if_due(self._output, pair.id, claim)

            try:
                result = engine.stylize(
                    content, targets, config, init_image=init_image, content_name=pair.content,
                    callback=on_iteration, time_limit=time_left,
                )
            except TimeLimitError as exc:
                raise TimeLimitError(
                    f"over the time limit of {self._limits.pair_time_limit:g} s a pair (--pair_time_limit): {exc}"
                ) from exc
            png = encode_png(result.image)
        except BaseException as exc:
            if claimed:
                claims.release(self._output, pair.id, self._run_id)
            if isinstance(exc, ModelLoadError) or not isinstance(exc, Exception):
                raise  # the job's failure (or an interrupt), not the pair's
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            self._failed.inc()
            detail = str(exc) or ("out of memory" if isinstance(exc, MemoryError) else "no message")
            message = f"{type(exc).__name__}: {detail}"
            tracker.pair_finished(pair.id, "failed", f"at {stage}: {message}")
            failure = Failure(stage, message, pair.source, pair.id, pair.row)
            yield pvalue.TaggedOutput(FAILURES, failure)
            return
        seconds = time.perf_counter() - started
        self._pair_ms.update(int(seconds * 1000))
        self._final_loss.update(int(result.final.total * 1000))
        tracker.pair_finished(
            pair.id, "succeeded", f"{seconds:.1f} s, final loss {result.final.total:.6g} on {result.device}"
        )
        log = {
            "id": pair.id,
            "inputs": {**pair_inputs(pair), "signatures": signatures, "source": pair.source},
            "config": config.to_dict(),
            "fingerprint": work,
            "image": {"sha256": storage.sha256(png), "bytes": len(png)},
            "history": [record.to_dict() for record in result.history],
            "final": result.final.to_dict(),
            "chosen_iteration": result.chosen_iteration,
            "device": result.device,
            "model": config.model,
            "weights": config.weights,
            "weights_family": config.weights_family,
            "preprocessing": config.family.to_dict(),
            "versions": _versions(),
            "seconds": round(seconds, 3),
            "finished_at": utc_iso(time.time()),
        }
        if prior.state == "damaged":
            log["repaired"] = prior.reason
        yield Stylized(pair.id, png, log, pair.source, repaired=prior.state == "damaged")


class StylizePairs(beam.PTransform):
    """Pairs -> ``stylized`` (Stylized), ``skipped`` (Outcome), ``failures`` (Failure)."""

    def __init__(
        self,
        defaults: StyleConfig,
        limits: Limits,
        output: str,
        overwrite: bool,
        run_id: str = "",
        expected_pairs: int | None = None,
    ) -> None:
        super().__init__()
        self._fn = StylizeDoFn(defaults, limits, output, overwrite, run_id, expected_pairs)

    def expand(self, pairs: beam.PCollection) -> pvalue.DoOutputsTuple:
        return pairs | "Stylize" >> beam.ParDo(self._fn).with_outputs(SKIPPED, FAILURES, main="stylized")
