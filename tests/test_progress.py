"""Progress reporting: counts, rate, time left, heartbeat lines, and what a real run prints."""

from __future__ import annotations

import logging

from transforms.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counts_rate_and_time_left(caplog) -> None:
    caplog.set_level(logging.INFO, logger="beam_style_transfer.transforms.progress")
    clock = Clock()
    progress = Progress(expected=10, live=False, clock=clock)
    clock.now += 60
    progress.pair_finished("a", "skipped", "already done")
    progress.pair_finished("b", "succeeded", "55.0 s")
    clock.now += 60
    progress.pair_finished("c", "failed", "at read: FileNotFoundError: c.png: no such file")
    # 2 pairs computed in 120 s -> 60 pairs/h; 7 left -> 7 minutes
    assert progress.summary() == "3/10 pairs (1 succeeded, 1 skipped, 1 failed), 60 pairs/h, 0:07:00 left"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[-1] == (
        "WARNING",
        "progress: c failed: at read: FileNotFoundError: c.png: no such file | "
        "3/10 pairs (1 succeeded, 1 skipped, 1 failed), 60 pairs/h, 0:07:00 left",
    )


def test_heartbeat_reports_the_pair_in_progress_at_most_every_interval(caplog) -> None:
    caplog.set_level(logging.INFO, logger="beam_style_transfer.transforms.progress")
    clock = Clock()
    progress = Progress(expected=None, live=False, heartbeat=30, clock=clock)
    for iteration in range(100):
        clock.now += 1  # one iteration per second: a line every 30 of them
        progress.iteration("cat", iteration, 500, 1234.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == "progress: cat at iteration 29/500, loss 1234 | 0 pairs (0 succeeded, 0 skipped, 0 failed)"


def test_live_bar_counts_pairs(capsys) -> None:
    progress = Progress(expected=2, live=True)
    progress.pair_finished("a", "succeeded")
    progress.iteration("b", 3, 10, 2.5)
    progress.pair_finished("b", "failed", "boom")
    progress.close()
    err = capsys.readouterr().err
    assert "2/2" in err and "failed: b: boom" in err
