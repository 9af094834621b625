"""examples/airflow/stylize_daily.py with the real Airflow and providers (examples/airflow/requirements.txt).

Run in that environment, without the project's torch-based fixtures:
    python -m pytest --noconftest tests/airflow
In the project's own environment (no Airflow) the module is skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "false")
pytest.importorskip(
    "airflow.providers.apache.beam", reason="needs examples/airflow/requirements.txt (.ci/run installs it)"
)

ROOT = Path(__file__).resolve().parents[2]
# The job's real option parser, which needs Beam but not torch, from the checkout: this
# environment does not install the project (torch), so the checkout's root goes on the path.
sys.path.insert(0, str(ROOT))

from pipeline.options import check_arguments  # noqa: E402

DAG_FOLDER = ROOT / "examples" / "airflow"
DAY = "2026-11-26"


def _dagbag():
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
    except ImportError:
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=str(DAG_FOLDER))  # examples are off: AIRFLOW__CORE__LOAD_EXAMPLES


@pytest.fixture(scope="module")
def dag():
    bag = _dagbag()
    assert bag.import_errors == {}
    return bag.dags["stylize_daily"]  # as parsed (get_dag would ask the metadata database)


def _render(task, dag) -> dict:
    context = {"ds": DAY, "ds_nodash": DAY.replace("-", ""), "params": {k: dag.params[k] for k in dag.params}}
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    return context


def test_the_dag_loads_daily_with_both_tasks(dag) -> None:
    assert dag is not None and set(dag.task_ids) == {"stylize_on_dataflow", "stylize_locally"}
    assert dag.schedule == "@daily" and not dag.catchup and dag.max_active_runs == 1


def test_the_local_task_runs_exactly_the_job_command(dag, monkeypatch) -> None:
    from airflow.providers.apache.beam.hooks import beam as beam_hook

    task = dag.get_task("stylize_locally")
    context = _render(task, dag)
    commands = []
    monkeypatch.setattr(beam_hook, "run_beam_command", lambda cmd, **kwargs: commands.append(cmd))
    monkeypatch.setattr(task, "py_interpreter", sys.executable)  # python3 with Beam, for the hook's version probe
    task.execute(context)
    (command,) = commands
    assert command[:4] == [sys.executable, "-m", "pipeline", "--runner=DirectRunner"]
    arguments = command[4:]
    assert arguments[:5] == [
        f"--manifest=gs://my-bucket/manifests/{DAY}.csv",
        f"--output=gs://my-bucket/stylized/{DAY}",
        "--image_size=512",
        "--iterations=500",
        "--strict",
    ]
    assert [a for a in arguments[5:] if not a.startswith("--labels=airflow-version=")] == []
    check_arguments(command[3:])  # the job's parser knows every flag and value


def test_the_dataflow_task_launches_the_flex_template_with_valid_parameters(dag) -> None:
    task = dag.get_task("stylize_on_dataflow")
    _render(task, dag)
    launch = task.body["launchParameter"]
    assert launch["jobName"] == "stylize-20261126"
    assert launch["containerSpecGcsPath"] == "gs://my-bucket/templates/style-transfer.json"
    assert launch["parameters"] == {
        "manifest": f"gs://my-bucket/manifests/{DAY}.csv",
        "output": f"gs://my-bucket/stylized/{DAY}",
        "image_size": "512",
        "iterations": "500",
        "strict": "true",
    }
    metadata = json.loads((ROOT / "flex_template" / "metadata.json").read_text())
    regexes = {p["name"]: p["regexes"] for p in metadata["parameters"]}
    for name, value in launch["parameters"].items():
        assert all(re.fullmatch(r, value) for r in regexes[name]), f"{name}={value!r}"
    check_arguments([f"--{name}={value}" for name, value in launch["parameters"].items()])
    environment = launch["environment"]
    assert environment["sdkContainerImage"] == "us-central1-docker.pkg.dev/my-project/my-repo/style-transfer:0.1.0"
    assert environment["additionalPipelineOptions"] == [
        "dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    assert task.project_id == "my-project" and task.location == "us-central1" and task.wait_until_finished
