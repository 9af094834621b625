"""Progress reporting: counts, rate, time left, heartbeat lines, and what a real run prints."""

from __future__ import annotations

import itertools
import logging

import pytest

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
    assert progress.summary() == "3/10 pairs, 1 skipped, 1 failed, 60 pairs/h, 0:07:00 left"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[-1] == (
        "WARNING",
        "c failed: at read: FileNotFoundError: c.png: no such file | "
        "3/10 pairs, 1 skipped, 1 failed, 60 pairs/h, 0:07:00 left",
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
    assert lines[0] == "cat at iteration 29/500, loss 1234 | 0 pairs"


def test_live_bar_counts_pairs_and_shows_the_time_left_from_iterations(capsys) -> None:
    clock = Clock()
    progress = Progress(expected=2, iterations_per_pair=10, live=True, clock=clock)
    progress.pair_finished("a", "succeeded")
    progress.iteration("b", 0, 10, 2.5)
    clock.now += 6
    progress.iteration("b", 3, 10, 2.5)  # 3 iterations in 6 s; 7 left: 14 s
    assert "0:00:14 left" in capsys.readouterr().err
    progress.pair_finished("b", "failed", "boom")
    progress.close()
    err = capsys.readouterr().err
    assert "2/2" in err and "failed: b: boom" in err


def test_time_left_comes_from_iterations_from_the_first_ones_on(caplog) -> None:
    clock = Clock()
    progress = Progress(expected=3, iterations_per_pair=100, live=False, clock=clock)
    clock.now += 20  # loading the model: not counted
    progress.iteration("a", 0, 100, 9.0)
    for done in range(1, 11):
        clock.now += 2  # 2 s an iteration
        progress.iteration("a", done, 100, 9.0)
    # 300 iterations to do, 10 done: 290 at 2 s each, before any pair has finished
    assert progress.summary() == "0/3 pairs, 0:09:40 left"
    for done in range(11, 101):
        clock.now += 2
        progress.iteration("a", done, 100, 9.0)
    progress.pair_finished("a", "succeeded")
    progress.pair_finished("b", "skipped")  # nothing to compute for it: 100 iterations fewer
    assert progress.summary().endswith("0:03:20 left")  # c: 100 iterations at 2 s


def test_the_cost_of_a_run_is_said_before_it_starts_with_a_preview_when_it_is_long() -> None:
    from transforms.nst.config import StyleConfig
    from transforms.plan import (
        MEASURED_BF16_TIME_FACTOR,
        MEASURED_SECONDS_PER_ITERATION,
        cost_line,
        seconds_per_iteration,
    )
    from transforms.progress import about

    cpu_512 = dict(MEASURED_SECONDS_PER_ITERATION["cpu: 2 cores (this project's CI machine)"])[512 * 512]
    line = cost_line(3, StyleConfig(image_size=512, iterations=500, scales=()), "cpu")
    minutes = round(3 * 500 * cpu_512 / 60)
    assert line.startswith(f"3 pairs x 500 iterations at 512 px on cpu: about {minutes // 60} h {minutes % 60:02d} m")
    assert "; --image_size 256 --iterations 200 previews in about" in line
    assert (
        cost_line(1, StyleConfig(image_size=64, iterations=20), "cpu")
        == "1 pair x 20 iterations at 64 px on cpu: under a minute"
    )
    assert cost_line(5, StyleConfig(image_size=0), "cpu") is None  # each content's own size: unknown yet
    # ... unless a sample of the contents' headers says it: the average of their costs.
    sizes = [(500, 375), (640, 480), (320, 240)]
    device = "cpu: 2 cores (this project's CI machine)"
    per_pair = sum(500 * seconds_per_iteration(device, w * h) for w, h in sizes) / 3
    line = cost_line(5, StyleConfig(image_size=0, scales=(), iterations=500), "cpu", sizes=sizes)
    assert (
        line
        == f"5 pairs x 500 iterations at their own sizes (median 500x375 of 3 sampled) on cpu: {about(5 * per_pair)}"
    )
    # The default pyramid: every scale's iterations at its own size, each content its own pyramid
    # (500 px: 250 first; 640 px: 160 and 320; 320 px: 160).
    at = (128 * 128, 256 * 256, 512 * 512)
    line = cost_line(3, StyleConfig(), "cpu")
    assert line.startswith(
        f"3 pairs x 200 iterations at each of 128, 256 and 512 px on cpu: {about(3 * 200 * sum(seconds_per_iteration(device, a) for a in at))};"
    )
    pyramids = [(500 * 375, 250 * 188), (640 * 480, 320 * 240, 160 * 120), (320 * 240, 160 * 120)]
    per_pair = sum(200 * seconds_per_iteration(device, a) for areas in pyramids for a in areas) / 3
    line = cost_line(5, StyleConfig(image_size=0), "cpu", sizes=sizes)
    assert (
        line
        == f"5 pairs x 200 iterations at their own sizes (median 500x375 of 3 sampled), coarse to fine on cpu: {about(5 * per_pair)}"
    )
    # bf16 where the device has it: the measured whole-pair factor
    factor = MEASURED_BF16_TIME_FACTOR["cpu: 2 cores (this project's CI machine)"]
    bf16 = cost_line(3, StyleConfig(image_size=512, iterations=500, scales=()), "cpu", "bf16")
    # bf16 forced where the device emulates it: the emulated cost, preview included.
    from transforms.plan import EMULATED_BF16_TIME_FACTOR

    emulated = cost_line(
        3, StyleConfig(image_size=512, iterations=500, scales=()), "cpu", "bf16", bf16_in_hardware=False
    )
    assert emulated.startswith(
        f"3 pairs x 500 iterations at 512 px on cpu: {about(EMULATED_BF16_TIME_FACTOR * 3 * 500 * cpu_512)};"
    )
    preview = EMULATED_BF16_TIME_FACTOR * 3 * 200 * seconds_per_iteration(device, 256 * 256)
    assert emulated.endswith(f"--image_size 256 --iterations 200 previews in {about(preview)}")
    assert bf16.startswith(f"3 pairs x 500 iterations at 512 px on cpu: {about(factor * 3 * 500 * cpu_512)};")


def test_skipped_pairs_are_counted_in_one_line_not_listed(caplog) -> None:
    caplog.set_level(logging.INFO, logger="beam_style_transfer.transforms.progress")
    progress = Progress(expected=40, live=False, clock=Clock())
    for n in range(36):
        progress.pair_finished(f"p{n:02d}", "skipped", "already done")
    progress.pair_finished("new", "succeeded", "1.0 s")
    progress.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("p05" in m for m in messages)  # no line per skipped pair at INFO
    assert messages[-1] == "36 pairs skipped, already done (--verbose lists each): p00, p01, p02, ..."
    assert sum("skipped" in m and "|" not in m for m in messages) == 1
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="beam_style_transfer.transforms.progress")
    quiet = Progress(expected=1, live=False, clock=Clock())
    quiet.pair_finished("only", "skipped", "already done")
    quiet.close()
    assert [r.getMessage().split(" |")[0] for r in caplog.records] == [
        "only skipped: already done",
        "1 pair skipped, already done (--verbose lists each): only",
    ]


def test_console_lines_fit_120_columns_and_keep_the_reason() -> None:
    from transforms.progress import CONSOLE_COLUMNS, fit_line

    path = "/home/someone/datasets/imagenet/train/n01440764/" + "x" * 80 + ".JPEG"
    line = (
        f"12:00:00 warning: n01440764/x failed: at read: FileNotFoundError: {path}: no such file | 3/10 pairs, 1 failed"
    )
    fitted = fit_line(line)
    assert (
        len(fitted) <= CONSOLE_COLUMNS and "no such file" in fitted and "/home/someon...xxxxxxxxxxxxxx.JPEG:" in fitted
    )
    assert fit_line("short line") == "short line"
    assert fit_line("a" * 200 + "\ntraceback line").split("\n") == ["a" * 12 + "..." + "a" * 20, "traceback line"]
    assert len(fit_line("word " * 40)) == CONSOLE_COLUMNS  # many short words: cut at the end


def test_a_terminal_of_no_columns_gets_plain_lines(monkeypatch) -> None:
    import os

    from transforms import progress as module

    class Terminal:
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 2

    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert not module._is_terminal(Terminal())
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((120, 40)))
    assert module._is_terminal(Terminal())


def test_the_time_left_starts_from_the_plan_and_falls_as_the_measured_rate_takes_over() -> None:
    clock = Clock()
    progress = Progress(expected=4, iterations_per_pair=100, live=False, clock=clock, planned_seconds=800)
    assert progress.summary() == "0/4 pairs, 0:13:20 left"  # the plan, before any iteration
    clock.now += 30  # loading: the plan's time falls with the clock
    assert progress.summary() == "0/4 pairs, 0:12:50 left"
    shown = []
    for step in range(1, 101):  # the first pair runs at 1 s an iteration: the plan said 2 s
        clock.now += 1
        progress.iteration("a", step, 100, 1.0)
        shown.append(progress._seconds_left(None))
    assert all(later < earlier for earlier, later in itertools.pairwise(shown))  # it falls, every second
    progress.pair_finished("a", "succeeded")
    # A quarter of the work done: three quarters of the plan's 670 s left, and a quarter of the
    # measured: 300 iterations at the 100 that ran in the 99 s since the first.
    assert progress._seconds_left(None) == pytest.approx(0.75 * 670 + 0.25 * 300 * 99 / 100)
