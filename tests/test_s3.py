"""The job with manifest, images and output on s3://, against a real local S3 server (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pytest

from tests.servers import (
    check_a_create_that_loses_the_race_is_refused,
    check_exclusive_creation_and_claims,
    check_job_writes_resumes_and_repairs,
    executable,
    free_port,
    fsspec_settings,
    serving,
)

pytest.importorskip("s3fs", reason="the s3 extra is not installed")

BUCKET = "style-s3-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fsspec.AbstractFileSystem]:
    """moto's S3 server on 127.0.0.1, and s3fs pointed at it through fsspec's own configuration."""
    port = free_port()
    command = [executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with serving(command, port, tmp_path_factory.mktemp("moto") / "moto.log", "the moto S3 server"):
        # What a user sets (or FSSPEC_S3_ENDPOINT_URL, FSSPEC_S3_KEY, ... in the environment).
        settings = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
        with fsspec_settings("s3", settings) as filesystem:
            filesystem.mkdir(BUCKET)
            yield filesystem


def test_job_on_s3_writes_resumes_and_repairs(s3, weights_file) -> None:
    check_job_writes_resumes_and_repairs(s3, "s3", f"{BUCKET}/job", weights_file("vgg19"))


def test_exclusive_creation_and_claims_on_s3(s3) -> None:
    check_exclusive_creation_and_claims(s3, f"s3://{BUCKET}")


def test_a_create_that_loses_the_race_to_the_precondition_is_refused(s3) -> None:
    import s3fs

    check_a_create_that_loses_the_race_is_refused(s3, f"s3://{BUCKET}/race/x.json", s3fs.S3FileSystem)
