"""Coarse-to-fine scales: each scale starts from the previous result, with its own style targets."""

from __future__ import annotations

import argparse
import json

import pytest

from pipeline.flags import scale_list
from pipeline.main import run
from tests.helpers import engine_config, job_args, synthetic_image, write_images
from transforms.limits import Limits
from transforms.nst import StyleConfig, StyleTransfer
from transforms.nst.config import pyramid
from transforms.nst.memory import batch_key


def totals(history) -> list[float]:
    return [record.total for record in history]


def test_the_chain_is_each_scale_started_from_the_previous_result(weights_file) -> None:
    staged = engine_config(weights_file, image_size=64, iterations=4, scales=((32, 3), (48, 3)))
    engine = StyleTransfer(staged)
    content, style = synthetic_image(1, 96, 72), synthetic_image(3, 96, 72)
    targets = {size: engine.encode_styles([style], size=size) for size in (32, 48, 64)}
    chained = engine.stylize(content, targets[64], coarse_styles=(targets[32], targets[48]))

    # The same three runs by hand: each from the one before's written image, upscaled.
    first = engine.stylize(content, targets[32], staged.at_stage(0))
    second = engine.stylize(content, targets[48], staged.at_stage(1), init_image=first.image)
    third = engine.stylize(content, targets[64], staged.at_stage(2), init_image=second.image)
    assert [c.image.size for c in chained.coarse] == [(32, 24), (48, 36)] and chained.image.size == (64, 48)
    for mine, theirs in ((chained.coarse[0], first), (chained.coarse[1], second), (chained, third)):
        assert totals(mine.history) == pytest.approx(totals(theirs.history), rel=1e-5)
        assert mine.image.tobytes() == theirs.image.tobytes()
    # The fine scale did start from the coarse result: not from the content image.
    from_content = engine.stylize(content, targets[64], staged.at_stage(2))
    assert chained.history[0].total != pytest.approx(from_content.history[0].total, rel=1e-3)
    assert chained.final.total < chained.history[0].total


def test_coarse_targets_must_be_at_each_scale_size(weights_file) -> None:
    staged = engine_config(weights_file, image_size=64, iterations=2, scales=((32, 2),))
    engine = StyleTransfer(staged)
    style = synthetic_image(3, 96, 72)
    with pytest.raises(ValueError, match="style targets were encoded at 64 px but the config needs 32 px"):
        engine.stylize(
            synthetic_image(1), engine.encode_styles([style]), coarse_styles=(engine.encode_styles([style]),)
        )
    with pytest.raises(ValueError, match="0 coarse style targets for 1 scales"):
        engine.stylize(synthetic_image(1), engine.encode_styles([style]))


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        (
            ((256, 10), (128, 10)),
            "scales must grow in size up to image_size 512, each with iterations >= 1: 256:10,128:10",
        ),
        (((512, 10),), "scales must grow in size up to image_size 512"),
        (((256, 0),), "each with iterations >= 1: 256:0"),
    ],
)
def test_scales_that_do_not_grow_to_the_image_size_are_refused(scales, message) -> None:
    with pytest.raises(ValueError, match=message):
        StyleConfig(scales=scales)


def test_limits_count_the_iterations_of_every_scale() -> None:
    staged = StyleConfig(image_size=512, iterations=400, scales=((256, 300),))
    assert staged.total_iterations == 700 and staged.stages == ((256, 300), (512, 400))
    with pytest.raises(ValueError, match="iterations of all scales 700 is over --max_iterations 600"):
        Limits(max_iterations=600).check(staged)


def test_only_the_last_scale_transfers_luminance() -> None:
    staged = StyleConfig(image_size=512, scales=((256, 100),), color_control="luminance")
    assert staged.at_stage(0).color_control == "none" and staged.at_stage(1).color_control == "luminance"
    matched = staged.replace(color_control="histogram")
    assert matched.at_stage(0).color_control == matched.at_stage(1).color_control == "histogram"
    assert staged.at_stage(0).style_size == 256 and staged.at_stage(1).scales == ()


def test_pairs_of_other_scales_are_not_batched_together() -> None:
    one = StyleConfig(image_size=512)
    assert batch_key(one, (640, 480)) != batch_key(one.replace(scales=((256, 100),)), (640, 480))


def test_scales_flag() -> None:
    assert scale_list("256:300, 512:100") == ((256, 300), (512, 100))
    assert scale_list("auto") is None and scale_list("None") == ()
    # '' and a trailing comma were taken as one scale and as 64 px alone, without a word (#38)
    for text in ("", "  ", "64:2,", "64:2,,128:2"):
        with pytest.raises(argparse.ArgumentTypeError, match="an empty scale"):
            scale_list(text)
    with pytest.raises(
        argparse.ArgumentTypeError,
        match=r"expected auto, none or SIZE:ITERATIONS\[,SIZE:ITERATIONS...\], got '256x300'",
    ):
        scale_list("256x300")


def test_the_job_logs_every_scale(tmp_path, weights_file) -> None:
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\ncat.png,waves.png\n")
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--scales=32:3")) == 0
    log = json.loads((out / "logs" / "cat__waves.json").read_text())
    assert log["config"]["scales"] == [[32, 3]]
    (coarse,) = log["scales"]
    assert coarse["size"] == [32, 24] and coarse["history"]["iteration"] == [0, 1, 2, 3]
    assert coarse["history"]["total"][-1] == coarse["final"]["total"]
    assert log["history"]["iteration"] == list(range(7)) and log["history"]["total"][-1] == log["final"]["total"]
    # A rerun with other scales is another result: redone, not skipped.
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--scales=24:3")) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == 1
    assert json.loads((out / "logs" / "cat__waves.json").read_text())["scales"][0]["size"] == [24, 18]


def test_the_default_pyramid_halves_the_image_size_down_to_128_px() -> None:
    assert pyramid(512, 500) == ((128, 500), (256, 500))
    assert pyramid(1024, 80) == ((128, 80), (256, 80), (512, 80))
    assert pyramid(300, 10) == ((150, 10),)
    assert pyramid(255, 10) == () and pyramid(0, 10) == ()
    assert StyleConfig().stages == ((128, 200), (256, 200), (512, 200))
    # image_size 0: each content's own pyramid, once its size is known.
    assert StyleConfig(image_size=0).for_content(600, 400).stages == ((150, 200), (300, 200), (600, 200))
    # Another size or iteration count carries its own pyramid; given scales stay as given.
    assert StyleConfig().replace(image_size=256, iterations=100).stages == ((128, 100), (256, 100))
    assert StyleConfig(scales=()).stages == ((512, 200),)
    assert StyleConfig(scales=((64, 10),), image_size=256).stages == ((64, 10), (256, 200))


def test_an_upgrade_redoes_one_scale_pairs_unless_asked_for_one_scale(tmp_path, weights_file) -> None:
    # A pair made at one scale (as an earlier release made every pair: its fingerprint keeps the
    # earlier layout, test_outputs) is redone by the default pyramid, which makes another
    # picture, and skipped by --scales none.
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\ncat.png,waves.png\n")
    out = tmp_path / "out"

    def job(*extra: str) -> tuple[str, dict]:
        assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--iterations=2", *extra)) == 0
        counts = json.loads((out / "summary.json").read_text())["counts"]
        outcome = "skipped" if counts["skipped"] else "succeeded" if counts["succeeded"] else "failed"
        return outcome, json.loads((out / "logs" / "cat__waves.json").read_text())

    outcome, log = job("--image_size=300", "--scales=none")
    assert outcome == "succeeded" and log["config"]["scales"] == [] and log["scales"] == []
    assert job("--image_size=300", "--scales=none")[0] == "skipped"
    outcome, log = job("--image_size=300")  # the default: auto
    assert outcome == "succeeded" and log["config"]["scales"] == [[150, 2]]
    assert [coarse["size"] for coarse in log["scales"]] == [[150, 112]] and log["image"]["size"] == [300, 225]
    assert job("--image_size=300")[0] == "skipped"
    # Under 256 px the pyramid has no coarser scale: the same picture, not redone.
    assert job("--image_size=200", "--scales=none")[0] == "succeeded"
    assert job("--image_size=200")[0] == "skipped"
    # Each content's own size: its scales depend on the content, so "auto" is a setting of its
    # own (redone once after an upgrade), and the log records the scales that ran.
    outcome, log = job("--image_size=0")
    assert outcome == "succeeded" and log["config"]["scales"] == [] and log["image"]["size"] == [64, 48]
    assert job("--image_size=0")[0] == "skipped"


def test_the_default_pyramid_leaves_out_scales_a_thin_content_cannot_take(tmp_path, weights_file) -> None:
    # 2000 x 40 px at its own size: 250, 500 and 1000 px would be coarser scales, but at 250 and
    # 500 px the content is 5 and 10 px high, under the 16 px VGG19 needs. One scale makes this
    # picture, so the default does too, from the coarsest scale that fits.
    (tmp_path / "in").mkdir()
    synthetic_image(1, 2000, 40).save(tmp_path / "in" / "banner.png")
    synthetic_image(3).save(tmp_path / "in" / "waves.png")
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\nbanner.png,waves.png\n")
    out = tmp_path / "out"
    # The style at 100 px: what is tested is the content's scales.
    weights = weights_file("vgg19")
    args = job_args(weights, out, f"--manifest={manifest}", "--image_size=0", "--iterations=1", "--style_scale=0.05")
    assert run(args) == 0
    log = json.loads((out / "logs" / "banner__waves.json").read_text())
    assert log["config"]["scales"] == [[1000, 1]] and [s["size"] for s in log["scales"]] == [[1000, 20]]
    assert log["image"]["size"] == [2000, 40]
    # Scales asked for are not left out: the pair fails, naming the scale.
    assert run([*args, "--scales=500:1"]) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 1
    (failures,) = (out / "failures").glob("*.jsonl")
    assert "gives a 500x10 px result at 500 px" in failures.read_text()


def test_a_content_no_larger_than_its_coarser_scales_fails_alone_and_the_estimate_goes_on(
    tmp_path, weights_file, capsys
) -> None:
    # --image_size 0 --scales 64:2 with a 48 px content ended in a traceback from the cost line
    # (exit 1, an empty output left); now that pair fails, naming its size, and the other runs.
    write_images(tmp_path / "in", {"small.png": 1, "waves.png": 3})
    synthetic_image(2, 96, 72).save(tmp_path / "in" / "large.png")
    (tmp_path / "in" / "small.png").unlink()
    synthetic_image(1, 48, 40).save(tmp_path / "in" / "small.png")
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\nsmall.png,waves.png\nlarge.png,waves.png\n")
    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--image_size=0", "--scales=64:2")
    assert run(args) == 0
    (failure,) = [json.loads(line) for line in next((out / "failures").glob("*.jsonl")).read_text().splitlines()]
    assert failure["id"] == "small__waves" and "a 48x40 content at its own size" in failure["error"]
    assert (out / "images" / "large__waves.png").is_file()
    assert "iterations at their own sizes" in capsys.readouterr().out  # the estimate, from the large one
    from transforms.plan import cost_line

    assert cost_line(1, StyleConfig(image_size=0, scales=((64, 2),)), "cpu", sizes=[(48, 40)]) is None
