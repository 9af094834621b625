#!/usr/bin/env bash
# Every GPU figure the docs still lack, in one run, most wanted first; Markdown tables on stdout.
#   1. pairs per GPU-hour at 512 px, batches of 1 to 32, fp32 and bf16, 500 iterations each (the
#      goal: >= 6,000, from 911 one pair at a time), peak memory beside the planner's estimate,
#      and every result against its single-pair fp32 run (the 1% rule);
#      (one scale: the fixed work other tools count);
#   2. the defaults (coarse to fine, the convergence stop, 3 pairs per slot) through the run loop,
#      each freed slot refilled at once, against the same pairs fed a batch at a time: pairs per
#      GPU-hour and how busy the slots were (issue #41);
#   3. time to quality at 512 px: before (fp32, 500 iterations, one scale), today's defaults at
#      one scale and as they ship (coarse to fine), torch LBFGS, with the judge's figures;
#   4. the look grid at 512 px (benchmarks/grid.py): one scale and the defaults, 24 pairs each,
#      seconds per pair and the judge's figures, contact sheets under $OUT/grid/512;
#   5. the large-print rows (benchmarks/large_prints_gpu.sh), in what time is left.
# Run from the repository root on a GPU machine: within 8 minutes on one H100/H200. Each step
# prints as it goes (PYTHONUNBUFFERED) and stops at the deadline, so a run cut short keeps what
# it finished. GPU_SECONDS sets the deadline (default 470 s).
#
# With the project installed (pip install -e .) it runs as it is; on a bare machine, see gpu_env.sh.
set -uo pipefail
deadline=$((SECONDS + ${GPU_SECONDS:-470}))
source benchmarks/gpu_env.sh
out=${OUT:-out/gpu}
mkdir -p "$out"

step() {  # step TITLE COMMAND...: runs COMMAND until the deadline
    local left=$((deadline - SECONDS))
    echo
    echo "## $1"
    if ((left < 10)); then
        echo "(not run: the time is up)"
        return
    fi
    shift
    timeout "$left" "$@" || echo "(stopped: exit $?, ${left} s were left)"
}

step "Pairs per GPU-hour, 512 px, 500 iterations each" \
    "$python" -m benchmarks.pairs --sizes 512 --batch_sizes 1,2,4,8,16,32 --precisions fp32,bf16 --iterations 500
tolerance=$("$python" -c "from transforms.nst.config import STOP_TOLERANCE; print(STOP_TOLERANCE)")
for feed in refill batches; do
    step "Pairs per GPU-hour with the defaults (coarse to fine, convergence stop, 3 pairs per slot), fed: $feed" \
        "$python" -m benchmarks.pairs --sizes 512 --scales auto --batch_sizes 8,32 --precisions bf16 \
        --stop_tolerance "$tolerance" --iterations 200 --rounds 3 --no_reference --feed "$feed"
done
step "Time to quality, 512 px" \
    "$python" -m benchmarks.time_to_quality --size 512 --methods before one default torch --every 2 --cache "$out/time_to_quality.json"
step "The look grid at 512 px: one scale and the defaults (coarse to fine), 4 photos x 6 paintings" \
    "$python" -m benchmarks.grid --size 512 --settings one default --out "$out/grid"
step "Large prints" env OUT="$out/large" bash benchmarks/large_prints_gpu.sh
