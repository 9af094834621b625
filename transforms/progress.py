"""Progress of a run: pairs done of the expected total, rate, time left, failures, current pair.

One tracker per process and run, shared by the DoFns of that process (``for_run``). On a terminal
it draws a live tqdm bar; elsewhere (a log file, a scheduler, a Dataflow worker) it writes plain
log lines: one per finished pair, and one every ``heartbeat`` seconds for the pair in progress.
Pairs skipped as already done are counted, not listed (a rerun of a dataset would print a line
per image): one line when the run ends gives their count and the first few ids; each one's own
line is a DEBUG line (``--verbose``).
On Dataflow each worker reports its own pairs; the job-wide view is Dataflow's counters.

Imports: tqdm, on a terminal only; no Beam, no torch, no storage.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

_lock = threading.Lock()
_current: dict[str, Progress] = {}


def for_run(
    run_id: str, expected: int | None, iterations_per_pair: int | None = None, planned_seconds: float | None = None
) -> Progress:
    """This process's tracker for ``run_id`` (a new run replaces the previous run's)."""
    with _lock:
        tracker = _current.get(run_id)
        if tracker is None:
            _current.clear()
            tracker = _current[run_id] = Progress(expected, iterations_per_pair, planned_seconds=planned_seconds)
        return tracker


# Ids the closing line about skipped pairs names.
SKIPPED_NAMED = 3
# The widest console line of the job's own: a longer one is cut (the whole text is in the
# failures file, the pair's log or the report).
CONSOLE_COLUMNS = 120


def fit_line(line: str) -> str:
    """``line``'s first line within CONSOLE_COLUMNS characters: a long word (a path, a URL) keeps
    its start and its end around "...", so that the reason after it stays in view; then what is
    still over is cut. What follows a newline (a traceback, with --verbose) is kept as it is."""
    first, newline, rest = line.partition("\n")
    if len(first) > CONSOLE_COLUMNS:
        first = re.sub(r"\S{36,}", lambda word: f"{word.group()[:12]}...{word.group()[-20:]}", first)
    if len(first) > CONSOLE_COLUMNS:
        first = first[: CONSOLE_COLUMNS - 3] + "..."
    return first + newline + rest


def end_run(run_id: str) -> None:
    """Close this process's tracker of ``run_id``, if any (its live bar ends its line)."""
    with _lock:
        tracker = _current.pop(run_id, None)
    if tracker is not None:
        tracker.close()


def _is_terminal(stream: Any) -> bool:
    """A terminal with a size: some CI and ``script`` setups are terminals of 0 columns, where
    a live bar shows nothing at all; there the plain lines are written instead."""
    try:
        return bool(stream.isatty()) and os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):
        return False


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def about(seconds: float) -> str:
    """A duration as people say it: ``about 3 h 50 m``, ``about 12 m``, ``under a minute``."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} m"
    return f"about {minutes // 60} h {minutes % 60:02d} m"


class Progress:
    """Counts finished pairs and reports them; thread-safe.

    The time left comes from iterations, not from finished pairs alone: from the first iterations
    on, it is the work left (pairs not finished times ``iterations_per_pair``, less what the
    pairs in progress have done) at the rate iterations have run so far. Without
    ``iterations_per_pair`` it is the pairs left at the rate pairs have finished. With
    ``planned_seconds`` (the estimate said before the run), the time left starts from it and
    falls with the clock, and the measured rate takes over as the work gets done: the first
    iterations' rate (small images first, a batch filling up) does not make it jump about.

    Args:
        expected: pairs the run expects (manifest rows or glob combinations), None if unknown.
        iterations_per_pair: the job's iterations per pair (rows may differ), None if unknown.
        live: draw a tqdm bar; default: when standard error is a terminal.
        heartbeat: seconds between plain lines about the pair in progress.
        clock: seconds, monotonic; injected by tests.
    """

    def __init__(
        self,
        expected: int | None,
        iterations_per_pair: int | None = None,
        live: bool | None = None,
        heartbeat: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        planned_seconds: float | None = None,
    ) -> None:
        self.expected = expected
        self.iterations_per_pair = iterations_per_pair
        self.planned_seconds = planned_seconds
        self.counts = {"succeeded": 0, "skipped": 0, "failed": 0, "claimed": 0}
        self._first_skipped: list[str] = []
        # Pairs in progress -> iterations they have done; iterations run, since the first.
        self._in_progress: dict[str, int] = {}
        self._iterations_run = 0
        self._first_iteration_at: float | None = None
        self._clock = clock
        self._started = clock()
        self._heartbeat = heartbeat
        self._last_beat = self._started
        self._lock = threading.Lock()
        self._bar: Any = None
        if live if live is not None else _is_terminal(sys.stderr):
            from tqdm import tqdm

            # One time left, ours (postfix): tqdm's own counts finished pairs only.
            self._bar = tqdm(
                total=expected,
                unit="pair",
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]",
            )

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``3/30 pairs, 1 skipped, 95 pairs/h, 0:17:03 left``: counts of skipped, failed and
        claimed pairs only where there are some (every console line fits 120 columns)."""
        elapsed = self._clock() - self._started
        of = f"/{self.expected}" if self.expected is not None else ""
        parts = [f"{self.finished}{of} pairs"]
        for status, shown in (("skipped", "skipped"), ("failed", "failed"), ("claimed", "claimed elsewhere")):
            if self.counts[status]:
                parts.append(f"{self.counts[status]} {shown}")
        computed = self.counts["succeeded"] + self.counts["failed"]
        rate = computed / elapsed * 3600 if computed and elapsed > 0 else None
        if rate is not None:
            parts.append(f"{rate:.0f} pairs/h")
        left = self._seconds_left(rate)
        if left is not None and self.finished != self.expected:
            parts.append(f"{_duration(left)} left")
        return ", ".join(parts)

    def _seconds_left(self, pairs_per_hour: float | None) -> float | None:
        if self.expected is None:
            return None
        pairs_left = max(self.expected - self.finished, 0)
        since_first = self._clock() - self._first_iteration_at if self._first_iteration_at is not None else 0.0
        measured, done = None, 0.0
        if self.iterations_per_pair and self._iterations_run and since_first > 0:
            work_left = max(pairs_left * self.iterations_per_pair - sum(self._in_progress.values()), 0)
            measured = work_left / (self._iterations_run / since_first)
            done = 1.0 - work_left / max(self.expected * self.iterations_per_pair, 1)
        elif pairs_per_hour:
            measured = pairs_left / pairs_per_hour * 3600
            done = 1.0 - pairs_left / max(self.expected, 1)
        if self.planned_seconds is None or not pairs_left:
            return measured
        planned = max(self.planned_seconds - (self._clock() - self._started), 0.0)
        if measured is None:
            return planned
        return (1.0 - done) * planned + done * measured

    def pair_finished(self, pair_id: str, status: str, detail: str = "") -> None:
        """Count a pair (or a manifest row) as ``succeeded``, ``skipped``, ``failed`` or ``claimed``."""
        with self._lock:
            self.counts[status] += 1
            self._in_progress.pop(pair_id, None)
            self._last_beat = self._clock()
            line = f"{pair_id} {status}{': ' + detail if detail else ''} | {self.summary()}"
            if status == "skipped":
                if len(self._first_skipped) < SKIPPED_NAMED:
                    self._first_skipped.append(pair_id)
                logger.debug("%s", line)
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix_str(f"{self.counts['failed']} failed")
                if status == "failed":
                    self._bar.write(fit_line(f"failed: {pair_id}: {detail}"), file=sys.stderr)
            elif status != "skipped":
                (logger.warning if status == "failed" else logger.info)("%s", line)

    def iteration(self, pair_id: str, iteration: int, iterations: int, loss: float) -> None:
        """The pair in progress has done ``iteration`` of its ``iterations``; reported live, or as
        a periodic line."""
        with self._lock:
            now = self._clock()
            if self._first_iteration_at is None:
                self._first_iteration_at = now  # the rate counts from here: loading is not work
            self._iterations_run += max(iteration - self._in_progress.get(pair_id, 0), 0)
            self._in_progress[pair_id] = iteration
            if self._bar is not None:
                # tqdm's own estimate counts finished pairs only; ours counts iterations.
                left = self._seconds_left(None)
                # One redraw per call, not two: the postfix waits for the description's.
                self._bar.set_postfix_str(
                    f"{self.counts['failed']} failed" + (f", {_duration(left)} left" if left is not None else ""),
                    refresh=False,
                )
                self._bar.set_description_str(f"{pair_id} {iteration}/{iterations} loss {loss:.4g}")
            elif now - self._last_beat >= self._heartbeat:
                self._last_beat = now
                logger.info(
                    "%s at iteration %d/%d, loss %.4g | %s", pair_id, iteration, iterations, loss, self.summary()
                )

    def close(self) -> None:
        """End the live bar; say how many pairs were skipped as done, and which first."""
        if self._bar is not None:
            self._bar.close()
        skipped = self.counts["skipped"]
        if skipped:
            more = ", ..." if skipped > len(self._first_skipped) else ""
            logger.info(
                "%d pair%s skipped, already done (--verbose lists each): %s%s",
                skipped,
                "" if skipped == 1 else "s",
                ", ".join(self._first_skipped),
                more,
            )
