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

from beam_style_transfer.pipeline.main import run
from beam_style_transfer.transforms import claims, storage
from tests.conftest import synthetic_image


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


def check_job_writes_resumes_and_repairs(fs: fsspec.AbstractFileSystem, scheme: str, root: str, weights: str) -> None:
    """The whole job on the store: two pairs and a bad row, a rerun that skips both, and a damaged
    image found by its digest and redone. ``root`` is a folder path on ``fs`` (no scheme)."""
    upload_png(fs, f"{root}/in/content.png", 1)
    upload_png(fs, f"{root}/in/style.png", 3)
    fs.pipe_file(
        f"{root}/in/manifest.csv",
        b"id,content,style\none,content.png,style.png\ntwo,content.png,style.png\nbad,missing.png,style.png\n",
    )
    args = [
        "--runner=FnApiRunner", f"--manifest={scheme}://{root}/in/manifest.csv", f"--output={scheme}://{root}/out",
        f"--weights={weights}", "--weights_family=torchvision", "--image_size=48", "--iterations=5", "--batch_size=2",
    ]
    assert run(args) == 0
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{root}/out/images")) == [f"{root}/out/images/one.png", f"{root}/out/images/two.png"]
    log = json.loads(fs.cat_file(f"{root}/out/logs/two.json"))
    assert log["inputs"]["content"] == f"{scheme}://{root}/in/content.png" and log["batch_size"] == 2
    assert log["image"]["sha256"] == hashlib.sha256(fs.cat_file(f"{root}/out/images/two.png")).hexdigest()
    assert log["inputs"]["signatures"][f"{scheme}://{root}/in/content.png"].lower().startswith("etag=")
    summary = json.loads(fs.cat_file(f"{root}/out/summary.json"))
    assert summary["counts"]["succeeded"] == 2 and summary["counts"]["failed"] == 1
    failure = json.loads(fs.cat_file(summary["failures_file"]))
    assert failure["id"] == "bad" and "missing.png: no such file" in failure["error"]
    assert fs.exists(f"{root}/out/report.html")
    assert not fs.exists(f"{root}/out/claims") or not fs.ls(f"{root}/out/claims")

    assert run(args) == 0
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{root}/out/summary.json"))["counts"]["skipped"] == 2
    fs.pipe_file(f"{root}/out/images/one.png", b"\x89PNG cut")
    fs.invalidate_cache()
    assert run(args) == 0
    fs.invalidate_cache()
    counts = json.loads(fs.cat_file(f"{root}/out/summary.json"))["counts"]
    assert counts["repaired"] == 1 and counts["succeeded"] == 1 and counts["skipped"] == 1
