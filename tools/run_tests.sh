#!/usr/bin/env bash
# Install (tools/install.sh, fast when the mmcv wheel is cached) and run the whole test suite (2 workers).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
# two workers, one test file each at a time (session-scoped fixtures then run once per worker): on the
# 2-core CI machine about 15 % faster than one process, whose torch threads leave a core idle half the time
exec .venv/bin/python -m pytest tests -n 2 --dist loadfile "$@"
