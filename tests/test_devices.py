"""Several worker processes on one machine: one GPU each, and no pair done twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import job_args, write_images
from transforms.devices import take_device


def test_each_process_takes_its_own_device_then_they_share(tmp_path) -> None:
    assert take_device(2, str(tmp_path)) == 0
    # Another process finds 0 taken and gets 1; asking again, with both taken, it shares by pid.
    code = (
        "import os, sys; from transforms.devices import take_device; "
        "print(take_device(2, sys.argv[1]), take_device(2, sys.argv[1]), os.getpid())"
    )
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    first, second, pid = (int(v) for v in other.stdout.split())
    assert first == 1 and second == pid % 2


@pytest.mark.slow  # two DirectRunner worker processes, each loading torch: about 40 s
def test_two_worker_processes_do_each_pair_once_and_as_one_worker_does(weights_file, tmp_path) -> None:
    names = {f"c{i}.png": i for i in range(4)}
    write_images(tmp_path / "in", {**names, "waves.png": 9})
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.write_text("content,style\n" + "".join(f"{n},waves.png\n" for n in names))
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out-{workers}"
        args = [
            a
            for a in job_args(weights_file("vgg19"), out, f"--manifest={manifest}", "--batch_size=1")
            if not a.startswith("--runner")
        ]
        args += ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
        command = [sys.executable, "-c", "from pipeline.main import main; main()", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["counts"]["succeeded"] == 4 and summary["counts"]["claimed_elsewhere"] == 0
        outputs[workers] = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert len(outputs[2]) == 4
    assert outputs[2] == outputs[1], "two workers make exactly the pictures one worker makes"
