"""The same job with manifest, images, weights and output on gs://, against a real local GCS emulator."""

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

import fsspec
import pytest

from pipeline.main import run
from tests.conftest import synthetic_image
from transforms import claims, storage

BUCKET = "style-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fsspec.AbstractFileSystem]:
    """A gcp-storage-emulator on 127.0.0.1, and gcsfs pointed at it the way a user would."""
    executable = shutil.which("gcp-storage-emulator") or os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "wb")
    server = subprocess.Popen(
        [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", BUCKET],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"the GCS emulator did not start (exit {server.poll()})")
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    # fsspec's own configuration (what FSSPEC_GS_TOKEN=anon sets): no credentials for the emulator.
    fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
    try:
        yield fsspec.filesystem("gs")
    finally:
        fsspec.config.conf["gs"].pop("token", None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _upload_png(fs: fsspec.AbstractFileSystem, path: str, seed: int) -> None:
    buffer = io.BytesIO()
    synthetic_image(seed).save(buffer, format="PNG")
    fs.pipe_file(path, buffer.getvalue())


def test_job_on_gcs(gcs, weights_file) -> None:
    root = f"{BUCKET}/job"
    _upload_png(gcs, f"{root}/in/content.png", 1)
    _upload_png(gcs, f"{root}/in/style-a.png", 3)
    _upload_png(gcs, f"{root}/in/style-b.png", 4)
    with open(weights_file("vgg19"), "rb") as weights:
        gcs.pipe_file(f"{root}/models/vgg19.pth", weights.read())
    gcs.pipe_file(
        f"{root}/in/manifest.csv",
        b"id,content,style\none,content.png,style-a.png\ntwo,content.png,style-a.png|style-b.png\nbad,missing.png,style-a.png\n",
    )
    gcs.invalidate_cache()
    args = [
        "--runner=FnApiRunner",  # the DirectRunner's in-process engine, without its Prism attempt
        f"--manifest=gs://{root}/in/manifest.csv",
        f"--output=gs://{root}/out",
        f"--weights=gs://{root}/models/vgg19.pth",
        "--weights_family=torchvision",
        "--image_size=48",
        "--iterations=5",
    ]
    assert run(args) == 0
    gcs.invalidate_cache()
    assert sorted(gcs.ls(f"{root}/out/images")) == [f"{root}/out/images/one.png", f"{root}/out/images/two.png"]
    log = json.loads(gcs.cat_file(f"{root}/out/logs/two.json"))
    assert log["weights"] == f"gs://{root}/models/vgg19.pth"
    assert log["inputs"]["styles"] == [f"gs://{root}/in/style-a.png", f"gs://{root}/in/style-b.png"]
    assert log["final"]["total"] < log["history"][0]["total"]
    summary = json.loads(gcs.cat_file(f"{root}/out/summary.json"))
    assert summary["counts"] == {"succeeded": 2, "skipped": 0, "failed": 1, "claimed_elsewhere": 0, "repaired": 0, "total": 3}
    failure = json.loads(gcs.cat_file(summary["failures_file"]))
    assert failure["id"] == "bad" and "missing.png: no such file" in failure["error"]
    # no temporary or stray objects next to the results
    assert {p.rsplit("/", 1)[-1] for p in gcs.find(f"{root}/out")} == {
        "one.png", "two.png", "one.json", "two.json", "summary.json", summary["failures_file"].rsplit("/", 1)[-1]
    }

    assert run(args) == 0
    gcs.invalidate_cache()
    assert json.loads(gcs.cat_file(f"{root}/out/summary.json"))["counts"]["skipped"] == 2
    # an image damaged on the bucket is found by its digest and redone
    gcs.pipe_file(f"{root}/out/images/one.png", b"\x89PNG truncated")
    gcs.invalidate_cache()
    assert run(args) == 0
    gcs.invalidate_cache()
    counts = json.loads(gcs.cat_file(f"{root}/out/summary.json"))["counts"]
    assert counts["repaired"] == 1 and counts["succeeded"] == 1 and counts["skipped"] == 1
    assert hashlib.sha256(gcs.cat_file(f"{root}/out/images/one.png")).hexdigest() == json.loads(
        gcs.cat_file(f"{root}/out/logs/one.json")
    )["image"]["sha256"]


def test_exclusive_creation_and_claims_on_gcs(gcs) -> None:
    location = f"gs://{BUCKET}/claims-test/x.json"
    assert storage.create_exclusive(location, b"first")
    assert not storage.create_exclusive(location, b"second")
    gcs.invalidate_cache()
    assert gcs.cat_file(location) == b"first"
    output = f"gs://{BUCKET}/claims-test/out"
    assert claims.acquire(output, "p", "run-a", seconds=60)
    assert not claims.acquire(output, "p", "run-b", seconds=60)
    claims.release(output, "p", "run-a")
    assert claims.acquire(output, "p", "run-b", seconds=60)
