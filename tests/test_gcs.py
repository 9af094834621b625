"""The same job with manifest, images, weights and output on gs://, against a real local GCS emulator."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import fsspec
import pytest

from beam_style_transfer.pipeline.main import run
from tests.servers import check_exclusive_creation_and_claims, executable, free_port, serving, upload_png
from tests.test_report import Page

BUCKET = "style-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fsspec.AbstractFileSystem]:
    """A gcp-storage-emulator on 127.0.0.1, and gcsfs pointed at it the way a user would."""
    port = free_port()
    command = [
        executable("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
        "--in-memory", "--default-bucket", BUCKET,
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


def test_job_on_gcs(gcs, weights_file) -> None:
    root = f"{BUCKET}/job"
    upload_png(gcs, f"{root}/in/content.png", 1)
    upload_png(gcs, f"{root}/in/style-a.png", 3)
    upload_png(gcs, f"{root}/in/style-b.png", 4)
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
        "one.png", "two.png", "one.json", "two.json", "summary.json", summary["failures_file"].rsplit("/", 1)[-1],
        "report.html", "contact_sheet.png",
    }
    # The report opens from the bucket: its links are relative and lead to objects beside it.
    page = Page(gcs.cat_file(f"{root}/out/report.html").decode())
    assert set(page.rows) == {"one", "two"} and page.links
    for link in page.links:
        assert "://" not in link and gcs.exists(f"{root}/out/{link}"), link

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
    # The emulator ignores ifGenerationMatch: this covers the existence check (README, Reliability).
    check_exclusive_creation_and_claims(gcs, f"gs://{BUCKET}")
