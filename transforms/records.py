"""The records that flow through the pipeline: Pair in; Outcome or Failure out.

Imports: the engine's torch-free StyleConfig only; no Beam, no storage.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar, Final

from transforms.nst.config import StyleConfig

# The manifest formats ReadPairs understands (here, free of Beam, for the command line).
MANIFEST_FORMATS: Final = ("csv", "jsonl")
# Where outputs go: flat (OUTPUT/images/<id>) or tree (the content's folders kept below the root).
LAYOUTS: Final = ("flat", "tree")
# The formats a result can be written in, with their file extensions.
IMAGE_FORMATS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# The namespace of the job's Beam metrics (counters and distributions).
NAMESPACE: Final = "style_transfer"
# The longest text a failure record copies from its input (a path, a field, a value): longer
# ones are cut, saying how long they were (docs/reliability.md).
RECORDED_BYTES: Final = 200
# An error message: our words around at most a few such fields.
RECORDED_MESSAGE_BYTES: Final = 2 * RECORDED_BYTES
# Lists and mappings in a record: at most this many levels, and this many values in all (the
# first ones, in order); what is left out is said.
RECORDED_DEPTH: Final = 4
RECORDED_VALUES: Final = 60


def bounded(value: Any) -> Any:
    """``value`` as a record may hold it, whatever its type (docs/reliability.md): text cut to
    ``RECORDED_BYTES`` bytes of UTF-8 at a character's end, undecodable bytes escaped; an integer longer
    than that shown cut with its digit count; lists and mappings cut to ``RECORDED_DEPTH``
    levels and ``RECORDED_VALUES`` values in all. Never raises and never recurses deeper than
    ``RECORDED_DEPTH``, whatever a manifest row or a log holds."""
    left = [RECORDED_VALUES]

    def cut(value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return _bounded_integer(value)
        if isinstance(value, str):
            return _bounded_text(value)
        if isinstance(value, list | tuple | dict):
            kind = "mapping" if isinstance(value, dict) else "list"
            if depth >= RECORDED_DEPTH:
                return f"(a {kind} of {len(value)} nested deeper than {RECORDED_DEPTH} levels)"
            items = iter(value.items()) if isinstance(value, dict) else iter(value)
            kept: list[Any] = []
            while left[0] > 0 and len(kept) < len(value):
                left[0] -= 1
                kept.append(next(items))
            if isinstance(value, dict):
                shown: Any = {str(cut(k, RECORDED_DEPTH)): cut(v, depth + 1) for k, v in kept}
                if len(kept) < len(value):
                    shown["..."] = f"{len(value) - len(kept)} more of {len(value)}"
                return shown
            listed = [cut(item, depth + 1) for item in kept]
            return listed + ([f"... {len(value) - len(kept)} more of {len(value)}"] if len(kept) < len(value) else [])
        return _bounded_text(f"{type(value).__name__}: {value}")

    return cut(value, 0)


def _bounded_text(text: str) -> str:
    text = shown_escaped(text)
    if len(text.encode()) <= RECORDED_BYTES:
        return text
    return f"{_first_bytes(text, RECORDED_BYTES)}... ({len(text)} characters)"


def _first_bytes(text: str, count: int) -> str:
    """The longest start of ``text`` (UTF-8, no lone surrogate) that is at most ``count`` bytes."""
    return text.encode()[:count].decode("utf-8", "ignore")


def _last_bytes(text: str, count: int) -> str:
    return text.encode()[-count:].decode("utf-8", "ignore")


def _bounded_integer(value: int) -> int | str:
    try:
        digits = str(value)
    except ValueError:  # over Python's limit on the digits str() gives (4,300)
        about = int((abs(value).bit_length() - 1) * math.log10(2)) + 1
        return f"an integer of about {about:,} digits"
    if len(digits) <= RECORDED_BYTES:
        return value
    return f"{digits[:RECORDED_BYTES]}... ({len(digits.lstrip('-')):,} digits)"


def bounded_message(text: str) -> str:
    """An error message as a record holds it: at most ``RECORDED_MESSAGE_BYTES`` bytes of UTF-8,
    cut at a character's end. A longer one keeps its beginning (the error's kind, what failed) and its
    end (usually the reason, after the input it names), saying how long it was."""
    text = shown_escaped(text)
    if len(text.encode()) <= RECORDED_MESSAGE_BYTES:
        return text
    head, tail = _first_bytes(text, RECORDED_MESSAGE_BYTES - 130), _last_bytes(text, 100)
    return f"{head} ...({len(text):,} characters)... {tail}"


# The user info of a URL: what lies between its "scheme://" and an "@" before the first "/".
_USER_INFO: Final = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]*@")


def without_user_info(text: str) -> str:
    """``text`` with every URL's user info left out (``https://user:pw@host/x`` -> ``https://host/x``)."""
    return _USER_INFO.sub(r"\1", text) if "@" in text else text


def shown_escaped(text: str) -> str:
    """``text`` as every output can hold it (UTF-8: files, JSON, Beam's coders, the console):
    bytes of a name that were not UTF-8 (lone surrogates U+DC80-U+DCFF, from
    ``surrogateescape``) as ``\\xNN``, any other lone surrogate as ``\\uXXXX``; and every URL
    without its user info (``https://user:pw@host/x`` -> ``https://host/x``): a password in a
    manifest never reaches a record, the report, the index or the console."""
    text = without_user_info(text)
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return "".join(
        f"\\x{ord(ch) - 0xDC00:02x}"
        if "\udc80" <= ch <= "\udcff"
        else f"\\u{ord(ch):04x}"
        if "\ud800" <= ch <= "\udfff"
        else ch
        for ch in text
    )


@dataclass(frozen=True)
class Pair:
    """One content image with one or more styles, and the settings it is made with.

    ``config`` is resolved once, when the manifest row is read: the job's engine settings with
    the row's overrides applied and checked against the job's limits (manifest.row_to_pair).
    Everything downstream reads it; nothing applies overrides again.
    """

    id: str
    content: str
    styles: tuple[str, ...]
    config: StyleConfig
    # As the row gave them (validated; normalized only when the targets are encoded).
    style_weights: tuple[float, ...] | None = None
    source: str = ""
    row: dict[str, Any] = field(default_factory=dict, compare=False)
    # --output_layout tree: the content's output folder below the glob's root or the manifest's
    # folder ("n01440764/", "" at the root or in the flat layout); ``id`` starts with it.
    folder: str = ""
    # --output_layout tree: that folder as the input names it ("n01440764", "" at the root), the
    # pair's label in the index; None in the flat layout. The output folder keeps its name unless
    # it must change (names.output_folder_name).
    label: str | None = None


class Stage(str, Enum):
    """Where a row or pair stopped: a failure record's ``stage`` (docs/outputs.md)."""

    MANIFEST = "manifest"  # the manifest or the row cannot be read, or the row is invalid
    CHECK = "check"  # the pair's earlier outputs cannot be inspected
    READ = "read"  # an input image cannot be read or decoded
    STYLIZE = "stylize"  # the engine refused or failed the pair (memory, size, time limit, loss)
    WRITE = "write"  # the pair's outputs cannot be written

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Failure:
    """Why one manifest row or pair produced no image. ``stage`` says where it stopped."""

    stage: Stage
    error: str
    source: str
    id: str | None = None
    row: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # A record copies no long field of its input, however it was made (docs/reliability.md).
        object.__setattr__(self, "error", bounded_message(self.error))
        object.__setattr__(self, "source", bounded_message(self.source))
        object.__setattr__(self, "row", bounded(self.row))

    @classmethod
    def from_exception(
        cls, stage: Stage, exc: BaseException, source: str, id: str | None = None, row: dict[str, Any] | None = None
    ) -> Failure:
        """The record of ``exc``: its type and message (a bare MemoryError says so)."""
        detail = str(exc) or ("out of memory" if isinstance(exc, MemoryError) else "no message")
        return cls(stage, f"{type(exc).__name__}: {detail}", source, id, row)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stage": self.stage.value}


@dataclass(frozen=True)
class Outcome:
    """A pair that did not fail: ``succeeded`` (this run), ``skipped`` (already done) or
    ``claimed`` (another run is computing it now; see claims.py)."""

    STATUSES: ClassVar = ("succeeded", "skipped", "claimed")

    id: str
    status: str
    seconds: float = 0.0
    # succeeded only: the pair's earlier outputs were damaged and have been replaced
    repaired: bool = False
    # succeeded only: the written image's loss and the batch it ran in; succeeded or skipped
    # (done): its line of the index (index.line_from_log) for the data loaders
    final_loss: float | None = None
    batch_size: int = 0
    index: dict[str, Any] | None = None
