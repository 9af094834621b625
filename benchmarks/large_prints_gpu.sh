#!/usr/bin/env bash
# The GPU figures README's "Large prints" still lacks, in one run (issue #11): coarse to fine
# against one scale at 1024 and 2048 px (time, final loss, GPU peak beside the estimate), and a
# 4096 px print tiled within 21 GiB (what a 24 GB L4 leaves a pair). Run from the repository root
# on a machine with a GPU and the project installed; each step prints its own lines.
set -euo pipefail
pair=(--content examples/images/tubingen.jpg --style examples/images/starry_night.jpg)
python -m benchmarks.scales --size 1024 --iterations 500 --coarse 512:300 --fine 200 "${pair[@]}" --save out/large
python -m benchmarks.scales --size 2048 --iterations 500 --coarse 512:300,1024:100 --fine 100 "${pair[@]}" --save out/large
python -m benchmarks.tiles --size 4096 --memory_gb 21 --iterations 100 --coarse 1024:300 --save out/large/tubingen-4096.png
