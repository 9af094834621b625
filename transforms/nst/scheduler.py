"""Which pairs hold the device's slots while a batch of one scale runs: who may join it (one
admission check: :class:`Admission`), a finished slot handed to the next ready request of the caller's queue
(records.ReadyQueue: refill), a batch that shrinks to the pairs still going when none is ready,
and what the finished rows give back (their results). Streams that cannot refill (Adam, coarse
to fine) run the queue in whole batches (:func:`in_batches`). The optimizer's room (optimize.py)
runs the method over whatever rows are here; this room decides the rows.

Every per-pair state of a running batch holds one row per slot, and each takes part in the same
two moves: a row passes to another pair, and only some rows go on (``keep(rows)``, rows in
order). :class:`RunningBatch` makes both moves on all of them at once: the objective (targets and
weights), the optimizer (L-BFGS's history, Adam's moments) and the best images seen.

Imports: torch and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from transforms.nst.adam import MaskedAdam
from transforms.nst.config import StyleConfig
from transforms.nst.convergence import ConvergenceTest
from transforms.nst.images import tensor_to_image
from transforms.nst.lbfgs import LBFGS
from transforms.nst.objective import Objective
from transforms.nst.records import (
    IterationRecord,
    K,
    KeyedCallback,
    NonFiniteLossError,
    ReadyQueue,
    StyleRequest,
    StyleResult,
)
from transforms.nst.written import BestImages, written_images

# The last fraction of L-BFGS iterations, run with the pixels kept in range (optimize.py).
IN_RANGE_FRACTION = 0.2


@dataclass(frozen=True)
class Entry:
    """A request checked against the engine and ready to join a batch."""

    key: Hashable  # the caller's name for it: a position in a batch, a pair id in a stream
    request: StyleRequest
    config: StyleConfig
    content: Tensor  # (1, 3, H, W), the network's input
    precision: str  # resolved: fp32 or bf16

    @property
    def batch_shape(self) -> tuple[object, ...]:
        """What every pair of one batch shares: size, optimizer (and Adam's rate), precision."""
        config = self.config
        return (
            tuple(self.content.shape),
            config.optimizer,
            config.learning_rate if config.optimizer == "adam" else None,
            self.precision,
        )


class Admission:
    """Who may join a running batch: a request checked against the engine (``make_entry``) and
    against the batch's shape, which the first one admitted sets."""

    def __init__(self, make_entry: Callable[[Hashable, StyleRequest], Entry]) -> None:
        self._make_entry = make_entry
        self._shape: tuple[object, ...] | None = None

    def admit(self, key: Hashable, request: StyleRequest) -> Entry:
        """Raises ValueError (ImageTooSmallError is one) naming why the request cannot join."""
        return self.check(self._make_entry(key, request))

    def check(self, entry: Entry) -> Entry:
        """The one admission check: ``entry`` may join the batch, whose shape (size, optimizer,
        precision) the first entry checked sets.

        Raises:
            ValueError: naming what differs.
        """
        self._shape = self._shape or entry.batch_shape
        if entry.batch_shape != self._shape:
            raise ValueError(
                "a batch needs pairs of one size, one optimizer and one precision; this pair has "
                f"{entry.batch_shape}, the batch {self._shape}"
            )
        return entry


def next_admitted(
    queue: ReadyQueue[K], admission: Admission
) -> Generator[tuple[K, StyleResult | Exception], None, Entry | None]:
    """The next ready request of ``queue`` that may join the batch (None: none is ready); each
    one that may not is yielded with why, so that the caller can put another in its place."""
    while (taken := queue.take()) is not None:
        key, request = taken
        try:
            return admission.admit(key, request)
        except ValueError as exc:  # ImageTooSmallError is a ValueError
            queue.done(key)
            yield key, exc
    return None


def in_batches(
    queue: ReadyQueue[K],
    slots: int,
    run_batch: Callable[..., list[StyleResult | Exception]],
    callback: KeyedCallback | None,
    time_limit: float | None,
) -> Iterator[tuple[K, StyleResult | Exception]]:
    """The ready requests in batches of up to ``slots``, one batch after another, each run by
    ``run_batch(requests, callback, time_limit)`` (StyleTransfer.stylize_batch): how Adam's
    pairs (whose moments are the batch's) and coarse-to-fine pairs stream, with no refill."""
    while chunk := [taken for _ in range(slots) if (taken := queue.take()) is not None]:
        keys = [key for key, _ in chunk]
        on_record = None if callback is None else (lambda k, record, keys=keys: callback(keys[k], record))
        try:
            results = run_batch([request for _, request in chunk], on_record, time_limit)
        except ValueError as exc:  # a chunk that cannot share a batch: each of its pairs fails
            results = [exc] * len(chunk)
        for key, result in zip(keys, results, strict=True):
            queue.done(key)
            yield key, result


@dataclass
class Slot:
    """A pair in a running batch: its own iteration count, phases, records and stop."""

    entry: Entry
    started: float  # the clock reading its records' seconds and its time limit count from
    first_batch_iteration: int  # the batch's iteration at its first evaluation
    iteration: int = 0  # updates applied so far (= records so far)
    history: list[IterationRecord] = field(default_factory=list)
    phase_starts: list[int] = field(default_factory=list)
    stop_reason: str = ""
    failure: Exception | None = None  # why it has no result (a time limit)
    # L-BFGS's last phase (the pixels kept in range) begins here at the latest, or as soon as
    # the first phase converges; Adam has one phase (None).
    last_phase_from: int | None = field(init=False)
    convergence: ConvergenceTest = field(init=False)

    def __post_init__(self) -> None:
        config = self.entry.config
        n = config.iterations
        self.last_phase_from = n - round(n * IN_RANGE_FRACTION) if config.optimizer == "lbfgs" else None
        self.convergence = ConvergenceTest(config.stop_tolerance, config.stop_window)

    def begins_last_phase(self) -> bool:
        """Whether the next iteration starts L-BFGS's last phase (restarted, in range)."""
        if self.iteration != self.last_phase_from or self.phase_starts:
            return False
        self.phase_starts.append(self.iteration)
        self.convergence.restart()
        return True

    def advance(self, loss: float) -> bool:
        """Count the iteration whose loss was just recorded; True when the pair is done."""
        self.iteration += 1
        converged = self.convergence.converged(loss)
        if self.iteration >= self.entry.config.iterations:
            self.stop_reason = "iterations"
            return True
        if not converged:
            return False
        if self.last_phase_from is not None and not self.phase_starts:
            self.last_phase_from = self.iteration  # the first phase has converged: on to the last
            return False
        self.stop_reason = "converged"
        return True


@dataclass
class RunningBatch:
    """The rows of a batch on the device: its slots (None: empty), and the per-pair state that
    keeps a row for each. ``pixels`` is the optimized leaf (NHWC), which a shrink replaces.
    Refill and shrink move every row together; what an iteration does is optimize.py's."""

    objective: Objective
    pixels: Tensor
    optimizer: LBFGS | MaskedAdam
    best: BestImages
    slots: list[Slot | None]
    # The engine's clock (StyleTransfer.clock): a refilled pair's records count from its start.
    clock: Callable[[], float]
    # A pair's starting pixels, (1, H, W, 3) (StyleTransfer's initial image, in the batch's layout).
    start: Callable[[Entry], Tensor]

    def refill(self, row: int, entry: Entry | None, iteration: int) -> None:
        """Slot ``row`` handed to ``entry``, a waiting pair, as if its batch had just begun at
        the batch's ``iteration``: its targets, its starting pixels, a fresh optimizer row, no
        best image yet, its own count from now; or left empty (``entry`` None)."""
        if entry is None:
            self.slots[row] = None
            return
        if not isinstance(self.optimizer, LBFGS):
            raise TypeError("only an L-BFGS batch is refilled: Adam's moments are the whole batch's")
        self.objective.replace_pair(row, entry.content, entry.request.style.grams, entry.config)
        with torch.no_grad():
            self.pixels[row] = self.start(entry)[0]
        self.optimizer.restart(torch.arange(self.pixels.shape[0], device=self.pixels.device) == row, bounded=False)
        self.best.forget(row)
        self.slots[row] = Slot(entry, self.clock(), iteration)

    def shrink(self) -> None:
        """When nothing waits any more, an L-BFGS batch keeps only the pairs still going, so that
        finished slots cost no forward pass. (Adam's finished pairs ride along: its moments are
        the batch's, and its batches are never refilled.)"""
        going = [row for row, slot in enumerate(self.slots) if slot is not None]
        if not going or len(going) == len(self.slots) or not isinstance(self.optimizer, LBFGS):
            return
        self.pixels = self.optimizer.keep(going)
        self.objective.keep(going)
        self.best.keep(going)
        self.slots = [self.slots[row] for row in going]

    def mark_active(self) -> None:
        """The optimizer updates, and the best images track, only the slots that hold a pair."""
        self.optimizer.active = torch.tensor([slot is not None for slot in self.slots], device=self.pixels.device)

    def results(
        self, rows: list[int], pixel_scale: float, device: str, callback: KeyedCallback | None
    ) -> Iterator[tuple[Any, StyleResult | Exception]]:
        """(key, result) of the pairs in ``rows``, which just finished: each one's written image
        (written.py: the best seen or the last, as stored) and final record, or why it has none
        (its time limit, or no finite loss seen). ``device``: the engine's, as results name it."""
        done = [slot for row in rows if (slot := self.slots[row]) is not None]
        index = torch.tensor(rows, device=self.pixels.device)
        output, final_rows, take_last = written_images(
            self.objective,
            self.pixels.detach()[index].permute(0, 3, 1, 2),
            self.best.pixels[index].permute(0, 3, 1, 2),
            torch.cat([slot.entry.content for slot in done]),
            [slot.entry.config for slot in done],
            pixel_scale,
            rows,
        )
        chosen_iterations = self.best.iteration[index].tolist()
        for k, slot in enumerate(done):
            entry = slot.entry
            if slot.failure is not None:
                yield entry.key, slot.failure
                continue
            seconds = self.clock() - slot.started
            final = IterationRecord.from_values(slot.iteration, final_rows[k], entry.config.style_layers, seconds)
            if not math.isfinite(final.total):
                yield (
                    entry.key,
                    NonFiniteLossError(
                        f"{entry.request.content_name}: loss is {final.total}: no image seen in {slot.iteration} "
                        "iterations had a finite loss (non-finite weights or inputs?)"
                    ),
                )
                continue
            slot.history.append(final)
            if callback is not None:
                callback(entry.key, final)
            chosen = slot.iteration if take_last[k] else chosen_iterations[k] - slot.first_batch_iteration
            yield (
                entry.key,
                StyleResult(
                    image=tensor_to_image(output[k : k + 1] / pixel_scale),
                    history=slot.history,
                    final=final,
                    chosen_iteration=chosen,
                    device=device,
                    seconds=seconds,
                    phase_starts=tuple(slot.phase_starts),
                    stop_reason=slot.stop_reason,
                    precision=entry.precision,
                ),
            )
