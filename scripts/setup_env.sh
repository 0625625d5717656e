#!/usr/bin/env bash
# Create or update the project virtualenv (.venv) with Python 3.11.
# Usage: scripts/setup_env.sh [extra]   (extra: "test" adds the test tools)
# torch is pinned to the 2.13.0 build and installed before anything that depends on it,
# so pip never pulls a different (CUDA) build. TORCH_INDEX_URL may point pip at a CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extra:+-$extra}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
