#!/usr/bin/env bash
# The GPU figures README's "Large prints" still lacks, in one run (issue #11), most wanted first:
#   1. coarse to fine against one scale at 1024 px (time, final loss, GPU peak beside the estimate);
#   2. a 4096 px print tiled within 21 GiB, what a 24 GB L4 leaves a pair (peak, time, plan);
#   3. the same comparison at 2048 px, and at 512 px for the memory table's GPU column;
#   4. the 256 and 512 px rows of "Quality on real weights".
# Each step prints its own lines as it goes (PYTHONUNBUFFERED), so a run cut short keeps what it
# finished. Run from the repository root on a GPU machine, about 5-10 minutes on an H100.
#
# With the project installed (pip install -e .) it runs as it is; on a bare machine, see gpu_env.sh.
set -euo pipefail
source benchmarks/gpu_env.sh
out=${OUT:-out/large}
mkdir -p "$out"

pair=(--content examples/images/tubingen.jpg --style examples/images/starry_night.jpg)
"$python" -m benchmarks.scales --size 1024 --iterations 500 --coarse 512:300 --fine 200 "${pair[@]}" --save "$out/s1024"
"$python" -m benchmarks.tiles --size 4096 --memory_gb 21 --iterations 100 --coarse 1024:300 --save "$out/tubingen-4096.jpg"
"$python" -m benchmarks.scales --size 2048 --iterations 500 --coarse 512:300,1024:100 --fine 100 "${pair[@]}" --save "$out/s2048"
"$python" -m benchmarks.scales --size 512 --iterations 500 --coarse 256:300 --fine 200 "${pair[@]}"
"$python" -m benchmarks.quality --sizes 256 512 --iterations 500 --sheet "$out/quality.jpg"
