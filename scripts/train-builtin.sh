#!/usr/bin/env bash
# Retrain the built-in weights from their recipes (pyramidal/recipes/TASK.toml), two recipes at a time (each
# recipe's stages in order, one after another), then package each recipe's last stage into pyramidal/weights/
# (fp16 safetensors + record: recipe, steps, scores, model card). A recipe that starts from another recipe's
# weights (init_weights = "recipe:inpaint": squares, block, grid) trains after that one.
# Resumable: run it again and each recipe continues where it stopped (finished stages are not trained again).
# Usage: scripts/train-builtin.sh [TASK ...]   (default: every shipped recipe)
#        OUT=DIR scripts/train-builtin.sh      (default runs/recipes)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-runs/recipes}
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || mapfile -t tasks < <("$py" -c 'from pyramidal.hub import list_recipes; print("\n".join(list_recipes()))')
scripts/get-training-photos.sh  # fetches only the photographs missing from .data/photos and .data/photos-heldout
mkdir -p "$out/logs"
train_one() {
  "$py" -m pyramidal train --recipe "$1" --out "$out" --no-progress >"$out/logs/$1.log" 2>&1
  local run
  run=$(tail -n 1 "$out/logs/$1.log" | sed -n 's/^recipe .*: best weights \(.*\)\/best.safetensors$/\1/p')
  "$py" scripts/package-builtin-weights.py "$1" "$run"
}
train_set() {  # two recipes at a time
  local list=("$@") i
  for ((i = 0; i < ${#list[@]}; i += 2)); do
    train_one "${list[i]}" &
    if ((i + 1 < ${#list[@]})); then train_one "${list[i + 1]}" & fi
    wait
  done
}
first=() after=()
for task in "${tasks[@]}"; do
  if grep -q '^init_weights *= *"recipe:' "pyramidal/recipes/$task.toml"; then after+=("$task"); else first+=("$task"); fi
done
train_set "${first[@]}"
[ ${#after[@]} -eq 0 ] || train_set "${after[@]}"
