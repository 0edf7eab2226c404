#!/usr/bin/env bash
# Runs the test suite against the real models and media in ../shared (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export EDGEDETECT_MODELS_DIR="${EDGEDETECT_MODELS_DIR:-$PWD/../shared/models:$PWD/../shared/media}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
