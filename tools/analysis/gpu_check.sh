#!/usr/bin/env bash
# Issue 12's GPU measurements in one call, on a machine with PyTorch, torchvision and a CUDA GPU and
# nothing from OpenMMLab (the `device` tool's machine: no wheels to carry). Writes under $OUT:
#   checks.json  exactness of grow / fast forward / cut / deploy in fp32 (TF32 off), bf16 train steps
#   cost.json    tools/analysis/torchvision_cost.py: origin / RepVGG / DBB / DyRep, fp32 and bf16,
#                batch 64 and 256, time, x origin, peak memory, aten ops per step
# Usage (from the repository root):  OUT=/tmp/gpu bash tools/analysis/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
$PY tools/analysis/device_checks.py --device cuda --out "$OUT/checks.json" 2>&1 | tee "$OUT/checks.txt"
echo "checks: $(( $(date +%s) - start )) s"
$PY tools/analysis/torchvision_cost.py --device cuda --warmup ${WARMUP:-3} --repeats ${REPEATS:-10} \
    --out "$OUT/cost.json" 2>&1 | tee "$OUT/cost.txt"
echo "total: $(( $(date +%s) - start )) s"
