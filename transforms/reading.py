"""The one reader of the JSON the job reads back: manifest rows, pair logs, claims, the index,
the plan and summaries. Bytes come from ``storage.read_bytes``, which refuses what is not a
regular file, what is over a size cap and, for the job's own outputs, any link on the way.

JSON that Python parses can still break what comes after: 500 levels of nesting are valid JSON
that Beam's pickler and any recursive walk cannot take, and a 4,000-digit integer is under
Python's limit yet copies kilobytes into every record that shows it. So every document is
parsed with a cap on its depth and on the length of its numbers, and anything over them, or
not JSON at all, is *damaged*: one ``DamagedError`` that names the file or row and the reason.
Callers decide what damaged means for them (docs/reliability.md): a row fails alone, a pair is
redone, a claim is void, an index is rebuilt from the logs.

Imports: storage only; no Beam, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

from transforms import storage

# Levels of nesting any document of ours needs (a log: 5), with room for what users add to a
# manifest row; Python's own parser stops near 1,000, far past what a recursive walk survives.
MAX_JSON_DEPTH: Final = 32
# Characters of one number: a float64 needs 24 and an int64 20; a longer one is not a value
# this job reads, whatever the row or file says.
MAX_NUMBER_CHARS: Final = 40


class DamagedError(ValueError):
    """A file or row the job reads back is not what it should be: not JSON, nested too deeply,
    a number too long, over its size cap, a link where an output should be, or of the wrong
    shape (a log's schema). The message names the location and the reason."""


def parse_json(text: str | bytes, where: str) -> Any:
    """The JSON value in ``text``, within the depth and number caps.

    Raises:
        DamagedError: naming ``where`` and the reason.
    """
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_float)
    except _LongNumberError as exc:
        raise DamagedError(f"{where}: not usable JSON ({exc})") from None
    except RecursionError:
        raise DamagedError(f"{where}: not usable JSON (nested too deeply to parse)") from None
    except json.JSONDecodeError as exc:
        raise DamagedError(f"{where}: not valid JSON ({exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # bytes that are not UTF-8
        raise DamagedError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise DamagedError(
            f"{where}: not usable JSON (nested too deeply: {depth} levels, over the limit of {MAX_JSON_DEPTH})"
        )
    return value


def read_json(location: str, max_bytes: int, inside: str | None = None) -> Any:
    """The JSON document at ``location`` (:func:`read_bytes`), parsed by :func:`parse_json`.

    Raises:
        FileNotFoundError: nothing there (for a log or claim: absent, not damaged).
        DamagedError: over the cap, not a regular file, a link, or not usable JSON.
        OSError: the store could not be read (a network error, a permission).
    """
    return parse_json(read_bytes(location, max_bytes, inside), location)


def read_bytes(location: str, max_bytes: int, inside: str | None = None) -> bytes:
    """The file at ``location``, at most ``max_bytes``. With ``inside`` (the output folder), no
    link on the way from it is followed: the job's own outputs are read only through real
    folders, as they were written.

    Raises:
        FileNotFoundError: nothing there.
        DamagedError: over the cap, not a regular file, or a link.
        OSError: the store could not be read (a network error, a permission).
    """
    try:
        return storage.read_bytes(location, max_bytes, inside=inside)
    except (storage.InputRefusedError, storage.LinkInOutputError) as exc:
        raise DamagedError(str(exc)) from None


def read_lines(location: str, max_bytes: int, max_line_bytes: int, inside: str | None = None) -> Iterator[bytes]:
    """The lines of the file at ``location``, one at a time (storage.read_lines: memory bounded by
    a line), under the caps and link rule of :func:`read_bytes`.

    Raises:
        what :func:`read_bytes` raises; DamagedError for a line over ``max_line_bytes``.
    """
    try:
        yield from storage.read_lines(location, max_bytes, max_line_bytes, inside=inside)
    except (storage.InputRefusedError, storage.LinkInOutputError) as exc:
        raise DamagedError(str(exc)) from None


class _LongNumberError(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _LongNumberError(f"a number of {len(text):,} characters, over the limit of {MAX_NUMBER_CHARS}")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _LongNumberError(f"a number of {len(text):,} characters, over the limit of {MAX_NUMBER_CHARS}")
    return float(text)


def _depth(value: Any) -> int:
    """Levels of lists and objects in a parsed value (a scalar: 0), without recursion."""
    deepest, waiting = 0, [(value, 1)]
    while waiting:
        item, level = waiting.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        waiting.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest
