#!/usr/bin/env bash
# Retrain the built-in weights: two tasks at a time (one CPU thread each), then package each run
# (fp16 safetensors + sidecar with its config, command, steps and evaluated scores) into pyramidal/weights/.
# Usage: scripts/train-builtin.sh [TASK ...]   (default: all nine)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(noise pixelate blur jpeg squares block grid mixed inpaint)
scripts/get-training-photos.sh  # fetches only the photographs missing from .data/photos and .data/photos-heldout
py=${PYTHON:-.venv/bin/python}
mkdir -p runs/builtin/logs
train_one() {
  local task=$1
  "$py" -m pyramidal train --config "builtin/$task" --no-progress \
    >"runs/builtin/logs/$task.log" 2>&1
  local run
  run=$(ls -d runs/builtin/"$task"/*/* | sort | tail -n 1)
  echo "$task: trained in $run"
}
# Later phases (only where pyramidal/configs/builtin/TASK-phaseK.toml exists): more steps from the previous phase's
# best weights. Phase K writes its runs under runs/builtin-phaseK.
run_of() {  # newest run of TASK in phase $2 (1 = runs/builtin)
  local dir=runs/builtin
  [ "$2" -gt 1 ] && dir=runs/builtin-phase$2
  ls -d "$dir/$1"/*/* | sort | tail -n 1
}
train_phase() {
  local task=$1 phase=$2
  "$py" -m pyramidal train --config "builtin/$task-phase$phase" \
    --init-weights "$(run_of "$task" $((phase - 1)))/best.safetensors" \
    --no-progress >"runs/builtin/logs/$task-phase$phase.log" 2>&1
}
train_set() {  # train TASK... (phase 1 two at a time, then each later phase), then package each
  local tasks=("$@") last_phase=() pairs i phase task
  [ ${#tasks[@]} -gt 0 ] || return 0
  for ((i = 0; i < ${#tasks[@]}; i += 2)); do
    train_one "${tasks[i]}" &
    if ((i + 1 < ${#tasks[@]})); then train_one "${tasks[i + 1]}" & fi
    wait
  done
  for task in "${tasks[@]}"; do last_phase+=(1); done
  for phase in 2 3 4 5 6; do
    pairs=()
    for i in "${!tasks[@]}"; do
      task=${tasks[i]}
      [ -f "pyramidal/configs/builtin/$task-phase$phase.toml" ] || continue
      last_phase[i]=$phase
      pairs+=("$task")
    done
    for ((i = 0; i < ${#pairs[@]}; i += 2)); do
      train_phase "${pairs[i]}" $phase &
      if ((i + 1 < ${#pairs[@]})); then train_phase "${pairs[i + 1]}" $phase & fi
      wait
    done
  done
  for i in "${!tasks[@]}"; do
    "$py" scripts/package-builtin-weights.py "${tasks[i]}" "$(run_of "${tasks[i]}" "${last_phase[i]}")"
  done
}
# A recipe that starts from another task's packaged weights (init_weights = "builtin:X", as squares, block and
# grid start from inpaint) trains after the others, so after X is packaged.
first=() after=()
for task in "${tasks[@]}"; do
  if grep -q '^init_weights = "builtin:' "pyramidal/configs/builtin/$task.toml"; then after+=("$task"); else first+=("$task"); fi
done
train_set "${first[@]}"
train_set "${after[@]}"
