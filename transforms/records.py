"""The records that flow through the pipeline: Pair in; Outcome or Failure out.

Imports: the engine's torch-free StyleConfig only; no Beam, no storage.
"""

from __future__ import annotations

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
RECORDED_CHARS: Final = 200
_LONG_WORD: Final = re.compile(r"\S{%d,}" % (RECORDED_CHARS + 1))


def bounded(value: Any) -> Any:
    """``value`` as a failure record may hold it: text cut to ``RECORDED_CHARS`` characters,
    undecodable bytes escaped, lists and mappings cut to their first items, all recursively."""
    if isinstance(value, str):
        value = shown_escaped(value)
        return value if len(value) <= RECORDED_CHARS else f"{value[:RECORDED_CHARS]}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        return [bounded(item) for item in value[:20]]
    if isinstance(value, dict):
        return {bounded(k): bounded(v) for k, v in list(value.items())[:40]}
    return value


def bounded_message(text: str) -> str:
    """An error message whose every word (a path, a URL, a value) is ``bounded``, and whose
    whole is at most ten times that: the reason stays readable, the input is not copied."""
    text = _LONG_WORD.sub(lambda match: bounded(match.group()), shown_escaped(text))
    limit = 10 * RECORDED_CHARS
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown_escaped(text: str) -> str:
    """``text`` as every output can hold it (UTF-8: files, JSON, Beam's coders, the console):
    bytes of a name that were not UTF-8 (lone surrogates U+DC80-U+DCFF, from
    ``surrogateescape``) as ``\\xNN``, any other lone surrogate as ``\\uXXXX``."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return "".join(
        f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else f"\\u{ord(ch):04x}" if "\ud800" <= ch <= "\udfff" else ch
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
    # it must change (manifest.output_folder_name).
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

