"""OUTPUT/report.html and contact_sheet.png: every pair and failure shown, self-contained, escaped."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from pipeline.main import run
from tests.helpers import job_args, synthetic_image, write_images
from transforms import report

CHROMIUM = shutil.which("chromium")
HOSTILE = "<img src=x onerror=alert(1)>&amp;"


class Page(html.parser.HTMLParser):
    """What a reader of the report sees: rows by id, links, embedded images, tags used."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}  # row id -> classes and hrefs inside it
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []
        self._row: str | None = None
        self.feed(text)
        self.css = text[text.index("<style>") + 7 : text.index("</style>")]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "tr" and values.get("id"):
            self._row = values["id"]
            self.rows[self._row] = []
        if tag == "a":
            self.links.append(values["href"] or "")
        if self._row is not None:
            self.rows[self._row] += [f"{tag}.{values.get('class', '')}", values.get("href") or ""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def run_with_a_failure(tmp_path_factory: pytest.TempPathFactory, weights_file) -> Path:
    """OUTPUT of a run of two pairs and two failures (a missing image, a hostile id); inputs beside it."""
    tmp_path = tmp_path_factory.mktemp("report")
    write_images(tmp_path / "in", {"cat.png": 1, "dog.png": 2, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text(
        "id,content,style\n"
        "cat-waves,cat.png,waves.png\n"
        "dog-waves,dog.png,waves.png\n"
        "lost,missing.png,waves.png\n"
        f"hostile,{HOSTILE}.png,waves.png\n"
    )
    out = tmp_path / "out"
    assert run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}")) == 0
    return out


def test_the_report_shows_every_pair_and_failure(run_with_a_failure: Path) -> None:
    out = run_with_a_failure
    page = Page((out / "report.html").read_text())
    assert set(page.rows) == {"cat-waves", "dog-waves"}
    for pair_id, inside in page.rows.items():
        # content, style and result thumbnails; the result links to the full image, the log to the log
        assert sum(item.startswith("span.thumb") for item in inside) == 3, inside
        assert f"images/{pair_id}.png" in inside and f"logs/{pair_id}.json" in inside
        assert "polyline." in inside  # the loss curve
    text = " ".join(page.text)
    assert "missing.png: no such file" in text and HOSTILE in text  # both failures, with their reasons
    failures = [json.loads(line) for line in next((out / "failures").iterdir()).read_text().splitlines()]
    assert {f["id"] for f in failures} == {"lost", "hostile"}
    assert re.search(r"failed:\s+2\b", text) and re.search(r"succeeded:\s+2\b", text)


def test_the_report_is_self_contained_with_relative_links(run_with_a_failure: Path) -> None:
    out = run_with_a_failure
    text = (out / "report.html").read_text()
    page = Page(text)
    assert not page.tags & {"script", "img", "iframe", "link", "object"}  # nothing runs, nothing is fetched
    assert "http://" not in text and "https://" not in text
    for link in page.links:
        assert not link.startswith("/") and "://" not in link, link
        assert (out / link).is_file(), f"{link} does not lead to a file beside the report"
    # the style both pairs share is embedded once
    data = [part.split(")", 1)[0] for part in page.css.split("url(data:image/jpeg;base64,")[1:]]
    pictures = [Image.open(io.BytesIO(base64.b64decode(item))) for item in data]
    assert len(pictures) == 5  # 2 contents + 1 style + 2 results
    assert all(max(p.size) <= report.THUMBNAIL_PX for p in pictures)


def test_the_contact_sheet_shows_content_style_and_result_of_every_pair(run_with_a_failure: Path) -> None:
    sheet = Image.open(run_with_a_failure / "contact_sheet.png").convert("RGB")
    px, _ = report.sheet_layout(2)
    width, height = report.sheet_cell_size(px)
    assert sheet.size == (2 * width, height)  # the two pairs with a result, side by side (a row of ceil(sqrt(2)))
    slot, gap = px * 4 // 3, report.SHEET_GAP_PX
    for cell in range(2):
        for column in range(3):  # content, style, result: each a picture, not the dark ground
            x = cell * width + gap + column * (slot + gap)
            colours = sheet.crop((x, gap, x + slot, gap + px)).getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 10, (cell, column)


def test_a_picture_that_cannot_be_had_leaves_a_note_not_a_missing_report(run_with_a_failure: Path) -> None:
    log = json.loads((run_with_a_failure / "logs" / "dog-waves.json").read_text())
    gone = log["inputs"]["content"]

    def picture(location: str) -> bytes:
        if location == gone:  # say, the photo was moved after the run
            raise FileNotFoundError(f"{location}: no such file")
        return report.thumbnail(Path(location).read_bytes(), max_pixels=10**6)

    result = str(run_with_a_failure / "images" / "dog-waves.png")
    entry = report.entry_from_log("dog-waves", "skipped", log, result, picture)
    assert set(entry.thumbnails) == {log["inputs"]["styles"][0], "result"}
    page = Page(report.render_html({}, [entry], [], None))
    assert "span.missing" in page.rows["dog-waves"]
    assert f"{gone}: FileNotFoundError: {gone}: no such file" in " ".join(page.text)


def test_render_escapes_everything_from_a_manifest() -> None:
    jpeg = report.thumbnail(_png(synthetic_image(1)), max_pixels=10**6)
    entry = report.ReportEntry(
        id=HOSTILE,
        status="succeeded",
        content=HOSTILE,
        styles=(HOSTILE,),
        seconds=1.0,
        losses=((0, 10.0), (5, 1.0)),
        final_loss=1.0,
        thumbnails={HOSTILE: jpeg, "result": jpeg},
        note=HOSTILE,
    )
    failure = {"id": HOSTILE, "stage": "read", "source": HOSTILE, "error": HOSTILE}
    text = report.render_html({"run_id": HOSTILE, "configuration": {"x": HOSTILE}}, [entry], [failure], None)
    assert "<img" not in text
    page = Page(text)
    assert page.rows and list(page.rows) == [HOSTILE] and " ".join(page.text).count(HOSTILE) >= 4


def test_loss_curve_leaves_out_rejected_trials_and_thins_long_histories() -> None:
    history = [{"iteration": i, "total": 1000.0 / (i + 1), "rejected": i == 3} for i in range(1001)]
    history[3]["total"] = 1e12
    losses = report.losses_from_log({"history": history})
    assert all(value < 1e12 for _, value in losses)
    assert losses[0] == (0, 1000.0) and losses[-1] == (1000, 1000.0 / 1001)
    assert len(losses) <= report.CURVE_POINTS + 1
    curve = report.loss_curve_svg(losses)
    assert curve.split('points="')[1].count(",") == len(losses)
    # The axes' values: highest and lowest loss, first and last iteration.
    assert re.findall(r'<text class="axis"[^>]*>([^<]*)</text>', curve) == ["1e+03", "0.999", "0", "1000 it"]


def test_a_thumbnail_refuses_an_image_over_the_pixel_limit() -> None:
    with pytest.raises(ValueError, match="64x48 pixels is over the limit of 1000"):
        report.thumbnail(_png(synthetic_image(1)), max_pixels=1000)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (.ci/run installs it)")
def test_a_real_browser_renders_the_report(run_with_a_failure: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,700",
    ]
    dom = subprocess.run(
        [*command, "--dump-dom", (run_with_a_failure / "report.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr
    assert set(Page(dom.stdout).rows) == {"cat-waves", "dog-waves"}
    # Each loss curve carries its axes' values as the browser laid it out: 4 per curve, the last
    # the iterations run (6, job_args).
    values = re.findall(r'<text class="axis"[^>]*>([^<]*)</text>', dom.stdout)
    assert len(values) == 8 and values[3] == values[7] == "6 it"
    subprocess.run(
        [*command, f"--screenshot={shot}", (run_with_a_failure / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    picture = Image.open(shot).convert("RGB")
    # The thumbnails were drawn: the synthetic pictures bring many colours to a white page.
    assert len(picture.getcolors(maxcolors=1 << 20) or []) > 1000


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_the_configuration_is_a_table_of_settings() -> None:
    page = report.render_html(
        {
            "run_id": "r",
            "configuration": {"output": "out/", "style": {"image_size": 512, "style_layers": ["relu1_1", "relu2_1"]}},
        },
        [],
        [],
        None,
    )
    table = page.split("<h2>Configuration</h2>", 1)[1]
    assert "<tr><th>output</th><td>out/</td></tr>" in table
    assert "<tr><th>style.image_size</th><td>512</td></tr>" in table
    assert "<tr><th>style.style_layers</th><td>[&quot;relu1_1&quot;, &quot;relu2_1&quot;]</td></tr>" in table
    assert "<pre>" not in table
