"""Entry point: argv -> checked flags -> PipelineConfig -> pre-flight -> build -> run -> exit status.

Beam and torch are imported inside :func:`run`, after ``--help`` has been answered: importing them
takes seconds, and the help should not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from pipeline import flags


def run(argv: list[str] | None = None) -> int:
    """Run the job and wait for it. Returns the process exit status.

    0: the job ran (failed pairs are reported in the summary and failures file);
    1: with --strict, some row or pair failed; 2: the command line or a job-wide input (weights,
    device, init image, manifest, globs, output) is wrong, found before anything ran;
    3: the job failed while running (for example a worker could not load the model).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(flags.help_text())
        return 0
    with _private_temp_folder():
        return _run(argv)


@contextlib.contextmanager
def _private_temp_folder() -> Iterator[None]:
    """Point every temporary file of the run into one folder, removed when the run ends.

    Beam's DirectRunner leaves empty ``beam-temp*`` and ``tmp*`` folders in the system temp folder
    at each run; they all land here instead, and go with it.
    """
    folder = tempfile.mkdtemp(prefix="style-transfer-run-")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)


def _run(argv: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import preflight
    from pipeline.graph import build
    from pipeline.options import PipelineConfig, check_arguments
    from transforms import progress, storage
    from transforms.results import summary_location

    try:
        check_arguments(argv)
        options = PipelineOptions(argv)
        config = PipelineConfig.from_options(options)
    except ValueError as exc:
        print(f"usage: {flags.USAGE}\nerror: {exc}", file=sys.stderr)
        return 2
    try:
        preflight.check(config)
    except preflight.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = dataclasses.replace(config, expected_pairs=preflight.expected_pairs(config))
    try:
        with beam.Pipeline(options=options) as p:
            build(p, config)
    except Exception as exc:  # noqa: BLE001 - a job-level failure: one line, its own exit status
        logging.getLogger(__name__).debug("job failed", exc_info=True)
        print(f"error: the job failed: {_root_cause(exc)}", file=sys.stderr)
        return 3
    finally:
        progress.end_run(config.run_id)
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


def configure_logging(verbose: bool) -> None:
    """Our log lines at INFO; Beam's only from WARNING up, unless ``--verbose``.

    Beam logs dozens of INFO lines per run (type-hint conversions, its offline Prism attempt),
    some through the root logger, so the root stays at WARNING and our packages opt in.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    for package in ("pipeline", "transforms"):
        logging.getLogger(package).setLevel(logging.INFO)


def main() -> None:
    configure_logging(verbose="--verbose" in sys.argv[1:])
    sys.exit(run())


if __name__ == "__main__":
    main()
