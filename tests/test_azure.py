"""The job with manifest, images and output on az://, against a real local Azure Blob server (Azurite)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.servers import (
    check_a_create_that_loses_the_race_is_refused,
    check_exclusive_creation_and_claims,
    check_job_writes_resumes_and_repairs,
    free_port,
    fsspec_settings,
    serving,
)

pytest.importorskip("adlfs", reason="the azure extra is not installed")
ROOT = Path(__file__).resolve().parents[1]
AZURITE = shutil.which("azurite-blob") or str(ROOT / ".node" / "node_modules" / ".bin" / "azurite-blob")
if not Path(AZURITE).is_file():
    pytest.skip("Azurite is not installed (npm install --prefix .node azurite@3)", allow_module_level=True)

CONTAINER = "style-az-test"
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def az(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fsspec.AbstractFileSystem]:
    """Azurite's blob service on 127.0.0.1, and adlfs pointed at it through fsspec's own configuration."""
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    command = [
        AZURITE,
        "--inMemoryPersistence",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
    ]
    with serving(command, port, folder / "azurite.log", "the Azurite blob server"):
        # What a user sets (or FSSPEC_AZ_CONNECTION_STRING / AZURE_STORAGE_CONNECTION_STRING).
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
        warnings.filterwarnings("ignore", message="Failed to fetch container properties")
        with fsspec_settings("az", {"connection_string": connection}) as filesystem:
            filesystem.mkdir(CONTAINER)
            yield filesystem


def test_job_on_azure_writes_resumes_and_repairs(az, weights_file) -> None:
    check_job_writes_resumes_and_repairs(az, "az", f"{CONTAINER}/job", weights_file("vgg19"))


def test_exclusive_creation_and_claims_on_azure(az) -> None:
    check_exclusive_creation_and_claims(az, f"az://{CONTAINER}")


def test_a_create_that_loses_the_race_to_the_precondition_is_refused(az) -> None:
    import adlfs

    check_a_create_that_loses_the_race_is_refused(az, f"az://{CONTAINER}/race/x.json", adlfs.AzureBlobFileSystem)
