#!/usr/bin/env bash
# README command 1: install, then run the main job on its small embedded default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
exec .venv/bin/python tools/quickstart.py "$@"
