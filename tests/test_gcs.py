"""The same job with manifest, images, weights and output on gs://, against a real local GCS emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator

import fsspec
import pytest

from tests.servers import (
    check_exclusive_creation_and_claims,
    check_job_writes_resumes_and_repairs,
    executable,
    free_port,
    serving,
)

BUCKET = "style-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fsspec.AbstractFileSystem]:
    """A gcp-storage-emulator on 127.0.0.1, and gcsfs pointed at it the way a user would."""
    port = free_port()
    command = [
        executable("gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        BUCKET,
    ]
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with serving(command, port, log, "the GCS emulator"):
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


def test_job_on_gcs_writes_resumes_and_repairs(gcs, weights_file) -> None:
    check_job_writes_resumes_and_repairs(gcs, "gs", f"{BUCKET}/job", weights_file("vgg19"))


def test_exclusive_creation_and_claims_on_gcs(gcs) -> None:
    # The emulator ignores ifGenerationMatch: this covers the existence check (docs/reliability.md).
    check_exclusive_creation_and_claims(gcs, f"gs://{BUCKET}")
