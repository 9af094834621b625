"""A pair's log read back (``OUTPUT/logs/<id>.json``, written by outputs.pair_log): the size cap,
the schema a skip trusts, and the one function that reads it for the skip check, the index and
the report.

Whoever can write the output folder can put anything there: a log linked to a 3 GiB file, one
whose ``bytes`` says 3 GiB, or one whose values are valid JSON of the wrong kind (a history of
lists of lists, a 400-digit ``seconds``). A log is trusted only when every field the job reads
has the type and range the writer gives it; anything else is damaged, and the pair is redone.

Imports: reading, names (a label's output folder) and storage; no Beam, no torch.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from transforms import reading
from transforms.names import output_folder_name

# The largest log the job reads back: every iteration of 10,000 at three scales is under 8 MiB.
MAX_LOG_BYTES: Final = 32 * 2**20
# A written image's pixels: a PNG holds at most 4 bytes a pixel plus its chunks and deflate's
# stored blocks; JPEG and WebP less. Over this for its size, a log's ``bytes`` is not believed.
_BYTES_PER_PIXEL: Final = 4
_IMAGE_OVERHEAD: Final = 2**20
# The widest side any of the formats holds (PNG and JPEG 65,535; WebP 16,383).
_MAX_SIDE: Final = 65_535
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
# Seconds a log may record for one pair or iteration: about 30 years.
_MAX_SECONDS: Final = 1e9


def read_log(location: str, pair_id: str, inside: str) -> dict[str, Any]:
    """The log at ``location`` if it is a complete, well-formed record of pair ``pair_id``.

    Raises:
        FileNotFoundError: there is no log.
        DamagedError: why it cannot be trusted (too big, a link, not JSON, the wrong shape).
        OSError: the store could not be read.
    """
    log = reading.read_json(location, MAX_LOG_BYTES, inside=inside)
    problem = log_problem(log, pair_id)
    if problem:
        raise reading.DamagedError(f"{location}: {problem}")
    return log


def log_problem(log: object, pair_id: str) -> str | None:
    """Why a parsed log is not a complete record of a finished pair, or None: the types and
    ranges of every field the skip check, the index and the report read (docs/outputs.md)."""
    if not isinstance(log, dict):
        return "the log is not a JSON object"
    if log.get("id") != pair_id:
        return f"the log is for another id ({type(log.get('id')).__name__})"
    for check in (_top_problem, _image_problem, _inputs_problem, _history_problem):
        problem = check(log)
        if problem:
            return problem
    return None


def _top_problem(log: dict[str, Any]) -> str | None:
    if not isinstance(log.get("fingerprint"), str):
        return "the log has no fingerprint"
    if "label" in log and log["label"] is not None and not isinstance(log["label"], str):
        return "the log's label is not text"
    if not _label_fits_id(log):
        return "the log's label is not its id's folder"
    if not isinstance(log.get("config", {}), dict):
        return "the log's config is not an object"
    if "seconds" in log and not in_range(log["seconds"], 0, _MAX_SECONDS):
        return "the log's seconds are not a number of seconds"
    return None


def _label_fits_id(log: dict[str, Any]) -> bool:
    """Whether the log's label is the input folder its id's output folder was made from: the
    label is derived, never believed (a forged ``cats`` on ``dogs/d1__s1``, or a 10 MiB text,
    would be copied into the index). Logs from before labels have none."""
    if "label" not in log:
        return True
    label, pair_id = log["label"], log["id"]
    folder = pair_id.rsplit("/", 1)[0] if "/" in pair_id else None
    if not label:  # the flat layout (None), or a content at the tree's root ("")
        return folder is None
    return folder == "/".join(output_folder_name(part) for part in label.split("/"))


def _image_problem(log: dict[str, Any]) -> str | None:
    image = log.get("image")
    if (
        not isinstance(image, dict)
        or not isinstance(image.get("sha256"), str)
        or not _SHA256.fullmatch(image["sha256"])
    ):
        return "the log has no image digest"
    size = image.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(side, 1, _MAX_SIDE) for side in size)):
        return "the log's image size is not a width and a height"
    if not is_int(image.get("bytes"), 1, size[0] * size[1] * _BYTES_PER_PIXEL + _IMAGE_OVERHEAD):
        return "the log's image bytes are not a size an image of its width and height can have"
    if not isinstance(image.get("path"), str) or not isinstance(image.get("format", ""), str):
        return "the log's image path or format is not text"
    return None


def _inputs_problem(log: dict[str, Any]) -> str | None:
    inputs = log.get("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("content"), str):
        return "the log does not name its content image"
    styles = inputs.get("styles")
    if not (isinstance(styles, list) and styles and all(isinstance(style, str) for style in styles)):
        return "the log does not name its style images"
    weights = inputs.get("style_weights")
    if weights is not None and not (isinstance(weights, list) and all(in_range(w, 0, math.inf) for w in weights)):
        return "the log's style weights are not numbers"
    signatures = inputs.get("signatures", {})
    if not (isinstance(signatures, dict) and all(isinstance(token, str) for token in signatures.values())):
        return "the log's input signatures are not text"
    return None


def _history_problem(log: dict[str, Any]) -> str | None:
    history, final = log.get("history"), log.get("final")
    missing = "the log's history is missing or does not end with the final record"
    if not _is_record(final):
        return missing
    if isinstance(history, list):  # LOG_FORMAT 1: one record per iteration
        records_fine = all(_is_record(r) and isinstance(r.get("rejected", False), bool) for r in history)
        return None if records_fine and history and history[-1] == final else missing
    if not isinstance(history, dict):
        return missing
    iterations, totals = history.get("iteration"), history.get("total")
    if not (isinstance(iterations, list) and iterations and all(is_int(i, 0) for i in iterations)):
        return missing
    length = len(iterations)
    columns = [history.get(name, [None] * length) for name in ("total", "content", "style", "tv")]
    columns += (
        list(history.get("style_layers", {}).values()) if isinstance(history.get("style_layers", {}), dict) else [None]
    )
    if not all(isinstance(column, list) and len(column) == length and all(map(is_loss, column)) for column in columns):
        return "the log's history columns are not lists of losses, one per iteration"
    seconds, rejected = history.get("seconds", []), history.get("rejected", [])
    if not (isinstance(seconds, list) and all(in_range(s, 0, _MAX_SECONDS) for s in seconds)):
        return "the log's history seconds are not numbers of seconds"
    if not (isinstance(rejected, list) and all(is_int(i, 0) for i in rejected)):
        return "the log's rejected iterations are not iteration numbers"
    if (
        not isinstance(totals, list)
        or not isinstance(final, dict)
        or (iterations[-1], totals[-1]) != (final["iteration"], final["total"])
    ):
        return missing
    return None


def _is_record(value: object) -> bool:
    """An iteration's record as a log writes it: its iteration and its total loss, at least."""
    return (
        isinstance(value, dict) and is_int(value.get("iteration"), 0) and "total" in value and is_loss(value["total"])
    )


def is_int(value: object, low: int, high: float = math.inf) -> bool:
    """An integer (not a bool) from ``low`` to ``high``: the checks of every file the job reads back."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def in_range(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def is_loss(value: object) -> bool:
    """A loss as a log writes it: a finite number, or None where it was not finite."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))
