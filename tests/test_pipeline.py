"""The job end to end on Beam's DirectRunner, with real files and seeded random VGG weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.main import run
from tests.helpers import job_args, output_mtimes, synthetic_image, write_images
from transforms.outputs import history_records


@pytest.fixture
def three_pairs(tmp_path: Path) -> Path:
    write_images(tmp_path / "in" / "photos", {"cat.png": 1, "dog.png": 2})
    write_images(tmp_path / "in" / "art", {"waves.png": 3, "tiles.png": 4})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text(
        "id,content,style,style_weights\n"
        "cat-waves,photos/cat.png,art/waves.png,\n"
        ",photos/dog.png,art/tiles.png,\n"
        ",photos/cat.png,art/waves.png|art/tiles.png,2|1\n"
    )
    return manifest


def test_three_pairs_then_rerun_skips_then_overwrite_redoes(three_pairs, weights_file, tmp_path) -> None:
    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={three_pairs}")
    assert run(args) == 0

    ids = ["cat-waves", "dog__tiles", "cat__waves+tiles"]
    for pair_id in ids:
        image = Image.open(out / "images" / f"{pair_id}.png")
        assert image.size == (48, 36)
        log = json.loads((out / "logs" / f"{pair_id}.json").read_text())
        # iterations 0..5, then the written image (iteration 6), which is also "final"
        history = history_records(log["history"])
        assert log["id"] == pair_id and [r["iteration"] for r in history] == list(range(7))
        assert history[-1]["total"] == log["final"]["total"] and log["chosen_iteration"] in range(7)
        assert log["final"]["total"] < history[0]["total"]
        assert log["weights_family"] == "torchvision" and log["preprocessing"]["pixel_scale"] == 1.0
        assert set(history[0]) >= {"iteration", "total", "content", "style", "tv", "seconds"}
        assert log["config"]["iterations"] == 6 and log["weights"] == weights_file("vgg19")
        assert log["versions"]["torch"] and log["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
        assert log["stopped"] == "iterations" and log["precision"] in ("fp32", "bf16")
    blended = json.loads((out / "logs" / "cat__waves+tiles.json").read_text())
    assert blended["inputs"]["style_weights"] == [2.0, 1.0]
    assert blended["inputs"]["styles"][1].endswith("art/tiles.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {
        "succeeded": 3,
        "skipped": 0,
        "failed": 0,
        "claimed_elsewhere": 0,
        "repaired": 0,
        "total": 3,
    }
    assert summary["failures_file"] is None and summary["wall_seconds"] > 0
    assert 0 < summary["seconds_per_pair"]["median"] <= summary["seconds_per_pair"]["max"]

    first = output_mtimes(out)
    assert run(args) == 0
    second = output_mtimes(out)
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == 3
    for run_file in ("summary.json", "report.html", "contact_sheet.png", "index.json"):  # the latest run's
        del first[run_file], second[run_file]
    # The index is rewritten whole by each run: the rerun's shard replaces the first run's.
    first_shards, second_shards = ({p for p in listing if p.startswith("index/")} for listing in (first, second))
    assert len(first_shards) == len(second_shards) == 1 and first_shards != second_shards
    for listing, shards in ((first, first_shards), (second, second_shards)):
        for shard in shards:
            del listing[shard]
    added = {path for path in second if path not in first}
    assert len(added) == 3 and all(path.startswith("runs/") for path in added)  # the rerun's own record
    assert {path: second[path] for path in first} == first, "a rerun must rewrite no pair's outputs"

    assert run([*args, "--overwrite"]) == 0
    third = output_mtimes(out)
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == 3
    assert all(third[f"images/{i}.png"] > first[f"images/{i}.png"] for i in ids)

    # A changed configuration is different work: the pairs are redone, not skipped.
    assert run([*args, "--style_weight=1000"]) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == 3

    # A replaced input image at the same path is different work too: only its pairs are redone.
    synthetic_image(7).save(three_pairs.parent / "photos" / "dog.png")
    assert run([*args, "--style_weight=1000"]) == 0
    counts = json.loads((out / "summary.json").read_text())["counts"]
    assert (counts["succeeded"], counts["skipped"]) == (1, 2)
    redone = json.loads((out / "logs" / "dog__tiles.json").read_text())
    assert redone["inputs"]["signatures"][redone["inputs"]["content"]].startswith("size=")


def test_bad_rows_fail_alone_and_nothing_escapes(weights_file, tmp_path) -> None:
    root = tmp_path / "job"
    write_images(root / "in", {"good.png": 1, "style.png": 3})
    (root / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    synthetic_image(6, 300, 20).save(root / "in" / "sliver.png")  # 48x3 px at image_size 48
    manifest = root / "in" / "manifest.csv"
    manifest.write_text(
        "id,content,style\n"
        "good,good.png,style.png\n"
        "missing,nowhere.png,style.png\n"
        "corrupt,corrupt.png,style.png\n"
        "no-style,good.png,\n"
        "../../escape,good.png,style.png\n"
        "sliver,sliver.png,style.png\n"
    )
    out = root / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={manifest}")
    assert run(args) == 0
    assert run([*args, "--strict"]) == 1

    assert sorted(p.name for p in (out / "images").iterdir()) == ["good.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 5 and summary["counts"]["skipped"] == 1
    failures = [json.loads(line) for line in Path(summary["failures_file"]).read_text().splitlines()]
    by_reason = {f["id"] or f["row"]["id"]: f for f in failures}
    assert by_reason["missing"]["stage"] == "read" and "nowhere.png: no such file" in by_reason["missing"]["error"]
    assert (
        by_reason["corrupt"]["stage"] == "read" and "corrupt.png: not a readable image" in by_reason["corrupt"]["error"]
    )
    assert by_reason["no-style"]["stage"] == "manifest" and "no style image" in by_reason["no-style"]["error"]
    assert "could write outside the output folder" in by_reason["../../escape"]["error"]
    assert by_reason["sliver"]["stage"] == "stylize"
    assert f"{root}/in/sliver.png: a 300x20 content gives a 48x3 px result" in by_reason["sliver"]["error"]
    assert all(f["source"].startswith(str(manifest)) for f in failures)
    # nothing was written anywhere but the output folder (and the inputs are untouched)
    written = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    assert {p for p in written if p.parts[0] != "out"} == {
        Path("in/good.png"),
        Path("in/style.png"),
        Path("in/corrupt.png"),
        Path("in/sliver.png"),
        Path("in/manifest.csv"),
    }


def test_cross_product_of_globs(weights_file, tmp_path) -> None:
    write_images(tmp_path / "contents", {"a.png": 1, "b.png": 2})
    write_images(tmp_path / "styles", {"x.png": 3, "y.png": 4, "z.png": 5})
    out = tmp_path / "out"
    args = job_args(
        weights_file("vgg16"),
        out,
        "--model=vgg16",
        f"--contents={tmp_path}/contents/*.png",
        f"--styles={tmp_path}/styles/*.png",
    )
    assert run(args) == 0
    expected = {f"{c}__{s}.png" for c in "ab" for s in "xyz"}
    assert {p.name for p in (out / "images").iterdir()} == expected


def test_jsonl_manifest_with_lists_and_row_overrides(weights_file, tmp_path) -> None:
    write_images(tmp_path, {"c.png": 1, "s1.png": 3, "s2.png": 4})
    manifest = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "short", "content": "c.png", "style": ["s1.png", "s2.png"], "style_weights": [1, 1], "iterations": 3},
        {"id": "colour", "content": "c.png", "style": "s1.png", "original_colors": True, "seed": 5, "init": "random"},
        {"id": "typo", "content": "c.png", "style": "s1.png", "iteration": 3},
        {"id": "bad-value", "content": "c.png", "style": "s1.png", "iterations": -2},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n")
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}")) == 0
    short = json.loads((out / "logs" / "short.json").read_text())
    assert len(short["history"]["iteration"]) == 3 + 1 and short["config"]["iterations"] == 3  # + the written image
    colour = json.loads((out / "logs" / "colour.json").read_text())
    assert colour["config"]["color_control"] == "luminance" and colour["config"]["init"] == "random"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {
        "succeeded": 2,
        "skipped": 0,
        "failed": 3,
        "claimed_elsewhere": 0,
        "repaired": 0,
        "total": 5,
    }
    errors = [json.loads(line)["error"] for line in Path(summary["failures_file"]).read_text().splitlines()]
    assert any("unknown column(s) iteration" in e for e in errors)
    assert any("iterations must be a positive integer" in e for e in errors)
    assert any("not valid JSON" in e for e in errors)


def test_command_line_errors_exit_2(tmp_path, capsys) -> None:
    assert run(["--output", str(tmp_path)]) == 2
    assert "give --manifest, or --contents and --styles" in capsys.readouterr().err
    assert run(["--manifest", str(tmp_path / "none.csv"), "--output", str(tmp_path)]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
    assert run(["--manifest", "m.csv", "--output", str(tmp_path), "--style_layers", "relu9_1"]) == 2
    assert "unknown layer 'relu9_1'" in capsys.readouterr().err


def test_help_documents_the_options(capsys) -> None:
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--manifest", "--contents", "--weights", "--original_colors", "--strict", "--overwrite"):
        assert flag in text


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            "{tmp}/no-such-weights.pth",
            "error: --weights {tmp}/no-such-weights.pth: weights '{tmp}/no-such-weights.pth': no such file (use caffe, imagenet, random",
        ),
        (
            "http://127.0.0.1:9/vgg19.pth",
            "error: --weights http://127.0.0.1:9/vgg19.pth: no such file (check the URL, or use --weights caffe)",
        ),
    ],
)
def test_weights_that_cannot_be_had_stop_the_job_before_any_pair(
    three_pairs, tmp_path, capsys, weights, message
) -> None:
    out = tmp_path / "out"
    args = job_args(weights.format(tmp=tmp_path), out, f"--manifest={three_pairs}")
    assert run(args) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (out / "summary.json").exists() and not (out / "images").exists()


def test_offline_imagenet_download_stops_the_job_naming_the_cure(three_pairs, tmp_path, capsys, monkeypatch) -> None:
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    args = [a for a in job_args("imagenet", tmp_path / "out", f"--manifest={three_pairs}") if "weights_family" not in a]
    assert run(args) == 2
    error = capsys.readouterr().err
    assert "could not download the torchvision vgg19 ImageNet weights" in error
    assert "Use the embedded weights (--weights caffe, the default)" in error


def test_a_worker_that_cannot_load_the_model_fails_the_job_not_each_pair(
    three_pairs, tmp_path, capsys, monkeypatch
) -> None:
    # The pre-flight check is skipped here, so the failure happens where it would on a worker.
    from pipeline import preflight

    monkeypatch.setattr(preflight, "check_weights", lambda style: None)
    out = tmp_path / "out"
    assert run(job_args(str(tmp_path / "gone.pth"), out, f"--manifest={three_pairs}")) == 3
    error = capsys.readouterr().err
    assert error.startswith("error: the job failed: ") and "gone.pth': no such file" in error
    assert len(error.strip().splitlines()) == 1
    assert not (out / "failures").exists() and not (out / "images").exists()


def test_beam_metrics_and_per_pair_log_lines(three_pairs, weights_file, tmp_path, caplog) -> None:
    import logging

    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.graph import build
    from pipeline.options import config_from_options

    options = PipelineOptions(job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={three_pairs}"))
    config = config_from_options(options)
    caplog.set_level(logging.INFO, logger="beam_style_transfer.transforms.progress")
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()

    metrics = result.metrics().query(MetricsFilter().with_namespace("style_transfer"))
    counters = {m.key.metric.name: m.committed for m in metrics["counters"]}
    assert counters["pairs_succeeded"] == 3
    assert counters.get("pairs_failed", 0) == 0 and counters.get("pairs_skipped", 0) == 0
    distributions = {m.key.metric.name: m.committed for m in metrics["distributions"]}
    assert distributions["pair_milliseconds"].count == 3 and distributions["pair_milliseconds"].min > 0
    assert distributions["final_loss_thousandths"].count == 3
    lines = [r.getMessage() for r in caplog.records if " succeeded: " in r.getMessage() and ", loss " in r.getMessage()]
    assert sorted(line.split(" succeeded: ")[0] for line in lines) == ["cat-waves", "cat__waves+tiles", "dog__tiles"]


def test_a_converged_pair_stops_early_says_so_and_its_settings_are_part_of_its_fingerprint(
    three_pairs, weights_file, tmp_path
) -> None:
    out = tmp_path / "out"
    args = job_args(
        weights_file("vgg19"),
        out,
        f"--manifest={three_pairs}",
        "--iterations=40",
        "--stop_window=2",
        "--stop_tolerance=0.3",
    )
    assert run(args) == 0
    for log_file in (out / "logs").glob("*.json"):
        log = json.loads(log_file.read_text())
        assert log["stopped"] == "converged" and log["final"]["iteration"] < 40
        assert log["config"]["stop_tolerance"] == 0.3 and log["config"]["stop_window"] == 2
    assert run(args) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == 3  # resumed like any other
    assert run([*args, "--stop_window=3"]) == 0  # another convergence test: other work
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == 3


def test_pairs_are_batched_by_output_size_and_settings(weights_file, tmp_path) -> None:
    from PIL import Image as PILImage

    write_images(tmp_path / "in", {"l1.png": 1, "l2.png": 2, "l3.png": 3, "style.png": 9})
    for name, seed in (("p1.png", 4), ("p2.png", 5)):
        synthetic_image(seed, 48, 64).save(tmp_path / "in" / name)  # portrait: another output size
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text(
        "id,content,style,iterations\n"
        "l1,l1.png,style.png,\nl2,l2.png,style.png,\nl3,l3.png,style.png,\n"
        "l3-missing-style,l3.png,nowhere.png,\n"  # fails alone, inside its batch
        "p1,p1.png,style.png,\np2,p2.png,style.png,\n"
        "l1-longer,l1.png,style.png,9\n"  # another iteration count: its own batch
    )
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--batch_size=8")) == 0
    logs = {p.stem: json.loads(p.read_text()) for p in (out / "logs").glob("*.json")}
    assert {k: v["batch_size"] for k, v in logs.items()} == {
        "l1": 3,
        "l2": 3,
        "l3": 3,
        "p1": 2,
        "p2": 2,
        "l1-longer": 1,
    }
    assert PILImage.open(out / "images" / "p1.png").size == (36, 48)
    assert len(logs["l1-longer"]["history"]["total"]) == 10 and len(logs["l1"]["history"]["total"]) == 7
    for log in logs.values():
        assert log["final"]["total"] < log["history"]["total"][0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 6 and summary["counts"]["failed"] == 1
    failure = json.loads(Path(summary["failures_file"]).read_text())
    assert failure["id"] == "l3-missing-style" and "nowhere.png: no such file" in failure["error"]

    # One pair at a time gives the same pictures, up to float32 rounding in batched kernels.
    single = tmp_path / "single"
    assert run(job_args(weights_file("vgg19"), single, f"--manifest={manifest}", "--batch_size=1")) == 0
    for pair_id, log in logs.items():
        alone = json.loads((single / "logs" / f"{pair_id}.json").read_text())
        assert alone["batch_size"] == 1
        assert alone["final"]["total"] == pytest.approx(log["final"]["total"], rel=0.05)


def test_the_default_direct_runner_counts_every_written_pair(three_pairs, weights_file, tmp_path) -> None:
    # The README's commands name no runner. GroupIntoBatches once let the DirectRunner write
    # the summary before the batches that its timers released: every test on FnApiRunner passed.
    out = tmp_path / "out"
    args = [
        a for a in job_args(weights_file("vgg19"), out, f"--manifest={three_pairs}") if not a.startswith("--runner")
    ]
    assert run([*args, "--runner=DirectRunner", "--batch_size=2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 3 == len(list((out / "images").iterdir()))


def test_strict_on_remote_workers_fails_the_job_after_the_summary_and_report(tmp_path, weights_file) -> None:
    # On Dataflow nobody may wait for the exit status, so --strict makes the job itself fail.
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.graph import build
    from pipeline.options import config_from_options
    from transforms.results import StrictFailure

    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\ncat.png,waves.png\nmissing.png,waves.png\n")
    out = tmp_path / "out"
    options = PipelineOptions(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--strict"))
    config = config_from_options(options)
    with pytest.raises(StrictFailure, match=r"^1 rows or pairs failed and --strict is set \(see .*failures"):
        with beam.Pipeline(options=options) as p:
            build(p, config, fail_job_if_failed=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["succeeded"] == 1 and summary["counts"]["failed"] == 1
    assert (out / "report.html").is_file() and (out / "images" / "cat__waves.png").is_file()
    # The same job with nothing failed ends well.
    manifest.write_text("content,style\ncat.png,waves.png\n")
    with beam.Pipeline(options=options) as p:
        build(p, config_from_options(options), fail_job_if_failed=True)
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == 1


def test_a_rerun_with_every_pair_done_never_loads_the_model(three_pairs, weights_file, tmp_path, monkeypatch) -> None:
    from transforms.handler import EngineHandler

    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={three_pairs}")
    assert run(args) == 0

    def no_model(self) -> None:
        raise AssertionError("the model was loaded for a rerun with nothing to do")

    monkeypatch.setattr(EngineHandler, "load", no_model)
    assert run(args) == 0  # the DoFn that would load it never sees a pair
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == 3
    (out / "logs" / "dog__tiles.json").unlink()  # one pair to redo: now the model is needed
    assert run(args) == 3


def test_a_strict_remote_job_exits_1_only_for_its_own_failures(tmp_path, weights_file, monkeypatch) -> None:
    # Where the job itself fails on purpose (--strict, workers elsewhere), the launcher tells that
    # failure from any other by this run's summary, not by the exception a runner re-raises.
    import pipeline.main
    from transforms.handler import EngineHandler

    monkeypatch.setattr(pipeline.main, "_workers_here", lambda options: False)
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\ncat.png,waves.png\nmissing.png,waves.png\n")
    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--strict")
    assert run(args) == 1
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 1
    (out / "logs" / "cat__waves.json").unlink()  # a pair to redo, on a worker that cannot load the model

    def no_model(self) -> None:
        raise RuntimeError("no GPU here")

    monkeypatch.setattr(EngineHandler, "load", no_model)
    assert run(args) == 3  # the previous run's summary counts a failure, but this run wrote none
