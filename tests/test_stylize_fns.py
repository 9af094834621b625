"""The stylize DoFns driven directly, with a small real engine (seeded random VGG19 at 32 px)
behind the real EngineHandler.

What the end-to-end tests see only as counts: which stage each failure is recorded at, that a
failing pair leaves the rest of its batch alone, and that the style-target cache is bounded and
reused. Each DoFn runs as a worker runs it: ``process`` on real files, the model loaded through
the handler it was given.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apache_beam import pvalue
from PIL import Image

from tests.helpers import synthetic_image
from transforms import claims, storage
from transforms.handler import STYLE_CACHE_SIZE, EngineHandler
from transforms.limits import Limits
from transforms.manifest import validate_rows
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.images import fitted_size
from transforms.nst.memory import estimated_style_bytes, largest_fitting_size
from transforms.nst.records import IterationRecord, PairFinished, PairTaken, RunEnded, SlotUse, StyleResult
from transforms.records import Failure, Pair, Stage
from transforms.stylize import Prepared, PreparePairsFn, RunSettings, StylizeBatchesFn


@dataclasses.dataclass(frozen=True)
class Job:
    """What the DoFns are built from: the settings and the engine handler."""

    settings: RunSettings
    handler: EngineHandler

    @property
    def output(self) -> Path:
        return Path(self.settings.output)

    def stylize_fn(self) -> StylizeBatchesFn:
        return StylizeBatchesFn(self.settings, self.handler)


def job_for(
    weights_file,
    output: Path,
    limits: Limits | None = None,
    batch_size: int | None = None,
    style_scale: float = 1.0,
    **changes: Any,
) -> Job:
    defaults = StyleConfig(
        weights=weights_file("vgg19"),
        weights_family="torchvision",
        image_size=32,
        iterations=2,
        device="cpu",
        style_scale=style_scale,
    )
    return Job(
        RunSettings(str(output), run_id="test-run", **changes),
        EngineHandler(defaults, limits or Limits(), batch_size),
    )


def pairs(job: Job, folder: Path, rows: list[dict[str, str]]) -> list[Pair]:
    """Pairs as the manifest makes them (their ids and resolved configs)."""
    handler = job.handler
    parsed = list(
        validate_rows(
            [(f"m.csv line {i + 2}", row) for i, row in enumerate(rows)], str(folder), handler.defaults, handler.limits
        )
    )
    assert all(isinstance(p, Pair) for p in parsed), parsed
    return parsed


def sorted_outputs(outputs: list[Any]) -> dict[str, list[Any]]:
    """A DoFn's outputs by tag ("main" for the untagged)."""
    by_tag: dict[str, list[Any]] = defaultdict(list)
    for item in outputs:
        if isinstance(item, pvalue.TaggedOutput):
            by_tag[item.tag].append(item.value)
        else:
            by_tag["main"].append(item)
    return by_tag


def prepare(job: Job, items: list[Pair]) -> tuple[list[Prepared], dict[str, list[Any]]]:
    fn = PreparePairsFn(job.settings, job.handler)
    by_tag = sorted_outputs([out for pair in items for out in fn.process(pair)])
    return [prepared for _, prepared in by_tag.pop("main", [])], by_tag


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in {"cat.png": 1, "dog.png": 2, "waves.png": 3, "tiles.png": 4}.items():
        synthetic_image(seed).save(folder / name)
    synthetic_image(5, width=64, height=3).save(folder / "sliver.png")  # 32x2 at image_size 32: too small
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_each_failure_is_recorded_at_its_stage_naming_its_input(weights_file, images, tmp_path, monkeypatch) -> None:
    job = job_for(weights_file, tmp_path / "out", limits=Limits(device_memory_gb=0.01))
    good, missing, sliver, broken_style, large, checked = pairs(
        job,
        images,
        [
            {"id": "good", "content": "cat.png", "style": "waves.png"},
            {"id": "missing", "content": "nowhere.png", "style": "waves.png"},
            {"id": "sliver", "content": "sliver.png", "style": "waves.png"},
            {"id": "broken-style", "content": "dog.png", "style": "broken.png"},
            {"id": "large", "content": "cat.png", "style": "tiles.png", "image_size": "4096"},
            {"id": "checked", "content": "dog.png", "style": "tiles.png"},
        ],
    )

    # Prepare: an input that is not there fails at read; a store that refuses the skip check, at check.
    real_exists = storage.exists

    def refusing_exists(location: str) -> bool:
        if "checked" in location:
            raise PermissionError(f"{location}: the store refused the request")
        return real_exists(location)

    monkeypatch.setattr(storage, "exists", refusing_exists)
    ready, by_tag = prepare(job, [good, missing, sliver, broken_style, large, checked])
    monkeypatch.undo()
    failures = {f.id: f for f in by_tag["failures"]}
    assert set(failures) == {"missing", "checked", "sliver"} and not by_tag.get("skipped")
    assert failures["missing"].stage == Stage.READ and "nowhere.png: no such file" in failures["missing"].error
    assert (
        failures["checked"].stage == Stage.CHECK
        and "images/checked.png: the store refused" in failures["checked"].error
    )
    # Too small for the network, from the header alone: nothing decoded, no style encoded.
    assert failures["sliver"].stage == Stage.STYLIZE and "ImageTooSmallError" in failures["sliver"].error
    assert str(images / "sliver.png") in failures["sliver"].error

    # The batch: an unreadable style at read; too large for the device's memory (4096 px in
    # 10 MiB: not even tiles fit), at stylize. Each record names the input.
    by_tag = sorted_outputs(list(job.stylize_fn().process(("key", ready))))
    failures = {f.id: f for f in by_tag["failures"]}
    assert set(failures) == {"broken-style", "large"}
    assert (
        failures["broken-style"].stage == Stage.READ
        and "broken.png: not a readable image" in failures["broken-style"].error
    )
    assert failures["large"].stage == Stage.STYLIZE and "PairTooLargeError" in failures["large"].error
    assert (
        str(images / "cat.png") in failures["large"].error
        and "the largest image_size that fits" in failures["large"].error
    )
    for failure in failures.values():
        assert isinstance(failure, Failure) and failure.source.startswith("m.csv line ")
        assert failure.to_dict()["stage"] == str(failure.stage)  # JSON holds the plain name
    assert [(o.id, o.status) for o in by_tag["main"]] == [("good", "succeeded")]
    assert {p.name for p in (job.output / "images").iterdir()} == {"good.png"}


def test_a_style_too_large_to_encode_is_refused_before_it_is_encoded(
    weights_file, images, tmp_path, monkeypatch
) -> None:
    # Style targets at 8 x 32 = 256 px, in 10 MiB: every 32 px result fits, a 256x16 strip of a
    # style fits (3.3 MiB), a 256x192 one (40 MiB) does not, and must not reach the network.
    job = job_for(weights_file, tmp_path / "out", limits=Limits(device_memory_gb=0.01), style_scale=8.0)
    synthetic_image(6, width=512, height=32).save(images / "strip.png")
    narrow, wide = pairs(
        job,
        images,
        [
            {"id": "narrow", "content": "cat.png", "style": "strip.png"},
            {"id": "wide", "content": "dog.png", "style": "tiles.png"},
        ],
    )
    encoded: list[tuple[int, int]] = []
    real_encode = StyleTransfer.encode_styles

    def recording_encode(self, styles, *args, **kwargs):
        encoded.extend(image.size for image in styles)
        return real_encode(self, styles, *args, **kwargs)

    monkeypatch.setattr(StyleTransfer, "encode_styles", recording_encode)
    ready, _ = prepare(job, [narrow, wide])
    by_tag = sorted_outputs(list(job.stylize_fn().process(("key", ready))))
    (failure,) = by_tag["failures"]
    assert failure.id == "wide" and failure.stage == Stage.STYLIZE
    budget = int(0.01 * 2**30)
    fits = largest_fitting_size(estimated_style_bytes, (64, 48), budget)
    scale = int(fits / 32 * 100) / 100
    assert failure.error == (
        f"PairTooLargeError: {images}/tiles.png: encoding this style at 256x192 px (image_size 32 x style_scale 8) "
        f"needs about {estimated_style_bytes((256, 192)) / 2**20:.1f} MiB on cpu, more than the 10.2 MiB there; "
        f"a style_scale of {scale:g} or less fits (docs/large-prints.md: memory)"
    )
    # The scale named fits, and is the largest that does, to its two decimals.
    assert estimated_style_bytes(fitted_size(64, 48, round(32 * scale))) <= budget
    assert estimated_style_bytes(fitted_size(64, 48, fits + 1)) > budget and fits - 0.32 <= 32 * scale <= fits
    assert encoded == [(256, 16)]  # the narrow style, read at the size it is used at; the wide one never encoded
    assert [outcome.id for outcome in by_tag["main"]] == ["narrow"]


def test_a_failing_pair_does_not_stop_its_batch(weights_file, images, tmp_path) -> None:
    job = job_for(weights_file, tmp_path / "out", batch_size=4)
    items = pairs(
        job,
        images,
        [
            {"id": "sliver", "content": "sliver.png", "style": "waves.png"},
            {"id": "cat", "content": "cat.png", "style": "waves.png"},
            {"id": "broken", "content": "dog.png", "style": "broken.png"},
            {"id": "dog", "content": "dog.png", "style": "tiles.png"},
        ],
    )
    ready, prepared = prepare(job, items)
    assert [f.id for f in prepared["failures"]] == ["sliver"]  # too small: known from its header
    by_tag = sorted_outputs(list(job.stylize_fn().process(("key", ready))))
    assert sorted(f.id for f in by_tag["failures"]) == ["broken"]
    assert sorted(outcome.id for outcome in by_tag["main"]) == ["cat", "dog"]
    for pair_id in ("cat", "dog"):
        log = json.loads((job.output / "logs" / f"{pair_id}.json").read_text())
        assert log["batch_size"] == 2  # the broken style failed alone, before the batch took it
        assert Image.open(job.output / "images" / f"{pair_id}.png").size == (32, 24)
        assert log["final"]["total"] < log["history"]["total"][0]
    assert not (job.output / "claims").exists() or not any((job.output / "claims").iterdir())  # every claim released


def test_style_targets_are_cached_bounded_and_reused(weights_file, images, tmp_path, monkeypatch) -> None:
    styles = [f"style{index}.png" for index in range(STYLE_CACHE_SIZE + 2)]
    for index, name in enumerate(styles):
        synthetic_image(100 + index, 40, 40).save(images / name)
    encoded: list[tuple[str, ...]] = []
    real_encode = StyleTransfer.encode_styles

    def counting_encode(self, images_, weights=None, size=None, names=None, colors_of=None):
        encoded.append(tuple(names))
        return real_encode(self, images_, weights, size, names, colors_of)

    monkeypatch.setattr(StyleTransfer, "encode_styles", counting_encode)
    job = job_for(weights_file, tmp_path / "out", overwrite=True)
    fn = job.stylize_fn()  # one worker's DoFn: its handler's cache lives as long as it does

    def run(names: list[str]) -> None:
        rows = [{"id": f"p{i}", "content": "cat.png", "style": name, "iterations": "1"} for i, name in enumerate(names)]
        ready, _ = prepare(job, pairs(job, images, rows))
        by_tag = sorted_outputs(list(fn.process(("key", ready))))
        assert len(by_tag["main"]) == len(names) and not by_tag.get("failures")

    run(styles[:2] * 3)  # three pairs of each style: encoded once each
    assert [Path(n[0]).name for n in encoded] == styles[:2]
    run(styles)  # the rest: each once; now the cache holds the last STYLE_CACHE_SIZE
    assert len(encoded) == len(styles)
    encoded.clear()
    run(styles[2:])  # all still cached: nothing is encoded again
    assert encoded == []
    run(styles[:1])  # the oldest was evicted: the cache is bounded
    assert [Path(n[0]).name for n in encoded] == styles[:1]


class FakeEngine:
    """What a fake handler loads (Beam's Shared needs an object it can hold a weak reference to)."""


class FakeInputs:
    """A pair's inputs without reading any: its request is its id."""

    def content_size(self, pair: Pair) -> tuple[int, int]:
        return (8, 6)

    def resolve(self, pair: Pair, content_size: tuple[int, int]) -> Pair:
        return pair

    def batch_key(self, pair: Pair, content_size: tuple[int, int]) -> tuple[str, tuple[int, int]]:
        return "one key", content_size

    def request(self, engine: FakeEngine, pair: Pair, placement: Any) -> str:
        if pair.id == "unreadable":
            raise FileNotFoundError(f"{pair.content}: no such file")
        return pair.id


class FakeHandler:
    """The handler's protocol (stylize.Handler) without torch: results made of the engine's
    torch-free records, so that the DoFn's own work (claims, batches, writes, failure stages,
    outcomes) is what is tested."""

    group_pairs = 128
    share_tag = "fake"

    def __init__(self, batch_size: int = 2) -> None:
        self.size = batch_size
        self.inputs = FakeInputs()
        self.batches: list[list[str]] = []

    def load(self) -> FakeEngine:
        return FakeEngine()

    def place(self, engine: FakeEngine, pair: Pair, output_size: tuple[int, int]) -> Any:
        refusal = MemoryError(f"{pair.content}: too large") if pair.id == "huge" else None
        return SimpleNamespace(whole=refusal is None, tiling=None, refusal=refusal, slots=self.size, iterations=2)

    def run(self, engine: FakeEngine, queue: Any, slots: int, on_record: Any) -> Any:
        # Like the engine's run: up to `slots` ready requests taken, each said (the DoFn then
        # puts the next), then one more as each pair finishes.
        batch = []
        self.batches.append([])

        def take() -> Any:
            taken = queue.take()
            if taken is not None:
                batch.append(taken)
                self.batches[-1].append(taken[0])
                return PairTaken(taken[0])
            return None

        for _ in range(slots):
            if (event := take()) is not None:
                yield event
        for index in itertools.count():
            if not batch:
                break
            pair_id, _ = batch.pop(0)
            first = IterationRecord(0, 2.0, 1.0, 1.0, 0.0, {"relu1_1": 1.0}, 0.1)
            final = dataclasses.replace(first, iteration=1, total=1.0)
            on_record(pair_id, first)
            image = Image.new("RGB", (8, 6), (index * 40, 0, 0))
            queue.done(pair_id)
            outcome = (
                ValueError(f"{pair_id}: diverged")
                if pair_id == "diverges"
                else StyleResult(image, [first, final], final, 1, "fake", 0.2)
            )
            yield PairFinished(pair_id, outcome)
            if (event := take()) is not None:
                yield event
        yield RunEnded(SlotUse(3, 6, 5))


def test_the_dofns_batch_claim_write_and_record_each_stage_with_a_fake_handler(tmp_path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a.png", "b.png", "s.png"):
        (folder / name).write_bytes(name.encode())
    ids = ["ok1", "ok2", "diverges", "unreadable", "huge", "unwritable", "elsewhere"]
    config = StyleConfig(weights="random")
    items = [
        Pair(i, str(folder / "a.png"), (str(folder / "s.png"),), config, source=f"m.csv line {n + 2}", row={"id": i})
        for n, i in enumerate(ids)
    ]
    settings = RunSettings(str(out), run_id="this-run")
    handler = FakeHandler(batch_size=2)
    (out / "images" / "unwritable.png").mkdir(parents=True)  # a folder where the image goes
    claims.acquire(str(out), "elsewhere", "another-run")  # held by a live process of another run

    prepare_fn = PreparePairsFn(settings, handler)
    ready = [prepared for pair in items for _, prepared in prepare_fn.process(pair)]
    assert [p.output_size for p in ready] == [(8, 6)] * len(ids)
    by_tag = sorted_outputs(list(StylizeBatchesFn(settings, handler).process(("one key", ready))))

    assert sorted(o.id for o in by_tag["main"]) == ["ok1", "ok2"] and {o.status for o in by_tag["main"]} == {
        "succeeded"
    }
    assert [(o.id, o.status) for o in by_tag["skipped"]] == [("elsewhere", "claimed")]
    stages = {f.id: (f.stage, f.row) for f in by_tag["failures"]}
    assert stages == {
        "diverges": (Stage.STYLIZE, {"id": "diverges"}),
        "unreadable": (Stage.READ, {"id": "unreadable"}),
        "huge": (Stage.STYLIZE, {"id": "huge"}),
        "unwritable": (Stage.WRITE, {"id": "unwritable"}),
    }
    write_error = next(f.error for f in by_tag["failures"] if f.id == "unwritable")
    assert "images/unwritable.png" in write_error
    # Two slots, and each finished pair's slot taken by the next pair that got this far (the
    # refused, unreadable and claimed ones never reach the engine).
    assert handler.batches == [["ok1", "ok2", "diverges", "unwritable"]]
    assert by_tag["slot_use"] == [SlotUse(3, 6, 5)]  # how full the run's slots were, for the summary
    for pair_id in ("ok1", "ok2"):
        log = json.loads((out / "logs" / f"{pair_id}.json").read_text())
        assert log["image"]["bytes"] == (out / "images" / f"{pair_id}.png").stat().st_size and log["batch_size"] == 2
    # Every claim of this run is released; the other run's is left alone.
    assert sorted(p.name for p in (out / "claims").iterdir()) == ["elsewhere.json"]


def test_running_out_of_gpu_memory_halves_the_slots_and_loses_no_pair(weights_file) -> None:
    # torch.cuda.OutOfMemoryError cannot be caused on a CPU: the network raises it for any batch
    # of more than two images, as a GPU does when a batch outgrows it. The batch of four goes
    # back to waiting, runs two at a time, and every pair gets exactly its own result.
    import torch

    from tests.helpers import run_pairs, synthetic_image
    from transforms.nst import StyleRequest, StyleTransfer

    engine = StyleTransfer(
        StyleConfig(
            weights=weights_file("vgg19"), weights_family="torchvision", image_size=32, iterations=3, device="cpu"
        ),
        dtype=torch.float64,  # batched and single-pair arithmetic agree to rounding
    )

    def outgrown(_: Any, args: Any) -> None:
        if args[0].shape[0] > 2 and torch.is_grad_enabled():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    targets = engine.encode_styles([synthetic_image(10)])
    requests = [StyleRequest(synthetic_image(k, 40, 30), targets, content_name=f"c{k}") for k in range(5)]
    handle = engine.network.register_forward_pre_hook(outgrown)
    try:
        results = run_pairs(engine, requests, slots=4)
    finally:
        handle.remove()
    for request, result in zip(requests, results, strict=True):
        assert result.final.total == pytest.approx(engine.stylize(request.content, targets).final.total, rel=1e-9)
    # a pair that runs out of memory alone fails with that error, and the others go on
    handle = engine.network.register_forward_pre_hook(
        lambda _, args: (
            (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory"))
            if torch.is_grad_enabled()
            else None
        )
    )
    try:
        (alone,) = run_pairs(engine, requests[:1], slots=1)
    finally:
        handle.remove()
    assert isinstance(alone, torch.cuda.OutOfMemoryError)


def test_a_thin_content_s_style_is_encoded_at_the_size_of_its_area_not_its_longest_side() -> None:
    # A 4000x16 content at its own size encoded its style at 4000 px (13.2 GB, 160 s, while the
    # estimate said under a minute): memory follows the content's area (#38, item 6).
    from transforms.handler import PairInputs

    inputs = PairInputs(Limits())
    config = StyleConfig(weights="random", image_size=0)
    thin = Pair("thin", "/d/thin.png", ("/d/s.png",), config)
    resolved = inputs.resolve(thin, (4000, 16)).config
    assert resolved.image_size == 4000 and resolved.style_size == 512  # twice sqrt(4000 * 16), or 512
    wider = inputs.resolve(Pair("wider", "/d/w.png", ("/d/s.png",), config), (4096, 64)).config
    assert wider.style_size == 1024  # twice sqrt(4096 * 64)
    tall = inputs.resolve(Pair("tall", "/d/t.png", ("/d/s.png",), config), (64, 900)).config
    assert tall.style_size == 512  # either way round: twice its area's side is 480 px, under 512
    photo = inputs.resolve(Pair("photo", "/d/p.png", ("/d/s.png",), config), (640, 480)).config
    assert photo.style_size == 640 and photo.style_scale == 1.0  # a usual picture is untouched
    larger = Pair("larger", "/d/p.png", ("/d/s.png",), config.replace(style_scale=2.0))
    assert inputs.resolve(larger, (640, 480)).config.style_size == 2 * 640  # its style_scale too
    assert inputs.resolve(larger, (1600, 16)).config.style_size == 2 * 320  # scaled as the rule says
