"""The report at scale: size and time of report.html and contact_sheet.png for N pairs, and how
long a real headless browser (Debian's chromium) takes to render the page.

    python -m benchmarks.report --pairs 1000

Entries are synthetic (distinct contents and results, a few shared styles, 500-iteration
histories), made the way the pipeline makes them; figures, not assertions.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import synthetic_image
from transforms import report


def _jpeg(seed: int, width: int, height: int) -> bytes:
    out = io.BytesIO()
    synthetic_image(seed, width, height).save(out, "PNG")
    return report.thumbnail(out.getvalue(), max_pixels=10**8)


def entries(pairs: int, styles: int) -> list[report.ReportEntry]:
    # Pictures at about thumbnail size: the report never sees more than a thumbnail of each.
    style_pictures = {f"gs://bucket/styles/{i}.jpg": _jpeg(10_000 + i, 160, 125) for i in range(styles)}
    made = []
    for index in range(pairs):
        style = f"gs://bucket/styles/{index % styles}.jpg"
        content = f"gs://bucket/photos/{index}.jpg"
        log = {
            "inputs": {"content": content, "styles": [style]},
            "history": [{"iteration": i, "total": 1e7 / (1 + i) ** 0.7} for i in range(501)],
            "final": {"total": 1e7 / 501**0.7},
            "seconds": 30.0 + index % 7,
        }
        pictures = {content: _jpeg(index, 160, 120), style: style_pictures[style], "result": _jpeg(index + 1, 160, 120)}
        made.append(
            report.entry_from_log(
                f"pair-{index:05d}", "succeeded", log, "result", lambda loc, pictures=pictures: pictures[loc]
            )
        )
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--styles", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    made = entries(args.pairs, args.styles)
    failures = [
        {"id": f"bad-{i}", "stage": "read", "source": f"m.csv line {i}", "error": "FileNotFoundError: x"}
        for i in range(20)
    ]
    summary = {"run_id": "bench", "counts": {"succeeded": args.pairs}, "wall_seconds": 1.0, "configuration": {}}
    html_times, sheet_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        page = report.render_html(summary, made, failures, "failures/bench.jsonl")
        html_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        sheet = report.contact_sheet(made)
        sheet_times.append(time.perf_counter() - started)
    assert sheet is not None
    print(f"{args.pairs} pairs, {args.styles} styles")
    print(
        f"report.html: {len(page.encode()) / 2**20:.1f} MiB, rendered in {statistics.median(html_times):.2f} s (median of {args.repeats})"
    )
    print(f"contact_sheet.png: {len(sheet) / 2**20:.1f} MiB, drawn in {statistics.median(sheet_times):.2f} s")

    chromium = shutil.which("chromium")
    if chromium is None:
        print("browser: chromium not installed (apt-get install chromium)")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.html"
        path.write_text(page)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={folder}/profile",
            "--window-size=1200,900",
        ]
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run(
                [chromium, *flags, f"--screenshot={folder}/shot.png", path.as_uri()],
                capture_output=True,
                check=True,
                timeout=600,
            )
            times.append(time.perf_counter() - started)
        print(
            f"chromium: opened and drew the first screen in {statistics.median(times):.2f} s (median, process start included)"
        )


if __name__ == "__main__":
    main()
