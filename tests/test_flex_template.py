"""The Flex Template: metadata.json against the real option parser, both ways; the launcher script."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import template_metadata
from pipeline.config import PipelineConfig
from pipeline.options import check_arguments, config_from_options
from tests.helpers import write_images

ROOT = Path(__file__).resolve().parents[1]
METADATA = json.loads((ROOT / "flex_template" / "metadata.json").read_text())
PARAMETERS = {parameter["name"]: parameter for parameter in METADATA["parameters"]}


def _matches(name: str, value: str) -> bool:
    return all(re.fullmatch(regex, value) for regex in PARAMETERS[name]["regexes"])


def _parse(argv: list[str]) -> PipelineConfig:
    """What the launcher does with a command line: the job's checks, then its configuration."""
    check_arguments(argv)
    return config_from_options(PipelineOptions(argv))


def readme_parameters() -> dict[str, str]:
    """The ``--parameters`` of the documentation's ``gcloud dataflow flex-template run`` example."""
    page = (ROOT / "docs" / "flex-template.md").read_text()
    command = re.search(r"gcloud dataflow flex-template run .*?\n(?:.*\\\n)*.*\n", page)
    assert command, "docs/flex-template.md has no gcloud dataflow flex-template run example"
    words = shlex.split(command.group(0).replace("\\\n", " "), comments=False)
    listed = words[words.index("--parameters") + 1]
    return dict(item.split("=", 1) for item in listed.split(","))


def test_the_committed_metadata_is_what_the_flags_generate() -> None:
    committed = (ROOT / "flex_template" / "metadata.json").read_text()
    assert committed == template_metadata.render(), (
        "flex_template/metadata.json is out of date: python -m pipeline.template_metadata > flex_template/metadata.json"
    )


# A valid value for each flag without a default (the others are checked with their defaults).
EXAMPLES = {
    "manifest": "gs://bucket/pairs.csv",
    "manifest_format": "jsonl",
    "contents": "gs://bucket/photos/*.jpg",
    "styles": "s3://bucket/paintings/*.png",
    "output": "gs://bucket/stylized/2026-11-26",
    "weights_family": "caffe",
    "style_layer_weights": "1,0.5,0.25,1e-1,.5",
    "content_weight": "5",
    "style_weight": "1e2",
    "scales": "128:100,256:50",
    "device_memory_gb": "22.5",
    "overwrite": "true",
    "strict": "false",
    "original_colors": "true",
    "verbose": "false",
}


def _example(action) -> str:
    if action.dest in EXAMPLES:
        return EXAMPLES[action.dest]
    assert action.default not in (None, ()) and action.default is not False, (
        f"--{action.dest}: add an example value to EXAMPLES"
    )
    return ",".join(map(str, action.default)) if isinstance(action.default, tuple) else str(action.default)


def test_every_parameter_is_an_option_of_the_real_parser_and_every_job_option_a_parameter() -> None:
    actions = template_metadata.job_actions()
    assert set(PARAMETERS) == {action.dest for action in actions}
    for action in actions:
        value = _example(action)
        assert _matches(action.dest, value), f"--{action.dest}={value!r} fails {PARAMETERS[action.dest]['regexes']}"
        argv = ["--output=gs://b/out", "--manifest=gs://b/m.csv", f"--{action.dest}={value}"]
        if action.dest in ("contents", "styles"):
            argv = ["--output=gs://b/out", "--contents=gs://b/c/*", "--styles=gs://b/s/*", f"--{action.dest}={value}"]
        _parse(argv)  # the real parser (the job's flags and Beam's) takes it as --name=value
    required = [name for name, parameter in PARAMETERS.items() if not parameter["isOptional"]]
    assert required == ["output"]
    with pytest.raises(ValueError, match="--output is required"):
        _parse(["--manifest=gs://b/m.csv"])


def test_readme_example_passes_the_regexes_and_the_parser() -> None:
    parameters = readme_parameters()
    assert {"manifest", "output", "strict"} <= set(parameters)
    for name, value in parameters.items():
        assert name in PARAMETERS, f"README passes {name}, which the template does not declare"
        assert _matches(name, value), f"{name}={value!r} fails {PARAMETERS[name]['regexes']}"
    config = _parse([f"--{name}={value}" for name, value in parameters.items()])
    assert config.strict is True and config.output == parameters["output"]
    assert config.style.image_size == int(parameters["image_size"])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iterations", "ten"),
        ("iterations", "-5"),
        ("image_size", "512px"),
        ("device", "tpu"),
        ("strict", "maybe"),
        ("overwrite", "yes please"),
        ("batch_size", "many"),
        ("precision", "fp16"),
        ("style_layer_weights", "1,,2"),
        ("style_layers", "relu1_1;relu2_1"),
        ("content_weight", "lots"),
        ("pooling", "min"),
    ],
)
def test_a_bad_value_is_refused_by_the_regex_and_by_the_parser(name: str, value: str) -> None:
    assert not _matches(name, value)
    with pytest.raises(ValueError) as refused:
        _parse(["--output=gs://b/out", "--manifest=gs://b/m.csv", f"--{name}={value}"])
    assert name in str(refused.value) or value in str(refused.value)  # the message names the input


@pytest.mark.parametrize(
    ("name", "value"),
    [("manifest", "/home/me/pairs.csv"), ("output", "out/"), ("contents", ""), ("weights", "vgg"), ("init", "noise")],
)
def test_inputs_and_output_must_be_object_store_urls(name: str, value: str) -> None:
    # Narrower than the parser on purpose: a Dataflow worker cannot read the launcher's disk (a
    # shell run takes these as local paths, and its pre-flight check looks for them).
    assert not _matches(name, value)
    assert _matches(name, "gs://bucket/folder/*.jpg")


def _launch_module():
    spec = importlib.util.spec_from_file_location("launch", ROOT / "flex_template" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_launcher_adds_the_gpu_worker_defaults_unless_given() -> None:
    launch = _launch_module()
    argv = launch.with_dataflow_defaults(["--output=gs://b/o", "--experiments=other"])
    assert argv == [
        "--output=gs://b/o",
        "--experiments=other",
        "--sdk_location=container",
        "--number_of_worker_harness_threads=1",
        "--experiments=no_use_multiple_sdk_containers",
    ]
    mine = [
        "--sdk_location",
        "default",
        "--number_of_worker_harness_threads=4",
        "--experiments=use_multiple_sdk_containers",
    ]
    assert launch.with_dataflow_defaults(mine) == mine
    check_arguments(argv)


def test_the_launcher_submits_and_returns(tmp_path: Path, weights_file) -> None:
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    (tmp_path / "in" / "manifest.csv").write_text("content,style\ncat.png,waves.png\n")
    out = tmp_path / "out"
    parameters = {
        "manifest": tmp_path / "in" / "manifest.csv",
        "output": out,
        "weights": weights_file("vgg19"),
        "weights_family": "torchvision",
        "image_size": 32,
        "iterations": 2,
        "strict": "true",
        "device": "cpu",
    }
    command = [sys.executable, str(ROOT / "flex_template" / "launch.py"), "--runner=DirectRunner"]
    command += [f"--{name}={value}" for name, value in parameters.items()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"submitted; when it ends: {out}/summary.json"
    # The DirectRunner runs the job inside run(); on Dataflow it runs on after the launcher returns.
    assert json.loads((out / "summary.json").read_text())["counts"]["succeeded"] == 1


def test_the_launcher_refuses_a_bad_job_before_submitting(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "flex_template" / "launch.py"),
        "--runner=DirectRunner",
        f"--manifest={tmp_path}/missing.csv",
        f"--output={tmp_path}/out",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"error: --manifest {tmp_path}/missing.csv: no such file" in result.stderr
    assert "submitted" not in result.stdout
