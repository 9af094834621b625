"""Stylizing a dataset: a tree in, the same tree out, N seeded styles per content, the content's
own size and format, an index for data loaders, a bounded report, and a plan before the spend."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline.main import run
from tests.helpers import synthetic_image
from transforms.handler import EngineHandler
from transforms.limits import Limits
from transforms.manifest import chosen_styles, glob_rows, validate_rows
from transforms.nst import StyleConfig
from transforms.nst.records import SlotUse
from transforms.records import Failure, Outcome, Stage
from transforms.report import FAILURES_SHOWN
from transforms.results import WriteResults
from transforms.stylize import RunSettings
from transforms.tally import REPORT_FIRST, REPORT_RANDOM, REPORT_WORST

# Two classes holding the same file names, and a nested folder; sizes differ per image.
TREE = {
    "train/n01/x_1.png": (40, 30),
    "train/n01/x_2.png": (36, 44),
    "train/n02/x_1.png": (44, 33),
    "train/n02/deep/er/x_3.png": (38, 38),
}
STYLES = ("s1.png", "s2.png", "s3.png", "s4.png")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    for index, (name, (width, height)) in enumerate(TREE.items()):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(index + 1, width, height).save(tmp_path / "in" / name)
    (tmp_path / "styles").mkdir()
    for index, name in enumerate(STYLES):
        synthetic_image(20 + index, 40, 40).save(tmp_path / "styles" / name)
    return tmp_path


def dataset_args(weights: str, root: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--runner=FnApiRunner",
        f"--output={output}",
        f"--weights={weights}",
        "--weights_family=torchvision",
        "--iterations=1",
        f"--contents={root}/in/train/**/*.png",
        f"--styles={root}/styles/*.png",
        "--styles_per_content=2",
        "--output_layout=tree",
        "--image_size=0",
        *extra,
    ]


def written(output: Path, folder: str = "images") -> set[str]:
    return {p.relative_to(output / folder).as_posix() for p in (output / folder).rglob("*") if p.is_file()}


def index_of(output: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((output / "index").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_tree_comes_back_as_a_tree_at_each_contents_own_size(dataset, weights_file, capsys) -> None:
    out = dataset / "out"
    assert run(dataset_args(weights_file("vgg19"), dataset, out)) == 0
    # An estimate before the first pair, from the contents' headers (here all four are sampled).
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("8 pairs x 1 iterations at their own sizes (median 44x33 of 4 sampled) on cpu: ")
    images = written(out)
    assert len(images) == len(TREE) * 2
    for name, size in TREE.items():
        folder, stem = name.removeprefix("train/").rsplit("/", 1)
        mine = sorted(i for i in images if i.startswith(f"{folder}/{stem.removesuffix('.png')}__"))
        assert len(mine) == 2, (name, images)  # two distinct styles, in the content's own folder
        for image in mine:
            assert Image.open(out / "images" / image).size == size  # the content's exact size
            assert (out / "logs" / image.replace(".png", ".json")).is_file()
    # n01/x_1 and n02/x_1 share a file name and never collide: the class folder is kept.
    assert any(i.startswith("n01/x_1__") for i in images) and any(i.startswith("n02/x_1__") for i in images)
    # The index lists exactly the written pairs, with paths below OUTPUT and their sizes.
    index = index_of(out)
    assert sorted(entry["image"] for entry in index) == sorted(f"images/{i}" for i in images)
    for entry in index:
        assert tuple(entry["size"]) == Image.open(out / entry["image"]).size and entry["final_loss"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == len(index) == summary["index"]["images"]
    assert all(shard.startswith("index/") for shard in summary["index"]["shards"])


def test_the_styles_drawn_depend_only_on_the_seed_and_the_content(dataset, weights_file) -> None:
    # Another runner and worker count, and a rerun into another folder: the same pairs.
    one, two, other_seed = dataset / "one", dataset / "two", dataset / "three"
    assert run(dataset_args(weights_file("vgg19"), dataset, one)) == 0
    assert (
        run(
            dataset_args(
                weights_file("vgg19"),
                dataset,
                two,
                "--runner=DirectRunner",
                "--direct_num_workers=2",
                "--direct_running_mode=multi_threading",
            )[1:]
        )
        == 0
    )
    assert written(one) == written(two)
    assert run(dataset_args(weights_file("vgg19"), dataset, other_seed, "--seed=7")) == 0
    assert written(other_seed) != written(one)
    # The choice itself: distinct styles, stable, and spread over the set across contents.
    styles = [f"s{i}.png" for i in range(10)]
    picks = {f"c{n}.png": chosen_styles(f"c{n}.png", styles, 3, seed=0) for n in range(200)}
    assert all(len(set(p)) == 3 for p in picks.values())
    assert picks == {name: chosen_styles(name, list(reversed(styles)), 3, seed=0) for name in picks}
    assert {s for p in picks.values() for s in p} == set(styles)
    assert sum(chosen_styles(n, styles, 3, seed=1) != p for n, p in picks.items()) > 150


def test_too_many_styles_per_content_is_refused_before_anything_runs(dataset, weights_file, capsys) -> None:
    args = dataset_args(weights_file("vgg19"), dataset, dataset / "out", "--styles_per_content=5")
    assert run([a for a in args if a != "--styles_per_content=2"]) == 2
    error = capsys.readouterr().err
    assert "--styles_per_content 5: --styles" in error and "matches only 4 files" in error


def test_jpeg_and_webp_outputs_are_resumed_and_repaired(dataset, weights_file) -> None:
    out = dataset / "out"
    args = dataset_args(weights_file("vgg19"), dataset, out, "--output_format=jpeg", "--output_quality=80")
    assert run(args) == 0
    images = written(out)
    assert images and all(i.endswith(".jpg") for i in images)
    first = sorted(images)[0]
    assert Image.open(out / "images" / first).format == "JPEG"
    damaged = out / "images" / first
    damaged.write_bytes(damaged.read_bytes()[:50])  # cut short
    assert run(args) == 0
    counts = json.loads((out / "summary.json").read_text())["counts"]
    assert counts["repaired"] == 1 and counts["succeeded"] == 1 and counts["skipped"] == len(images) - 1
    # Another format, or another quality, is other work: redone, not skipped; then resumed.
    webp = [*args[:-2], "--output_format=webp", "--output_quality=80"]
    assert run(webp) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == len(images)
    assert all(Image.open(out / "images" / i.replace(".jpg", ".webp")).format == "WEBP" for i in images)
    assert run(webp) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == len(images)


def test_a_thinned_log_keeps_the_first_the_phases_and_the_last(dataset, weights_file) -> None:
    out = dataset / "out"
    assert (
        run(
            dataset_args(
                weights_file("vgg19"), dataset, out, "--iterations=25", "--log_every=10", "--styles_per_content=1"
            )
        )
        == 0
    )
    log = json.loads(next((out / "logs").rglob("*.json")).read_text())
    # 0, 10, 20; the in-range restart at 20 (25 - 5) and the one before it; the written image, 25
    assert log["history"]["iteration"] == [0, 10, 19, 20, 25] and log["history_every"] == 10
    assert log["history"]["total"][-1] == log["final"]["total"] and log["log_format"] == 2


def test_a_dry_run_plans_without_a_model_or_an_image(dataset, weights_file, monkeypatch, capsys) -> None:
    def no_model(self) -> None:
        raise AssertionError("a dry run loaded the model")

    monkeypatch.setattr(EngineHandler, "load", no_model)
    out = dataset / "out"
    assert run(dataset_args(weights_file("vgg19"), dataset, out, "--dry_run")) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["pairs"] == {"to_do": len(TREE) * 2, "skipped": 0, "failed": 0}
    assert plan["sizes"] == {"40x30": 2, "36x44": 2, "44x33": 2, "38x38": 2} and plan["iterations"] == len(TREE) * 2
    assert all(hours > 0 for hours in plan["device_hours"].values())
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]  # no image, no log, no summary
    assert "plan: 8 pairs to do, 0 already done" in capsys.readouterr().out


def test_a_report_over_thousands_of_pairs_stays_bounded_and_counts_every_failure(tmp_path) -> None:
    # WriteResults alone, over 3,000 finished pairs (a tiny log and image each) and 450 failures.
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "logs").mkdir()
    picture = tmp_path / "p.png"
    synthetic_image(1, 32, 24).save(picture)
    outcomes = []
    for n in range(3000):
        pair_id = f"p{n:04d}"
        (out / "images" / f"{pair_id}.png").write_bytes(picture.read_bytes())
        log = {
            "inputs": {"content": str(picture), "styles": [str(picture)]},
            "history": {"iteration": [0, 1], "total": [2.0, 1.0]},
            "final": {"total": 1.0 + n},
            "seconds": 0.5,
        }
        (out / "logs" / f"{pair_id}.json").write_text(json.dumps(log))
        outcomes.append(Outcome(pair_id, "succeeded", 0.5 + n / 1000, False, 1.0 + n, 1, {"id": pair_id}))
    failures = [Failure(Stage.READ, f"FileNotFoundError: f{n}", "m.csv", f"f{n}") for n in range(450)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = {
            "outcomes": p | "Outcomes" >> beam.Create(outcomes),
            "failures": (p | "Failures" >> beam.Create(failures),),
            "slot_use": p | "SlotUse" >> beam.Create([SlotUse(10, 40, 37), SlotUse(5, 20, 20)]),
        } | WriteResults(RunSettings(str(out), run_id="run", expected_pairs=3000), 0.0, {}, Limits())
    page = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < 5 * 2**20
    # the runs' slot use, added up: 57 of 60 slot steps advanced a pair
    assert json.loads((out / "summary.json").read_text())["slots"] == {
        "batch_steps": 15,
        "slot_steps": 60,
        "row_steps": 57,
        "busy": 0.95,
    }
    assert "slots busy 95% (57 pair iterations in 15 batch steps of 4 slots)" in page
    shown = page.count('<tr id="p')
    assert REPORT_RANDOM <= shown <= REPORT_FIRST + REPORT_WORST + REPORT_RANDOM
    assert 'id="p0000"' in page and 'id="p2999"' in page  # the first, and the worst (highest loss)
    assert "Failures: 450" in page and f"and {450 - FAILURES_SHOWN} more failures" in page
    assert page.count('class="failed"') == FAILURES_SHOWN
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 3000 and summary["counts"]["failed"] == 450
    assert (
        summary["seconds_per_pair"]["max"] == pytest.approx(3.499)
        and summary["seconds_per_pair"]["sampled_pairs"] == 3000
    )
    assert len(index_of(out)) == 3000


def test_the_portable_runner_runs_the_job(dataset, weights_file) -> None:
    # Beam's portable path (what Dataflow Runner v2, Flink and Spark take), with an embedded job server.
    out = dataset / "out"
    args = dataset_args(weights_file("vgg19"), dataset, out, "--styles_per_content=1")
    args = [a for a in args if not a.startswith("--runner")] + [
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=LOOPBACK",
    ]
    assert run(args) == 0
    assert len(written(out)) == len(TREE) and len(index_of(out)) == len(TREE)


def test_the_plan_says_device_time_as_people_read_it() -> None:
    from transforms.plan import describe

    plan = {
        "pairs": {"to_do": 8, "skipped": 0, "failed": 0},
        "iterations": 8,
        "batches": 8,
        "batch_groups": 4,
        "sizes": {"40x30": 8},
        "distinct_sizes": 1,
        "largest_pair_gib": 0.01,
        "tiled_pairs": 0,
        "device_hours": {"cpu": 0.00216, "gpu": 0.2, "big gpu": 3.44, "farm": 1234.5},
    }
    assert describe(plan).splitlines()[-1] == "  estimated 8 s on cpu, 12 m on gpu, 3.4 h on big gpu, 1,234 h on farm"


def test_styles_that_vanish_after_pre_flight_fail_each_contents_row_not_the_job() -> None:
    # Pre-flight saw two styles for --styles_per_content 2; by the time the globs are expanded one
    # is gone. Each content's row fails with the reason, and the job goes on (it used to raise
    # "Sample larger than population" and stop the job).
    rows = glob_rows(["data/a/x.jpg", "data/b/y.jpg"], ["art/s1.jpg"], "data", 2, 0)
    results = list(validate_rows(rows, ".", StyleConfig(weights="random"), Limits()))
    assert [type(r) for r in results] == [Failure, Failure]
    assert [r.source for r in results] == ["data/a/x.jpg", "data/b/y.jpg"]
    assert all("--styles matches 1 files now, fewer than --styles_per_content 2" in r.error for r in results)
    # Enough styles: a row per chosen style, as before.
    assert len(glob_rows(["data/a/x.jpg"], ["art/s1.jpg", "art/s2.jpg"], "data", 2, 0)) == 2
