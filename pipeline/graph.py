"""build(p, config): ReadPairs | Reshuffle | StylizePairs (prepare, batch, stylize, write) | WriteResults.

Wires; computes nothing. The engine handler is made here and injected into StylizePairs.

Imports: Beam, the three Beam transforms (manifest, stylize, results) and the engine handler.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.options import PipelineConfig
from transforms.handler import EngineHandler
from transforms.manifest import FAILURES as MANIFEST_FAILURES
from transforms.manifest import ReadPairs
from transforms.results import WriteResults
from transforms.stylize import StylizePairs, StylizeSettings


def build(p: beam.Pipeline, config: PipelineConfig, fail_job_if_failed: bool = False) -> beam.PCollection:
    """Add the job to ``p``; returns the one-element summary PCollection.

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
    )
    settings = StylizeSettings(config.output, config.overwrite, config.run_id, config.expected_pairs, config.spec)
    stylized = (
        read.pairs
        # Pairs come out of one manifest-reading worker; spread them over all workers.
        | "SpreadPairs" >> beam.Reshuffle()
        | "StylizePairs" >> StylizePairs(settings, EngineHandler(config.style, config.limits, config.batch_size))
    )
    return {
        "outcomes": stylized["outcomes"],
        "failures": (read[MANIFEST_FAILURES], stylized["failures"]),
    } | "WriteResults" >> WriteResults(
        config.output, config.run_id, config.started, config.to_dict(), config.limits, config.spec, fail_job_if_failed,
        config.expected_pairs,
    )
