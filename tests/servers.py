"""Real local storage servers for the gs:// and s3:// tests, and what both sets of tests check."""

from __future__ import annotations

import io
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

from tests.conftest import synthetic_image
from transforms import claims, storage


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
