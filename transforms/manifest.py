"""ReadPairs: a CSV / JSON Lines manifest, or two globs, -> validated Pair records + Failures.

A manifest is read whole by one DoFn: ids must be unique across the file, and derived ids need
every row in view. Invalid rows become Failure records; they never stop the other rows.

Imports: Beam, names, storage, reading, limits, records and the torch-free StyleConfig; nothing of pipeline/.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import random
from collections.abc import Iterator
from typing import Any, Final

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.typehints.decorators import no_annotations

from transforms import names, reading, storage
from transforms.limits import Limits
from transforms.nst.config import StyleConfig, blend_weights, with_color_alias
from transforms.records import MANIFEST_FORMATS, Failure, Pair, Stage, bounded

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

PAIRS: Final = "pairs"
FAILURES: Final = "failures"
FORMATS: Final = MANIFEST_FORMATS

# Engine settings a manifest row may override, with the type its text is parsed to.
ROW_OVERRIDES: Final[dict[str, type]] = {
    "iterations": int,
    "stop_tolerance": float,
    "image_size": int,
    "style_weight": float,
    "content_weight": float,
    "tv_weight": float,
    "seed": int,
    "init": str,
    "color_control": str,
    # neural-style's name for color_control luminance (config.with_color_alias)
    "original_colors": bool,
}
COLUMNS: Final = ("id", "content", "style", "style_weights", *ROW_OVERRIDES)
# Longest field read from a row: paths and signed URLs fit well within it; a longer field is
# refused for its row (and is not copied into the failure record).
MAX_FIELD_CHARS: Final = 8192
_TRUE: Final = {"1", "true", "yes", "y", "on"}
_FALSE: Final = {"0", "false", "no", "n", "off"}


def manifest_format(location: str, declared: str | None) -> str:
    """``csv`` or ``jsonl``, from ``declared`` or else the file extension."""
    if declared:
        if declared not in FORMATS:
            raise ValueError(f"unknown manifest format {declared!r}: choose one of {', '.join(FORMATS)}")
        return declared
    lowered = location.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(
        f"{location}: cannot tell its format from the extension (.csv, .jsonl); pass --manifest_format csv|jsonl"
    )


def decode_manifest(data: bytes) -> str:
    """The manifest's text. Bytes that are not UTF-8 are kept as lone surrogates, so that only the
    rows holding them fail (``row_problem``), not the whole manifest."""
    return data.decode("utf-8-sig", errors="surrogateescape")


def parse_rows(data: bytes, location: str, fmt: str) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    """``(source, row)`` for every data row; a row that cannot be parsed comes as its exception.

    Nothing in one row can stop the others: fields of any length, undecodable bytes, NUL bytes
    and malformed quoting each fail their own row.
    """
    text = decode_manifest(data)
    if fmt == "csv":
        yield from _csv_rows(text, location)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{location} line {number}"
        try:
            row = reading.parse_json(line, source)
        except reading.DamagedError as exc:
            yield source, ValueError(str(exc).removeprefix(f"{source}: "))
            continue
        if not isinstance(row, dict):
            yield source, ValueError(f"expected a JSON object, got {type(row).__name__}")
            continue
        problem = row_problem(row)
        yield source, problem or row


def _csv_rows(text: str, location: str) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    # The csv module refuses fields over a process-wide limit (128 KiB) by raising in the middle
    # of the file; raised to the manifest's length, every field is read and row_problem refuses
    # the long ones for their own rows.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.DictReader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"{location} line {reader.line_num}", ValueError(f"not valid CSV ({exc})")
            continue
        source = f"{location} line {reader.line_num}"
        if None in row:
            yield source, ValueError(f"more fields than the header's {len(reader.fieldnames or [])}")
            continue
        cleaned = {k.strip(): v for k, v in row.items() if v is not None and v.strip() != ""}
        yield source, row_problem(cleaned) or cleaned


def row_problem(row: dict[str, Any]) -> ValueError | None:
    """Why a parsed row cannot be used as text (too long, not UTF-8, a NUL byte), or None."""
    for column, value in row.items():
        for text in (column, *(value if isinstance(value, list) else [value])):
            if not isinstance(text, str):
                continue
            if len(text) > MAX_FIELD_CHARS:
                return ValueError(
                    f"column {bounded(column)!r}: a field of {len(text)} characters is over the limit of {MAX_FIELD_CHARS}"
                )
            if "\0" in text:
                return ValueError(f"column {bounded(column)!r}: a NUL byte in {bounded(text)!r}")
            bad = next((ch for ch in text if "\udc80" <= ch <= "\udcff"), None)
            if bad is not None:
                return ValueError(f"column {bounded(column)!r}: not UTF-8 (byte 0x{ord(bad) - 0xDC00:02x})")
    return None


def chosen_styles(content_path: str, styles: list[str], count: int, seed: int) -> list[str]:
    """``count`` distinct styles for one content, drawn from ``styles`` by a choice that depends
    only on ``seed``, the content's path (below the glob's root) and the style set: the same on
    every worker, in every rerun, and whatever order the runner visits contents in."""
    # surrogateescape: a name whose bytes are not UTF-8 is hashed as its bytes (valid names as before).
    digest = hashlib.sha256(f"{seed}\0{content_path}".encode("utf-8", "surrogateescape")).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(sorted(styles), count)


def _split(value: Any, column: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    raise ValueError(f"{column} must be text or a list, got {type(value).__name__}")


def _convert(column: str, value: Any) -> Any:
    kind = ROW_OVERRIDES[column]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ValueError(f"{column} must be true or false, got {bounded(value)!r}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{column} must be int, got {bounded(value)!r}")
        return int(value)  # JSON writers often emit 300.0
    try:
        # int("7.5") fails as it should; int(7.5) would silently truncate, hence str().
        return kind(value) if kind is not int else int(str(value).strip())
    except (TypeError, ValueError):  # a ValueError also for an integer of over 4,300 digits
        raise ValueError(f"{column} must be {kind.__name__}, got {bounded(value)!r}") from None


def row_to_pair(
    row: dict[str, Any],
    source: str,
    base_folder: str,
    defaults: StyleConfig,
    limits: Limits,
    tree_root: str | None = None,
    output: str | None = None,
) -> Pair:
    """Validate one row (its id not yet made unique) against the job's limits; with ``tree_root``
    (``--output_layout tree``) its id starts with the content's folder below that root.

    Raises ValueError naming the problem (UnsafeLocationError for a location it may not read; an
    input inside ``output``, the job's own outputs).
    """
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if not str(row.get("content", "")).strip():
        raise ValueError("no content image (column 'content')")
    content = storage.resolve(str(row["content"]).strip(), base_folder)
    styles = [storage.resolve(str(s), base_folder) for s in _split(row.get("style", ""), "style")]
    if not styles:
        raise ValueError("no style image (column 'style'; separate several with '|')")
    weights = None
    if "style_weights" in row:
        given = _split(row["style_weights"], "style_weights")
        try:
            weights = tuple(float(w) for w in given)
        except (TypeError, ValueError):
            raise ValueError(f"style_weights must be numbers (separated by '|'), got {bounded(given)!r}") from None
        try:
            blend_weights(len(styles), weights)
        except ValueError:
            raise ValueError(
                f"style_weights {list(weights)} must be {len(styles)} finite values >= 0, not all zero"
            ) from None
    overrides = with_color_alias({column: _convert(column, row[column]) for column in ROW_OVERRIDES if column in row})
    # Rows without overrides share the job's config: a million glob rows are a million references,
    # not a million validated copies.
    config = defaults.replace(**overrides) if overrides else defaults
    # A row's init image is found like its other images; the job's own --init is the launcher's.
    row_init = config.init_location if "init" in overrides else None
    if row_init is not None:
        row_init = storage.resolve(row_init, base_folder)
        config = config.replace(init=row_init)
    limits.check(config)  # ValueError for an out-of-range value
    for location in (content, *styles, *([row_init] if row_init else [])):
        storage.check_location(location, limits.allowed_schemes)
        if output is not None and storage.is_within(location, output):
            raise ValueError(
                f"{bounded(location)} is inside --output {bounded(output)}: the job never reads its own outputs"
            )
    raw_id = str(row["id"]) if str(row.get("id", "")).strip() else ""
    folder, label = names.tree_folder(content, tree_root) if tree_root is not None else ("", None)
    pair_id = folder + names.safe_id(raw_id) if raw_id else ""
    return Pair(pair_id, content, tuple(styles), config, weights, source, row, folder, label)


def validate_rows(
    rows: list[tuple[str, dict[str, Any] | Exception]],
    base_folder: str,
    defaults: StyleConfig,
    limits: Limits,
    tree_root: str | None = None,
    output: str | None = None,
) -> Iterator[Pair | Failure]:
    """Pairs with unique ids, and a Failure for every invalid row, in manifest order; with
    ``tree_root``, ids keep the content's folders below it (``--output_layout tree``), and
    rows whose outputs would merge two input folders into one fail (names.folder_clashes)."""
    parsed: list[Pair | Failure] = []
    for source, row in rows:
        if isinstance(row, Exception):
            parsed.append(Failure.from_exception(Stage.MANIFEST, row, source))
            continue
        try:
            parsed.append(row_to_pair(row, source, base_folder, defaults, limits, tree_root, output))
        except ValueError as exc:
            parsed.append(Failure.from_exception(Stage.MANIFEST, exc, source, row=row))
    # Explicit ids are reserved first, so a derived id never takes a name a row asked for.
    taken: dict[str, str] = {}
    for index, item in enumerate(parsed):
        if isinstance(item, Pair) and item.id:
            if item.id in taken:
                error = ValueError(f"duplicate id {item.id!r} (first used at {taken[item.id]})")
                parsed[index] = Failure.from_exception(Stage.MANIFEST, error, item.source, item.id, item.row)
            else:
                taken[item.id] = item.source
    named: list[Pair | Failure] = []
    for item in parsed:
        if isinstance(item, Pair) and not item.id:
            try:
                base = candidate = item.folder + names.derive_id(item)
            except ValueError as exc:  # a name with nothing usable (a dot-file, say): this row's failure
                error = ValueError(f"no id can be made from the file names ({exc}); give the row an id")
                named.append(Failure.from_exception(Stage.MANIFEST, error, item.source, row=item.row))
                continue
            suffix = 2
            while candidate in taken:
                candidate, suffix = f"{base}-{suffix}", suffix + 1
            taken[candidate] = item.source
            item = dataclasses.replace(item, id=candidate)
        named.append(item)
    clashes = names.folder_clashes([item for item in named if isinstance(item, Pair)])
    for item in named:
        if isinstance(item, Pair) and item.id in clashes:
            yield Failure.from_exception(Stage.MANIFEST, ValueError(clashes[item.id]), item.source, item.id, item.row)
        else:
            yield item


def _tagged(items: Iterator[Pair | Failure]) -> Iterator[Any]:
    """Pairs to the main output, Failures to the ``failures`` output (each also logged)."""
    for item in items:
        if isinstance(item, Failure):
            logger.warning("%s: row failed: %s", item.source, item.error)
            yield pvalue.TaggedOutput(FAILURES, item)
        else:
            if item.content in item.styles:  # a glob that matches the photo itself, say
                logger.warning(
                    "%s: %s is its own style: the result will be the content, barely changed (loss near 0)",
                    item.id,
                    bounded(item.content),
                )
            yield item


def read_manifest(
    location: str, declared_format: str | None, limits: Limits
) -> list[tuple[str, dict[str, Any] | Exception]]:
    """Every data row of the manifest at ``location``, parsed (not yet validated).

    Raises:
        OSError: missing, not a regular file, or over ``limits.max_input_bytes``.
        ValueError: the format cannot be told from the extension.
    """
    fmt = manifest_format(location, declared_format)
    return list(parse_rows(storage.read_bytes(location, limits.max_input_bytes), location, fmt))


class _ExpandManifestFn(beam.DoFn):
    def __init__(self, fmt: str | None, defaults: StyleConfig, limits: Limits, layout: str, output: str | None) -> None:
        self._fmt = fmt
        self._defaults = defaults
        self._limits = limits
        self._layout = layout
        self._output = output

    def process(self, location: str) -> Iterator[Any]:
        try:
            rows = read_manifest(location, self._fmt, self._limits)
        except (OSError, ValueError) as exc:
            yield from _tagged(iter([Failure.from_exception(Stage.MANIFEST, exc, location)]))
            return
        base = storage.parent(location)
        tree_root = base if self._layout == "tree" else None
        yield from _tagged(validate_rows(rows, base, self._defaults, self._limits, tree_root, self._output))


def glob_rows(
    contents: list[str], styles: list[str], root: str, styles_per_content: int, seed: int
) -> list[tuple[str, dict[str, Any] | Exception]]:
    """Manifest rows for two globs' matches: every content with every style, or with
    ``styles_per_content`` styles of its own (``chosen_styles``). Pre-flight checked that there
    are enough styles; if some vanished since, each content's row fails, naming the count."""
    rows: list[tuple[str, dict[str, Any] | Exception]] = []
    if styles_per_content > len(styles):
        short = FileNotFoundError(
            f"--styles matches {len(styles)} files now, fewer than --styles_per_content {styles_per_content} "
            "(styles were removed after the job started)"
        )
        return [(content, short) for content in contents]
    for content in contents:
        chosen = styles
        if styles_per_content:
            chosen = chosen_styles(storage.relative_path(content, root) or content, styles, styles_per_content, seed)
        rows += [(f"{content} x {style}", {"content": content, "style": style}) for style in chosen]
    return rows


def outside_output(matches: list[str], output: str | None) -> list[str]:
    """``matches`` less those inside ``output``: the job never reads its own outputs
    (``--contents 'data/**/*.jpg' --output data/stylized`` would otherwise stylize the last
    run's results at every rerun). Pre-flight says how many were left out."""
    return [match for match in matches if output is None or not storage.is_within(match, output)]


class _ExpandGlobsFn(beam.DoFn):
    def __init__(
        self, defaults: StyleConfig, limits: Limits, styles_per_content: int, layout: str, output: str | None
    ) -> None:
        self._defaults = defaults
        self._limits = limits
        self._styles_per_content = styles_per_content
        self._layout = layout
        self._output = output

    def process(self, patterns: tuple[str, str]) -> Iterator[Any]:
        contents_pattern, styles_pattern = patterns
        matches = {}
        for flag, pattern in (("--contents", contents_pattern), ("--styles", styles_pattern)):
            try:
                matches[flag] = outside_output(storage.glob(pattern), self._output)
                if not matches[flag]:
                    raise FileNotFoundError(f"no files match {flag} {pattern!r}")
            except OSError as exc:
                yield from _tagged(iter([Failure.from_exception(Stage.MANIFEST, exc, f"{flag} {pattern}")]))
                return
        root = storage.glob_root(contents_pattern)
        rows = glob_rows(
            matches["--contents"], matches["--styles"], root, self._styles_per_content, self._defaults.seed
        )
        tree_root = root if self._layout == "tree" else None
        yield from _tagged(validate_rows(rows, ".", self._defaults, self._limits, tree_root))


class ReadPairs(beam.PTransform):
    """Pairs from a manifest file, or from two globs: every content with every style, or with
    ``styles_per_content`` seeded choices of its own. ``layout`` "tree" keeps each content's
    folder (below the manifest's folder or the contents glob's root) in its pair's id. Nothing
    inside ``output`` is read: glob matches there are left out, manifest rows naming it fail.

    Outputs a ``DoOutputsTuple`` with ``pairs`` (Pair) and ``failures`` (Failure).
    """

    def __init__(
        self,
        defaults: StyleConfig,
        limits: Limits,
        manifest: str | None = None,
        manifest_format: str | None = None,
        contents: str | None = None,
        styles: str | None = None,
        styles_per_content: int = 0,
        layout: str = "flat",
        output: str | None = None,
    ) -> None:
        super().__init__()
        if bool(manifest) == bool(contents and styles):
            raise ValueError("give either a manifest, or both contents and styles globs")
        self._styles_per_content = styles_per_content
        self._layout = layout
        self._defaults = defaults
        self._limits = limits
        self._manifest = manifest
        self._format = manifest_format
        self._globs = (contents, styles)
        self._output = output

    @no_annotations  # for readers and mypy: Beam 2.78 warns on the console of hints that are not PCollections
    def expand(self, pbegin: beam.pvalue.PBegin) -> pvalue.DoOutputsTuple:
        if self._manifest:
            return (
                pbegin
                | "ManifestLocation" >> beam.Create([self._manifest])
                | "ParseManifest"
                >> beam.ParDo(
                    _ExpandManifestFn(self._format, self._defaults, self._limits, self._layout, self._output)
                ).with_outputs(FAILURES, main=PAIRS)
            )
        return (
            pbegin
            | "GlobPatterns" >> beam.Create([self._globs])
            | "CrossProduct"
            >> beam.ParDo(
                _ExpandGlobsFn(self._defaults, self._limits, self._styles_per_content, self._layout, self._output)
            ).with_outputs(FAILURES, main=PAIRS)
        )
