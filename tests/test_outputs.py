"""The output contract (transforms/outputs.py): fingerprints that survive upgrades, writes that
name the file they failed on, and the skip check's verdicts."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from transforms import outputs, storage
from transforms.nst.config import StyleConfig
from transforms.records import Pair


def test_the_fingerprint_settings_keep_the_layout_of_earlier_releases() -> None:
    # Finished pairs are skipped by fingerprint: settings added since (scales, colour control)
    # must not change the fingerprint of a pair that does not use them, or an upgrade redoes all.
    earlier = {
        "content_layers",
        "content_weight",
        "device",
        "image_size",
        "init",
        "iterations",
        "learning_rate",
        "model",
        "optimizer",
        "original_colors",
        "pooling",
        "precision",
        "preprocessing",
        "seed",
        "style_layer_weights",
        "style_layers",
        "style_scale",
        "style_weight",
        "tv_weight",
        "weights",
        "weights_family",
    }
    # One scale keeps the earlier layout exactly: --scales none --iterations 500 skips what an
    # earlier release made with its defaults, and so does the default pyramid where it has no
    # coarser scale.
    assert set(StyleConfig(scales=()).fingerprint_settings()) == earlier
    assert StyleConfig(scales=(), iterations=500).fingerprint_settings()["iterations"] == 500
    assert (
        StyleConfig(image_size=255).fingerprint_settings()
        == StyleConfig(image_size=255, scales=()).fingerprint_settings()
    )
    # The default pyramid really changes the picture: it is in the fingerprint as the scales
    # that run, so a pair made at one scale is redone, and so is one made by another pyramid.
    assert StyleConfig().fingerprint_settings()["scales"] == [(128, 200), (256, 200)]
    assert StyleConfig(image_size=0).fingerprint_settings()["scales"] == "auto"
    assert StyleConfig(color_control="luminance").fingerprint_settings()["original_colors"] is True
    assert StyleConfig(color_control="histogram").fingerprint_settings()["color_control"] == "histogram"
    assert StyleConfig(scales=((256, 10),)).fingerprint_settings()["scales"] == [(256, 10)]
    # convergence stopping and precision auto: a pair finished by an earlier release (every
    # iteration, fp32) is not redone by default; asking for other settings redoes it
    assert (
        StyleConfig(scales=()).fingerprint_settings() == StyleConfig(scales=(), precision="fp32").fingerprint_settings()
    )
    assert StyleConfig(stop_tolerance=0).fingerprint_settings()["stop_tolerance"] == 0
    assert StyleConfig(stop_window=20).fingerprint_settings()["stop_window"] == 20
    assert StyleConfig(precision="bf16").fingerprint_settings()["precision"] == "bf16"


def test_a_fingerprint_is_the_digest_of_the_inputs_their_versions_and_every_setting(tmp_path) -> None:
    # The recipe docs/outputs.md documents; a pair made by an earlier release is skipped only if it holds.
    (tmp_path / "c.png").write_bytes(b"content")
    (tmp_path / "s.png").write_bytes(b"style")
    config = StyleConfig(weights="random", image_size=64)
    pair = Pair("p", str(tmp_path / "c.png"), (str(tmp_path / "s.png"),), config)
    signatures = outputs.input_signatures(pair)
    assert set(signatures) == {pair.content, *pair.styles}
    described = {
        "content": pair.content,
        "styles": list(pair.styles),
        "style_weights": None,
        "signatures": signatures,
        "config": config.fingerprint_settings(),
    }
    expected = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    assert outputs.fingerprint(pair, signatures) == expected
    assert (
        outputs.fingerprint(Pair("p", pair.content, pair.styles, config.replace(image_size=65)), signatures) != expected
    )


def test_a_pair_is_written_image_first_and_a_failed_write_names_its_file(tmp_path) -> None:
    log = {"id": "p", "history": []}
    outputs.write_pair(str(tmp_path), "p", b"png bytes", log)
    assert (tmp_path / "images" / "p.png").read_bytes() == b"png bytes"
    assert json.loads((tmp_path / "logs" / "p.json").read_text()) == log
    (tmp_path / "logs" / "p.json").unlink()
    (tmp_path / "logs").rmdir()
    (tmp_path / "logs").write_text("a file where the folder should be")
    with pytest.raises(OSError, match=r"logs/q\.json: "):
        outputs.write_pair(str(tmp_path), "q", b"png", log)
    assert (tmp_path / "images" / "q.png").is_file()  # the image went first: a log never describes a missing image


@pytest.mark.parametrize(
    ("damage", "state", "reason"),
    [
        (None, "done", ""),
        ("image", "damaged", "does not match its log's digest"),
        ("longer image", "damaged", "cannot be read"),  # read no further than the log's size
        ("log", "damaged", "not valid JSON"),
        ("deep log", "damaged", "nested too deeply"),  # redone, not failed
        ("no log", "damaged", "an image without a log"),
        ("fingerprint", "stale", "other inputs or settings"),
    ],
)
def test_the_skip_check_trusts_only_a_complete_matching_pair(tmp_path, damage, state, reason) -> None:
    png = b"an image"
    log = {  # what a skip check reads of a log (logs.log_problem)
        "id": "p",
        "fingerprint": "f1",
        "inputs": {"content": "c.png", "styles": ["s.png"]},
        "image": {"path": "images/p.png", "size": [1, 1], "sha256": storage.sha256(png), "bytes": len(png)},
        "history": {"iteration": [0, 1], "total": [2.0, 1.0]},
        "final": {"iteration": 1, "total": 1.0},
    }
    outputs.write_pair(str(tmp_path), "p", png, log)
    if damage == "image":
        (tmp_path / "images" / "p.png").write_bytes(b"an imagE")
    elif damage == "longer image":
        (tmp_path / "images" / "p.png").write_bytes(b"an image" * 1000)
    elif damage == "log":
        (tmp_path / "logs" / "p.json").write_text("{ cut short")
    elif damage == "deep log":
        (tmp_path / "logs" / "p.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    elif damage == "no log":
        os.remove(tmp_path / "logs" / "p.json")
    fingerprint = "f2" if damage == "fingerprint" else "f1"
    prior = outputs.inspect_outputs(str(tmp_path), "p", fingerprint)
    assert (prior.state, prior.done) == (state, state == "done") and reason in prior.reason
    assert outputs.inspect_outputs(str(tmp_path), "absent", "f1").state == "absent"


def test_losses_are_written_in_their_shortest_float32_form_losing_nothing() -> None:
    import struct

    def float32(value: float) -> float:
        return struct.unpack("f", struct.pack("f", value))[0]

    for value in map(float32, (22233.01171875, 84212216.0, 0.0240332, 1186772.375, 3.3e38, 1e-30)):
        written = outputs.shortest_float32(value)
        assert float32(written) == value and len(repr(written)) <= len(repr(value))
    assert outputs.shortest_float32(22233.01171875) == 22233.012
    # Not a float32 (a float64 engine's loss), or not finite: kept exactly.
    assert outputs.shortest_float32(0.1) == 0.1 and outputs.shortest_float32(1e300) == 1e300
    assert outputs.shortest_float32(float("inf")) == float("inf") and outputs.shortest_float32(None) is None
