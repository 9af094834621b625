"""The slot runner: every task of every pair through one loop, a freed slot refilled at once.

A pair is a sequence of single-scale tasks (tasks.py). The runner keeps one running batch per
task shape (batch.py), each of up to ``slots`` rows, as a continuous-batching server keeps a
batch whose finished sequences give their slots to waiting ones. When a task finishes
(converged, at its iteration cap, over its pair's time limit, failed) its row is filled at once
by the next ready task of that shape: the same pair's next scale, starting from its result
upscaled, or another pair's first task. L-BFGS and Adam, CPU and GPU, whole images and tiles
all take this path. Running out of GPU memory means fewer slots for that shape, on the same path.

**Which batch steps.** Each step runs one batch: the one holding the most tasks, so that the
device is as full as it can be (``_priority``). Among batches as full, full ones go finest first,
so that pairs finish (and are written) soon; partly empty ones go coarsest first, since their
tasks have more work after them: a pair that entered late reaches its last scale sooner, and
the run's tail, where rows empty for want of work, is shorter (docs/method.md: one run loop).
A finer batch cannot starve: new pairs are taken only while fewer than ``slots`` tasks wait for
a row, so once finer tasks pile up the coarser batch empties and the finer one is the fuller.
For shapes that do not feed each other (tiles, contents of other sizes), a batch that has waited
PATIENCE times its tasks' iteration cap goes first whatever its size, so no pair waits
unboundedly. The same intake rule bounds the pairs in flight (about ``slots`` per shape, plus
``slots`` waiting) and keeps a freed row's next task ready.

Imports: torch and the engine's own modules; no Beam, no storage.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Final, Generic

import torch

from transforms.nst.batch import ShapeBatch, Task
from transforms.nst.config import StyleConfig
from transforms.nst.precision import resolve_precision
from transforms.nst.records import (
    K,
    KeyedCallback,
    PairFinished,
    PairTaken,
    ReadyQueue,
    RunEnded,
    RunEvent,
    SlotUse,
    StyleRequest,
    StyleResult,
)
from transforms.nst.tasks import PairRun, Pixels
from transforms.nst.vgg import VGGFeatures

logger = logging.getLogger(f"beam_style_transfer.{__name__}")

# A batch with tasks runs regardless once it has waited this many times its tasks' iteration cap
# in batch steps: enough for a pyramid's batches, which feed each other, never to reach it.
PATIENCE: Final = 3

Shape = tuple[object, ...]


class SlotRunner(Generic[K]):
    """Runs the requests of a queue as tasks in per-shape batches of up to ``slots`` rows.

    Args:
        network: the engine's frozen network.
        pixels: how images become its input (tasks.Pixels).
        defaults: the settings of a request that has none (and the network's).
        slots: rows per batch (the pairs of one shape on the device at once).
        clock: seconds, for the records and the time limit (injected by tests).
        device_name: the device results name.
        callback: called with (key, record) for every iteration of every task.
        time_limit: seconds each pair may take, from its first step.
    """

    def __init__(
        self,
        network: VGGFeatures,
        pixels: Pixels,
        defaults: StyleConfig,
        slots: int,
        clock: Callable[[], float],
        device_name: str,
        callback: KeyedCallback | None = None,
        time_limit: float | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.network = network
        self.pixels = pixels
        self.defaults = defaults
        self.slots = slots
        self.clock = clock
        self.device_name = device_name
        self.callback = callback
        self.time_limit = time_limit
        self.use = SlotUse()  # how full the slots were: the run's occupancy
        self._pairs: dict[Hashable, PairRun] = {}
        self._started: dict[Hashable, float] = {}  # each pair's first step
        self._ready: dict[Shape, deque[Task]] = {}
        self._batches: dict[Shape, ShapeBatch] = {}
        self._capacity: dict[Shape, int] = {}  # rows a shape may have (fewer after running out of memory)
        self._waited: dict[Shape, int] = {}  # steps since each batch last ran

    def run(self, queue: ReadyQueue[K]) -> Iterator[RunEvent[K]]:
        """Take the queue's requests as there is room, yielding ``PairTaken`` as each is taken
        and ``PairFinished`` as each pair ends, until the queue and the slots are empty; then
        ``RunEnded`` with how full the slots were."""
        while True:
            while sum(map(len, self._ready.values())) < self.slots and (taken := queue.take()) is not None:
                key, request = taken
                yield PairTaken(key)
                if (failure := self._begin(key, request)) is not None:
                    queue.done(key)
                    yield PairFinished(key, failure)
            yield from self._admit(queue)
            batch = self._choose()
            if batch is not None:
                yield from self._step(batch, queue)
            elif not len(queue):
                if self._pairs:
                    raise RuntimeError(f"{len(self._pairs)} pairs wait, but no batch can run")
                yield RunEnded(self.use)
                return

    # -- pairs and their tasks ------------------------------------------------------------------

    def _begin(self, key: Hashable, request: StyleRequest) -> Exception | None:
        """A new pair: its plan made and its first task ready; or why it cannot run."""
        config = request.config or self.defaults
        try:
            self._check(config, request)
            pair = PairRun(key, request, config)
            self._pairs[key] = pair
            self._ready_next(pair)
        except ValueError as exc:  # ImageTooSmallError is a ValueError
            self._pairs.pop(key, None)
            return exc
        return None

    def _check(self, config: StyleConfig, request: StyleRequest) -> None:
        """``request`` fits this network and its own settings.

        Raises:
            ValueError: naming what does not fit.
        """
        network_key = self.defaults.network_key()
        for key in (config.network_key(), request.style.network_key):
            if key != network_key:
                raise ValueError(
                    f"config or style targets were made for another network {key}; this StyleTransfer holds {network_key}"
                )
        if not config.image_size:
            raise ValueError("image_size 0 (each content's own size) needs config.for_content(*content.size) first")

    def _ready_next(self, pair: PairRun) -> None:
        """The pair's next task, its inputs on the device, waiting for a row of its shape."""
        planned = pair.next
        content, init_image, name = pair.next_inputs(self.pixels)
        tensor = self.pixels.tensor(content, name)
        start = self.pixels.start(tensor, planned.style, planned.config, init_image)
        task = Task(
            pair.key,
            planned.config,
            tensor,
            planned.style.grams,
            start.permute(0, 2, 3, 1).contiguous(),
            resolve_precision(planned.config, self.pixels.device, self.pixels.dtype),
            name,
        )
        self._ready.setdefault(task.shape, deque()).append(task)

    def _finish_task(self, task: Task, outcome: StyleResult | Exception, queue: ReadyQueue[K]) -> Iterator[RunEvent[K]]:
        """A task's result taken by its pair: its next task made ready, or the pair's end."""
        pair = self._pairs[task.key]
        if isinstance(outcome, StyleResult):
            pair.add(outcome)
            if pair.finished:
                outcome = pair.result(self.clock() - self._started[task.key])
            else:
                try:
                    self._ready_next(pair)
                    return
                except ValueError as exc:  # a tile narrower than the network sees
                    outcome = exc
        yield from self._end(task.key, outcome, queue)

    def _end(self, key: Hashable, outcome: StyleResult | Exception, queue: ReadyQueue[K]) -> Iterator[RunEvent[K]]:
        del self._pairs[key]
        self._started.pop(key, None)
        queue.done(key)  # type: ignore[arg-type]
        yield PairFinished(key, outcome)  # type: ignore[arg-type]

    # -- batches ----------------------------------------------------------------------------------

    def _admit(self, queue: ReadyQueue[K]) -> Iterator[RunEvent[K]]:
        """Every ready task that has a row takes it: freed rows filled, batches grown to their
        capacity, new batches made; a batch with rows nobody wants shrinks to the tasks it holds."""
        for shape in [*self._ready, *(shape for shape in self._batches if shape not in self._ready)]:
            ready = self._ready.pop(shape, deque())
            capacity = self._capacity.setdefault(shape, self.slots)
            batch = self._batches.get(shape)
            going = batch.busy if batch is not None else 0
            placing = [ready.popleft() for _ in range(min(len(ready), capacity - going))]
            if ready:
                self._ready[shape] = ready
            try:
                if batch is None and placing:
                    self._batches[shape] = ShapeBatch(self.network, placing, self.pixels.scale)
                    self._waited[shape] = 0
                elif batch is not None:
                    self._place(batch, placing)
            except torch.cuda.OutOfMemoryError as exc:
                yield from self._out_of_memory(shape, placing, exc, queue)

    @staticmethod
    def _place(batch: ShapeBatch, tasks: list[Task]) -> None:
        """``tasks`` in ``batch``'s empty rows, then in rows added; rows left empty are dropped."""
        going = [row for row, slot in enumerate(batch.slots) if slot is not None]
        empty = [row for row, slot in enumerate(batch.slots) if slot is None]
        reused = empty[: len(tasks)]
        rows = sorted(going + reused)
        batch.arrange(rows + [rows[0]] * (len(tasks) - len(reused)))
        free = (row for row, slot in enumerate(batch.slots) if slot is None)
        for task, row in zip(tasks, free, strict=False):
            batch.fill(row, task)

    def _choose(self) -> ShapeBatch | None:
        """The batch that steps next: one waited on past its patience, else by ``_priority``."""
        going = {shape: batch for shape, batch in self._batches.items() if batch.busy}
        if not going:
            return None
        overdue = [shape for shape in going if self._waited[shape] > PATIENCE * going[shape].iteration_cap]
        if overdue:
            chosen = max(overdue, key=lambda s: self._waited[s])
        else:
            chosen = max(going, key=lambda s: self._priority(going[s]))
        for shape in going:
            self._waited[shape] = 0 if shape == chosen else self._waited[shape] + 1
        return going[chosen]

    def _priority(self, batch: ShapeBatch) -> tuple[int, int]:
        """Fuller first; among batches as full, a full one's finer shape (nothing to gain for
        the slots: its pairs finish sooner), a partly empty one's coarser shape (its tasks have
        more work after them, which keeps later batches full)."""
        pixels = batch.area
        full = batch.busy >= self._capacity.get(batch.shape, self.slots)
        return batch.busy, pixels if full else -pixels

    def _step(self, batch: ShapeBatch, queue: ReadyQueue[K]) -> Iterator[RunEvent[K]]:
        """One iteration of ``batch``; the tasks it finished handed to their pairs."""
        busy = batch.busy
        for slot in batch.slots:
            if slot is not None and slot.started is None:
                slot.started = self._started.setdefault(slot.task.key, self.clock())
        try:
            finished = batch.step(self.callback, self.time_limit, self.clock)
            results = batch.results(finished, self.device_name, self.clock(), self.callback) if finished else []
        except torch.cuda.OutOfMemoryError as exc:
            yield from self._out_of_memory(batch.shape, [], exc, queue)
            return
        self.use = self.use + SlotUse(1, self.slots, busy)
        for task, outcome in results:
            yield from self._finish_task(task, outcome, queue)
        if not batch.busy:
            del self._batches[batch.shape]

    def _out_of_memory(
        self, shape: Shape, placing: list[Task], error: torch.cuda.OutOfMemoryError, queue: ReadyQueue[K]
    ) -> Iterator[RunEvent[K]]:
        """The batch of ``shape`` ran out of GPU memory: its tasks (and ``placing``, those that
        were joining it) wait again, each from its start, for half the rows; a task that runs
        out of memory alone fails its pair."""
        batch = self._batches.pop(shape, None)
        held = [slot.task for slot in batch.slots if slot is not None] if batch is not None else []
        tasks = held + [task for task in placing if all(task is not other for other in held)]
        del batch
        torch.cuda.empty_cache()
        capacity = self._capacity.get(shape, self.slots)
        if capacity == 1:
            for task in tasks:
                yield from self._end(task.key, error, queue)
            return
        self._capacity[shape] = capacity // 2
        logger.warning("%d pairs of one shape ran out of GPU memory; it now runs %d at a time", capacity, capacity // 2)
        self._ready.setdefault(shape, deque()).extendleft(reversed(tasks))
