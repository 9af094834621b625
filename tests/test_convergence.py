"""Convergence stopping: the test itself, and what the engine does with it."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import run_pairs, synthetic_image
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.convergence import ConvergenceTest
from transforms.nst.records import StyleRequest


def test_a_pair_has_converged_once_its_best_loss_improved_too_little_over_the_window() -> None:
    test = ConvergenceTest(tolerance=0.01, window=3)
    # 100 -> 90 -> 80 -> 79.9: over the 3 iterations before the last, 100 -> 79.9 is a lot
    assert [test.converged(v) for v in (100.0, 90.0, 80.0, 79.9)] == [False, False, False, False]
    # best 90 three iterations ago, 79.5 now: 13% better; then 80 -> 79.3 over 3: under 1%
    assert test.converged(79.5) is False
    assert test.converged(79.3) is True


def test_rises_and_rejected_steps_neither_stop_a_pair_nor_keep_it_going() -> None:
    test = ConvergenceTest(tolerance=0.01, window=2)
    # the best loss is what counts: a rise (or a non-finite, rejected trial) changes nothing
    assert [test.converged(v) for v in (10.0, 5.0, math.inf, 50.0)] == [False, False, False, True]
    test.restart()  # a new phase forgets the old one's losses
    assert [test.converged(v) for v in (4.0, 3.0)] == [False, False]


def test_tolerance_zero_never_stops_and_bad_settings_are_refused() -> None:
    test = ConvergenceTest(tolerance=0.0, window=1)
    assert not any(test.converged(1.0) for _ in range(10))
    with pytest.raises(ValueError, match="tolerance"):
        ConvergenceTest(tolerance=-1, window=5)
    with pytest.raises(ValueError, match="window"):
        ConvergenceTest(tolerance=0.1, window=0)
    with pytest.raises(ValueError, match="stop_window"):
        StyleConfig(stop_window=0)
    with pytest.raises(ValueError, match="stop_tolerance"):
        StyleConfig(stop_tolerance=math.nan)


@pytest.fixture(scope="module")
def engine(weights_file) -> StyleTransfer:
    return StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"),
            weights_family="torchvision",
            image_size=40,
            iterations=30,
            device="cpu",
        ),
        dtype=torch.float64,
    )


def test_a_converged_lbfgs_pair_moves_to_its_last_phase_early_then_stops(engine) -> None:
    targets = engine.encode_styles([synthetic_image(10)])
    content = synthetic_image(1, 64, 48)
    fixed = engine.stylize(content, targets, engine.config.replace(stop_tolerance=0))
    stopping = engine.stylize(content, targets, engine.config.replace(stop_tolerance=0.25, stop_window=3))
    assert fixed.stop_reason == "iterations" and fixed.final.iteration == 30 and fixed.phase_starts == (24,)
    assert stopping.stop_reason == "converged"
    (last_phase,) = stopping.phase_starts
    assert last_phase < 24 and last_phase + 3 < stopping.final.iteration < 30
    # up to the early restart, the same optimization as the fixed run
    for mine, theirs in zip(stopping.history[:last_phase], fixed.history[:last_phase], strict=True):
        assert mine.total == pytest.approx(theirs.total, rel=1e-12)
    # and the stop is where the rule says: the best loss of the last phase, 3 iterations back
    phase = [r.total for r in stopping.history[last_phase:-1]]
    best = [min(phase[: i + 1]) for i in range(len(phase))]
    assert best[-4] - best[-1] <= 0.25 * best[-1]
    assert all(best[i - 3] - best[i] > 0.25 * best[i] for i in range(3, len(best) - 1))


def test_adam_stops_when_converged_too(engine) -> None:
    targets = engine.encode_styles([synthetic_image(10)])
    config = engine.config.replace(optimizer="adam", learning_rate=0.05, stop_tolerance=0.05, stop_window=2)
    result = engine.stylize(synthetic_image(1, 64, 48), targets, config)
    assert result.stop_reason == "converged" and result.final.iteration < 30 and result.phase_starts == ()


def test_adam_pairs_are_refilled_one_by_one_each_with_its_own_moments(engine) -> None:
    # Each row has its own Adam moments and step count, so a freed row takes the next pair at
    # once, which then runs exactly as it does alone.
    targets = engine.encode_styles([synthetic_image(10)])
    config = engine.config.replace(optimizer="adam", iterations=4)
    requests = [
        StyleRequest(synthetic_image(k, 64, 48), targets, config.replace(iterations=3 + 2 * k)) for k in range(3)
    ]
    outcomes = run_pairs(engine, requests, slots=2)
    for request, result in zip(requests, outcomes, strict=True):
        alone = engine.stylize(request.content, targets, request.config)
        assert result.final.iteration == request.config.iterations
        assert result.final.total == pytest.approx(alone.final.total, rel=1e-5)
