"""The dataset job at scale, plumbing only: a synthetic tree of tiny images, seeded random
weights, 32 px and 1 iteration, so that what is measured is the pipeline, not the network.

    python -m benchmarks.scale --pairs 1000 10000 30000
    python -m benchmarks.scale --pairs 1000 --runner portable
    python -m benchmarks.scale --pairs 1000 10000 --kills 2

For each size, a dataset is made at run time (class folders holding the same file names, one
nested level, 32x24 and 24x32 PNGs) and the job runs as a user runs it (``python -m pipeline``
with ``--output_layout tree --styles_per_content 1``), then again with every pair done. Printed
per size: wall seconds per pair, the job's peak resident memory (the process and its children),
bytes written per pair (image, log, index line), the report's size, and the all-done rerun time.

With ``--kills K``, the first run is killed (SIGKILL) K times at seeded random points (once a
seeded fraction of the pairs is on disk) and resumed by the same command; then the index read
through its pointer is compared with ``images/``: every image exactly once, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import models

CLASSES = 100
RUNNERS = {
    "direct": ["--runner=FnApiRunner"],
    "portable": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
}


def make_dataset(root: Path, contents: int) -> None:
    """``contents`` tiny images in CLASSES class folders (file names repeat across classes), a
    nested folder in every tenth class, and 16 styles; seeded random VGG19 weights."""
    generator = torch.Generator().manual_seed(0)
    for index in range(contents):
        klass = index % CLASSES
        folder = root / "train" / f"n{klass:03d}" / ("nested" if klass % 10 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = (32, 24) if index % 2 else (24, 32)
        pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"x_{index // CLASSES}.png")
    (root / "styles").mkdir()
    for index in range(16):
        pixels = (torch.rand(32, 32, 3, generator=generator) * 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(root / "styles" / f"s{index}.png")
    torch.manual_seed(1234)
    state = {k: v for k, v in models.vgg19(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(state, root / "vgg19.pth")


def run_job(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB of the job's process tree)."""
    with tempfile.TemporaryFile() as console:  # a pipe would fill up and stall the job
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.DEVNULL, stderr=console)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            console.seek(0)
            raise SystemExit(f"the job failed ({status}): {console.read().decode()[-2000:]}")
    # ru_maxrss of the waited child: its own peak (Beam's FnApiRunner runs workers in-process here).
    return seconds, usage.ru_maxrss / 1024


def run_job_killed_at(args: list[str], images: Path, at_least: int) -> float:
    """Run the job and SIGKILL it, whole, once ``at_least`` images are on disk (or let it end,
    if it ends first); the seconds it ran."""
    with tempfile.TemporaryFile() as console:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args], stdout=subprocess.DEVNULL, stderr=console, start_new_session=True
        )
        while process.poll() is None:
            if images.is_dir() and sum(1 for p in images.rglob("*.png") if not p.name.startswith(".tmp-")) >= at_least:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.5)
        return time.perf_counter() - started


def index_matches_images(out: Path) -> tuple[int, int, bool]:
    """(images on disk, lines of the index, whether the index lists each image exactly once)."""
    from transforms.index import read_index

    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())
    listed = sorted(line["image"] for line in read_index(str(out)))
    return len(on_disk), len(listed), listed == on_disk


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(pairs: int, runner: str, kills: int = 0, seed: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="scale-") as folder:
        root = Path(folder)
        make_dataset(root, pairs)
        out = root / "out"
        args = [
            *RUNNERS[runner],
            f"--contents={root}/train/**/*.png",
            f"--styles={root}/styles/*.png",
            "--styles_per_content=1",
            "--output_layout=tree",
            f"--output={out}",
            f"--weights={root}/vgg19.pth",
            "--weights_family=torchvision",
            "--image_size=32",
            "--iterations=1",
            "--log_every=50",
        ]
        choice = random.Random(seed)
        killed_seconds = 0.0
        for _ in range(kills):
            on_disk = sum(1 for p in (out / "images").rglob("*.png")) if (out / "images").is_dir() else 0
            killed_seconds += run_job_killed_at(args, out / "images", on_disk + int(choice.uniform(0.1, 0.4) * pairs))
        seconds, peak = run_job(args)
        seconds += killed_seconds
        summary = json.loads((out / "summary.json").read_text())
        counts = summary["counts"]
        assert counts["succeeded"] + counts["skipped"] == pairs and not counts["failed"], counts
        images, lines, exact = index_matches_images(out)
        rerun_seconds, rerun_peak = run_job(args)
        assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == pairs
        return {
            "images": images,
            "index_lines": lines,
            "index_exact": exact,
            "resumed_skipped": counts["skipped"],
            "pairs": pairs,
            "seconds_per_pair": seconds / pairs,
            "peak_mib": max(peak, rerun_peak),
            "image_bytes": bytes_under(out / "images") / pairs,
            "log_bytes": bytes_under(out / "logs") / pairs,
            "index_bytes": bytes_under(out / "index") / pairs,
            "report_mib": (out / "report.html").stat().st_size / 2**20,
            "rerun_seconds": rerun_seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 10_000, 30_000])
    parser.add_argument("--runner", choices=tuple(RUNNERS), default="direct")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL the first run this many times, then resume")
    parser.add_argument("--seed", type=int, default=0, help="where the kills fall")
    args = parser.parse_args()
    print(
        "| runner | pairs | kills | s per pair | peak MiB | image B/pair | log B/pair | index B/pair | report MiB | "
        "all-done rerun s | images | index lines | index == images |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pairs in args.pairs:
        row = measure(pairs, args.runner, args.kills, args.seed)
        print(
            f"| {args.runner} | {pairs} | {args.kills} | {row['seconds_per_pair']:.3f} | {row['peak_mib']:.0f} | "
            f"{row['image_bytes']:.0f} | {row['log_bytes']:.0f} | {row['index_bytes']:.0f} | {row['report_mib']:.2f} | "
            f"{row['rerun_seconds']:.0f} | {row['images']} | {row['index_lines']} | {'yes' if row['index_exact'] else 'NO'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
