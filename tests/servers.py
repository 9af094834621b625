"""Real local storage servers for the gs://, s3:// and az:// tests, and what they all check."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import pytest

from pipeline.main import run
from tests.helpers import synthetic_image
from transforms import claims, storage
from transforms.index import read_index


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def executable(name: str) -> str:
    """A console script of this environment (the venv's bin folder need not be on PATH)."""
    return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


@contextmanager
def serving(command: list[str], port: int, log_path: Path, what: str) -> Iterator[None]:
    """Run ``command`` until the block ends; wait until it accepts connections on ``port``."""
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        pytest.fail(f"{what} did not start (exit {server.poll()}; log: {log_path})")
                    time.sleep(0.2)
            yield
        finally:
            server.terminate()
            server.wait(timeout=10)


@contextmanager
def fsspec_settings(protocol: str, settings: dict[str, object]) -> Iterator[fsspec.AbstractFileSystem]:
    """A new filesystem for ``protocol`` configured as a user configures it, through fsspec's own
    configuration (the FSSPEC_<PROTOCOL>_<KEY> variables or config file); restored afterwards."""
    saved = fsspec.config.conf.get(protocol)
    fsspec.config.conf[protocol] = settings
    try:
        yield fsspec.filesystem(protocol, skip_instance_cache=True)
    finally:
        if saved is None:
            fsspec.config.conf.pop(protocol, None)
        else:
            fsspec.config.conf[protocol] = saved


def upload_png(fs: fsspec.AbstractFileSystem, path: str, seed: int) -> None:
    buffer = io.BytesIO()
    synthetic_image(seed).save(buffer, format="PNG")
    fs.pipe_file(path, buffer.getvalue())


def check_exclusive_creation_and_claims(fs: fsspec.AbstractFileSystem, root: str) -> None:
    """``root`` is a URL folder on the store: creation is exclusive, claims are one run's."""
    location = f"{root}/claims-test/x.json"
    assert storage.create_exclusive(location, b"first")
    assert not storage.create_exclusive(location, b"second")
    fs.invalidate_cache()
    assert fs.cat_file(location) == b"first"
    output = f"{root}/claims-test/out"
    assert claims.acquire(output, "p", "run-a", seconds=60)
    assert not claims.acquire(output, "p", "run-b", seconds=60)
    claims.release(output, "p", "run-a")
    assert claims.acquire(output, "p", "run-b", seconds=60)


def check_a_create_that_loses_the_race_is_refused(
    fs: fsspec.AbstractFileSystem, location: str, filesystem: type
) -> None:
    """Two runs both see no claim, then both upload: the store's precondition (If-None-Match, or
    adlfs's mode="create") lets only the first through. ``filesystem`` is the fsspec class whose
    existence check is made to miss the first object."""
    assert storage.create_exclusive(location, b"first")
    saved = filesystem.exists
    filesystem.exists = lambda self, path, **kwargs: False
    try:
        assert not storage.create_exclusive(location, b"second")
    finally:
        filesystem.exists = saved
    fs.invalidate_cache()
    assert fs.cat_file(location) == b"first"


def check_job_writes_resumes_and_repairs(
    fs: fsspec.AbstractFileSystem, scheme: str, root: str, weights_file: str
) -> None:
    """The whole job on the store, weights there too: two pairs (one with two styles) and a bad
    row, nothing stray beside the outputs, a report whose links work from the bucket, a rerun that
    skips both pairs, and a damaged image found by its digest and redone. ``root`` is a folder
    path on ``fs`` (no scheme)."""
    from tests.test_report import Page

    upload_png(fs, f"{root}/in/content.png", 1)
    upload_png(fs, f"{root}/in/style-a.png", 3)
    upload_png(fs, f"{root}/in/style-b.png", 4)
    with open(weights_file, "rb") as weights:
        fs.pipe_file(f"{root}/models/vgg19.pth", weights.read())
    fs.pipe_file(
        f"{root}/in/manifest.csv",
        b"id,content,style\none,content.png,style-a.png\ntwo,content.png,style-a.png|style-b.png\nbad,missing.png,style-a.png\n",
    )
    fs.invalidate_cache()
    url = f"{scheme}://{root}"
    args = [
        "--runner=FnApiRunner",
        f"--manifest={url}/in/manifest.csv",
        f"--output={url}/out",
        f"--weights={url}/models/vgg19.pth",
        "--weights_family=torchvision",
        "--image_size=48",
        "--iterations=5",
        "--batch_size=2",
    ]
    assert run(args) == 0
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{root}/out/images")) == [f"{root}/out/images/one.png", f"{root}/out/images/two.png"]
    log = json.loads(fs.cat_file(f"{root}/out/logs/two.json"))
    assert log["weights"] == f"{url}/models/vgg19.pth" and log["batch_size"] == 2
    assert log["inputs"]["content"] == f"{url}/in/content.png"
    assert log["inputs"]["styles"] == [f"{url}/in/style-a.png", f"{url}/in/style-b.png"]
    assert log["final"]["total"] < log["history"]["total"][0]
    assert log["image"]["sha256"] == hashlib.sha256(fs.cat_file(f"{root}/out/images/two.png")).hexdigest()
    # The store's own version token (generation or ETag), not a modification time.
    assert log["inputs"]["signatures"][f"{url}/in/content.png"].lower().startswith(("etag=", "generation="))
    summary = json.loads(fs.cat_file(f"{root}/out/summary.json"))
    assert summary["counts"] == {
        "succeeded": 2,
        "skipped": 0,
        "failed": 1,
        "claimed_elsewhere": 0,
        "repaired": 0,
        "total": 3,
    }
    failure = json.loads(fs.cat_file(summary["failures_file"]))
    assert failure["id"] == "bad" and "missing.png: no such file" in failure["error"]
    # No temporary, claim or stray objects next to the results.
    assert {p.rsplit("/", 1)[-1] for p in fs.find(f"{root}/out")} == {
        "one.png",
        "two.png",
        "one.json",
        "two.json",
        "summary.json",
        summary["failures_file"].rsplit("/", 1)[-1],
        "report.html",
        "contact_sheet.png",
        "index.json",
        f"{summary['run_id']}-00000.jsonl",
    }
    # The index lists exactly the pairs written, with their images' paths below the output.
    index = sorted(read_index(f"{url}/out"), key=lambda entry: entry["id"])
    assert [(entry["id"], entry["image"]) for entry in index] == [("one", "images/one.png"), ("two", "images/two.png")]
    # The report opens from the bucket: its links are relative and lead to objects beside it.
    page = Page(fs.cat_file(f"{root}/out/report.html").decode())
    assert set(page.rows) == {"one", "two"} and page.links
    for link in page.links:
        assert "://" not in link and fs.exists(f"{root}/out/{link}"), link

    assert run(args) == 0
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{root}/out/summary.json"))["counts"]["skipped"] == 2
    fs.pipe_file(f"{root}/out/images/one.png", b"\x89PNG cut")
    fs.invalidate_cache()
    assert run(args) == 0
    fs.invalidate_cache()
    counts = json.loads(fs.cat_file(f"{root}/out/summary.json"))["counts"]
    assert counts["repaired"] == 1 and counts["succeeded"] == 1 and counts["skipped"] == 1
    assert (
        hashlib.sha256(fs.cat_file(f"{root}/out/images/one.png")).hexdigest()
        == json.loads(fs.cat_file(f"{root}/out/logs/one.json"))["image"]["sha256"]
    )
    # The index was replaced whole at each run: the latest shards only, each image once.
    run_id = json.loads(fs.cat_file(f"{root}/out/summary.json"))["run_id"]
    assert [p.rsplit("/", 1)[-1] for p in fs.find(f"{root}/out/index")] == [f"{run_id}-00000.jsonl"]
    assert sorted(entry["image"] for entry in read_index(f"{url}/out")) == ["images/one.png", "images/two.png"]
