"""How a job that fails while it runs ends on the console: one line with the cause and the file
that holds the whole trace, never the runner's traceback.

A runner that fails a step logs the worker's traceback at ERROR (Beam's ``apache_beam.*``
loggers) and then raises, wrapped in its own exceptions. Both are for whoever debugs the job; the
console of a job that ran out of disk at its summary step should say so in one line. So while a
run is on, ERROR lines of other libraries are held back, and when it fails they go, with the
exception's whole chain, to ``OUTPUT/runs/<run_id>/error.log``, which the line names. Where the
output cannot take that file (the disk that failed the job is full), it goes to the system temp
folder instead.

Imports: storage and outputs' locations, inside functions; no Beam, no torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Final

# The trace file's name, in the run's folder.
TRACE_NAME: Final = "error.log"
# The runner's error lines kept for it, the latest.
HELD_LINES: Final = 200


class _HeldBack(logging.Filter):
    """Keeps other libraries' ERROR lines off the console, formatted whole, for the trace file."""

    def __init__(self) -> None:
        super().__init__()
        # The latest ones: a runner that logs an error at every retried bundle cannot fill memory.
        self.lines: deque[str] = deque(maxlen=HELD_LINES)
        self._formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        # Each handler asks about the same record: it is kept once.
        self._last: logging.LogRecord | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or record.name.startswith("beam_style_transfer"):
            return True
        if record is not self._last:
            self._last = record
            self.lines.append(self._formatter.format(record))
        return False


@contextlib.contextmanager
def runner_errors_held() -> Iterator[Sequence[str]]:
    """Within the block, ERROR lines of other libraries are not printed; the list yielded holds
    them (the root logger's handlers, or Python's last-resort one when there are none)."""
    held = _HeldBack()
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None:
            handler.addFilter(held)
    try:
        yield held.lines
    finally:
        for handler in handlers:
            if handler is not None:
                handler.removeFilter(held)


def failed_line(exc: BaseException, output: str, run_id: str, held: Sequence[str], fallback_folder: str) -> str:
    """``error: the job failed: OSError: [Errno 28] No space left on device [while running
    'WriteResults/WriteSummary'] (the whole trace: OUTPUT/runs/<run_id>/error.log)``, once the
    trace is written (:func:`write_trace`)."""
    where = write_trace(exc, output, run_id, held, fallback_folder)
    trace = f" (the whole trace: {where})" if where else ""
    return f"error: the job failed: {root_cause(exc)}{trace}"


def write_trace(
    exc: BaseException | None, output: str, run_id: str, held: Sequence[str], fallback_folder: str
) -> str | None:
    """The held-back lines and ``exc``'s whole chain in ``OUTPUT/runs/<run_id>/error.log``, or in
    ``fallback_folder`` (the system's temp folder: the run's private one goes with the run) as
    ``style-transfer-<run_id>-error.log`` when the output cannot take it; where it went (None:
    nowhere)."""
    from transforms import storage
    from transforms.outputs import run_folder

    text = "\n".join(held)
    if exc is not None:
        text += ("\n\n" if text else "") + "".join(traceback.format_exception(exc))
    data = text.encode("utf-8", "backslashreplace")
    location = storage.join(run_folder(output, run_id), TRACE_NAME)
    try:
        storage.write_atomic(location, data, inside=output)
        return location
    except Exception:  # noqa: BLE001 - the output may be what failed the job
        pass
    fallback = os.path.join(fallback_folder, f"style-transfer-{run_id}-{TRACE_NAME}")
    try:
        with open(fallback, "wb") as file:
            file.write(data)
        return fallback
    except OSError:
        return None


def root_cause(exc: BaseException) -> str:
    """The innermost message: runners wrap a worker's exception in several layers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else ""
    # Beam re-raises a worker's error as a RuntimeError whose text starts with the error's kind.
    return text if re.match(r"\w+(Error|Exception): ", text) else f"{type(exc).__name__}: {text}"
