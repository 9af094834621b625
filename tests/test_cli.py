"""The command line: mistakes caught before any work, Beam's options passed through, a quick --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.main import run
from tests.helpers import job_args, synthetic_image, write_images


@pytest.fixture
def one_pair(tmp_path: Path) -> Path:
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\ncat.png,waves.png\n")
    return manifest


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("--iteration=3", "--iterations"), ("--imag_size", "--image_size"), ("--stlye_weight", "--style_weight")],
)
def test_a_mistyped_flag_is_an_error_naming_the_nearest(
    one_pair, weights_file, tmp_path, capsys, typo, suggestion
) -> None:
    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={one_pair}", typo, "3")
    assert run(args) == 2
    error = capsys.readouterr().err
    assert f"error: unknown flag {typo.split('=')[0]}; did you mean {suggestion}?" in error
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iteration", "5"], "unknown flag --iteration; did you mean --iterations?"),
        (["--image_size", "abc"], "argument --image_size: invalid int value: 'abc'"),
        (["--image_size", "100000"], "--max_image_size"),
        (["--manifest", "{tmp}/nowhere.csv"], "--manifest {tmp}/nowhere.csv: no such file"),
        (["--output="], "--output is required"),
        (
            ["--manifest", "{tmp}/in/manifest.csv", "--contents", "x/*.jpg"],
            "give --manifest, or --contents and --styles, not both",
        ),
        (["--runner", "DirectRuner"], "--runner DirectRuner: not a runner Beam knows; did you mean DirectRunner?"),
        (["--runner=Dirct"], "--runner Dirct: not a runner Beam knows; did you mean DirectRunner?"),
        (["--runner=DataFlowRunner"], "--runner DataFlowRunner needs --project"),
        (["--runner=DataflowRunner", "--project=p"], "--runner DataflowRunner needs --region"),
        (["--runner=dataflow", "--project=p", "--region=r"], "--runner dataflow needs --temp_location on a bucket"),
        (["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=/tmp/t"], "got '/tmp/t'"),
    ],
)
def test_the_usual_mistakes_are_answered_before_beam_and_torch_are_imported(one_pair, tmp_path, args, message) -> None:
    argv = ["--manifest", str(one_pair), "--output", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in args]]
    probe = (
        "import sys\n"
        "from pipeline.main import run\n"
        f"status = run({argv!r})\n"
        "print('LOADED', [m for m in ('torch', 'apache_beam') if m in sys.modules], status)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "LOADED [] 2" in result.stdout
    assert message.format(tmp=tmp_path) in result.stderr and result.stderr.startswith("usage: python -m pipeline")
    assert not (tmp_path / "out").exists()  # nothing made: the output folder comes after pre-flight


def test_the_runners_known_before_beam_is_imported_are_beams() -> None:
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.config import KNOWN_RUNNERS, runner_named

    assert sorted(KNOWN_RUNNERS) == sorted(StandardOptions.KNOWN_RUNNER_NAMES)
    # As Beam resolves them: any case, "Runner" left out; a module path is the user's own runner.
    assert runner_named("DataFlowRunner") == runner_named("dataflow") == "DataflowRunner"
    assert runner_named("my_runners.MyRunner") is None


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        ("", "--runner is empty: name a runner"),
        ("os.system", "--runner os.system: not a Beam runner class"),
        ("subprocess.Popen", "--runner subprocess.Popen: not a Beam runner class"),
        ("no_such_module.MyRunner", "--runner no_such_module.MyRunner: cannot be imported"),
    ],
)
def test_a_runner_that_is_none_is_refused_in_one_line(one_pair, tmp_path, capsys, runner, message) -> None:
    # '' passed the check and failed after 9 s with the output made; os.system and
    # subprocess.Popen passed as module paths and ended in a TypeError.
    out = tmp_path / "out"
    assert run(["--manifest", str(one_pair), "--output", str(out), f"--runner={runner}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    from pipeline.config import check_runner

    check_runner(["--runner=apache_beam.runners.direct.direct_runner.DirectRunner"])  # a runner class is one


@pytest.mark.parametrize(
    ("flag", "location", "message"),
    [
        ("--output", "simplecache::file://{tmp}/out", "the job writes only to a local folder or an object store"),
        ("--output", "http://127.0.0.1:{port}/out", "the job writes only to a local folder or an object store"),
        ("--contents", "simplecache::file://{tmp}/*.png", "scheme 'simplecache' is not allowed"),
        ("--contents", "http://127.0.0.1:{port}/*.jpg", "scheme 'http' is not allowed"),
    ],
)
def test_a_location_the_job_will_not_use_is_refused_before_it_is_touched(
    tmp_path, capsys, flag, location, message
) -> None:
    # These ended in raw tracebacks (exit 1), or passed pre-flight and failed every pair, and
    # the http ones sent GETs and a PUT to the address first.
    import socketserver
    import threading

    contacted: list[str] = []

    class Recorder(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            contacted.append(self.request.recv(64).decode(errors="replace"))

    server = socketserver.TCPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        where = location.format(tmp=tmp_path, port=server.server_address[1])
        argv = {
            "--output": str(tmp_path / "out"),
            "--contents": str(tmp_path / "*.png"),
            "--styles": str(tmp_path / "*.png"),
        }
        argv[flag] = where
        assert run([item for pair in argv.items() for item in pair]) == 2
    finally:
        server.shutdown()
        server.server_close()
    error = capsys.readouterr().err
    assert f"{flag} {where}: {message}" in error and "Traceback" not in error
    assert contacted == [] and not (tmp_path / "out").exists()


def test_no_beam_flag_is_near_enough_to_ours_to_be_called_a_typo() -> None:
    import difflib

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.config import TYPO_SIMILARITY
    from pipeline.options import StyleTransferOptions, _RaisingParser

    ours, beams = _RaisingParser(), _RaisingParser()
    StyleTransferOptions._add_argparse_args(ours)
    for cls in PipelineOptions.__subclasses__():
        if cls is not StyleTransferOptions:
            cls._add_argparse_args(beams)
    our_flags = {o for a in ours._actions for o in a.option_strings} - {"-h", "--help"}
    beam_flags = {o for a in beams._actions for o in a.option_strings} - our_flags - {"-h", "--help"}
    near = {flag: difflib.get_close_matches(flag, our_flags, n=1, cutoff=TYPO_SIMILARITY) for flag in beam_flags}
    assert {flag: match for flag, match in near.items() if match} == {}


def test_help_survives_a_reader_that_stops_early_and_names_the_command_used(tmp_path) -> None:
    result = subprocess.run(
        f"{sys.executable} -m pipeline --help | head -1", shell=True, capture_output=True, text=True
    )
    assert result.stdout.startswith("usage: python -m pipeline") and result.stderr == ""
    script = Path(sys.executable).parent / "beam-style-transfer"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage: beam-style-transfer (--manifest")


def test_a_stray_argument_is_an_error(one_pair, weights_file, tmp_path, capsys) -> None:
    assert run(job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", "stray")) == 2
    assert "error: unexpected argument 'stray'" in capsys.readouterr().err


def test_beam_options_pass_through(one_pair, weights_file, tmp_path) -> None:
    args = job_args(
        weights_file("vgg19"),
        tmp_path / "out",
        f"--manifest={one_pair}",
        "--experiments=some_experiment",
        "--job_name=nst-test",
        "--direct_num_workers=1",
    )
    assert run(args) == 0
    assert (tmp_path / "out" / "images" / "cat__waves.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--init={tmp}/missing.png"],
            "error: --init {tmp}/missing.png: no such file (use content, random, style or an image URL)",
        ),
        (["--output={tmp}/a-file/out"], "error: --output {tmp}/a-file/out: cannot be written"),
        (["--manifest={tmp}/nope.csv"], "error: --manifest {tmp}/nope.csv: no such file"),
        (["--weights={tmp}/a-file"], "error: --weights {tmp}/a-file: "),  # found after the output's check could run
    ],
)
def test_job_wide_mistakes_stop_before_any_pair(one_pair, weights_file, tmp_path, capsys, extra, message) -> None:
    (tmp_path / "a-file").write_text("a file where the output folder should go")
    args = job_args(
        weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", *[e.format(tmp=tmp_path) for e in extra]
    )
    assert run(args) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_glob_that_matches_nothing_stops_the_job(weights_file, tmp_path, capsys) -> None:
    write_images(tmp_path / "art", {"waves.png": 3})
    args = job_args(
        weights_file("vgg19"), tmp_path / "out", f"--contents={tmp_path}/photos/*.jpg", f"--styles={tmp_path}/art/*.png"
    )
    assert run(args) == 2
    assert f"error: --contents '{tmp_path}/photos/*.jpg': no files match" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_stops_the_job(one_pair, weights_file, tmp_path, capsys) -> None:
    assert run(job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", "--device=cuda")) == 2
    assert (
        "error: --device cuda: device 'cuda' was requested but no CUDA GPU is available (use --device auto or cpu)"
        in capsys.readouterr().err
    )


def test_help_reads_cleanly_and_loads_neither_torch_nor_beam() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from pipeline.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert run(['--help']) == 0\n"
        "print(out.getvalue())\n"
        "print('LOADED', [m for m in ('torch', 'apache_beam', 'torchvision') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "LOADED []" in result.stdout
    assert "(default: None)" not in result.stdout and "(default: False)" not in result.stdout
    for flag in ("--manifest", "--weights_family", "--iterations", "--verbose", "(default: caffe)"):
        assert flag in result.stdout


def test_no_temporary_folder_outlives_the_run(one_pair, weights_file, tmp_path, monkeypatch) -> None:
    import tempfile

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    # The default runner (DirectRunner, trying Prism first) is the one that left folders behind.
    args = [a for a in job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}") if "runner" not in a]
    assert run(args) == 0
    assert list(system_temp.iterdir()) == []
    assert tempfile.tempdir == str(system_temp)


def test_beam_info_lines_are_hidden_unless_verbose() -> None:
    import logging

    from pipeline.main import configure_logging

    root = logging.getLogger()
    saved = root.level, logging.getLogger("beam_style_transfer").level
    try:
        configure_logging(verbose=False)
        assert not logging.getLogger("apache_beam.typehints").isEnabledFor(logging.INFO)
        assert logging.getLogger("beam_style_transfer.transforms.handler").isEnabledFor(logging.INFO)
        assert logging.getLogger("apache_beam").isEnabledFor(logging.WARNING)
        configure_logging(verbose=True)
        assert logging.getLogger("apache_beam.typehints").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(saved[0])
        logging.getLogger("beam_style_transfer").setLevel(saved[1])


def test_every_failure_row_or_pair_is_on_the_console(weights_file, tmp_path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("id,content,style\nok,cat.png,waves.png\nno-style,cat.png,\ngone,gone.png,waves.png\n")
    assert run(job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={manifest}")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{manifest} line 3: row failed: ValueError: no style image" in w for w in warnings)
    assert any(
        w.startswith("gone failed: at read: FileNotFoundError:") and "gone.png: no such file" in w for w in warnings
    )
    finished = [r.getMessage() for r in caplog.records if r.name == "beam_style_transfer.transforms.progress"]
    assert "| 2/2 pairs, 1 failed, " in finished[-1]


@pytest.mark.parametrize(("value", "message"), [("0", "from 1 to 1024"), ("many", "auto or a number")])
def test_a_bad_batch_size_is_refused(one_pair, weights_file, tmp_path, capsys, value, message) -> None:
    assert (
        run(job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", f"--batch_size={value}")) == 2
    )
    error = capsys.readouterr().err
    assert "--batch_size" in error and message in error


def test_a_scheme_without_its_filesystem_stops_the_job_naming_the_extra(
    one_pair, weights_file, tmp_path, capsys, monkeypatch
) -> None:
    import importlib

    # As on an install without the s3 extra: s3fs cannot be imported. (The module, not the
    # read-only view that the name fsspec.registry has on the package.)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    monkeypatch.delitem(importlib.import_module("fsspec.registry")._registry, "s3", raising=False)
    assert run(job_args(weights_file("vgg19"), "s3://bucket/out", f"--manifest={one_pair}")) == 2
    error = capsys.readouterr().err
    assert "--output s3://bucket/out: s3:// needs a package" in error
    assert "pip install 'beam-style-transfer[s3]'" in error and "Traceback" not in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_dataflow_launch_leaves_the_device_to_the_workers(one_pair, weights_file, tmp_path) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import preflight
    from pipeline.main import _workers_here
    from pipeline.options import config_from_options

    args = job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", "--device=cuda")
    config = config_from_options(PipelineOptions(args))
    with pytest.raises(preflight.PreflightError, match="--device cuda"):
        preflight.check(config, workers_here=True)
    assert preflight.check(config, workers_here=False) == 1  # the launcher has no GPU; the workers do
    assert not _workers_here(PipelineOptions(["--runner=DataflowRunner"]))
    assert _workers_here(PipelineOptions(["--runner=FnApiRunner"])) and _workers_here(PipelineOptions([]))


def test_switches_take_explicit_values_as_schedulers_pass_them(one_pair, weights_file, tmp_path) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import check_arguments, config_from_options

    base = job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}")
    for extra, strict in (
        (["--strict"], True),
        (["--strict=true"], True),
        (["--strict=false"], False),
        (["--strict", "no"], False),
        ([], False),
    ):
        check_arguments(base + extra)
        assert config_from_options(PipelineOptions(base + extra)).strict is strict, extra
    with pytest.raises(ValueError, match="argument --strict: expected true or false, got 'maybe'"):
        check_arguments([*base, "--strict=maybe"])


def test_a_redone_pair_says_why(one_pair, weights_file, tmp_path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    args = job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}")

    def said(extra: list[str]) -> str:
        caplog.clear()
        assert run([*args, *extra]) == 0
        (line,) = [r.getMessage() for r in caplog.records if "cat__waves succeeded" in r.getMessage()]
        return line

    said([])
    assert "redone (settings changed: style_weight 1000000.0 -> 3.0)" in said(["--style_weight=3"])
    write_images(one_pair.parent, {"cat.png": 7})  # the content replaced by another picture
    os.utime(one_pair.parent / "cat.png", (1, 1))
    assert "redone (input replaced: cat)" in said(["--style_weight=3"])
    assert "redone (--overwrite)" in said(["--style_weight=3", "--overwrite"])
    (tmp_path / "out" / "images" / "cat__waves.png").write_bytes(b"")
    assert "repaired (the image does not match its log's digest" in said(["--style_weight=3"])


def test_a_content_that_is_its_own_style_is_warned_of(weights_file, tmp_path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    args = job_args(
        weights_file("vgg19"), tmp_path / "out", f"--contents={tmp_path}/in/cat.png", f"--styles={tmp_path}/in/*.png"
    )
    assert run(args) == 0
    # Ours only: Beam warns of type hints on the root logger when a process builds its first
    # pipelines, which depends on the tests that ran before.
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("beam_style_transfer")
    ]
    assert warnings == [
        f"cat__cat: {tmp_path}/in/cat.png is its own style: the result will be the content, barely changed (loss near 0)"
    ]


@pytest.mark.slow  # two job processes
def test_a_dataset_run_and_its_rerun_on_the_console(weights_file, tmp_path) -> None:
    # As a newcomer sees it: an estimate first (each content's own size), short lines, and a
    # rerun that says what it skipped in one line.
    for index, folder in enumerate(["class one", "class two"] * 3):
        (tmp_path / "train" / folder).mkdir(parents=True, exist_ok=True)
        synthetic_image(index, 40 + index, 32).save(tmp_path / "train" / folder / f"photo_{index}.png")
    write_images(tmp_path / "art", {"waves.png": 3})
    args = [
        sys.executable,
        "-m",
        "pipeline",
        f"--contents={tmp_path}/train/**/*.png",
        f"--styles={tmp_path}/art/*.png",
        "--styles_per_content=1",
        "--output_layout=tree",
        "--image_size=0",
        f"--output={tmp_path / 'out'}",
        f"--weights={weights_file('vgg19')}",
        "--weights_family=torchvision",
        "--iterations=2",
        "--runner=FnApiRunner",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True)
    assert first.stdout.splitlines()[0].startswith(
        "6 pairs x 2 iterations at their own sizes (median 43x32 of 6 sampled) on cpu:"
    )
    ours = [
        line for line in (first.stdout + first.stderr).splitlines() if line[:2].isdigit() or line.startswith("6 pairs")
    ]
    assert len([line for line in ours if " succeeded: " in line]) == 6
    assert all(len(line) <= 120 for line in ours), max(ours, key=len)
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True)
    skipped = [line for line in rerun.stderr.splitlines() if "skipped" in line]
    assert (
        len(skipped) == 1
        and "6 pairs skipped, already done (--verbose lists each): class one/photo_0__waves" in skipped[0]
    )
    assert rerun.stdout.splitlines()[-2].startswith("0 succeeded, 6 skipped, 0 failed in ")


def test_bf16_forced_on_a_cpu_that_emulates_it_is_warned_of(
    one_pair, weights_file, tmp_path, capsys, monkeypatch
) -> None:
    # On a CPU without bf16 instructions, bf16 is emulated (measured over 6x slower than fp32):
    # --precision auto picks fp32 there; a forced bf16 gets one warning line (and an estimate at
    # the emulated cost: test_progress).
    from transforms.nst import precision
    from transforms.plan import EMULATED_BF16_TIME_FACTOR

    monkeypatch.setattr(precision, "_cpu_info", lambda: ("an AVX2 CPU", frozenset({"avx2", "fma"})))
    args = job_args(weights_file("vgg19"), tmp_path / "out", f"--manifest={one_pair}", "--iterations=2")
    assert run(args) == 0
    auto = capsys.readouterr().out.splitlines()
    assert run([*args, "--precision=bf16", "--overwrite=true"]) == 0
    bf16 = capsys.readouterr().out.splitlines()
    assert bf16[0] == (
        f"warning: --precision bf16 on a cpu without bf16 in hardware: it is emulated, about "
        f"{EMULATED_BF16_TIME_FACTOR:g}x slower than fp32 (--precision auto picks fp32 here)"
    )
    assert bf16[1].startswith("1 pair x 2 iterations at 48 px on cpu")
    assert auto[0].startswith("1 pair x 2 iterations at 48 px on cpu")
