"""One reader for what the job reads back, one bound for what its records copy, one line for a
job that fails (issue 31). The cases are those the fault campaign found after round 3: each
job-level test here failed on the code before it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.main import run
from tests.helpers import job_args, summary_of, write_images
from transforms import logs, reading
from transforms.records import RECORDED_BYTES, RECORDED_MESSAGE_BYTES, Failure, Stage, bounded

# --- the reader ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("[" * 500 + "]" * 500, "nested too deeply: 500 levels"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nested too deeply: 40 levels"),
        ("[" * 100_000, "nested too deeply to parse"),
        ("9" * 4000, "a number of 4,000 characters"),
        ("1." + "5" * 100, "a number of 102 characters"),
        ('{"a": 1', "not valid json"),
        (b"\xff\xfe{}", "not valid json"),
    ],
)
def test_json_past_the_caps_is_damaged_naming_where(text, phrase) -> None:
    with pytest.raises(reading.DamagedError) as caught:
        reading.parse_json(text, "rows.jsonl line 7")
    assert str(caught.value).startswith("rows.jsonl line 7: ") and phrase in str(caught.value).lower()


def test_json_within_the_caps_reads_as_json() -> None:
    deepest = "[" * reading.MAX_JSON_DEPTH + "]" * reading.MAX_JSON_DEPTH
    assert reading.parse_json(deepest, "x") == json.loads(deepest)
    assert reading.parse_json('{"seed": 9223372036854775807, "w": 1e-300, "n": NaN}', "x")["seed"] == 2**63 - 1


def test_the_job_s_own_files_are_read_only_as_written(tmp_path) -> None:
    (tmp_path / "logs").mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"a": 1}')
    os.symlink(elsewhere, tmp_path / "logs" / "x.json")
    with pytest.raises(reading.DamagedError, match="is a link"):
        reading.read_json(str(tmp_path / "logs" / "x.json"), 1000, inside=str(tmp_path))
    os.symlink(tmp_path / "logs", tmp_path / "linked")
    with pytest.raises(reading.DamagedError, match="is a link, not a folder"):
        reading.read_json(str(tmp_path / "linked" / "x.json"), 1000, inside=str(tmp_path))
    with pytest.raises(reading.DamagedError, match="over the limit"):
        reading.read_json(str(elsewhere), 5)
    assert reading.read_json(str(elsewhere), 1000) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        reading.read_json(str(tmp_path / "logs" / "none.json"), 1000, inside=str(tmp_path))


# --- one bound for every field of a record ---------------------------------------------------


def test_every_field_of_a_record_is_bounded_whatever_its_type() -> None:
    row = {
        "seed": 10**4000,
        "huge": 2**30000,  # past what str() of an int gives
        "path": " ".join(["word"] * 600),
        "deep": json.loads("[" * 30 + "]" * 30),
        "many": list(range(10_000)),
        "wide": {str(i): i for i in range(10_000)},
        "k" * 500: 1.5,
    }
    record = Failure(
        Stage.MANIFEST, "ValueError: " + " ".join(["word"] * 600) + ": the reason", "m.jsonl line 1", None, row
    )
    shown = record.to_dict()
    assert len(json.dumps(shown)) < 6_000
    assert shown["row"]["seed"].endswith("... (4,001 digits)") and len(shown["row"]["seed"]) < RECORDED_BYTES + 30
    assert shown["row"]["huge"] == "an integer of about 9,031 digits"
    assert shown["row"]["path"].endswith("... (2999 characters)")
    assert "nested deeper than" in json.dumps(shown["row"]["deep"])
    assert len(shown["error"]) <= RECORDED_MESSAGE_BYTES and shown["error"].endswith("word: the reason")
    assert shown["error"].startswith("ValueError: word")
    assert bounded([1.5, None, True, "x"]) == [1.5, None, True, "x"]


# --- the log's schema ------------------------------------------------------------------------


def test_a_log_is_trusted_only_with_the_types_and_ranges_its_writer_gives(finished_run) -> None:
    log = json.loads((finished_run.output / "logs" / "cat.json").read_text())
    assert logs.log_problem(log, "cat") is None

    def changed(path: str, value: object) -> dict:
        copy = json.loads(json.dumps(log))
        *parents, last = path.split(".")
        target = copy
        for key in parents:
            target = target[key]
        target[last] = value
        return copy

    wrong = {
        "history.rejected": [[1]],
        "history.total": [[1.0]] * len(log["history"]["iteration"]),
        "history.iteration": [-1] * len(log["history"]["iteration"]),
        "seconds": -1,
        "image.bytes": 3 * 2**30,
        "image.size": [48, "48"],
        "image.sha256": "x" * 64,
        "inputs.styles": [],
        "inputs.content": ["a"],
        "final.total": "1.0",
        "label": {"a": 1},
        "config": [],
    }
    for path, value in wrong.items():
        assert logs.log_problem(changed(path, value), "cat") is not None, path


# --- cases 1 and 2: rows that crashed the job or copied kilobytes ------------------------------


def test_rows_past_the_reader_s_caps_fail_alone_with_short_records(weights_file, tmp_path) -> None:
    write_images(tmp_path, {"ok.png": 1, "style.png": 2})
    ok, style = tmp_path / "ok.png", tmp_path / "style.png"
    deep = "[" * 500 + "]" * 500
    spaced = tmp_path / (" ".join(["word"] * 560) + ".png")
    rows = [
        f'{{"id": "deep-column", "content": "{ok}", "style": "{style}", "notes": {deep}}}',
        f'{{"id": "deep-style", "content": "{ok}", "style": {deep}}}',
        '{{"id": "digits", "content": "{}", "style": "{}", "seed": {}}}'.format(ok, style, "9" * 4000),
        json.dumps({"id": "spaced", "content": str(spaced), "style": str(style)}),
        json.dumps({"id": "good", "content": str(ok), "style": str(style)}),
    ]
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}")) == 0
    assert [p.stem for p in (out / "images").iterdir()] == ["good"]
    failures = [json.loads(line) for line in Path(summary_of(out)["failures_file"]).read_text().splitlines()]
    by_line = {int(f["source"].rsplit(" line ", 1)[1]): f for f in failures}
    assert sorted(by_line) == [1, 2, 3, 4]
    assert "nested too deeply" in by_line[1]["error"] and "nested too deeply" in by_line[2]["error"]
    assert "4,000 characters" in by_line[3]["error"]
    for record in failures:
        assert len(json.dumps(record)) < 3_000
        assert len(record["error"]) <= RECORDED_MESSAGE_BYTES
        assert all(len(text) <= RECORDED_BYTES + 30 for text in json.dumps(record["row"]).split('"'))


# --- cases 3 and 4: logs a rerun must not trust -----------------------------------------------


def _rerun_redoes_cat(args: list[str], out: Path) -> str:
    """Rerun; cat must be redone as a repair, dog skipped; the reason the new log records."""
    assert run(args) == 0
    summary = summary_of(out)
    assert summary["counts"] == {**summary["counts"], "succeeded": 1, "skipped": 1, "repaired": 1, "failed": 0}
    log = json.loads((out / "logs" / "cat.json").read_text())
    assert log["image"]["bytes"] == (out / "images" / "cat.png").stat().st_size
    return log["repaired"]


def test_a_log_reached_through_a_link_is_not_trusted(finished_run, tmp_path) -> None:
    out, args = finished_run.copy(tmp_path / "out")
    # A valid log, but elsewhere: what a link could make a rerun read (a 3 GiB file, as well).
    moved = tmp_path / "cat-log.json"
    os.replace(out / "logs" / "cat.json", moved)
    os.symlink(moved, out / "logs" / "cat.json")
    assert "is a link" in _rerun_redoes_cat(args, out)


def test_a_log_claiming_gigabytes_is_not_believed(finished_run, tmp_path) -> None:
    out, args = finished_run.copy(tmp_path / "out")
    log_file, image = out / "logs" / "cat.json", out / "images" / "cat.png"
    log = json.loads(log_file.read_text())
    log["image"]["bytes"] = 3 * 2**30
    log_file.write_text(json.dumps(log))
    with open(image, "ab") as grown:  # a sparse 3 GiB image: the old rerun read all of it
        grown.truncate(3 * 2**30)
    assert "bytes are not a size" in _rerun_redoes_cat(args, out)


@pytest.mark.parametrize(
    ("field", "value", "phrase"),
    [("rejected", [[1]], "rejected iterations"), ("seconds", "4" * 400, "400 characters")],
)
def test_a_verified_log_with_odd_values_is_redone_not_fatal(finished_run, tmp_path, field, value, phrase) -> None:
    out, args = finished_run.copy(tmp_path / "out")
    log_file = out / "logs" / "cat.json"
    log = json.loads(log_file.read_text())
    if field == "rejected":
        log["history"]["rejected"] = value
        log_file.write_text(json.dumps(log))
    else:  # a number JSON holds and Python parses: written as text, then unquoted
        log["seconds"] = "SECONDS"
        log_file.write_text(json.dumps(log).replace('"SECONDS"', value))
    assert phrase in _rerun_redoes_cat(args, out)


# --- case 7: the runner's errors reach the console as one line ---------------------------------


@pytest.mark.slow  # job processes of their own: the console is what is tested
@pytest.mark.parametrize("full", ["summary", "output"])
def test_a_job_that_fails_at_its_summary_ends_with_one_line_and_a_trace_file(
    two_pairs, weights_file, tmp_path, full
) -> None:
    out = tmp_path / "out"
    args = job_args(weights_file("vgg19"), out, f"--manifest={two_pairs}")
    # The disk fills after the pairs: the summary cannot be written, nor (``output``) anything else.
    script = textwrap.dedent(f"""
        import errno, sys
        from transforms import storage
        real = storage.write_atomic
        def full(location, data, inside=None):
            if location.endswith("summary.json") or ({full!r} == "output" and "/runs/" in location):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(location, data, inside)
        storage.write_atomic = full
        from pipeline.main import main
        sys.argv = ["style-transfer", *{args!r}]
        main()
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr and " ERROR " not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the job failed: OSError: [Errno 28] No space left on device"), result.stderr
    trace = Path(line.rsplit("(the whole trace: ", 1)[1].rstrip(")"))
    expected_folder = out / "runs" if full == "summary" else tmp_path
    assert expected_folder in trace.parents and trace.name.endswith("error.log")
    text = trace.read_text()
    assert "Traceback" in text and "WriteSummary" in text and "No space left on device" in text


def test_the_runner_s_error_lines_are_held_back_for_the_trace_file(tmp_path, caplog) -> None:
    import logging

    from pipeline import job_errors

    with job_errors.runner_errors_held() as held:
        logging.getLogger("apache_beam.runners.common").error("a bundle failed")
        logging.getLogger("beam_style_transfer.transforms.progress").error("ours, shown")
    logging.getLogger("apache_beam.runners.common").error("after the run, shown")
    assert [line.rsplit(": ", 1)[1] for line in held] == ["a bundle failed"]
    assert [r.getMessage() for r in caplog.records] == ["ours, shown", "after the run, shown"]
    (tmp_path / "out").mkdir()
    where = job_errors.write_trace(None, str(tmp_path / "out"), "run-1", held, str(tmp_path))
    assert where == str(tmp_path / "out" / "runs" / "run-1" / "error.log")
    assert "a bundle failed" in Path(where).read_text()


# --- inputs that vanish between planning and reading ------------------------------------------


@pytest.mark.parametrize("vanishing", ["manifest", "content"])
def test_inputs_that_vanish_after_pre_flight_fail_their_rows_not_the_job(
    two_pairs, weights_file, tmp_path, monkeypatch, vanishing
) -> None:
    from pipeline import preflight

    checked_job = preflight.check_job

    def check_then_remove(*args, **kwargs):
        checked = checked_job(*args, **kwargs)
        (two_pairs if vanishing == "manifest" else tmp_path / "in" / "cat.png").unlink()
        return checked

    monkeypatch.setattr(preflight, "check_job", check_then_remove)
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={two_pairs}")) == 0
    failures = [json.loads(line) for line in Path(summary_of(out)["failures_file"]).read_text().splitlines()]
    if vanishing == "manifest":
        assert [(f["stage"], f["source"]) for f in failures] == [("manifest", str(two_pairs))]
        assert "no such file" in failures[0]["error"]
    else:
        assert [(f["stage"], f["id"]) for f in failures] == [("read", "cat")]
        assert [p.stem for p in (out / "images").iterdir()] == ["dog"]


def test_an_index_shard_is_read_a_line_at_a_time(tmp_path) -> None:
    # A shard within its 1 GiB cap made of blank lines cost 11.4 GB (a list of a string per line):
    # memory now follows a line. tracemalloc counts Python's allocations, whatever the machine's speed.
    import tracemalloc

    from transforms import index

    out = tmp_path / "out"
    (out / "index").mkdir(parents=True)
    (out / "index" / "blank-00000.jsonl").write_bytes(b"\n" * (1 << 20))  # 1 MiB of blank lines
    tracemalloc.start()
    try:
        assert list(index.lines_of(str(out), {"shards": ["index/blank-00000.jsonl"]})) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the old whole-file read and split held about 60 MB here
    # A line over its cap is damage, found as the stream reaches it, after the lines before it.
    (out / "index" / "long-00000.jsonl").write_bytes(b"\n\n" + b"x" * (index.MAX_LINE_BYTES + 5) + b"\n")
    with pytest.raises(reading.DamagedError, match="a line of over"):
        list(index.lines_of(str(out), {"shards": ["index/long-00000.jsonl"]}))


def test_a_record_is_bounded_in_bytes_and_written_as_utf8() -> None:
    # A content path of 2,000 emoji made a 6,415-byte failure record: each character bounded as
    # one, and written as a 12-byte escape. Bounds are in UTF-8 bytes now, and records UTF-8.
    path = "/d/" + "\U0001f600" * 2000 + ".png"
    failure = Failure.from_exception(
        Stage.READ, FileNotFoundError(f"{path}: no such file"), "m.csv line 2", "p", {"content": path}
    )
    written = json.dumps(failure.to_dict(), ensure_ascii=False).encode()  # as the failures file is
    assert len(written) < 1000, len(written)  # 2,289 bytes before (6,505 as it was written, escaped)
    assert len(failure.error.encode()) <= RECORDED_MESSAGE_BYTES and failure.error.endswith("no such file")
    assert len(failure.to_dict()["row"]["content"].encode()) <= RECORDED_BYTES + 40
