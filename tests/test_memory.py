"""Memory you can predict: the per-pair estimate against a measured CPU run; refusals with numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.main import run
from tests.helpers import job_args, write_images
from transforms.nst import StyleConfig
from transforms.nst.images import fitted_size
from transforms.nst.memory import estimated_pair_bytes, largest_fitting_size

# A fresh process: the resident memory it gains during one pair, sampled every 2 ms, over what
# it held before (after a 2-iteration warm-up at the same size, so that kernels and caches made
# once are not counted, and malloc_trim, so that freed memory is not).
MEASURE = textwrap.dedent("""
    import ctypes, os, sys, threading, time
    import torch
    from PIL import Image
    from transforms.nst import StyleConfig, StyleTransfer
    torch.set_num_threads(2)
    size, iterations = int(sys.argv[1]), int(sys.argv[2])
    config = StyleConfig(image_size=size, iterations=iterations, device="cpu", style_scale=64 / size)
    engine = StyleTransfer(config)
    targets = engine.encode_styles([Image.open("examples/images/starry_night.jpg").convert("RGB")])
    content = Image.open("examples/images/cat.jpg").convert("RGB")
    engine.stylize(content, targets, config.replace(iterations=2))
    def resident():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = peak = resident()
    running = True
    def sample():
        global peak
        while running:
            peak = max(peak, resident())
            time.sleep(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    result = engine.stylize(content, targets)
    running = False
    sampler.join()
    print(peak - before, *result.image.size)
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, calls glibc's malloc_trim")
def test_the_estimate_is_within_20_percent_of_a_measured_cpu_run() -> None:
    # 110 iterations: L-BFGS's history (100 pairs) is full, as the estimate assumes.
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, "192", "110"], capture_output=True, text=True, timeout=300, check=True
    )
    measured, width, height = map(int, result.stdout.split())
    estimate = estimated_pair_bytes(StyleConfig(image_size=192), (width, height))
    assert 0.8 <= measured / estimate <= 1.2, (
        f"measured {measured / 2**20:.1f} MiB, estimated {estimate / 2**20:.1f} MiB"
    )


def test_the_largest_fitting_size_is_the_last_that_fits() -> None:
    config = StyleConfig()
    budget = 24 * 2**30

    def estimate(size: tuple[int, int]) -> int:
        return estimated_pair_bytes(config, size)

    size = largest_fitting_size(estimate, (4000, 3000), budget)
    assert estimate(fitted_size(4000, 3000, size)) <= budget
    assert estimate(fitted_size(4000, 3000, size + 1)) > budget
    assert largest_fitting_size(estimate, (4000, 3000), 1000) == 0


def _run(tmp_path, weights_file, budget: int) -> tuple[dict, dict]:
    write_images(tmp_path / "in", {"cat.png": 1, "waves.png": 3})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("id,content,style,image_size\nsmall,cat.png,waves.png,24\nlarge,cat.png,waves.png,64\n")
    out = tmp_path / "out"
    assert (
        run(job_args(weights_file("vgg19"), out, f"--manifest={manifest}", f"--device_memory_gb={budget / 2**30}")) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    lines = Path(summary["failures_file"]).read_text().splitlines() if summary["failures_file"] else []
    failures = [json.loads(line) for line in lines]
    return summary, {f["id"]: f for f in failures}


def test_a_pair_too_big_even_for_tiles_is_refused_with_the_numbers(tmp_path, weights_file) -> None:
    budget = 5 * 2**20  # a 24x18 pair fits (3 MiB); a 64x48 one (21 MiB) does not, nor a 32 px tile
    summary, failures = _run(tmp_path, weights_file, budget)
    assert summary["counts"]["succeeded"] == 1 and summary["counts"]["failed"] == 1
    config = StyleConfig(weights=weights_file("vgg19"), weights_family="torchvision", image_size=64)
    needed = estimated_pair_bytes(config, (64, 48)) / 2**20
    fits = largest_fitting_size(lambda size: estimated_pair_bytes(config, size), (64, 48), budget)
    assert failures["large"]["stage"] == "stylize"
    assert failures["large"]["error"] == (
        f"PairTooLargeError: {tmp_path}/in/cat.png: a 64x48 result needs about {needed:.1f} MiB on cpu (fp32, estimated), "
        f"more than the 5.0 MiB there; the largest image_size that fits is {fits} px (docs/large-prints.md: memory)"
    )
    assert 24 <= fits < 64 and not (tmp_path / "out" / "images" / "large.png").exists()


def test_a_pair_too_big_at_once_runs_in_tiles(tmp_path, weights_file) -> None:
    budget = 15 * 2**20  # a 64x48 pair (21 MiB) does not fit; 45 px tiles do
    summary, failures = _run(tmp_path, weights_file, budget)
    assert summary["counts"]["succeeded"] == 2 and not failures
    log = json.loads((tmp_path / "out" / "logs" / "large.json").read_text())
    assert log["tiles"] == 4 and log["history"]["total"][-1] == log["final"]["total"]
    assert json.loads((tmp_path / "out" / "logs" / "small.json").read_text())["tiles"] == 1
