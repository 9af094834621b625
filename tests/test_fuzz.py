"""Property-based fuzzing of everything the job reads that someone else may have written: manifest
rows (CSV and JSON Lines), logs, claims and file names as bytes (issue 31).

The properties: the reader, the skip check, the index and the report never raise; each bad input
becomes its own failure record (bounded, UTF-8) or "damaged". The default test run draws 150
examples a property, derandomized (the ``ci`` profile); ``.ci/run`` runs them again with
``FUZZ_EXAMPLES=1500``, about a minute, still derandomized so that a failure reproduces. A long
run draws new examples each time (docs/reliability.md):

    HYPOTHESIS_PROFILE=long FUZZ_EXAMPLES=30000 python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import claims, index, logs, outputs, reading, report
from transforms.limits import Limits
from transforms.manifest import COLUMNS, glob_rows, parse_rows, validate_rows
from transforms.nst.config import StyleConfig
from transforms.records import RECORDED_MESSAGE_BYTES, Failure, Pair, bounded

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150" if PROFILE == "ci" else "20000"))
# Each property's settings (not a loaded profile: the other modules' hypothesis tests keep theirs).
# The fixtures a property uses are a folder it restores or empties itself: safe to share.
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=PROFILE == "ci",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Any JSON value: what a row, a log field or a claim may hold.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
# What a line of text in a file may be: JSON-ish text, deep nesting, long numbers, any Unicode.
hostile_text = st.one_of(
    st.text(max_size=200),
    st.integers(min_value=1, max_value=2000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=600).map(lambda n: "9" * n),
    json_values.map(json.dumps),
)
DEFAULTS = StyleConfig(weights="random")
# Integers of any size a JSON reader still takes (up to its 40 digits) and beyond, the edges of
# the machine's integers included (pid_t, long long).
huge_integers = st.one_of(
    st.integers(min_value=-(10**45), max_value=10**45),
    st.integers(min_value=2**31 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**64) - 2, max_value=0),
)


def _record_is_bounded_utf8(failure: Failure) -> None:
    text = json.dumps(failure.to_dict(), ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate: every store and coder takes it
    assert len(failure.error) <= RECORDED_MESSAGE_BYTES
    assert len(text) < 12_000, text[:300]


def _rows_become_pairs_or_records(data: bytes, fmt: str, tmp: str) -> None:
    rows = list(parse_rows(data, f"{tmp}/m.{fmt}", fmt))
    for item in validate_rows(rows, tmp, DEFAULTS, Limits(), tree_root=tmp, output=f"{tmp}/out"):
        if isinstance(item, Failure):
            _record_is_bounded_utf8(item)
        else:
            assert isinstance(item, Pair) and item.id and not item.id.startswith(".")
            # What the row parser accepts reads back from the pair's log as it was written.
            reading.parse_json(json.dumps(item.config.to_dict()), "the pair's log")
            item.id.encode("utf-8")


# --- manifest rows ------------------------------------------------------------------------------


@fuzz
@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.sampled_from([*COLUMNS, "extra", ""]), json_values, max_size=6).map(json.dumps),
            st.builds(
                lambda c, v: json.dumps({"content": "/d/a.png", "style": "/d/s.png", c: None}).replace("null", v),
                st.sampled_from([*COLUMNS, "x"]),
                hostile_text,
            ),
            hostile_text,
        ),
        max_size=6,
    )
)
def test_any_json_lines_manifest_is_read_row_by_row(lines) -> None:
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    _rows_become_pairs_or_records(data, "jsonl", "/d")


@fuzz
@given(
    st.sampled_from(["seed", "image_size", "iterations", "style_weight", "content_weight", "tv_weight"]),
    huge_integers.map(str) | hostile_text,
)
def test_any_setting_of_a_row_that_is_accepted_reads_back_from_its_log(column, value) -> None:
    # A 4,000-digit seed was accepted, and every rerun redid its pair as repaired: a row's own
    # setting, whatever its value, fails the row or fits the log.
    data = f"content,style,{column}\n/d/a.png,/d/s.png,{json.dumps(value)}\n".encode("utf-8", "surrogatepass")
    _rows_become_pairs_or_records(data, "csv", "/d")


@fuzz
@given(st.lists(st.lists(st.text(max_size=30) | hostile_text, max_size=6), max_size=6), st.binary(max_size=64))
def test_any_csv_manifest_is_read_row_by_row(cells, noise) -> None:
    header = "content,style,style_weight,image_size,seed,id\n"
    body = "\n".join(",".join(row) for row in cells)
    _rows_become_pairs_or_records(header.encode() + body.encode("utf-8", "surrogatepass") + noise, "csv", "/d")


# --- file names as bytes ----------------------------------------------------------------------

byte_names = st.binary(min_size=1, max_size=60).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@fuzz
@given(st.lists(byte_names, min_size=1, max_size=5, unique=True))
def test_any_file_name_becomes_a_pair_or_a_record(tmp_path_factory, names) -> None:
    folder = tmp_path_factory.mktemp("names")
    contents = []
    for name in names:
        path = os.path.join(os.fsencode(folder), name)
        Path(os.fsdecode(path)).write_bytes(b"")
        contents.append(os.fsdecode(path))
    rows = glob_rows(contents, [f"{folder}/s.png"], str(folder), 0, 0)
    for item in validate_rows(rows, str(folder), DEFAULTS, Limits(), tree_root=str(folder)):
        if isinstance(item, Failure):
            _record_is_bounded_utf8(item)
        else:
            item.id.encode("utf-8")  # the id is a name every store accepts
            line = index.encode_line({"id": item.id, "content": item.content})
            line.encode("ascii")


# --- the reader and the record bound -----------------------------------------------------------


@fuzz
@given(st.binary(max_size=300) | hostile_text.map(str.encode))
def test_the_reader_returns_json_or_says_damaged(data) -> None:
    try:
        value = reading.parse_json(data, "f.json")
    except reading.DamagedError as exc:
        assert str(exc).startswith("f.json: ")
        return
    json.dumps(bounded(value))


@fuzz
@given(json_values | st.integers() | st.text())
def test_any_value_is_bounded_to_a_small_record(value) -> None:
    assert len(json.dumps(bounded(value))) < 20_000


# --- logs: mutations of a real one --------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, finished_run) -> dict[str, Any]:
    """A copy of a real job's output (conftest.finished_run): its folder, and the log of its pair
    ``cat`` as written."""
    out, _ = finished_run.copy(tmp_path_factory.mktemp("fuzzed") / "out")
    return {"out": out, "log": (out / "logs" / "cat.json").read_bytes()}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for position, child in enumerate(value[:3]):
            found += _paths(child, (*prefix, position))
    return found


@st.composite
def mutated_logs(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["replace", "delete", "cut", "flip"]))
    if kind == "cut":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        position = draw(st.integers(0, len(original) - 1))
        return original[:position] + bytes([draw(st.integers(0, 255))]) + original[position + 1 :]
    log = json.loads(original)
    path = draw(st.sampled_from(_paths(log)[1:]))
    *parents, last = path
    target = log
    for key in parents:
        target = target[key]
    if kind == "delete":
        del target[last]
        return json.dumps(log).encode()
    value = draw(json_values | hostile_text.map(lambda text: (_RAW, text)))
    if not isinstance(value, tuple):
        target[last] = value
        return json.dumps(log).encode()
    # Raw text where the value was: numbers of any length, nesting beyond the reader's caps.
    target[last] = _RAW
    return json.dumps(log).replace(json.dumps(_RAW), value[1], 1).encode()


_RAW = "raw text goes here"


@fuzz
@given(data=st.data())
def test_any_log_is_done_or_redone_never_an_error(finished, data) -> None:
    out, original = finished["out"], finished["log"]
    mutated = data.draw(mutated_logs(original))
    (out / "logs" / "cat.json").write_bytes(mutated)
    try:
        fingerprint = json.loads(original)["fingerprint"]
        prior = outputs.inspect_outputs(str(out), "cat", fingerprint)
        assert prior.state in ("done", "stale", "damaged")
        if prior.state == "stale":  # the console says what changed
            pair = Pair("cat", "/in/cat.png", ("/in/waves.png",), DEFAULTS)
            assert outputs.changes(prior.log, pair, {"/in/cat.png": "x"}, outputs.OutputSpec())
        if prior.log is not None:  # a log the skip check accepted: every reader of it takes it
            assert logs.log_problem(prior.log, "cat") is None
            line = index.line_from_log(prior.log)
            assert not line["label"]  # the id is in no folder: its label is none, whatever the log says
            report.losses_from_log(prior.log)
            report.entry_from_log("cat", "skipped", prior.log, str(out / "images" / "cat.png"), lambda _: b"")
    finally:
        (out / "logs" / "cat.json").write_bytes(original)


@fuzz
@given(json_values | hostile_text)
def test_any_label_in_a_log_is_its_id_s_or_the_pair_is_redone(finished, label) -> None:
    # label "cats" on dogs/d1__s1 was believed by the skip check and copied into the index.
    out, original = finished["out"], finished["log"]
    log = json.loads(original)
    log["label"] = label
    (out / "logs" / "cat.json").write_text(json.dumps(log))
    try:
        prior = outputs.inspect_outputs(str(out), "cat", log["fingerprint"])
        if prior.state == "done" and prior.log is not None:
            assert not index.line_from_log(prior.log)["label"]  # "cat" is in no folder
    finally:
        (out / "logs" / "cat.json").write_bytes(original)


# --- claims -------------------------------------------------------------------------------------


@fuzz
@given(
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"run_id": json_values, "expires_at": json_values, "host": json_values, "pid": json_values}
    ).map(lambda v: json.dumps(v).encode())
)
def test_any_claim_file_is_a_claim_or_left_alone(tmp_path, data) -> None:
    _claim_file_is_a_claim_or_left_alone(tmp_path, data)


def _claim_file_is_a_claim_or_left_alone(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "claims").mkdir(exist_ok=True)
    location = tmp_path / "claims" / "p.json"
    location.write_bytes(data)
    try:
        held = claims.acquire(str(tmp_path), "p", "run-b")
    except claims.NotAClaimError as exc:
        assert "is not a claim this job wrote" in str(exc)
        assert location.read_bytes() == data  # left alone
    else:
        assert isinstance(held, claims.Claim)
        held.describe()  # what a claimed pair's record says of its holder
    claims.remove_expired(str(tmp_path))
    location.unlink(missing_ok=True)


@fuzz
@given(st.sampled_from(["run_id", "expires_at", "host", "pid"]), json_values | huge_integers)
def test_a_live_claim_with_any_value_in_one_field_is_a_claim_or_left_alone(tmp_path, field, value) -> None:
    # A claim of this machine's live process (this one), valid for ten more minutes, but for one
    # field: what the reader lets through reaches the expiry and process checks (a pid past
    # pid_t made os.kill raise OverflowError in every run's sweep).
    live = {"run_id": "run-a", "expires_at": time.time() + 600, "host": socket.gethostname(), "pid": os.getpid()}
    _claim_file_is_a_claim_or_left_alone(tmp_path, json.dumps({**live, field: value}).encode())
