#!/usr/bin/env bash
# The GPU campaign (docs/gpu-campaign.md): `check` verifies the CUDA paths and measures the GPU, `train`
# trains the built-in weights at GPU scale; both write into $OUT (or --out DIR) as they go.
# Usage: scripts/gpu-campaign.sh [check|train|all] [--smoke] [--out DIR] [options: --help]
# Runs from the source tree (PYTHONPATH), so it needs no install: the device machine has torch but no network.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" scripts/gpu-campaign.py "$@"
