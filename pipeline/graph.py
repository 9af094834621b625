"""build(p, config): ReadPairs | Reshuffle | StylizePairs (prepare, batch, stylize) | WriteResults.

Wires; computes nothing.

Imports: Beam and the three Beam transforms (manifest, stylize, results); nothing of the engine.
"""

from __future__ import annotations

import apache_beam as beam

from beam_style_transfer.pipeline.options import PipelineConfig
from beam_style_transfer.transforms.manifest import FAILURES as MANIFEST_FAILURES
from beam_style_transfer.transforms.manifest import ReadPairs
from beam_style_transfer.transforms.results import WriteResults
from beam_style_transfer.transforms.stylize import StylizePairs, StylizeSettings


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
    )
    stylized = (
        read.pairs
        # Pairs come out of one manifest-reading worker; spread them over all workers.
        | "SpreadPairs" >> beam.Reshuffle()
        | "StylizePairs" >> StylizePairs(StylizeSettings(
            config.style, config.limits, config.output, config.overwrite, config.run_id, config.expected_pairs,
            config.batch_size,
        ))
    )
    return {
        "stylized": stylized["stylized"],
        "skipped": stylized["skipped"],
        "failures": (read[MANIFEST_FAILURES], stylized["failures"]),
    } | "WriteResults" >> WriteResults(
        config.output, config.run_id, config.started, config.to_dict(), config.limits, fail_job_if_failed
    )
