#!/usr/bin/env bash
# The research experiment at a budget where the models are good (docs/results.md, "Research comparison at
# 10k steps: how to run"), one `pyramidal compare` per part (pyramidal.compare.RESEARCH_PARTS):
#   squares, block  basic21, basic51, pyramidal51, pyramidal51cat, and pyramidal51 with up=upsample (the
#                   checkerboard row): --preset research-upsample
#   depth           pyramidal457101215 against plain103 on block: --preset depth
# Every model: 10,000 steps at batch 16 on 64-px patches, seed 0, the built-in photographs, the research's
# recipe (Adam 3e-4, weight decay 1e-4, no schedule), PSNR/val on 48 fixed crops after every 250 steps (one
# epoch of 4,000 patches) for the learning curves.
# Resumable: run it again (after a kill, a reboot, in a later session) and each comparison continues where it
# stopped; finished models are not trained again. Each part writes its report to OUT/PART/: compare.md,
# compare.json, compare_TASK.png (the picture grid) and curves_TASK.png (the learning curves).
#
# Usage: scripts/research-comparison.sh [--print] [PART ...] [-- COMPARE FLAGS]   (default: squares block depth)
#   --print         print the commands instead of running them
#   COMPARE FLAGS   more `pyramidal compare` flags for every part, e.g. -- --device cuda --train-option threads=2
#   STEPS=50000 OUT=runs/research-50k scripts/research-comparison.sh    another budget needs another folder
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${OUT:-runs/research}
steps=${STEPS:-10000}
print=0
parts=()
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --print) print=1 ;;
    --) shift; extra=("$@"); break ;;
    *) parts+=("$1") ;;
  esac
  shift
done
[ ${#parts[@]} -gt 0 ] || parts=(squares block depth)
part_of() {  # PART -> "PRESET TASK"
  case $1 in
    squares) echo research-upsample squares ;;
    block) echo research-upsample block ;;
    depth) echo depth block ;;
    *) return 1 ;;
  esac
}
for part in "${parts[@]}"; do  # every part checked before the first one starts
  part_of "$part" >/dev/null || { echo "research-comparison.sh: unknown part '$part'; choose squares, block or depth" >&2; exit 2; }
done
for part in "${parts[@]}"; do
  read -r preset task <<<"$(part_of "$part")"
  cmd=("$py" -m pyramidal compare --preset "$preset" --task "$task" --steps "$steps" --batch-size 16 --size 64
       --seed 0 --data builtin --train-option val_images=48 --train-option patches_per_epoch=4000
       --baselines fast --out "$out/$part" ${extra[@]+"${extra[@]}"})
  if [ "$print" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
  else
    echo "== $part: ${cmd[*]}"
    "${cmd[@]}"
  fi
done
