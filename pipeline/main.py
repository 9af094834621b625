"""Entry point: argv -> options -> PipelineConfig -> build -> run -> report and exit status."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import preflight
from pipeline.graph import build
from pipeline.options import PipelineConfig, StyleTransferOptions
from transforms import storage
from transforms.results import summary_location

USAGE = "python -m pipeline (--manifest URL | --contents GLOB --styles GLOB) --output URL [options]"


def _help() -> str:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        usage=USAGE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Batch neural style transfer (Gatys et al.) on Apache Beam.",
        epilog="Every Apache Beam pipeline option is accepted too (--runner, --project, --region, "
        "--temp_location, --sdk_container_image, --experiments, ...).",
    )
    StyleTransferOptions._add_argparse_args(parser)
    return parser.format_help()


def run(argv: list[str] | None = None) -> int:
    """Run the job and wait for it. Returns the process exit status.

    0: the job ran (failed pairs are reported in the summary and failures file);
    1: with --strict, some row or pair failed; 2: the command line or a job-wide input (weights,
    device, init image, manifest, globs, output) is wrong, found before anything ran;
    3: the job failed while running (for example a worker could not load the model).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(_help())
        return 0
    options = PipelineOptions(argv)
    try:
        config = PipelineConfig.from_options(options)
    except ValueError as exc:
        print(f"usage: {USAGE}\nerror: {exc}", file=sys.stderr)
        return 2
    try:
        preflight.check(config)
    except preflight.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with beam.Pipeline(options=options) as p:
            build(p, config)
    except Exception as exc:  # noqa: BLE001 - a job-level failure: one line, its own exit status
        logging.getLogger(__name__).debug("job failed", exc_info=True)
        print(f"error: the job failed: {_root_cause(exc)}", file=sys.stderr)
        return 3
    summary = json.loads(storage.read_bytes(summary_location(config.output)))
    counts = summary["counts"]
    print(
        f"{counts['succeeded']} succeeded, {counts['skipped']} skipped, {counts['failed']} failed "
        f"in {summary['wall_seconds']:.1f} s -> {config.output}"
    )
    if summary["failures_file"]:
        print(f"failures: {summary['failures_file']}")
    return 1 if config.strict and counts["failed"] else 0


def _root_cause(exc: BaseException) -> str:
    """The innermost message: runners wrap a worker's exception in several layers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run())


if __name__ == "__main__":
    main()
