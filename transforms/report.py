"""The run's report: OUTPUT/report.html and OUTPUT/contact_sheet.png, for people to look at.

``report.html`` is one self-contained file (no network, no scripts), one readable page at any
size: the totals; the distributions of final loss, seconds and batch size (inline SVG, over the
summary's sample); every failure up to FAILURES_SHOWN with a count of the rest; and for a
bounded choice of pairs (tally.ReportChoice: the first, the worst, a random few hundred) its
content, style(s) and result as inline thumbnails, its loss curve, its seconds and status; the
configuration. Links to full-size images and
logs are relative, so the page works from a bucket as from disk. Images shared by many pairs
(styles, mostly) are embedded once, as CSS classes. Everything from a manifest is escaped.

Pillow and the standard library only: WriteResults (results.py) wires it into the pipeline.

Imports: Pillow, the standard library and tally's Figures; no Beam, no storage (results.py reads and
writes for it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from PIL import Image, ImageDraw

from transforms.records import shown_escaped
from transforms.tally import Figures

THUMBNAIL_PX: Final = 128
# The contact sheet shows each pair as content | style | result, its pictures smaller as a run
# grows, and at most SHEET_PAIRS pairs (the first by id), so the PNG stays within about ten
# megabytes: (most pairs, picture px, pairs a row).
SHEET_LAYOUTS: Final = ((12, 128, 3), (100, 96, 4), (None, 64, 6))
SHEET_PAIRS: Final = 300
SHEET_LABEL_PX: Final = 16
SHEET_GAP_PX: Final = 6
SHEET_BACKGROUND: Final = (34, 34, 34)
SHEET_TEXT: Final = (235, 235, 235)
# A loss curve is drawn from at most this many points (a pair may have thousands of iterations).
CURVE_POINTS: Final = 120

# Failures listed on the page; the rest are counted (all are in failures/<run_id>.jsonl).
FAILURES_SHOWN: Final = 200
HISTOGRAM_BINS: Final = 24

CONTACT_SHEET_NAME: Final = "contact_sheet.png"


def thumbnail(data: bytes, max_pixels: int, size: int = THUMBNAIL_PX) -> bytes:
    """A JPEG thumbnail (longest side ``size``) of an encoded image of at most ``max_pixels``.

    ``draft`` lets a JPEG decoder skip to a reduced scale, so a 4000 px photo costs little.
    """
    with Image.open(io.BytesIO(data)) as opened:
        if opened.width * opened.height > max_pixels:
            raise ValueError(f"{opened.width}x{opened.height} pixels is over the limit of {max_pixels}")
        opened.draft("RGB", (size, size))
        image = opened.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80, optimize=True)
        return out.getvalue()


@dataclass(frozen=True)
class ReportEntry:
    """One pair as the report shows it. ``thumbnails`` maps a source URL (or ``result``) to JPEG bytes."""

    id: str
    status: str
    content: str = ""
    styles: tuple[str, ...] = ()
    seconds: float | None = None
    losses: tuple[tuple[int, float], ...] = ()
    final_loss: float | None = None
    repaired: bool = False
    thumbnails: dict[str, bytes] = field(default_factory=dict, compare=False)
    # Why a picture is missing (an input moved since, say); the report shows it instead.
    note: str = ""


def entry_from_log(
    pair_id: str, status: str, log: dict[str, Any], result: str, picture: Callable[[str], bytes], repaired: bool = False
) -> ReportEntry:
    """A finished pair's entry: its log's inputs, losses and seconds, and thumbnails made by
    ``picture(location)`` of the content, each style and the ``result`` image.

    A picture that cannot be had leaves a note, never an error: the report shows what there is.
    Names that were not UTF-8 are shown escaped (the page is UTF-8); pictures are read by the
    names as they are.
    """
    inputs = log["inputs"] if isinstance(log.get("inputs"), dict) else {}
    locations = [str(inputs.get("content", "")), *(str(s) for s in inputs.get("styles") or ())]
    content, *styles = (shown_escaped(location) for location in locations)
    thumbnails: dict[str, bytes] = {}
    notes = []
    for key, location in (*zip([content, *styles], locations, strict=True), ("result", result)):
        try:
            thumbnails[key] = picture(location)
        except Exception as exc:  # noqa: BLE001 - a report shows what it can
            notes.append(shown_escaped(f"{location}: {type(exc).__name__}: {exc}"))
    final = log["final"] if isinstance(log.get("final"), dict) else {}
    seconds = log.get("seconds")
    return ReportEntry(
        id=pair_id,
        status=status,
        content=content,
        styles=tuple(styles),
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        losses=losses_from_log(log),
        final_loss=final.get("total") if isinstance(final.get("total"), (int, float)) else None,
        repaired=repaired,
        thumbnails=thumbnails,
        note="; ".join(notes),
    )


def losses_from_log(log: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """(iteration, total loss) of a log's history, thinned to about CURVE_POINTS.

    Reads both layouts of the history: columns (outputs.LOG_FORMAT 2) and one record per
    iteration (1). Trials the divergence guard rejected (lbfgs.py) are left out: they were never
    the image.
    """
    history = log.get("history")
    if isinstance(history, dict):
        iterations, totals = history.get("iteration") or [], history.get("total") or []
        rejected = set(history.get("rejected") or [])
        points = [(i, t) for i, t in zip(iterations, totals, strict=False) if i not in rejected]
    else:
        points = [
            (r.get("iteration"), r.get("total")) for r in history or [] if isinstance(r, dict) and not r.get("rejected")
        ]
    points = [(i, t) for i, t in points if isinstance(i, int) and isinstance(t, (int, float))]
    step = max(1, math.ceil(len(points) / CURVE_POINTS))
    kept = points[::step]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return tuple((i, float(t)) for i, t in kept if math.isfinite(t) and t > 0)


def loss_curve_svg(losses: Sequence[tuple[int, float]], width: int = 270, height: int = 72) -> str:
    """log10(total loss) against iteration, as a small inline SVG (empty without two points), with
    its axes' values: the highest and lowest loss on the left, the first and last iteration below."""
    if len(losses) < 2:
        return ""
    xs = [float(i) for i, _ in losses]
    ys = [math.log10(v) for _, v in losses]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    left, top, right, bottom = 54, 6, 6, 16  # room for the axes' values
    plot_width, plot_height = width - left - right, height - top - bottom
    points = " ".join(
        f"{left + (x - x0) / span_x * plot_width:.1f},{top + (y1 - y) / span_y * plot_height:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    label = f"loss {losses[0][1]:.3g} to {losses[-1][1]:.3g} over {int(x1)} iterations (log scale)"
    axes = "".join(
        f'<text class="axis" x="{x}" y="{y}" font-size="9" text-anchor="{anchor}">{html.escape(text)}</text>'
        for x, y, anchor, text in (
            (left - 3, top + 7, "end", f"{10**y1:.3g}"),
            (left - 3, top + plot_height, "end", f"{10**y0:.3g}"),
            (left, height - 3, "start", f"{int(x0)}"),
            (width - right, height - 3, "end", f"{int(x1)} it"),
        )
    )
    return (
        f'<svg class="curve" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(label)}"><title>{html.escape(label)}</title>'
        f'<path d="M{left},{top} V{top + plot_height} H{width - right}" fill="none" stroke="#999" stroke-width="0.5"/>'
        f'{axes}<polyline fill="none" stroke="#3366cc" stroke-width="1.5" points="{points}"/></svg>'
    )


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _href(path: str) -> str:
    """A relative link to an output file; each path segment quoted (ids may hold any character)."""
    return html.escape("/".join(urllib.parse.quote(part, safe="") for part in path.split("/")))


class _Images:
    """Each distinct picture once, as a CSS class; pairs refer to it by class name."""

    def __init__(self) -> None:
        self._classes: dict[bytes, tuple[str, tuple[int, int]]] = {}

    def tag(self, jpeg: bytes | None, title: str) -> str:
        if not jpeg:
            return '<span class="missing">no picture</span>'
        if jpeg not in self._classes:  # a style shared by many pairs is read once
            with Image.open(io.BytesIO(jpeg)) as image:
                self._classes[jpeg] = (f"i{len(self._classes)}", image.size)
        name, (width, height) = self._classes[jpeg]
        return (
            f'<span class="thumb {name}" style="width:{width}px;height:{height}px" role="img" '
            f'title="{html.escape(title)}" aria-label="{html.escape(title)}"></span>'
        )

    def css(self) -> str:
        return "\n".join(
            f".{name}{{background-image:url({_data_uri(jpeg)})}}" for jpeg, (name, _) in self._classes.items()
        )


_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:6px 8px;vertical-align:middle;text-align:left}
.thumb{display:inline-block;background-size:contain;background-repeat:no-repeat;margin-right:4px}
.missing,.note{color:#a33}.num{text-align:right;font-variant-numeric:tabular-nums}
.counts span{margin-right:16px}code,pre{font-size:12px}pre{background:#f6f6f6;padding:8px;overflow:auto}
.failed{color:#a33;font-weight:600}
.figures{display:flex;gap:24px;flex-wrap:wrap}figure{margin:0}figcaption{font-size:12px;color:#555}
.settings th{font-weight:400;color:#555;font-family:ui-monospace,monospace;font-size:12px}
.settings td{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
"""


def histogram_svg(values: Sequence[float], label: str, log: bool = False, width: int = 260, height: int = 72) -> str:
    """A small histogram of ``values`` (log10 of them with ``log``) as inline SVG; "" without values."""
    points = [math.log10(v) if log else v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    counts = [0] * HISTOGRAM_BINS
    for point in points:
        counts[min(HISTOGRAM_BINS - 1, int((point - low) / span * HISTOGRAM_BINS))] += 1
    bar = width / HISTOGRAM_BINS
    tallest = max(counts)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 14 - c / tallest * (height - 18):.1f}" width="{bar - 1:.1f}" '
        f'height="{c / tallest * (height - 18):.1f}" fill="#3366cc"/>'
        for i, c in enumerate(counts)
        if c
    )
    shown = (lambda v: f"{10**v:.3g}") if log else (lambda v: f"{v:.3g}")
    text = f"{label}: {len(points)} pairs, {shown(low)} to {shown(high)}{' (log scale)' if log else ''}"
    return (
        f'<figure><svg class="histogram" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(text)}"><title>{html.escape(text)}</title>{bars}'
        f'<text x="0" y="{height - 2}" font-size="10">{html.escape(shown(low))}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{html.escape(shown(high))}</text></svg>'
        f"<figcaption>{html.escape(label)}</figcaption></figure>"
    )


def _pair_rows(entries: Iterable[ReportEntry], images: _Images, extension: str, to_output: str) -> list[str]:
    rows = []
    for entry in sorted(entries, key=lambda e: e.id):
        status = entry.status + (" (repaired)" if entry.repaired else "")
        styles = "".join(images.tag(entry.thumbnails.get(s), f"style: {s}") for s in entry.styles)
        result = images.tag(entry.thumbnails.get("result"), f"result: {entry.id}")
        if "result" in entry.thumbnails:
            result = f'<a href="{_href(f"{to_output}images/{entry.id}.{extension}")}">{result}</a>'
        seconds = "" if entry.seconds is None else f"{entry.seconds:.1f}"
        final = "" if entry.final_loss is None else f"{entry.final_loss:.4g}"
        log = f'<a href="{_href(f"{to_output}logs/{entry.id}.json")}">log</a>' if entry.losses else ""
        note = f'<div class="note">{html.escape(entry.note)}</div>' if entry.note else ""
        rows.append(
            f'<tr id="{html.escape(entry.id)}"><td><code>{html.escape(entry.id)}</code>{note}</td>'
            f"<td>{images.tag(entry.thumbnails.get(entry.content), f'content: {entry.content}')}</td>"
            f"<td>{styles}</td><td>{result}</td>"
            f'<td>{loss_curve_svg(entry.losses)}</td><td class="num">{final}</td>'
            f'<td class="num">{seconds}</td><td>{html.escape(status)} {log}</td></tr>'
        )
    return rows


def _failures_section(failures: Sequence[dict[str, Any]], failures_link: str | None) -> str:
    if not failures:
        return ""
    rows = "".join(
        f"<tr><td><code>{html.escape(str(f.get('id') or ''))}</code></td><td>{html.escape(str(f.get('stage')))}</td>"
        f'<td><code>{html.escape(str(f.get("source")))}</code></td><td class="failed">{html.escape(str(f.get("error")))}</td></tr>'
        for f in failures[:FAILURES_SHOWN]
    )
    link = f' (<a href="{_href(failures_link)}">{html.escape(failures_link)}</a>)' if failures_link else ""
    rest = len(failures) - FAILURES_SHOWN
    more = f"<p>and {rest} more failures, each in the failures file.</p>" if rest > 0 else ""
    return (
        f"<h2>Failures: {len(failures)}{link}</h2><table><tr><th>id</th><th>stage</th><th>source</th><th>reason</th></tr>"
        f"{rows}</table>{more}"
    )


def render_html(
    summary: dict[str, Any],
    entries: Sequence[ReportEntry],
    failures: Sequence[dict[str, Any]],
    failures_link: str | None,
    sample: Sequence[Figures] = (),
    extension: str = "png",
    to_output: str = "",
) -> str:
    """The whole report page. ``failures`` are failure records (records.Failure.to_dict());
    ``sample``, the figures of the pairs the summary's statistics come from (tally.Tally);
    ``to_output``, the page's way up to the output folder ("../../" from runs/<run_id>/)."""
    images = _Images()
    rows = _pair_rows(entries, images, extension, to_output)
    counts = summary.get("counts", {})
    count_line = "".join(f"<span>{html.escape(k.replace('_', ' '))}: <b>{v}</b></span>" for k, v in counts.items())
    per_pair = summary.get("seconds_per_pair") or {}
    timing = f"median {per_pair['median']:.1f} s per pair, " if per_pair else ""
    slots = summary.get("slots") or {}
    if slots.get("busy") is not None:
        timing += (
            f"slots busy {slots['busy']:.0%} ({slots['row_steps']:,} pair iterations in {slots['batch_steps']:,} "
            f"batch steps of {slots['slot_steps'] // max(1, slots['batch_steps'])} slots), "
        )
    distributions = "".join(
        [
            histogram_svg([f.final_loss for f in sample if f.final_loss is not None], "final loss", log=True),
            histogram_svg([f.seconds for f in sample], "seconds per pair"),
            histogram_svg([float(f.batch_size) for f in sample], "batch size"),
        ]
    )
    if distributions:
        distributions = f'<h2>Distributions ({len(sample)} pairs)</h2><div class="figures">{distributions}</div>'
    pairs = len(entries)
    finished = counts.get("succeeded", 0) + counts.get("skipped", 0) + counts.get("claimed_elsewhere", 0)
    shown = f" ({pairs} of {finished}: the first, the worst and a random sample)" if pairs < finished else ""
    configuration = _configuration_table(summary.get("configuration", {}))
    title = f"Style transfer run {summary.get('run_id', '')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}{images.css()}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(str(summary.get('started_at', '')))} to {html.escape(str(summary.get('finished_at', '')))}: "
        f"{timing}{summary.get('wall_seconds', 0):.1f} s in all. "
        f'<a href="{CONTACT_SHEET_NAME}">contact sheet</a> · <a href="summary.json">summary.json</a></p>'
        f'<p class="counts">{count_line}</p>'
        f"{distributions}{_failures_section(failures, failures_link and to_output + failures_link)}"
        f"<h2>Pairs{html.escape(shown)}</h2><table><tr><th>id</th><th>content</th><th>style</th><th>result</th><th>total loss</th>"
        f"<th>final</th><th>seconds</th><th>status</th></tr>{''.join(rows)}</table>"
        f"<h2>Configuration</h2>{configuration}</body></html>\n"
    )


def _configuration_table(configuration: dict[str, Any]) -> str:
    """The run's configuration as a table of settings, nested groups flattened (``style.image_size``)."""
    rows = []

    def add(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        rows.append(f"<tr><th>{html.escape(prefix)}</th><td>{html.escape(str(shown))}</td></tr>")

    add("", configuration)
    return f'<table class="settings">{"".join(rows)}</table>'


def sheet_layout(pairs: int) -> tuple[int, int]:
    """(picture px, pairs a row) of a contact sheet of ``pairs`` pairs."""
    return next((px, columns) for most, px, columns in SHEET_LAYOUTS if most is None or pairs <= most)


def sheet_cell_size(px: int) -> tuple[int, int]:
    """(width, height) of one pair's cell: three pictures up to 4:3 wide, their gaps, its label."""
    return 3 * (px * 4 // 3) + 4 * SHEET_GAP_PX, px + SHEET_LABEL_PX + 2 * SHEET_GAP_PX


def contact_sheet(entries: Iterable[ReportEntry]) -> bytes | None:
    """The pairs with a result (the first ``SHEET_PAIRS`` by id) as content | style | result under
    their ids, on a dark ground (pictures keep their shape; no white margins): the run at a
    glance. None without results."""
    shown = [e for e in sorted(entries, key=lambda e: e.id) if "result" in e.thumbnails][:SHEET_PAIRS]
    if not shown:
        return None
    px, columns = sheet_layout(len(shown))
    columns = min(columns, math.ceil(math.sqrt(len(shown))))  # a few pairs: about square, not a strip
    cell_width, cell_height = sheet_cell_size(px)
    slot = px * 4 // 3
    sheet = Image.new("RGB", (columns * cell_width, math.ceil(len(shown) / columns) * cell_height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, entry in enumerate(shown):
        left, top = (index % columns) * cell_width, (index // columns) * cell_height
        pictures = [
            entry.thumbnails.get(entry.content),
            entry.thumbnails.get(entry.styles[0]) if entry.styles else None,
            entry.thumbnails["result"],
        ]
        for column, jpeg in enumerate(pictures):
            x = left + SHEET_GAP_PX + column * (slot + SHEET_GAP_PX)
            if jpeg is None:
                draw.rectangle((x, top + SHEET_GAP_PX, x + slot - 1, top + SHEET_GAP_PX + px - 1), outline=SHEET_TEXT)
                continue
            with Image.open(io.BytesIO(jpeg)) as image:
                picture = image.convert("RGB")
            picture.thumbnail((slot, px))  # no larger than the slot; a thumbnail is never enlarged
            sheet.paste(picture, (x + (slot - picture.width) // 2, top + SHEET_GAP_PX + (px - picture.height) // 2))
        label, room = entry.id, cell_width - 2 * SHEET_GAP_PX
        while len(label) > 1 and draw.textlength(label + "...") > room:
            label = label[:-1]
        label = label if label == entry.id else label + "..."
        draw.text((left + SHEET_GAP_PX, top + 2 * SHEET_GAP_PX + px), label, fill=SHEET_TEXT)
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()
