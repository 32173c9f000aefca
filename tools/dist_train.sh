#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU (or per CPU process without CUDA:
# tools/train.py then uses gloo and a CPU-capable DDP wrapper).
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
#
# PYTHON picks the interpreter (default: the repository's .venv, else python).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG GPUS [train.py options]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/launch_env.sh"
torchrun_exec train.py "$2" "$1" --launcher pytorch "${@:3}"
