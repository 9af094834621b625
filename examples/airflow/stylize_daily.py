"""Stylize each day's manifest: a daily Airflow DAG (Airflow 3, or 2.7+), two ways to run the job.

- ``stylize_on_dataflow``: the Flex Template (docs/flex-template.md) on Dataflow GPU
  workers, with ``DataflowStartFlexTemplateOperator``. The task waits for the Dataflow job; with
  ``strict=true`` a job with failed pairs fails, and so does the task.
- ``stylize_locally``: the plain command (``python -m pipeline``) on the Airflow worker with
  ``BeamRunPythonPipelineOperator`` and the DirectRunner, for a worker with a GPU of its own;
  ``--strict`` makes failed pairs exit 1, which fails the task. Delete the task you do not use.

Each run reads ``manifests/{ds}.csv`` and writes ``stylized/{ds}/`` in the bucket, so a rerun of a
day resumes that day's folder (done pairs are skipped) and days never mix. Set the params below
(or per run, in the trigger form) to your project, bucket, template and image.
"""

from __future__ import annotations

import pendulum
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

MANIFEST = "gs://{{ params.bucket }}/manifests/{{ ds }}.csv"
OUTPUT = "gs://{{ params.bucket }}/stylized/{{ ds }}"
GPU = "worker_accelerator=type:{{ params.gpu }};count:1;install-nvidia-driver"

with DAG(
    dag_id="stylize_daily",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "project": "my-project",
        "region": "us-central1",
        "bucket": "my-bucket",
        "template": "gs://my-bucket/templates/style-transfer.json",
        "image": "us-central1-docker.pkg.dev/my-project/my-repo/style-transfer:0.1.0",
        "gpu": "nvidia-l4",
        "image_size": 512,
        "iterations": 500,
    },
    tags=["style-transfer"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="stylize_on_dataflow",
        project_id="{{ params.project }}",
        location="{{ params.region }}",
        body={
            "launchParameter": {
                "jobName": "stylize-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ params.template }}",
                "parameters": {
                    "manifest": MANIFEST,
                    "output": OUTPUT,
                    "image_size": "{{ params.image_size }}",
                    "iterations": "{{ params.iterations }}",
                    "strict": "true",
                },
                "environment": {
                    "sdkContainerImage": "{{ params.image }}",
                    "machineType": "g2-standard-8",
                    "maxWorkers": 16,
                    "additionalPipelineOptions": [f"dataflow_service_options={GPU}"],
                },
            }
        },
        wait_until_finished=True,
    )

    BeamRunPythonPipelineOperator(
        task_id="stylize_locally",
        runner="DirectRunner",
        py_file="pipeline",
        py_options=["-m"],  # python -m pipeline: the package installed on the worker
        pipeline_options={
            "manifest": MANIFEST,
            "output": OUTPUT,
            "image_size": "{{ params.image_size }}",
            "iterations": "{{ params.iterations }}",
            "strict": True,
        },
    )
