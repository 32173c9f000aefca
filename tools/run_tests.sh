#!/usr/bin/env bash
# Install (tools/install.sh, fast when the mmcv wheel is cached) and run the whole test suite (2 workers).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
# two workers, one test file each at a time (session-scoped fixtures then run once per worker; the e2e data and
# the classifier run several files read are made once per run: tests/e2e/conftest.py): on the 2-core CI
# machine about 15 % faster than one process, whose torch threads leave a core idle half the time.
# OpenMP threads wait passively: two workers (and the tools they start) each run a thread per core, and
# threads that spin while they wait take the cores from those that work (the whole suite 22.0 -> 15.0 min
# on the 2-core development machine; README, "Install and the two commands")
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest tests -n 2 --dist loadfile "$@"
