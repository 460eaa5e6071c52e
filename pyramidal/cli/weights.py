"""`pyramidal weights`: the trained weights shipped inside the package, with how they were made."""

from __future__ import annotations

import argparse

HELP = "list the built-in trained weights: model, training data, steps, measured scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", nargs="?", help="show everything recorded for this task's weights")


def _scores(info: dict) -> str:
    parts = []
    for row in info.get("scores", []):
        setting = row.get("setting") or ""
        parts.append(
            f"{setting + ': ' if setting else ''}ours {row['ours_psnr']:.2f} dB vs {row['baseline']} "
            f"{row['baseline_psnr']:.2f} dB"
        )
    return "; ".join(parts) if parts else "not measured"


def run(args: argparse.Namespace) -> int:
    import json

    from pyramidal.checkpoint import read_sidecar
    from pyramidal.errors import PyramidalError
    from pyramidal.inference import WEIGHTS_DIR, available_builtin_weights, builtin_weights_path

    tasks = available_builtin_weights()
    if args.task:
        path = builtin_weights_path(args.task)
        print(f"{path}  ({path.stat().st_size / 1e6:.2f} MB)")
        print(json.dumps(read_sidecar(path), indent=2))
        return 0
    if not tasks:
        raise PyramidalError(f"no built-in weights found in {WEIGHTS_DIR}")
    total = 0
    print(f"{'task':<9} {'model':<16} {'params':>9} {'MB':>5} {'steps':>7} {'data':<26} scores (built-in val photos)")
    for task in tasks:
        path = builtin_weights_path(task)
        info = read_sidecar(path)
        size = path.stat().st_size
        total += size
        print(
            f"{task:<9} {info['model']:<16} {info.get('parameters', 0):>9,} {size / 1e6:>5.1f} "
            f"{info.get('steps', 0):>7} {info.get('data', '?'):<26} {_scores(info)}"
        )
    print(f"\n{len(tasks)} weight files, {total / 1e6:.1f} MB in all, in {WEIGHTS_DIR}")
    print("Retrain any of them with the command recorded in `pyramidal weights TASK` (configs/builtin/).")
    return 0
