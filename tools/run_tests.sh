#!/usr/bin/env bash
# Install (tools/install.sh, fast when the mmcv wheel is cached) and run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
exec .venv/bin/python -m pytest tests "$@"
