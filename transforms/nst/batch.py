"""A running batch of one task shape: the rows on the device, and one iteration of all of them.

Every task in a batch has the same shape (its image's size, the optimizer, Adam's rate and the
precision: :attr:`Task.shape`), and every per-pair state of the batch holds one row per slot:
the objective's targets and weights, the optimizer's state (L-BFGS's history, Adam's moments)
and the best images seen. A row passes to another task (``fill``) and the batch changes its rows
(``arrange``: only some go on, or new ones are added) with all of them moved together. Which
tasks take the rows is the runner's (runner.py); this room runs the method over the rows it has.

Imports: torch and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from transforms.nst.adam import RowAdam
from transforms.nst.config import StyleConfig
from transforms.nst.convergence import ConvergenceTest
from transforms.nst.images import tensor_to_image
from transforms.nst.lbfgs import LBFGS, LBFGS_HISTORY
from transforms.nst.objective import Objective
from transforms.nst.records import IterationRecord, KeyedCallback, NonFiniteLossError, StyleResult, TimeLimitError
from transforms.nst.vgg import VGGFeatures
from transforms.nst.written import BestImages, written_images

# The last fraction of L-BFGS iterations, run with the pixels kept in range (ShapeBatch._switch_phase).
IN_RANGE_FRACTION = 0.2


@dataclass(frozen=True)
class Task:
    """One single-scale optimization of one pair, ready for a slot."""

    key: Hashable  # the pair's key
    config: StyleConfig  # single-scale settings
    content: Tensor  # (1, 3, H, W), the network's input
    grams: dict[str, Tensor]  # the style targets at this task's style size
    start: Tensor  # (1, H, W, 3): the starting pixels, in the batch's layout
    precision: str  # resolved: fp32 or bf16
    content_name: str  # what its errors call it

    @property
    def shape(self) -> tuple[object, ...]:
        """What every task of one batch shares: size, optimizer (and Adam's rate), precision."""
        config = self.config
        return (
            tuple(self.content.shape),
            config.optimizer,
            config.learning_rate if config.optimizer == "adam" else None,
            self.precision,
        )


@dataclass
class Slot:
    """A task in a running batch: its own iteration count, phases, records and stop."""

    task: Task
    first_batch_iteration: int  # the batch's iteration at its first evaluation
    # The clock reading its pair's records and time limit count from: the first step of the
    # pair's first task (set by the runner before the slot's first step).
    started: float | None = None
    iteration: int = 0  # updates applied so far (= records so far)
    history: list[IterationRecord] = field(default_factory=list)
    phase_starts: list[int] = field(default_factory=list)
    stop_reason: str = ""
    failure: Exception | None = None  # why it has no result (its pair's time limit)
    # L-BFGS's last phase (the pixels kept in range) begins here at the latest, or as soon as
    # the first phase converges; Adam has one phase (None).
    last_phase_from: int | None = field(init=False)
    convergence: ConvergenceTest = field(init=False)

    def __post_init__(self) -> None:
        config = self.task.config
        n = config.iterations
        self.last_phase_from = n - round(n * IN_RANGE_FRACTION) if config.optimizer == "lbfgs" else None
        self.convergence = ConvergenceTest(config.stop_tolerance, config.stop_window)

    @property
    def last_phase_due(self) -> bool:
        """Whether L-BFGS's last phase (restarted, in range) begins with the next iteration."""
        return self.iteration == self.last_phase_from and not self.phase_starts

    def begin_last_phase(self) -> None:
        self.phase_starts.append(self.iteration)
        self.convergence.restart()

    def advance(self, loss: float) -> bool:
        """Count the iteration whose loss was just recorded; True when the task is done."""
        self.iteration += 1
        converged = self.convergence.converged(loss)
        if self.iteration >= self.task.config.iterations:
            self.stop_reason = "iterations"
            return True
        if not converged:
            return False
        if self.last_phase_from is not None and not self.phase_starts:
            self.last_phase_from = self.iteration  # the first phase has converged: on to the last
            return False
        self.stop_reason = "converged"
        return True


class ShapeBatch:
    """The rows of one task shape on the device: its slots (None: empty) and the per-pair state
    that keeps a row for each. ``pixels`` is the optimized leaf (NHWC), which ``arrange`` replaces.

    The optimized parameter is a contiguous NHWC tensor: L-BFGS flattens each pair's pixels, and
    its NCHW permutation is exactly the channels_last layout the network wants.
    """

    def __init__(self, network: VGGFeatures, tasks: list[Task], pixel_scale: float) -> None:
        first = tasks[0]
        self.shape = first.shape
        self.pixel_scale = pixel_scale
        self.objective = Objective(
            network,
            torch.cat([t.content for t in tasks]),
            [t.grams for t in tasks],
            [t.config for t in tasks],
            first.precision,
        )
        self.pixels = torch.cat([t.start for t in tasks]).requires_grad_(True)
        count, device = len(tasks), self.pixels.device
        self.optimizer: LBFGS | RowAdam
        if first.config.optimizer == "adam":  # as the references run it
            self.optimizer = RowAdam(self.pixels, lr=first.config.learning_rate * pixel_scale, problems=count)
        else:
            # One L-BFGS iteration per step() is one forward and backward per recorded iteration,
            # with unit steps and no line search, as neural-style runs it; our LBFGS computes
            # torch.optim.LBFGS's directions without GPU synchronizations and undoes diverging
            # steps (lbfgs.py). Its bounds apply to each pair from its in-range restart on.
            self.optimizer = LBFGS([self.pixels], history_size=LBFGS_HISTORY, bounds=(0.0, pixel_scale), problems=count)
            self.optimizer.restart(torch.ones(count, dtype=torch.bool, device=device), bounded=False)
        self.best = BestImages(self.pixels)
        self.iteration = 0  # of the batch, for BestImages; each slot counts its own
        self.slots: list[Slot | None] = [Slot(task, 0) for task in tasks]
        self.area = first.content.shape[-1] * first.content.shape[-2]  # pixels of one row

    def _rows_changed(self) -> None:
        """The optimizer updates, and the best images track, only the rows that hold a task: one
        host-to-device copy when the rows change, never in the iteration loop."""
        self.optimizer.active = torch.tensor([slot is not None for slot in self.slots], device=self.pixels.device)

    @property
    def busy(self) -> int:
        """Rows that hold a task."""
        return sum(slot is not None for slot in self.slots)

    @property
    def iteration_cap(self) -> int:
        """The most iterations a task it holds may run."""
        return max(slot.task.config.iterations for slot in self.slots if slot is not None)

    def fill(self, row: int, task: Task) -> None:
        """Row ``row`` handed to ``task`` as if the batch had just begun: its targets, its starting
        pixels, a fresh optimizer row, no best image yet, its own count from now."""
        self.objective.replace_pair(row, task.content, task.grams, task.config)
        with torch.no_grad():
            self.pixels[row] = task.start[0]
        rows = torch.arange(self.pixels.shape[0], device=self.pixels.device) == row
        if isinstance(self.optimizer, LBFGS):
            self.optimizer.restart(rows, bounded=False)
        else:
            self.optimizer.restart(rows)
        self.best.forget(row)
        self.slots[row] = Slot(task, self.iteration)
        self._rows_changed()

    def arrange(self, rows: list[int]) -> None:
        """The batch's rows become ``rows`` (indices of the current ones, in order; a repeated
        index adds a row, which :meth:`fill` must then give a task), every per-pair state with them."""
        if rows == list(range(len(self.slots))):
            return
        self.pixels = self.optimizer.keep(rows)
        self.objective.keep(rows)
        self.best.keep(rows)
        seen: set[int] = set()
        slots: list[Slot | None] = []
        for row in rows:
            slots.append(None if row in seen else self.slots[row])
            seen.add(row)
        self.slots = slots
        self._rows_changed()

    def step(self, callback: KeyedCallback | None, time_limit: float | None, clock: Callable[[], float]) -> list[int]:
        """One iteration of every task in the batch (one forward and backward): each one's record;
        the rows whose task is done (finished, or its pair over ``time_limit`` seconds by ``clock``)."""
        self._switch_phase()
        latest: list[Tensor] = []  # the loss parts of the step's one evaluation

        def closure() -> Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            parts = self.objective(self.pixels.permute(0, 3, 1, 2))
            parts[:, 0].sum().backward()  # the pairs are independent: each gets its own gradient
            self.best.update(parts[:, 0].detach(), self.pixels, self.optimizer.active, self.iteration)
            latest[:] = [parts.detach()]
            return parts[:, 0]

        self.optimizer.step(closure)  # both optimizers evaluate the closure exactly once
        self.iteration += 1
        return self._record(latest[0], callback, time_limit, clock())

    def _switch_phase(self) -> None:
        """The tasks whose L-BFGS last phase begins now restart from the clamped image, kept in range.

        Deviation: Gatys et al. and neural-style leave the pixels unconstrained and clamp the
        result, which cost 15-55% of the written image's loss in our measurements. Projecting
        from the start diverged on one of three real pairs (a clamped overshoot the guard cannot
        see), so each pair's last phase restarts L-BFGS from the clamped image with the pixels
        kept in range (docs/method.md). With bf16 the last phase runs in fp32: bf16 activations
        cannot resolve its small steps (bf16 throughout ended 2.3% above fp32 on a real pair,
        bf16 up to here 0.4%; docs/method.md: precision).
        """
        restarting = [slot is not None and slot.last_phase_due for slot in self.slots]
        if not any(restarting) or not isinstance(self.optimizer, LBFGS):  # Adam has one phase
            return
        for slot, now in zip(self.slots, restarting, strict=True):
            if slot is not None and now:
                slot.begin_last_phase()
        objective = self.objective
        objective.fp32_rows = [fp32 or now for fp32, now in zip(objective.fp32_rows, restarting, strict=True)]
        mask = torch.tensor(restarting, device=self.pixels.device)
        with torch.no_grad():
            clamped = self.pixels.clamp(0, self.pixel_scale)
            self.pixels.copy_(torch.where(mask[:, None, None, None], clamped, self.pixels))
        self.optimizer.restart(mask, bounded=True)

    def _record(self, parts: Tensor, callback: KeyedCallback | None, time_limit: float | None, now: float) -> list[int]:
        """Each task's record of the iteration just made; the rows whose task is done."""
        count = len(self.slots)
        # One device->host copy per iteration for the whole batch. Reading it one iteration
        # late (asynchronous copy + event) was measured on an H100 and did not help at 512 px.
        rejected = self.optimizer.last_rejected
        if rejected is None:
            raise RuntimeError("the optimizer has not stepped")
        rows = torch.cat([parts.double(), rejected.reshape(count, 1).double()], dim=1).tolist()
        finished: list[int] = []
        for k, slot in enumerate(self.slots):
            if slot is None:
                continue
            task, started = slot.task, slot.started or 0.0
            record = IterationRecord.from_values(
                slot.iteration, rows[k][:-1], task.config.style_layers, now - started, bool(rows[k][-1])
            )
            slot.history.append(record)
            if callback is not None:
                callback(task.key, record)
            if slot.advance(record.total):
                finished.append(k)
            elif time_limit is not None and now - started > time_limit:
                slot.failure = TimeLimitError(
                    f"over the time limit of {time_limit:g} s at iteration {slot.iteration} of "
                    f"{task.config.iterations}" + ("" if count == 1 else f" (in a batch of {count} pairs)")
                )
                finished.append(k)
        return finished

    def results(
        self, rows: list[int], device: str, now: float, callback: KeyedCallback | None
    ) -> list[tuple[Task, StyleResult | Exception]]:
        """The tasks in ``rows``, which just finished, with each one's result: its written image
        (written.py: the best seen or the last, as stored) and final record, or why it has none
        (its time limit, or no finite loss seen). Their rows are emptied. ``device``: the
        engine's, as results name it."""
        done = [slot for row in rows if (slot := self.slots[row]) is not None]
        index = torch.tensor(rows, device=self.pixels.device)
        output, final_rows, take_last = written_images(
            self.objective,
            self.pixels.detach()[index].permute(0, 3, 1, 2),
            self.best.pixels[index].permute(0, 3, 1, 2),
            torch.cat([slot.task.content for slot in done]),
            [slot.task.config for slot in done],
            self.pixel_scale,
            rows,
        )
        chosen_iterations = self.best.iteration[index].tolist()
        outcomes: list[tuple[Task, StyleResult | Exception]] = []
        for k, slot in enumerate(done):
            chosen = slot.iteration if take_last[k] else chosen_iterations[k] - slot.first_batch_iteration
            result = self._result(slot, output[k : k + 1], final_rows[k], chosen, device, now, callback)
            outcomes.append((slot.task, result))
        for row in rows:
            self.slots[row] = None
        self._rows_changed()
        return outcomes

    def _result(
        self,
        slot: Slot,
        image: Tensor,
        final_row: list[float],
        chosen: int,
        device: str,
        now: float,
        callback: KeyedCallback | None,
    ) -> StyleResult | Exception:
        task = slot.task
        if slot.failure is not None:
            return slot.failure
        seconds = now - (slot.started or 0.0)
        final = IterationRecord.from_values(slot.iteration, final_row, task.config.style_layers, seconds)
        if not math.isfinite(final.total):
            return NonFiniteLossError(
                f"{task.content_name}: loss is {final.total}: no image seen in {slot.iteration} "
                "iterations had a finite loss (non-finite weights or inputs?)"
            )
        slot.history.append(final)
        if callback is not None:
            callback(task.key, final)
        return StyleResult(
            image=tensor_to_image(image / self.pixel_scale),
            history=slot.history,
            final=final,
            chosen_iteration=chosen,
            device=device,
            seconds=seconds,
            phase_starts=tuple(slot.phase_starts),
            stop_reason=slot.stop_reason,
            precision=task.precision,
        )
