#!/usr/bin/env bash
# Distributed testing with torchrun, one process per GPU (or per CPU process without CUDA).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
#
# NNODES, NODE_RANK, MASTER_ADDR and PORT as for tools/dist_train.sh; PYTHON picks the interpreter.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: bash $0 CONFIG CHECKPOINT GPUS [test.py options]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/launch_env.sh"
torchrun_exec test.py "$3" "$1" "$2" --launcher pytorch "${@:4}"
