"""The records that flow through the pipeline: Pair in; Outcome or Failure out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Final

# The manifest formats ReadPairs understands (here, free of Beam, for the command line).
MANIFEST_FORMATS: Final = ("csv", "jsonl")


@dataclass(frozen=True)
class Pair:
    """One content image with one or more styles, ready to stylize.

    ``overrides`` holds the row's per-pair engine settings as sorted ``(field, value)`` items
    (a tuple keeps the record hashable and deterministic to encode).
    """

    id: str
    content: str
    styles: tuple[str, ...]
    style_weights: tuple[float, ...] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    source: str = ""
    row: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Failure:
    """Why one manifest row or pair produced no image. ``stage`` says where it stopped."""

    stage: str
    error: str
    source: str
    id: str | None = None
    row: dict[str, Any] | None = None

    @classmethod
    def from_exception(
        cls, stage: str, exc: BaseException, source: str, id: str | None = None, row: dict[str, Any] | None = None
    ) -> Failure:
        return cls(stage, f"{type(exc).__name__}: {exc}", source, id, row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

