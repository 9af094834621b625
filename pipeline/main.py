"""Entry point: argv -> checked flags -> PipelineConfig -> pre-flight -> build -> run -> exit status.

Beam and the job's modules are imported inside :func:`run`, after ``--help`` has been answered:
importing them (and torch with them) takes seconds, and the help should not.

Imports: flags and job_errors at import time; Beam, the rest of pipeline/, claims, progress,
storage, reading, plan (the cost line), the engine's precision and outputs' file locations only
inside run().
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline import flags, job_errors

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.config import PipelineConfig


# The name of each run's private temporary folder, before its process id.
_RUN_FOLDER_PREFIX = "style-transfer-run-"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the signal arrives; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run(argv: list[str] | None = None, wait: bool = True) -> int:
    """Run the job and, unless ``wait`` is false, wait for it. Returns the process exit status.

    ``wait=False`` is for launchers (the Flex Template's): the job is checked and submitted, and
    the call returns; the job writes OUTPUT/summary.json and OUTPUT/report.html when it ends.

    0: the job ran (failed pairs are reported in the summary and failures file);
    1: with --strict, some row or pair failed; 2: the command line or a job-wide input (weights,
    device, init image, manifest, globs, output) is wrong, found before anything ran;
    3: the job failed while running (for example a worker could not load the model, or the
    output stopped being writable); 130 / 143: interrupted by SIGINT / SIGTERM.
    """
    argv = flags.with_dry_run_switch(list(sys.argv[1:] if argv is None else argv))
    if "-h" in argv or "--help" in argv:
        print(flags.help_text())
        return 0
    from pipeline.config import check_quickly

    try:
        check_quickly(argv)  # the usual mistakes, answered before Beam and torch are imported
    except ValueError as exc:
        print(f"usage: {flags.usage()}\nerror: {exc}", file=sys.stderr)
        return 2
    with _private_temp_folder() as system_temp, _signals_as_interrupts():
        try:
            return _run(argv, wait, system_temp)
        except KeyboardInterrupt as exc:  # before the pipeline ran: the imports, the pre-flight checks
            signum = _interruption(exc) or signal.SIGINT
            print(
                f"interrupted by {signal.Signals(signum).name} before any pair ran; nothing was written",
                file=sys.stderr,
            )
            return 128 + signum


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise Interrupted (in the main thread, where Python
    delivers signals; elsewhere, say under a test runner's thread, nothing changes).

    Once interrupted, exceptions in other threads are not printed: the runner's threads fail as
    the job is torn down (a worker process gone), and the run ends with one line.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        interrupted.set()
        # Before the runner tears the job down around them: a worker process that loses its
        # job service aborts noisily, and could not release its claims anyway (run() does).
        _stop_worker_processes()
        raise Interrupted(signum)

    def quiet_once_interrupted(args: threading.ExceptHookArgs) -> None:
        if not interrupted.is_set():
            previous_hook(args)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, threading.excepthook = threading.excepthook, quiet_once_interrupted
    try:
        yield
    finally:
        threading.excepthook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _private_temp_folder() -> Iterator[str]:
    """Point every temporary file of the run into one folder, removed when the run ends; yields
    the system's temp folder, for what must outlive the run (job_errors.write_trace).

    Beam's DirectRunner leaves empty ``beam-temp*`` and ``tmp*`` folders in the system temp folder
    at each run; they all land here instead, and go with it. A run killed with SIGKILL cannot
    remove its folder: the folder's name holds its process id, and the next run removes the
    folders of processes that are gone.
    """
    system = tempfile.gettempdir()
    _remove_folders_of_dead_runs(system)
    folder = tempfile.mkdtemp(prefix=f"{_RUN_FOLDER_PREFIX}{os.getpid()}-")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
    try:
        yield system
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)


def _remove_folders_of_dead_runs(parent: str) -> None:
    """Remove the private temporary folders (in ``parent``) of runs whose process is gone.

    Only folders untouched for 15 minutes go: a process of another PID namespace (a container
    sharing this temp folder) may hold the same number as a live run.
    """
    from transforms.claims import process_exists

    cutoff = time.time() - 900
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            match = re.fullmatch(rf"{_RUN_FOLDER_PREFIX}(\d+)-\w+", entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False) or process_exists(int(match[1])):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _run(argv: list[str], wait: bool, system_temp: str) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import preflight
    from pipeline.graph import build
    from pipeline.options import check_arguments, config_from_options
    from transforms import progress

    try:
        check_arguments(argv)
        options = PipelineOptions(argv)
        config = config_from_options(options)
    except ValueError as exc:
        print(f"usage: {flags.usage()}\nerror: {exc}", file=sys.stderr)
        return 2
    workers_here = _workers_here(options)
    try:
        checked = preflight.check_job(config, workers_here=workers_here)
    except preflight.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = dataclasses.replace(config, expected_pairs=checked.pairs)
    # A dry run changes nothing on storage but plan.json: what killed runs left waits for a run.
    temporaries, expired_claims = (0, 0) if config.dry_run else preflight.remove_leftovers(config.output)
    if temporaries or expired_claims:
        logging.getLogger(f"beam_style_transfer.{__name__}").info(
            "removed what killed runs left: %d temporary files, %d expired claims", temporaries, expired_claims
        )
    # --strict: an exit status of 1 here, but where the workers are remote, nobody may be
    # waiting for it (a Flex Template launch), so the job itself ends failed.
    fail_job_if_failed = config.strict and not workers_here
    if not wait:
        return _submit(options, config, fail_job_if_failed)
    planned = _print_cost(config, checked.content_sizes) if workers_here and not config.dry_run else None
    tracker = progress.for_run(config.run_id, config.expected_pairs, config.style.total_iterations, planned)
    # Any failure from here on, the runner's or reading back what it wrote, ends in one line.
    with job_errors.runner_errors_held() as held:
        try:
            try:
                with beam.Pipeline(options=options) as p:
                    build(p, config, fail_job_if_failed)
            finally:
                progress.end_run(config.run_id)  # its live bar ends its line before ours come
            status = _print_plan(config) if config.dry_run else _final_report(config)
            if held:  # the runner logged errors and went on (a retried bundle): kept, not shown
                where = job_errors.write_trace(None, config.output, config.run_id, held, system_temp)
                print(f"warning: the runner logged {len(held)} error lines and went on: {where}", file=sys.stderr)
            return status
        except BaseException as exc:
            interrupt = _interruption(exc)
            if interrupt is not None:
                return _interrupted(interrupt, config, options, tracker.counts)
            if not isinstance(exc, Exception):
                raise
            if not (config.strict and _summary_counts_failures(config)):
                print(job_errors.failed_line(exc, config.output, config.run_id, held, system_temp), file=sys.stderr)
                return 3
        # The job ended failed on purpose (--strict on remote workers): reported as usual, exit 1.
        return _final_report(config)


def _interrupted(signum: int, config: PipelineConfig, options: PipelineOptions, counts: dict[str, int]) -> int:
    """One line, not Beam's traceback: what is written is complete (atomic writes), the claims
    of unfinished pairs are released, and a rerun picks up the rest. Worker processes
    (--direct_running_mode multi_processing) cannot release theirs: they were stopped when the
    signal came, and their claims, this run's, are released here."""
    from apache_beam.options.pipeline_options import DirectOptions

    from transforms import claims

    claims.release_run(config.output, config.run_id)
    # Pairs that run in worker processes are counted there, not here.
    in_workers = options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    finished = (
        ""
        if in_workers
        else (
            f": {_pairs(counts['succeeded'])} finished in this run ({counts['skipped']} skipped, {counts['failed']} failed)"
        )
    )
    print(f"interrupted by {signal.Signals(signum).name}{finished}; rerun the same command to resume", file=sys.stderr)
    return 128 + signum


def _print_cost(config: PipelineConfig, sizes: list[tuple[int, int]]) -> float | None:
    """What the run will cost on this machine's device, said in one line (and a warning for bf16
    forced where it is emulated); the estimate in seconds, for the progress display's time left.
    ``sizes``: pre-flight's sample of the contents' sizes, read from their headers."""
    if not config.expected_pairs:
        return None
    from transforms.nst.precision import has_fast_bf16, resolve_precision
    from transforms.plan import EMULATED_BF16_TIME_FACTOR, cost_line, estimated_seconds

    device = config.style.torch_device()
    precision = resolve_precision(config.style, device)
    hardware = has_fast_bf16(device)
    if precision == "bf16" and not hardware:
        print(
            f"warning: --precision bf16 on a {device.type} without bf16 in hardware: it is emulated, "
            f"about {EMULATED_BF16_TIME_FACTOR:g}x slower than fp32 (--precision auto picks fp32 here)",
            flush=True,
        )
    planned = estimated_seconds(config.expected_pairs, config.style, device.type, precision, sizes, hardware)
    line = cost_line(config.expected_pairs, config.style, device.type, precision, sizes, hardware)
    if line:
        print(line, flush=True)
    return planned


def _stop_worker_processes() -> None:
    """SIGKILL the Beam SDK worker processes this process started (``--direct_running_mode
    multi_processing``) and the shells between, each parent before its children, so that no
    shell reports the death. Other children of a program that calls run() are left alone.
    Linux only (/proc); elsewhere the workers end with the job service, as Beam ends them."""

    def children(pid: int) -> list[int]:
        found = []
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with open(f"{task.path}/children") as listed:
                    found += [int(child) for child in listed.read().split()]
        return found

    def command(pid: int) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as line:
                return line.read()
        except OSError:
            return b""

    for child in children(os.getpid()):
        tree, index = [child], 0
        while index < len(tree):  # the child and its descendants, parents first
            tree += children(tree[index])
            index += 1
        if any(b"sdk_worker_main" in command(pid) for pid in tree):
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _submit(options: PipelineOptions, config: PipelineConfig, fail_job_if_failed: bool) -> int:
    """Build and start the job without waiting for it (a launcher's call)."""
    import apache_beam as beam

    from pipeline.graph import build
    from transforms.outputs import summary_location

    pipeline = beam.Pipeline(options=options)
    build(pipeline, config, fail_job_if_failed)
    result = pipeline.run()
    job = getattr(result, "job_id", lambda: None)()
    print(f"submitted{f' job {job}' if job else ''}; when it ends: {summary_location(config.output)}")
    return 0


def _print_plan(config: PipelineConfig) -> int:
    """The dry run's plan on the console (plan.json has it whole)."""
    from transforms import plan, reading
    from transforms.outputs import MAX_RUN_RECORD_BYTES, plan_location

    print(plan.describe(reading.read_json(plan_location(config.output), MAX_RUN_RECORD_BYTES, inside=config.output)))
    print(f"plan: {plan_location(config.output)}")
    return 0


def _final_report(config: PipelineConfig) -> int:
    """The run's one-line result, where its report and failures are; the exit status."""
    from transforms import reading, storage
    from transforms.outputs import MAX_RUN_RECORD_BYTES, report_location, summary_location

    # This run's own summary and report: the latest ones may be an earlier run's, when this
    # run could not replace them.
    summary = reading.read_json(
        summary_location(config.output, config.run_id), MAX_RUN_RECORD_BYTES, inside=config.output
    )
    counts = summary["counts"]
    extras = [f"{counts[k]} {k.replace('_', ' ')}" for k in ("repaired", "claimed_elsewhere") if counts[k]]
    slots = summary.get("slots") or {}
    if slots.get("busy") is not None and slots["slot_steps"] > slots["batch_steps"]:  # batches of more than one slot
        extras.append(f"slots busy {slots['busy']:.0%} of {slots['batch_steps']:,} steps")
    print(
        f"{counts['succeeded']} succeeded, {counts['skipped']} skipped, {counts['failed']} failed"
        f"{''.join(', ' + e for e in extras)} in {summary['wall_seconds']:.1f} s -> {config.output}"
    )
    if storage.exists(report_location(config.output, config.run_id)):
        print(f"report: {report_location(config.output, config.run_id)}")
    if summary["failures_file"]:
        print(f"failures: {summary['failures_file']}")
    elif counts["failed"]:
        print(f"failures: in {summary_location(config.output, config.run_id)} ({summary['failures_file_error']})")
    return 1 if config.strict and counts["failed"] else 0


def _workers_here(options: object) -> bool:
    """Whether the pairs run on this machine, so that its device is theirs: every runner but
    Dataflow's (DataflowRunner, TestDataflowRunner), whose workers are other machines."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner  # type: ignore[attr-defined]
    return "dataflow" not in str(runner or "").lower()


def _interruption(exc: BaseException) -> int | None:
    """The signal behind ``exc``: runners re-raise a DoFn's KeyboardInterrupt wrapped in others."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Interrupted):
            return seen.signum
        if isinstance(seen, KeyboardInterrupt):
            return signal.SIGINT
        seen = seen.__cause__ or seen.__context__
    return None


def _summary_counts_failures(config: PipelineConfig) -> bool:
    """Whether this run's summary is written and counts failed rows or pairs: then the job ended
    failed on purpose (--strict's last step raises only after the summary is written; runners
    re-raise a worker's exception wrapped, or as text only, so the summary is what is read)."""
    from transforms import reading
    from transforms.outputs import MAX_RUN_RECORD_BYTES, summary_location

    try:
        summary = reading.read_json(
            summary_location(config.output, config.run_id), MAX_RUN_RECORD_BYTES, inside=config.output
        )
    except (OSError, ValueError):
        return False
    return summary.get("run_id") == config.run_id and bool(summary.get("counts", {}).get("failed"))


def _pairs(count: int) -> str:
    return f"{count} pair{'' if count == 1 else 's'}"


def configure_logging(verbose: bool) -> None:
    """Our log lines at INFO; Beam's only from WARNING up, and our per-pair skip lines not at
    all, unless ``--verbose``.

    Beam logs dozens of INFO lines per run (type-hint conversions, its offline Prism attempt),
    some through the root logger, so the root stays at WARNING and our packages opt in.
    """
    logging.basicConfig()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_ConsoleFormatter())
        # Beam logs an interrupted DoFn's traceback before re-raising; the run ends with one line.
        handler.addFilter(_not_an_interrupt)
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    # Per-pair lines of skipped pairs are DEBUG lines (a rerun of a dataset counts them instead).
    logging.getLogger("beam_style_transfer").setLevel(logging.DEBUG if verbose else logging.INFO)


class _ConsoleFormatter(logging.Formatter):
    """Our lines short (``14:02:11 cat succeeded: ...``, ``warning:`` where it is one), so the
    news starts within ten characters, and within 120 columns (progress.fit_line); other
    libraries' lines in full, with where they come from."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._ours = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if not record.name.startswith("beam_style_transfer"):
            return super().format(record)
        line = self._ours.format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, message = line.partition(" ")
            line = f"{stamp} {record.levelname.lower()}: {message}"
        from transforms.progress import fit_line

        return fit_line(line)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    return not (record.exc_info and record.exc_info[0] and issubclass(record.exc_info[0], KeyboardInterrupt))


def main(wait: bool = True) -> None:
    configure_logging(verbose=flags.switch_is_on(sys.argv[1:], "--verbose"))
    try:
        status = run(wait=wait)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``--help | head -1``): what it wanted was read. Python would
        # report the failed flush at exit, so standard output is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    sys.exit(status)


if __name__ == "__main__":
    main()
