"""build(p, config): ReadPairs | Reshuffle | StylizePairs (prepare, batch, stylize, write) | WriteResults;
with ``--dry_run``, ReadPairs | Reshuffle | PlanPairs (prepare, then add up) instead.

Wires; computes nothing. The engine handler is made here and injected into the transforms.

Imports: Beam, the Beam transforms (manifest, stylize, results, plan) and the engine handler.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.config import PipelineConfig
from transforms.handler import EngineHandler
from transforms.manifest import FAILURES as MANIFEST_FAILURES
from transforms.manifest import ReadPairs
from transforms.plan import PlanPairs
from transforms.results import WriteResults
from transforms.stylize import RunSettings, StylizePairs


def build(p: beam.Pipeline, config: PipelineConfig, fail_job_if_failed: bool = False) -> beam.PCollection:
    """Add the job to ``p``; returns the one-element summary PCollection (the plan, with ``--dry_run``).

    ``fail_job_if_failed``: end the job failed if a row or pair failed (``--strict`` where no
    launcher waits to turn the summary into an exit status: Dataflow).
    """
    read = p | "ReadPairs" >> ReadPairs(
        config.style,
        config.limits,
        manifest=config.manifest,
        manifest_format=config.manifest_format,
        contents=config.contents,
        styles=config.styles,
        styles_per_content=config.styles_per_content,
        layout=config.layout,
        output=config.output,
    )
    settings = RunSettings(
        config.output,
        config.overwrite,
        config.run_id,
        config.expected_pairs,
        config.spec,
        config.style.total_iterations,
    )
    handler = EngineHandler(config.style, config.limits, config.batch_size)
    # Pairs come out of one manifest-reading worker; spread them over all workers.
    pairs = read.pairs | "SpreadPairs" >> beam.Reshuffle()
    if config.dry_run:
        return (pairs, read[MANIFEST_FAILURES]) | "PlanPairs" >> PlanPairs(settings, handler, config.batch_size)
    stylized = pairs | "StylizePairs" >> StylizePairs(settings, handler)
    return {
        "outcomes": stylized["outcomes"],
        "failures": (read[MANIFEST_FAILURES], stylized["failures"]),
        "slot_use": stylized["slot_use"],
    } | "WriteResults" >> WriteResults(settings, config.started, config.to_dict(), config.limits, fail_job_if_failed)
