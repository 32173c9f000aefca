#!/usr/bin/env bash
# Install mmdyrep and the OpenMMLab stack into .venv/ at the repo root.
#
# Works on a fresh machine (Python 3.11 + gcc). Versions: tools/constraints.txt, the stack the
# tests and the README's figures ran on (setup.py itself declares version ranges). mmcv 2.1.0 exists on PyPI only as an sdist; it is built
# here *with* compiled ops (C++20 patch for torch 2.14 headers) and the wheel is
# cached in $MMDYREP_WHEEL_CACHE (default ~/.cache/mmdyrep/wheels), so a second
# install (e.g. a fresh clone on the same machine) takes seconds.
# Fails loudly if mmcv ends up without ops.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
CACHE="${MMDYREP_WHEEL_CACHE:-$HOME/.cache/mmdyrep/wheels}"
CONSTRAINTS="$ROOT/tools/constraints.txt"   # the tested stack; setup.py declares ranges
pinned() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }
TORCH_VERSION="$(pinned torch)"
TORCHVISION_VERSION="$(pinned torchvision)"
MMCV_VERSION="$(pinned mmcv)"
EXTRAS="${MMDYREP_EXTRAS:-tests}"   # tests = all three toolboxes + pytest

log() { printf '\033[1;34m[install]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[install] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
VPY="$VENV/bin/python"

log "build tools (setuptools<81: mmcv's setup.py and mmengine import pkg_resources)"
"${PIP[@]}" install -q -U pip 'setuptools>=77,<81' wheel ninja

if ! "$VPY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
    log "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# The cached wheel is specific to the torch build it was compiled against.
TORCH_TAG="$("$VPY" -c "import torch; print(torch.__version__.replace('+', '_'))")"
CUDA_TAG=cpu
if [ "${FORCE_CUDA:-0}" = 1 ]; then CUDA_TAG=cuda; fi
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_TAG-$CUDA_TAG"
mkdir -p "$WHEEL_DIR"
WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$WHEEL" ]; then
    JOBS="${MAX_JOBS:-$(nproc)}"
    log "building mmcv $MMCV_VERSION with ops ($CUDA_TAG) on $JOBS cores, once per machine (the wheel is cached):"
    log "  14 minutes measured on a 2-core machine; progress every 30 s; output: $CACHE/mmcv-build.log"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    grep -q 'c++20' "$SRC/setup.py" || die "could not patch mmcv setup.py for C++20"
    # No debug info (the compiler's -g is most of the time and size); ccache when installed.
    export CFLAGS="${CFLAGS:--g0}" CXXFLAGS="${CXXFLAGS:--g0}"
    if command -v ccache >/dev/null 2>&1; then
        export CC="ccache ${CC:-gcc}" CXX="ccache ${CXX:-g++}"
        log "  using ccache"
    fi
    BUILD_LOG="$CACHE/mmcv-build.log"
    start=$(date +%s)
    # --no-build-isolation is required: with isolation mmcv silently builds without ops.
    MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" \
        "${PIP[@]}" wheel -v --no-deps --no-build-isolation "$SRC" -w "$WHEEL_DIR" >"$BUILD_LOG" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 30
        step="$(grep -o '\[[0-9]*/[0-9]*\]' "$BUILD_LOG" | tail -n 1 | tr -d '[]' || true)"
        log "  mmcv: ${step:-preparing} sources compiled, $(( ($(date +%s) - start) / 60 )) min"
    done
    wait "$pid" || { tail -n 30 "$BUILD_LOG" >&2; die "the mmcv build failed; its output: $BUILD_LOG"; }
    log "  mmcv built in $(( ($(date +%s) - start) / 60 )) min"
    WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)"
fi
log "mmcv wheel: $WHEEL"
"${PIP[@]}" install -q "$WHEEL"

log "mmengine, mmdet, mmsegmentation, mmpretrain and mmdyrep (editable), pinned by tools/constraints.txt"
# PYTHONWARNINGS: setuptools' 10-line "Editable installation" notice (a BuildBackendWarning) is not for users
PYTHONWARNINGS=ignore "${PIP[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]"

"$VPY" - <<'PY' || die "mmcv was installed WITHOUT compiled ops (mmcv._ext missing); delete the cached wheel and rerun"
import mmcv, mmcv._ext  # noqa: F401
from mmcv.ops import nms, RoIAlign  # noqa: F401
import mmengine, mmdet, mmseg, mmpretrain, torch
import mmdyrep
print(f"[install] ok: torch {torch.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"mmpretrain {mmpretrain.__version__}, mmdyrep {mmdyrep.__version__}")
PY
