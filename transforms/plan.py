"""PlanPairs: the plan of a run before it spends anything (``--dry_run``): pairs to do and skip,
their sizes and batches, the device memory each needs, and the device-hours the work would take.

The prepare step of stylize.py does the reading (skip checks, content sizes, batch keys);
``PlanTally`` adds its outputs up in bounded memory (one entry per batch key and size, not per
pair), merged across workers by a combiner; ``PlanTally.report`` is what ``OUTPUT/plan.json``
holds. Device-hours come from measured seconds per iteration (docs/performance.md),
interpolated by pixels: an estimate for one pair at a time on those devices.

Imports: Beam, stylize's prepare step, results' combiner, outputs, progress, storage, records, the engine's config
and its memory planning (torch, no model); nothing of pipeline/.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import apache_beam as beam
from apache_beam.typehints.decorators import no_annotations

from transforms import outputs, progress, storage
from transforms.nst.config import StyleConfig
from transforms.nst.memory import estimated_pair_bytes, tile_plan
from transforms.records import Failure, Outcome
from transforms.results import MergeFn
from transforms.stylize import FAILURES, SKIPPED, PreparePairsFn, RunSettings

if TYPE_CHECKING:
    from transforms.handler import EngineHandler

# Seconds per L-BFGS iteration of one pair, fp32, by output pixels, as measured (docs/performance.md,
# benchmarks/engine.py, square images of 256, 512 and 1024 px).
MEASURED_SECONDS_PER_ITERATION: Final[dict[str, tuple[tuple[int, float], ...]]] = {
    "cpu: 2 cores (this project's CI machine)": ((256 * 256, 0.668), (512 * 512, 3.016)),
    "gpu: NVIDIA H100, one pair at a time": ((256 * 256, 0.0072), (512 * 512, 0.0066), (1024 * 1024, 0.0187)),
}


# A whole pair's time with --precision auto resolved to bf16, over its time in fp32, as measured
# (benchmarks/time_to_quality.py, 256 px, the first phase in bf16 and the last in fp32;
# docs/performance.md). No GPU figure has been taken yet: there the fp32 figures stand.
MEASURED_BF16_TIME_FACTOR: Final[dict[str, float]] = {"cpu: 2 cores (this project's CI machine)": 0.54}
# bf16 forced on a device that emulates it (no bf16 arithmetic in hardware): measured over 6x
# slower than fp32 on an AVX2-only AMD EPYC (docs/method.md: precision).
EMULATED_BF16_TIME_FACTOR: Final = 6.0


def seconds_per_iteration(device: str, pixels: int) -> float:
    """Linear in pixels between the measured sizes; proportional to pixels beyond them."""
    points = MEASURED_SECONDS_PER_ITERATION[device]
    areas = [area for area, _ in points]
    index = bisect.bisect_left(areas, pixels)
    if index == 0:
        return points[0][1]
    if index == len(points):
        area, seconds = points[-1]
        return seconds * pixels / area
    (a0, s0), (a1, s1) = points[index - 1], points[index]
    return s0 + (s1 - s0) * (pixels - a0) / (a1 - a0)


# What a preview is offered at, when the job asked for more and would take longer than
# PREVIEW_WORTH_SECONDS: a quarter of the default's pixels, at most the default iterations.
PREVIEW_SIZE: Final = 256
PREVIEW_ITERATIONS: Final = 200
PREVIEW_WORTH_SECONDS: Final = 600.0


def estimated_seconds(
    pairs: int,
    config: StyleConfig,
    device_type: str,
    precision: str = "fp32",
    sizes: Sequence[tuple[int, int]] = (),
    bf16_in_hardware: bool = True,
) -> float | None:
    """What ``pairs`` pairs cost on this device, from measured seconds per iteration (one pair at
    a time, every iteration run: an upper bound for pairs that converge sooner): square images of
    ``image_size``, or with ``image_size`` 0, the average of ``sizes`` (a sample of the contents'
    own sizes, from their headers). None when nothing says the size."""
    device = next(d for d in MEASURED_SECONDS_PER_ITERATION if d.startswith("gpu" if device_type == "cuda" else "cpu"))
    if precision != "bf16":
        factor = 1.0
    elif bf16_in_hardware:
        factor = MEASURED_BF16_TIME_FACTOR.get(device, 1.0)
    else:
        factor = EMULATED_BF16_TIME_FACTOR
    shapes = [(config.image_size, config.image_size)] if config.image_size else _runnable(config, sizes)
    if not shapes:
        return None
    per_pair = sum(
        n * seconds_per_iteration(device, w * h)
        for width, height in shapes
        for w, h, n in _stage_sizes(config.for_content(width, height), (width, height))
    ) / len(shapes)
    return factor * pairs * per_pair


def _runnable(config: StyleConfig, sizes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sampled content sizes whose own size the settings can take: a content no larger than an
    explicit coarse scale fails as a pair, with its reason (``StyleConfig.for_content``), and has
    no cost to estimate."""
    runnable = []
    for size in sizes:
        try:
            config.for_content(*size)
        except ValueError:
            continue
        runnable.append(size)
    return runnable


def cost_line(
    pairs: int,
    config: StyleConfig,
    device_type: str,
    precision: str = "fp32",
    sizes: Sequence[tuple[int, int]] = (),
    bf16_in_hardware: bool = True,
) -> str | None:
    """The run's cost before it starts (:func:`estimated_seconds`): ``3 pairs x 500 iterations at
    512 px on cpu: about 1 h 15 m; --image_size 256 --iterations 200 previews in about 7 m``, or
    with ``image_size`` 0, ``... at their own sizes (median 500x375 of 32 sampled) ...``.
    ``precision``: the one the pairs will run in (``auto`` resolved). None when nothing says the
    size (image_size 0 and no sample). ``bf16_in_hardware`` False: bf16 was forced on a device
    that emulates it, and costs what emulation costs."""
    full = estimated_seconds(pairs, config, device_type, precision, sizes, bf16_in_hardware) if pairs else None
    if full is None:
        return None
    line = f"{pairs} pair{'s' if pairs != 1 else ''} x {_iterations_at(config, sizes)} on {device_type}: {progress.about(full)}"
    size, iterations = min(config.image_size, PREVIEW_SIZE), min(config.iterations, PREVIEW_ITERATIONS)
    worth_a_preview = config.image_size and (size, iterations) != (config.image_size, config.iterations)
    if full > PREVIEW_WORTH_SECONDS and worth_a_preview and not config.scales:
        preview = estimated_seconds(
            pairs, config.replace(image_size=size, iterations=iterations), device_type, precision, (), bf16_in_hardware
        )
        line += f"; --image_size {size} --iterations {iterations} previews in {progress.about(preview or 0.0)}"
    return line


@dataclass
class PlanTally:
    """What a run would do, added up pair by pair."""

    skipped: int = 0
    failed: int = 0
    # batch key -> pairs with it (the pairs a worker could batch together)
    batches: Counter[str] = field(default_factory=Counter)
    sizes: Counter[str] = field(default_factory=Counter)
    iterations: int = 0
    max_pair_bytes: int = 0
    tiled: int = 0
    device_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MEASURED_SECONDS_PER_ITERATION, 0.0))

    def add_pair(self, key: str, config: StyleConfig, output_size: tuple[int, int], budget: int | None) -> PlanTally:
        """One pair to do, of result ``output_size``; ``budget``: bytes a pair may use, if known."""
        width, height = output_size
        needed = estimated_pair_bytes(config, output_size)
        self.batches[key] += 1
        self.sizes[f"{width}x{height}"] += 1
        self.iterations += config.total_iterations
        self.max_pair_bytes = max(self.max_pair_bytes, needed)
        if budget is not None and needed > budget and tile_plan(config, output_size, budget):
            self.tiled += 1
        for device in self.device_seconds:
            self.device_seconds[device] += sum(
                n * seconds_per_iteration(device, w * h) for w, h, n in _stage_sizes(config, output_size)
            )
        return self

    @classmethod
    def merged(cls, tallies: list[PlanTally]) -> PlanTally:
        total = cls()
        for tally in tallies:
            total.skipped += tally.skipped
            total.failed += tally.failed
            total.batches.update(tally.batches)
            total.sizes.update(tally.sizes)
            total.iterations += tally.iterations
            total.max_pair_bytes = max(total.max_pair_bytes, tally.max_pair_bytes)
            total.tiled += tally.tiled
            for device, seconds in tally.device_seconds.items():
                total.device_seconds[device] += seconds
        return total

    def report(self, batch_size: int | None) -> dict[str, Any]:
        """The plan as ``plan.json`` holds it. ``batch_size``: pairs per batch, None for auto
        (counted as one pair a batch, as on a CPU; a GPU batches more)."""
        pairs = sum(self.batches.values())
        per_batch = batch_size or 1
        return {
            "pairs": {"to_do": pairs, "skipped": self.skipped, "failed": self.failed},
            "iterations": self.iterations,
            "batch_groups": len(self.batches),
            "batches": sum(math.ceil(count / per_batch) for count in self.batches.values()),
            "batch_size": batch_size or "auto (counted as 1)",
            "sizes": dict(self.sizes.most_common(10)),
            "distinct_sizes": len(self.sizes),
            "largest_pair_gib": round(self.max_pair_bytes / 2**30, 2),
            "tiled_pairs": self.tiled,
            "device_hours": {device: float(f"{seconds / 3600:.3g}") for device, seconds in self.device_seconds.items()},
        }


def _iterations_at(config: StyleConfig, sizes: Sequence[tuple[int, int]]) -> str:
    """``500 iterations at 512 px``; coarse to fine, ``500 iterations at each of 128, 256 and
    512 px`` (or ``300 iterations at 512, 100 at 1024, then 50 at 2048 px``); with image_size 0,
    ``500 iterations at their own sizes (median 500x375 of 32 sampled), coarse to fine`` (where
    a sampled content is large enough for a coarser scale)."""
    if not config.image_size:
        middle = sorted(sizes, key=lambda size: size[0] * size[1])[len(sizes) // 2]
        own = f"{config.iterations} iterations at their own sizes (median {middle[0]}x{middle[1]} of {len(sizes)} sampled)"
        if config.scales is None and any(config.for_content(*size).coarse_scales for size in _runnable(config, sizes)):
            return own + ", coarse to fine"
        return own + (
            " after " + ", ".join(f"{n} at {size}" for size, n in config.scales) + " px" if config.scales else ""
        )
    stages = config.stages
    if len(stages) == 1:
        return f"{config.iterations} iterations at {config.image_size} px"
    listed = [str(size) for size, _ in stages]
    if len({n for _, n in stages}) == 1:
        return f"{config.iterations} iterations at each of {', '.join(listed[:-1])} and {listed[-1]} px"
    counts = [f"{n} at {size}" for size, n in stages]
    return (
        f"{stages[0][1]} iterations at {stages[0][0]}, {', '.join(counts[1:-1]) + ', ' if len(counts) > 2 else ''}"
        + f"then {counts[-1]} px"
    )


def _stage_sizes(config: StyleConfig, output_size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(width, height, iterations) of each scale a pair runs, coarse to fine."""
    width, height = output_size
    longest = max(width, height)
    return [
        (max(1, round(width * size / longest)), max(1, round(height * size / longest)), iterations)
        for size, iterations in config.stages
    ]


def _duration(seconds: float) -> str:
    """``8 s``, ``12 m``, ``3.4 h``, ``1,200 h``: device time as people read it."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} m"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"


def describe(plan: dict[str, Any]) -> str:
    """The plan in a few lines for the console."""
    pairs = plan["pairs"]
    hours = ", ".join(f"{_duration(value * 3600)} on {device}" for device, value in plan["device_hours"].items())
    sizes = ", ".join(f"{size} x{count}" for size, count in list(plan["sizes"].items())[:5])
    tiles = f", {plan['tiled_pairs']} in tiles" if plan["tiled_pairs"] else ""
    return (
        f"plan: {pairs['to_do']} pairs to do, {pairs['skipped']} already done, {pairs['failed']} failing already\n"
        f"  {plan['iterations']} iterations in {plan['batches']} batches ({plan['batch_groups']} batch groups); "
        f"sizes: {sizes or 'none'}{' ...' if plan['distinct_sizes'] > 5 else ''}\n"
        f"  largest pair about {plan['largest_pair_gib']} GiB of device memory"
        f"{tiles}\n"
        f"  estimated {hours}"
    )


def _add_to_plan(budget: int | None, tally: PlanTally, item: Any) -> PlanTally:
    """A prepared pair (batch key, Prepared), a skip (Outcome) or a failure, counted in ``tally``."""
    if isinstance(item, Outcome):
        tally.skipped += 1
    elif isinstance(item, Failure):
        tally.failed += 1
    else:
        key, prepared = item
        tally.add_pair(key, prepared.pair.config, prepared.output_size, budget)
    return tally


def _as_is(tally: PlanTally) -> PlanTally:
    return tally


class PlanPairs(beam.PTransform):
    """Pairs (and the reader's failures) -> the run's plan, written to ``OUTPUT/plan.json``
    (``--dry_run``): the prepare step's skip checks and batch keys, and no model, no image."""

    def __init__(self, settings: RunSettings, handler: EngineHandler, batch_size: int | None) -> None:
        super().__init__()
        self._settings = settings
        self._handler = handler
        self._batch_size = batch_size

    @no_annotations  # for readers and mypy: Beam 2.78 warns on the console of hints that are not PCollections
    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        pairs, read_failures = inputs
        prepared = pairs | "Prepare" >> beam.ParDo(PreparePairsFn(self._settings, self._handler)).with_outputs(
            SKIPPED, FAILURES, main="ready"
        )
        limit = self._handler.limits.device_memory_gb
        budget = int(limit * 2**30) if limit is not None else None
        output = self._settings.output
        return (
            (prepared.ready, prepared[SKIPPED], prepared[FAILURES], read_failures)
            | "Everything" >> beam.Flatten()
            | "Plan"
            >> beam.CombineGlobally(
                MergeFn(PlanTally, functools.partial(_add_to_plan, budget), PlanTally.merged, _as_is)
            )
            | "WritePlan" >> beam.Map(lambda tally: _write_plan(output, tally.report(self._batch_size)))
        )


def _write_plan(output: str, plan: dict[str, Any]) -> dict[str, Any]:
    storage.write_atomic(outputs.plan_location(output), outputs.to_json(plan), inside=output)
    return plan
