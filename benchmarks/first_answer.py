"""Seconds until a newcomer's mistake is answered: the usual command-line mistakes (refused before
Beam and torch are imported) against ``--help`` and against a mistake only Beam's own parser can
find (what every refusal cost before).

    python -m benchmarks.first_answer --repeats 5

Each command runs as a fresh process, as typed at a shell; printed: the median wall time of each
and its ratio to ``--help``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "--help": ["--help"],
    "--iteration 5 (a typo)": ["--manifest", "examples/manifest.csv", "--output", "out/x", "--iteration", "5"],
    "--image_size abc": ["--manifest", "examples/manifest.csv", "--output", "out/x", "--image_size", "abc"],
    "a missing manifest": ["--manifest", "nowhere.csv", "--output", "out/x"],
    "no --output": ["--manifest", "examples/manifest.csv"],
    "a bad Beam flag value (Beam's parser)": [
        "--manifest",
        "examples/manifest.csv",
        "--output",
        "out/x",
        "--direct_running_mode",
        "bogus",
    ],
}


def seconds(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    medians = {name: statistics.median(seconds(args) for _ in range(repeats)) for name, args in CASES.items()}
    print(f"| mistake (median of {repeats}) | seconds | x --help |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} | {value / medians['--help']:.1f} |")


if __name__ == "__main__":
    main()
