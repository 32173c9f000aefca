# Sourced by tools/dist_train.sh, tools/dist_test.sh and tools/slurm_train.sh (not run on its own).
# Sets ROOT (the repository), PYTHON (if unset: the repository's .venv, else python) and PYTHONPATH,
# and defines `torchrun_exec SCRIPT NPROC ARGS...`: replace the shell with torchrun running
# tools/SCRIPT on NPROC processes per node (NNODES, NODE_RANK, MASTER_ADDR, PORT from the environment).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$ROOT:${PYTHONPATH:-}"

torchrun_exec() {
    local script=$1 nproc=$2
    shift 2
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$nproc" \
        --master_port="${PORT:-29500}" \
        "$ROOT/tools/$script" "$@"
}
