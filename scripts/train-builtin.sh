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
# Phase 2 (only where configs/builtin/TASK-phase2.toml exists): more steps from phase 1's best weights.
phase2=()
for task in "${tasks[@]}"; do [ -f "configs/builtin/$task-phase2.toml" ] && phase2+=("$task"); done
train_phase2() {
  local task=$1 first
  first=$(ls -d runs/builtin/"$task"/*/* | sort | tail -n 1)
  "$py" -m pyramidal train --config "configs/builtin/$task-phase2.toml" --init-weights "$first/best.safetensors" \
    --no-progress >"runs/builtin/logs/$task-phase2.log" 2>&1
}
for ((i = 0; i < ${#phase2[@]}; i += 2)); do
  train_phase2 "${phase2[i]}" &
  if ((i + 1 < ${#phase2[@]})); then train_phase2 "${phase2[i + 1]}" & fi
  wait
done
for task in "${tasks[@]}"; do
  if [ -f "configs/builtin/$task-phase2.toml" ]; then
    run=$(ls -d runs/builtin-phase2/"$task"/*/* | sort | tail -n 1)
  else
    run=$(ls -d runs/builtin/"$task"/*/* | sort | tail -n 1)
  fi
  "$py" scripts/package-builtin-weights.py "$task" "$run"
done
