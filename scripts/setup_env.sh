#!/usr/bin/env bash
# Create or update the project virtualenv (.venv) with Python 3.11.
# Usage: scripts/setup_env.sh [extra]   (extra: "media" adds images/video/audio, "test" = media + test tools)
# torch is pinned and installed before anything that depends on it, so pip never picks another build:
# text-only installs get torch 2.13.0; media installs get the torch/torchvision pair whose ops load
# together (2.14.1/0.29.1 on x86_64, 2.9.1/0.24.1 on aarch64). TORCH_INDEX_URL may point pip at a
# CPU wheel index (e.g. PyTorch's own) to get the small CPU builds of the same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
case "$extra" in
  media|test)
    if [ "$(uname -m)" = aarch64 ]; then torch_spec=("torch==2.9.1" "torchvision==0.24.1")
    else torch_spec=("torch==2.14.1" "torchvision==0.29.1"); fi
    torch_check="import torchvision.ops, torch; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)" ;;
  *)
    torch_spec=("torch==2.13.0")
    torch_check="import torch" ;;
esac
if ! .venv/bin/python -c "$torch_check" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "${torch_spec[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extra:+-$extra}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
