"""The run's report: OUTPUT/report.html and OUTPUT/contact_sheet.png, for people to look at.

``report.html`` is one self-contained file (no network, no scripts): for every pair of the run
its content, style(s) and result as inline thumbnails, its loss curve as inline SVG, its seconds
and status; the failures with their reasons; the configuration. Links to full-size images and
logs are relative, so the page works from a bucket as from disk. Images shared by many pairs
(styles, mostly) are embedded once, as CSS classes. Everything from a manifest is escaped.

Pillow and the standard library only: WriteResults (results.py) wires it into the pipeline.

Imports: Pillow and the standard library only; no Beam, no storage (results.py reads and writes for
it).
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

THUMBNAIL_PX: Final = 128
# Contact sheet tiles shrink as a run grows, to keep the PNG in the megabytes: (most results, tile px, columns).
SHEET_LAYOUTS: Final = ((100, 128, 10), (300, 96, 15), (None, 64, 25))
SHEET_LABEL_PX: Final = 14
# A loss curve is drawn from at most this many points (a pair may have thousands of iterations).
CURVE_POINTS: Final = 120

REPORT_NAME: Final = "report.html"
CONTACT_SHEET_NAME: Final = "contact_sheet.png"


def thumbnail(data: bytes, max_pixels: int, size: int = THUMBNAIL_PX) -> bytes:
    """A JPEG thumbnail (longest side ``size``) of an encoded image of at most ``max_pixels``.

    ``draft`` lets a JPEG decoder skip to a reduced scale, so a 4000 px photo costs little.
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} pixels is over the limit of {max_pixels}")
        image.draft("RGB", (size, size))
        image = image.convert("RGB")
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
    """
    inputs = log.get("inputs") if isinstance(log.get("inputs"), dict) else {}
    content = str(inputs.get("content", ""))
    styles = tuple(str(s) for s in inputs.get("styles") or ())
    thumbnails: dict[str, bytes] = {}
    notes = []
    for key, location in ((content, content), *((s, s) for s in styles), ("result", result)):
        try:
            thumbnails[key] = picture(location)
        except Exception as exc:  # noqa: BLE001 - a report shows what it can
            notes.append(f"{location}: {type(exc).__name__}: {exc}")
    final = log.get("final") if isinstance(log.get("final"), dict) else {}
    seconds = log.get("seconds")
    return ReportEntry(
        id=pair_id,
        status=status,
        content=content,
        styles=styles,
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        losses=losses_from_log(log),
        final_loss=final.get("total") if isinstance(final.get("total"), (int, float)) else None,
        repaired=repaired,
        thumbnails=thumbnails,
        note="; ".join(notes),
    )


def losses_from_log(log: dict[str, Any]) -> tuple[tuple[int, float], ...]:
    """(iteration, total loss) of a log's history, thinned to about CURVE_POINTS.

    Trials the divergence guard rejected (lbfgs.py) are left out: they were never the image.
    """
    history = [
        r for r in log.get("history", [])
        if isinstance(r, dict) and isinstance(r.get("total"), (int, float)) and not r.get("rejected")
    ]
    step = max(1, math.ceil(len(history) / CURVE_POINTS))
    kept = history[::step]
    if history and kept[-1] is not history[-1]:
        kept.append(history[-1])
    return tuple((int(r["iteration"]), float(r["total"])) for r in kept if math.isfinite(r["total"]) and r["total"] > 0)


def loss_curve_svg(losses: Sequence[tuple[int, float]], width: int = 220, height: int = 64) -> str:
    """log10(total loss) against iteration, as a small inline SVG (empty without two points)."""
    if len(losses) < 2:
        return ""
    xs = [float(i) for i, _ in losses]
    ys = [math.log10(v) for _, v in losses]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    pad = 4
    points = " ".join(
        f"{pad + (x - x0) / span_x * (width - 2 * pad):.1f},{pad + (y1 - y) / span_y * (height - 2 * pad):.1f}"
        for x, y in zip(xs, ys)
    )
    label = f"loss {losses[0][1]:.3g} to {losses[-1][1]:.3g} over {int(x1)} iterations (log scale)"
    return (
        f'<svg class="curve" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(label)}"><title>{html.escape(label)}</title>'
        f'<polyline fill="none" stroke="#3366cc" stroke-width="1.5" points="{points}"/></svg>'
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
        return "\n".join(f".{name}{{background-image:url({_data_uri(jpeg)})}}" for jpeg, (name, _) in self._classes.items())


_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:6px 8px;vertical-align:middle;text-align:left}
.thumb{display:inline-block;background-size:contain;background-repeat:no-repeat;margin-right:4px}
.missing,.note{color:#a33}.num{text-align:right;font-variant-numeric:tabular-nums}
.counts span{margin-right:16px}code,pre{font-size:12px}pre{background:#f6f6f6;padding:8px;overflow:auto}
.failed{color:#a33;font-weight:600}
"""


def render_html(
    summary: dict[str, Any], entries: Iterable[ReportEntry], failures: Iterable[dict[str, Any]], failures_link: str | None
) -> str:
    """The whole report page. ``failures`` are failure records (records.Failure.to_dict())."""
    images = _Images()
    rows = []
    for entry in sorted(entries, key=lambda e: e.id):
        status = entry.status + (" (repaired)" if entry.repaired else "")
        styles = "".join(images.tag(entry.thumbnails.get(s), f"style: {s}") for s in entry.styles)
        result = images.tag(entry.thumbnails.get("result"), f"result: {entry.id}")
        if "result" in entry.thumbnails:
            result = f'<a href="{_href(f"images/{entry.id}.png")}">{result}</a>'
        seconds = "" if entry.seconds is None else f"{entry.seconds:.1f}"
        final = "" if entry.final_loss is None else f"{entry.final_loss:.4g}"
        log = f'<a href="{_href(f"logs/{entry.id}.json")}">log</a>' if entry.losses else ""
        note = f'<div class="note">{html.escape(entry.note)}</div>' if entry.note else ""
        rows.append(
            f"<tr id=\"{html.escape(entry.id)}\"><td><code>{html.escape(entry.id)}</code>{note}</td>"
            f"<td>{images.tag(entry.thumbnails.get(entry.content), f'content: {entry.content}')}</td>"
            f"<td>{styles}</td><td>{result}</td>"
            f"<td>{loss_curve_svg(entry.losses)}</td><td class=\"num\">{final}</td>"
            f"<td class=\"num\">{seconds}</td><td>{html.escape(status)} {log}</td></tr>"
        )
    failure_rows = [
        f"<tr><td><code>{html.escape(str(f.get('id') or ''))}</code></td><td>{html.escape(str(f.get('stage')))}</td>"
        f"<td><code>{html.escape(str(f.get('source')))}</code></td><td class=\"failed\">{html.escape(str(f.get('error')))}</td></tr>"
        for f in failures
    ]
    counts = summary.get("counts", {})
    count_line = "".join(f"<span>{html.escape(k.replace('_', ' '))}: <b>{v}</b></span>" for k, v in counts.items())
    per_pair = summary.get("seconds_per_pair") or {}
    timing = f"median {per_pair['median']:.1f} s per pair, " if per_pair else ""
    failures_section = ""
    if failure_rows:
        link = f' (<a href="{_href(failures_link)}">{html.escape(failures_link)}</a>)' if failures_link else ""
        failures_section = (
            f"<h2>Failures{link}</h2><table><tr><th>id</th><th>stage</th><th>source</th><th>reason</th></tr>"
            + "".join(failure_rows) + "</table>"
        )
    configuration = html.escape(json.dumps(summary.get("configuration", {}), indent=2, default=str))
    title = f"Style transfer run {summary.get('run_id', '')}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}{images.css() if rows or failure_rows else ''}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(str(summary.get('started_at', '')))} to {html.escape(str(summary.get('finished_at', '')))}: "
        f"{timing}{summary.get('wall_seconds', 0):.1f} s in all. "
        f'<a href="{CONTACT_SHEET_NAME}">contact sheet</a> · <a href="summary.json">summary.json</a></p>'
        f'<p class="counts">{count_line}</p>'
        f"{failures_section}"
        f"<h2>Pairs</h2><table><tr><th>id</th><th>content</th><th>style</th><th>result</th><th>total loss</th>"
        f"<th>final</th><th>seconds</th><th>status</th></tr>{''.join(rows)}</table>"
        f"<h2>Configuration</h2><pre>{configuration}</pre></body></html>\n"
    )


def sheet_layout(results: int) -> tuple[int, int]:
    """(tile px, columns) of a contact sheet of ``results`` pictures."""
    return next((tile, columns) for most, tile, columns in SHEET_LAYOUTS if most is None or results <= most)


def contact_sheet(entries: Iterable[ReportEntry]) -> bytes | None:
    """Every result of the run on one PNG, in id order, each labelled with its id; None without results."""
    results = [(e.id, e.thumbnails["result"]) for e in sorted(entries, key=lambda e: e.id) if "result" in e.thumbnails]
    if not results:
        return None
    tile, columns = sheet_layout(len(results))
    label = SHEET_LABEL_PX
    columns = min(columns, len(results))
    rows = math.ceil(len(results) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (pair_id, jpeg) in enumerate(results):
        x, y = (index % columns) * tile, (index // columns) * (tile + label)
        with Image.open(io.BytesIO(jpeg)) as image:
            picture = image.convert("RGB")
            picture.thumbnail((tile - 4, tile - 4))
            sheet.paste(picture, (x + (tile - picture.width) // 2, y + (tile - picture.height) // 2))
        text = pair_id if draw.textlength(pair_id) <= tile - 4 else pair_id[: max(1, (tile - 4) // 6 - 3)] + "..."
        draw.text((x + 2, y + tile), text, fill="black")
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()
