#!/usr/bin/env bash
# Issue 12's GPU measurements in one call, on a machine with PyTorch, torchvision and a CUDA GPU and
# nothing from OpenMMLab (the `device` tool's machine: no wheels to carry). Writes under $OUT:
#   checks.json         exactness of grow / fast forward / channels_last / cut / deploy in fp32 (TF32 off),
#                       bf16 train steps
#   cost.json           tools/analysis/torchvision_cost.py: origin / RepVGG / DBB / DyRep, fp32 and bf16,
#                       batch 64 and 256, time, x origin, peak memory, aten ops per step
#   kernels.json        tools/analysis/block_kernels.py: CUDA kernels, the longest ones, and time of one train
#                       step of a 3x3 block (C = 64, 64x64x56x56, bf16): conv + BN, dyrep and dbb per branch,
#                       fast, fast compiled (where DBB's per-branch time goes: docs/benchmarks.md), and issue
#                       12's one-conv merge (dyrep+one-conv: does it beat the fast forward on a GPU?)
#   cost_nhwc.json      the same with --channels-last, ResNet-50, bf16, batch 64 and 256, origin and +fast
#   compile_dyrep.json  --compile (inductor), ResNet-18, bf16, batch 64: origin and dyrep+fast, eager and
#   compile_dbb.json    compiled; the same for dbb+fast (its compile is the slowest: last)
# and each stage's log as <name>.txt. Every stage runs under `timeout` within BUDGET seconds for the
# whole script (default 450: the device run allows 8 minutes), at most its own cap; a stage that would
# start with less than 45 s left is skipped. The benchmark rewrites its JSON after every setting, so a
# stage stopped by its limit keeps what it measured; a compile stage stopped while compiling has no
# timing (its log shows how far it got).
# STAGES (default: all, in this order) names the stages to run, e.g. a second call for what a first
# one skipped: STAGES="cost_nhwc compile_dyrep compile_dbb". The stages' caps add up to more than
# BUDGET, so the last ones are skipped when the first ones use their caps.
# Usage (from the repository root):  OUT=/tmp/gpu bash tools/analysis/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-450}
STAGES=${STAGES:-checks cost kernels cost_nhwc compile_dyrep compile_dbb}
W=${WARMUP:-3}
R=${REPEATS:-10}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)

# stage NAME CAP_S ARGS...: run `$PY ARGS...` for at most min(CAP_S, time left), log in $OUT/NAME.txt
stage() {
    local name=$1 cap=$2 left limit rc
    shift 2
    [[ " $STAGES " == *" $name "* ]] || return 0
    left=$(( BUDGET - ($(date +%s) - start) ))
    limit=$(( cap < left ? cap : left ))
    if (( limit < 45 )); then
        echo "$name: skipped, ${left} s left of BUDGET=${BUDGET}" | tee "$OUT/$name.txt"
        return
    fi
    echo "== $name (limit ${limit} s)"
    timeout -k 10 "$limit" $PY "$@" 2>&1 | tee "$OUT/$name.txt"
    rc=${PIPESTATUS[0]}
    (( rc == 124 || rc == 137 )) && echo "$name: stopped at its limit of ${limit} s" | tee -a "$OUT/$name.txt"
    echo "$name: exit $rc at $(( $(date +%s) - start )) s"
}

stage checks 100 tools/analysis/device_checks.py --device cuda --out "$OUT/checks.json"
stage cost 230 tools/analysis/torchvision_cost.py --device cuda --warmup "$W" --repeats "$R" --out "$OUT/cost.json"
stage kernels 120 tools/analysis/block_kernels.py --device cuda --out "$OUT/kernels.json"
stage cost_nhwc 60 tools/analysis/torchvision_cost.py --device cuda --warmup "$W" --repeats "$R" --channels-last \
    --archs resnet50 --precisions bf16 --batches 64 256 --modes dyrep dbb --no-per-branch --out "$OUT/cost_nhwc.json"
for mode in dyrep dbb; do
    stage "compile_$mode" 150 tools/analysis/torchvision_cost.py --device cuda --warmup "$W" --repeats "$R" --compile \
        --archs resnet18 --precisions bf16 --batches 64 --modes "$mode" --no-per-branch --out "$OUT/compile_$mode.json"
done
echo "total: $(( $(date +%s) - start )) s"
