"""Batched pairs (StyleTransfer.run) give each pair what it gets alone.

In float64 the batched and the single-pair runs agree to rounding (the logic is the same); in
float32, batched convolutions round differently from single ones and L-BFGS's unit steps amplify
that over the iterations, so there only the start is compared closely.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch

from tests.helpers import engine_config, run_pairs, synthetic_image
from transforms.nst import ImageTooSmallError, NonFiniteLossError, StyleConfig, StyleTransfer, TimeLimitError
from transforms.nst.images import fit_longest_side
from transforms.nst.objective import Objective
from transforms.nst.records import PairFinished, PairTaken, ReadyQueue, RunEnded, StyleRequest, StyleTargets


@pytest.fixture(scope="module")
def engine(weights_file) -> StyleTransfer:
    return StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"),
            weights_family="torchvision",
            image_size=40,
            iterations=10,
            device="cpu",
        ),
        dtype=torch.float64,
    )


def requests(engine: StyleTransfer, optimizer: str) -> list[StyleRequest]:
    """Four pairs that differ in everything a batch lets them differ in."""
    base = engine.config.replace(optimizer=optimizer)
    settings = [
        base,
        base.replace(style_weight=3e6, content_weight=2.0, iterations=6, init="random", seed=3),
        base.replace(tv_weight=5.0, iterations=13, style_layer_weights=(1, 2, 3, 4, 5)),
        base.replace(color_control="luminance", iterations=10, init="style"),
    ]
    styles = [engine.encode_styles([synthetic_image(10 + k)]) for k in range(4)]
    return [
        StyleRequest(synthetic_image(k, 64, 48), styles[k], settings[k], content_name=f"content {k}") for k in range(4)
    ]


def assert_same_records(batched, alone, relative: float = 1e-9) -> None:
    assert [r.iteration for r in batched.history] == [r.iteration for r in alone.history]
    for mine, theirs in zip(batched.history, alone.history, strict=True):
        tolerance = relative * abs(theirs.total)
        for name in ("total", "content", "style", "tv"):
            assert getattr(mine, name) == pytest.approx(getattr(theirs, name), rel=relative, abs=tolerance), (
                mine.iteration,
                name,
            )
        assert mine.rejected == theirs.rejected
    assert batched.chosen_iteration == alone.chosen_iteration
    difference = (
        torch.tensor(list(batched.image.tobytes()), dtype=torch.int16)
        - torch.tensor(list(alone.image.tobytes()), dtype=torch.int16)
    ).abs()
    assert difference.max() <= 1  # the same image, up to a rounding at the 8-bit boundary


@contextlib.contextmanager
def network_calls(engine: StyleTransfer) -> Iterator[list[tuple[int, torch.dtype]]]:
    """(batch size, dtype of the deepest activation) of every forward of ``engine``'s network."""
    calls: list[tuple[int, torch.dtype]] = []
    handle = engine.network.register_forward_hook(
        lambda _, args, out: calls.append((args[0].shape[0], next(reversed(out.values())).dtype))
    )
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_batch_gives_each_pair_its_single_pair_result(engine, optimizer) -> None:
    batch = requests(engine, optimizer)
    seen: dict[int, list[int]] = {k: [] for k in range(len(batch))}
    with network_calls(engine) as calls:
        results = run_pairs(engine, batch, callback=lambda k, record: seen[k].append(record.iteration))
    # The content targets, then the iterations at the full batch of 4: a pair that finishes
    # leaves once nothing waits (the 6-iteration pair after 6 iterations), with either optimizer
    # (each row has its own optimizer state, Adam's moments too).
    assert [n for n, _ in calls].count(4) == 1 + 6
    for k, (request, result) in enumerate(zip(batch, results, strict=True)):
        alone = engine.stylize(request.content, request.style, request.config, content_name=request.content_name)
        assert_same_records(result, alone)
        assert len(result.history) == request.config.iterations + 1
        assert seen[k] == [r.iteration for r in result.history]
    # the pairs really were optimized differently: their own iteration counts and losses
    assert len({len(r.history) for r in results}) == 3


def test_a_failing_pair_drops_out_without_disturbing_the_others(engine) -> None:
    batch = requests(engine, "lbfgs")[:3]
    poisoned = StyleTargets(
        {k: torch.full_like(v, math.nan) for k, v in batch[1].style.grams.items()},
        batch[1].style.size,
        batch[1].style.first_image,
        batch[1].style.network_key,
    )
    tiny = StyleRequest(synthetic_image(7, 200, 4), batch[0].style, batch[0].config, content_name="sliver")
    batch = [
        batch[0],
        StyleRequest(batch[1].content, poisoned, batch[1].config, content_name="poisoned"),
        tiny,
        batch[2],
    ]
    results = run_pairs(engine, batch)
    assert isinstance(results[1], NonFiniteLossError) and "poisoned" in str(results[1])
    assert isinstance(results[2], ImageTooSmallError) and "sliver" in str(results[2])
    for index in (0, 3):
        request = batch[index]
        alone = engine.stylize(request.content, request.style, request.config, content_name=request.content_name)
        assert_same_records(results[index], alone)


def test_pairs_of_other_shapes_run_in_batches_of_their_own(engine) -> None:
    # Another size, optimizer or precision: a batch of its shape, beside the first, each pair
    # still getting exactly what it gets alone.
    batch = requests(engine, "lbfgs")[:2]
    others = [
        StyleRequest(synthetic_image(5, 80, 40), batch[0].style, batch[0].config),
        StyleRequest(batch[1].content, batch[1].style, batch[1].config.replace(optimizer="adam")),
    ]
    with network_calls(engine) as calls:
        results = run_pairs(engine, [*batch, *others], slots=2)
    assert {n for n, _ in calls} == {1, 2}  # the two L-BFGS pairs of one size share theirs
    for request, result in zip([*batch, *others], results, strict=True):
        alone = engine.stylize(request.content, request.style, request.config)
        assert_same_records(result, alone)


def test_in_float32_a_batch_starts_exactly_where_single_pairs_start(weights_file) -> None:
    engine = StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"),
            weights_family="torchvision",
            image_size=40,
            iterations=2,
            device="cpu",
            precision="fp32",
        )
    )
    batch = [StyleRequest(r.content, r.style, r.config.replace(iterations=2)) for r in requests(engine, "lbfgs")]
    results = run_pairs(engine, batch)
    for request, result in zip(batch, results, strict=True):
        alone = engine.stylize(request.content, request.style, request.config)
        for mine, theirs in zip(result.history[:2], alone.history[:2], strict=True):
            assert mine.total == pytest.approx(theirs.total, rel=1e-5)


def test_bf16_keeps_the_targets_the_last_phase_and_the_written_scores_in_fp32(weights_file) -> None:
    engine = StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"),
            weights_family="torchvision",
            image_size=40,
            iterations=10,
            device="cpu",
            precision="bf16",
        )
    )
    with network_calls(engine) as calls:
        targets = engine.encode_styles([synthetic_image(11)])
        assert calls == [(1, torch.float32)]  # style targets: fp32
        calls.clear()
        result = engine.stylize(synthetic_image(1, 64, 48), targets)
    assert result.precision == "bf16" and result.phase_starts == (8,)
    # content targets in fp32; iterations 0-7 in bf16; the last phase (8, 9) in fp32; the
    # written image scored in fp32 (the last iterate and the best one seen)
    assert (
        calls == [(1, torch.float32)] + [(1, torch.bfloat16)] * 8 + [(1, torch.float32)] * 2 + [(1, torch.float32)] * 2
    )
    fp32 = engine.stylize(synthetic_image(1, 64, 48), targets, engine.config.replace(precision="fp32"))
    assert result.history[1].total != fp32.history[1].total  # the precision really changed
    # the first convolution (whose input is pixels) in fp32 even in the bf16 phase; the next in bf16
    first, second = [], []
    engine.network.stack[0].register_forward_hook(lambda _, args, out: first.append(out.dtype))
    engine.network.stack[2].register_forward_hook(lambda _, args, out: second.append(out.dtype))
    engine.stylize(synthetic_image(1, 64, 48), targets, engine.config.replace(iterations=3))
    assert set(first) == {torch.float32} and torch.bfloat16 in second
    # the written image's loss is the fp32 objective's, exactly
    content = engine.to_input(fit_longest_side(synthetic_image(1, 64, 48), 40), "content")
    judge = Objective(engine.network, content, [targets.grams], [engine.config.replace(precision="fp32")])
    written = engine.to_input(result.image, "result")
    assert judge(written)[0, 0].item() == pytest.approx(result.final.total, rel=1e-6)


def test_a_batch_in_mixed_phases_runs_each_pair_at_its_own_precision(engine) -> None:
    # Pairs of one bf16 batch reach their fp32 last phase at different iterations: the batch
    # then runs as two sub-batches put back in order. The float64 engine (which autocast leaves
    # in float64) checks that bookkeeping exactly: each pair's records are what it gets alone.
    batch = [
        StyleRequest(r.content, r.style, r.config.replace(precision="bf16")) for r in requests(engine, "lbfgs")[:3]
    ]
    with network_calls(engine) as calls:
        results = run_pairs(engine, batch)
    assert (2, torch.float64) in calls and (1, torch.float64) in calls  # a split batch
    for request, result in zip(batch, results, strict=True):
        alone = engine.stylize(request.content, request.style, request.config)
        assert_same_records(result, alone)


def test_auto_precision_is_bf16_only_where_the_device_has_it_and_the_pair_suits_it(monkeypatch) -> None:
    from transforms.nst import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_cpu_info", lambda: ("a CPU", frozenset({"avx2", "amx_bf16"})))
    assert precision.resolve_precision(StyleConfig(), cpu) == "bf16"
    assert precision.resolve_precision(StyleConfig(optimizer="adam"), cpu) == "fp32"  # no fp32 last phase
    assert precision.resolve_precision(StyleConfig(), cpu, torch.float64) == "fp32"
    assert precision.resolve_precision(StyleConfig(precision="fp32"), cpu) == "fp32"
    assert "amx_bf16" in precision.describe_device(cpu)
    monkeypatch.setattr(precision, "_cpu_info", lambda: ("an AVX2 CPU", frozenset({"avx2", "fma"})))
    assert precision.resolve_precision(StyleConfig(), cpu) == "fp32"
    assert precision.resolve_precision(StyleConfig(precision="bf16"), cpu) == "bf16"  # forced
    assert "bf16 in hardware: no" in precision.describe_device(cpu)


def test_a_run_refills_each_finished_slot_and_gives_each_pair_its_single_pair_result(engine) -> None:
    # Six pairs through two slots: pairs stop at different iterations (their own counts, or
    # converged early), and each freed slot takes the next pair mid-batch, with fresh L-BFGS
    # state, targets and records: every pair's records are still exactly its single-pair run's.
    base = requests(engine, "lbfgs")
    stream = [
        *base,
        StyleRequest(
            base[0].content, base[1].style, base[0].config.replace(stop_tolerance=0.3, stop_window=1, iterations=12)
        ),
        StyleRequest(base[2].content, base[0].style, base[2].config.replace(stop_tolerance=0.3, stop_window=2)),
    ]
    events: list[tuple[int, int]] = []
    # As the pipeline feeds it: two ready requests to start, then one each time one is taken.
    queue = ReadyQueue(enumerate(stream[:2]))
    waiting = iter(enumerate(stream[2:], start=2))
    results = {}
    for event in engine.run(queue, 2, callback=lambda k, record: events.append((k, record.iteration))):
        if isinstance(event, PairTaken) and (ready := next(waiting, None)) is not None:
            queue.put(*ready)
        elif isinstance(event, PairFinished):
            results[event.key] = event.outcome
        elif isinstance(event, RunEnded):
            use = event.use
    assert sorted(results) == list(range(len(stream))) and not queue.taken
    for index, request in enumerate(stream):
        alone = engine.stylize(request.content, request.style, request.config, content_name=request.content_name)
        assert_same_records(results[index], alone)
        assert results[index].stop_reason == alone.stop_reason
    assert {results[4].stop_reason, results[5].stop_reason} == {"converged"}
    assert len(results[4].history) < 13 and len(results[5].history) < 11
    # the slots really were refilled mid-batch: pair 2 started as soon as pair 1 (6 iterations)
    # finished, while pair 0 (10 iterations) went on beside it
    assert events.index((1, 6)) < events.index((2, 0)) < events.index((0, 7))
    # every row-step advanced a pair (its records, less the final one), of two slots a step
    iterations = sum(len(r.history) - 1 for r in results.values())
    assert use.row_steps == iterations and use.slot_steps == 2 * use.batch_steps
    assert use.batch_steps < iterations  # two pairs a step, most of the time


def test_a_run_fails_a_pair_that_cannot_run_and_goes_on(engine) -> None:
    batch = requests(engine, "lbfgs")
    other_network = StyleRequest(batch[0].content, batch[0].style, batch[0].config.replace(pooling="avg"))
    outcomes = run_pairs(engine, [batch[0], other_network, batch[1]], slots=1)
    assert isinstance(outcomes[1], ValueError) and "another network" in str(outcomes[1])
    assert len(outcomes[2].history) == batch[1].config.iterations + 1


def test_each_pair_of_a_run_has_its_own_time_limit(weights_file, monkeypatch) -> None:
    # A clock that counts its readings (10 "seconds" each): the limit falls after a number of
    # iterations, however fast or loaded the machine is.
    readings = iter(range(0, 10**7, 10))
    monkeypatch.setattr(StyleTransfer, "clock", staticmethod(lambda: float(next(readings))))
    engine = StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"),
            weights_family="torchvision",
            image_size=40,
            iterations=4,
            device="cpu",
        )
    )
    slow, quick = requests(engine, "lbfgs")[:2]
    slow = StyleRequest(slow.content, slow.style, slow.config.replace(iterations=40))
    quick = StyleRequest(quick.content, quick.style, quick.config.replace(iterations=3))
    outcomes = run_pairs(engine, [slow, quick, quick, quick], slots=2, time_limit=150)
    assert isinstance(outcomes[0], TimeLimitError) and "time limit of 150 s" in str(outcomes[0])
    assert all(not isinstance(outcomes[k], Exception) for k in (1, 2, 3))  # each quick pair has its own 150 s


def test_every_scale_is_a_task_and_a_freed_slot_takes_the_next_at_once(weights_file) -> None:
    # Coarse to fine through two slots: a pair's next scale starts from its coarse result as soon
    # as that is done, beside other pairs' scales, and each pair still gets exactly its own
    # result (float64: the batched and the single-pair arithmetic agree to rounding).
    engine = StyleTransfer(
        engine_config(weights_file, image_size=40, iterations=6, scales=((24, 5),)), dtype=torch.float64
    )
    coarse = engine.encode_styles([synthetic_image(10)], size=24)
    fine = engine.encode_styles([synthetic_image(10)])
    configs = [engine.config, engine.config.replace(stop_tolerance=0.3, stop_window=1), engine.config.replace(seed=2)]
    stream = [
        StyleRequest(synthetic_image(k, 64, 48), fine, configs[k % 3], content_name=f"c{k}", coarse_styles=(coarse,))
        for k in range(5)
    ]
    order: list[tuple[int, int, int]] = []  # (pair, scale's width, iteration) as they happen
    widths: dict[int, list[int]] = {}

    def seen(key: int, record) -> None:
        if record.iteration == 0:
            widths.setdefault(key, []).append(len(order))
        order.append((key, len(widths[key]), record.iteration))

    results = run_pairs(engine, stream, slots=2, callback=seen)
    for request, result in zip(stream, results, strict=True):
        alone = engine.stylize(request.content, request.style, request.config, coarse_styles=request.coarse_styles)
        assert_same_records(result, alone)
        assert_same_records(result.coarse[0], alone.coarse[0])
    # the fine scale of pair 0 ran while other pairs were still at their coarse scale
    first_fine = next(i for i, (key, scale, _) in enumerate(order) if key == 0 and scale == 2)
    assert any(scale == 1 for _, scale, _ in order[first_fine:])
