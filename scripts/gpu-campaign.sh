#!/usr/bin/env bash
# The GPU campaign in one call (docs/gpu-campaign.md): CUDA checks, training at GPU scale and the scores
# against the shipped weights, written into $OUT (or --out DIR) within --seconds of wall time.
# Usage: scripts/gpu-campaign.sh all [--smoke] [--out DIR] [--seconds S] [options: --help]
# Runs from the source tree (PYTHONPATH), so it needs no install: the device machine has torch but no network.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" scripts/gpu-campaign.py "$@"
