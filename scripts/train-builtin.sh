#!/usr/bin/env bash
# Retrain the built-in weights: two tasks at a time (one CPU thread each), then package each run
# (fp16 safetensors + sidecar with its config, command, steps and evaluated scores) into pyramidal/weights/.
# Usage: scripts/train-builtin.sh [TASK ...]   (default: all eight)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(noise pixelate blur jpeg squares block grid mixed)
[ -d .data/photos ] || scripts/get-training-photos.sh
py=${PYTHON:-.venv/bin/python}
mkdir -p runs/builtin/logs
train_one() {
  local task=$1
  "$py" -m pyramidal train --config "configs/builtin/$task.toml" --no-progress \
    >"runs/builtin/logs/$task.log" 2>&1
  local run
  run=$(ls -d runs/builtin/"$task"/*/* | sort | tail -n 1)
  echo "$task: trained in $run"
}
for ((i = 0; i < ${#tasks[@]}; i += 2)); do
  train_one "${tasks[i]}" &
  if ((i + 1 < ${#tasks[@]})); then train_one "${tasks[i + 1]}" & fi
  wait
done
for task in "${tasks[@]}"; do
  run=$(ls -d runs/builtin/"$task"/*/* | sort | tail -n 1)
  "$py" scripts/package-builtin-weights.py "$task" "$run"
done
