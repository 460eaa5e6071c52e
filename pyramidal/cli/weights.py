"""`pyramidal weights`: the trained weights shipped inside the package, with how they were made."""

from __future__ import annotations

import argparse
import textwrap

from pyramidal.cli.common import add_json, write_json_output
from pyramidal.errors import PyramidalError

HELP = "list the built-in trained weights: model, training data, steps, measured scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", nargs="?", help="show the model card of this task's weights: licence, training "
                                                "data, command, intended use, limits, scores")
    add_json(parser)  # the whole record of TASK (or of every file)


def _scores(info: dict) -> str:
    parts = []
    for row in info.get("scores", []):
        setting = row.get("setting") or ""
        parts.append(
            f"{setting + ': ' if setting else ''}ours {row['ours_psnr']:.2f} dB vs {row['baseline']} "
            f"{row['baseline_psnr']:.2f} dB"
        )
    return "; ".join(parts) if parts else "not measured"


def model_card(task: str, path, info: dict) -> str:
    """The record of a weight file as a short model card."""
    def field(label: str, value) -> list[str]:
        items = value if isinstance(value, list) else [value]
        lines = []
        for i, item in enumerate(items):
            text = ("- " if len(items) > 1 else "") + str(item)
            wrapped = textwrap.wrap(text, 92, subsequent_indent="  " if len(items) > 1 else "") or [""]
            lines += [f"  {label if i == 0 and j == 0 else '':<14}{line}" for j, line in enumerate(wrapped)]
        return lines

    options = info.get("options") or {}
    out = [f"{task}: {info['model']}.{task}  {path} ({path.stat().st_size / 1e6:.2f} MB, {info.get('dtype', '?')})"]
    out += field("model", f"{info['model']} ({info.get('parameters', 0):,} parameters)"
                 + (f", options {options}" if options else ""))
    out += field("licence", info.get("license", "not recorded"))
    if info.get("license_note"):
        out += field("", info["license_note"])
    out += field("trained on", info.get("training_data") or info.get("data", "not recorded"))
    out += field("training", f"{info.get('steps', 0):,} steps: {info.get('command', 'not recorded')}")
    for key, label in (("intended_use", "intended use"), ("limits", "limits"), ("provenance", "provenance")):
        if info.get(key):
            out += field(label, info[key])
    out += field("scores", _scores(info).split("; "))
    if info.get("evaluated_on"):
        out += field("evaluated on", info["evaluated_on"])
    out.append(f"Use it: pyramidal restore --task {task} IMAGE -o OUT; "
               f"pyramidal.create_model('{info['model']}.{task}', pretrained=True). "
               f"Full record: pyramidal weights {task} --json -")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    # lazy: torch loads when the command runs, not for --help
    from pyramidal.checkpoint import read_weights_info
    from pyramidal.hub import WEIGHTS_DIR, available_builtin_weights, builtin_weights_path

    tasks = available_builtin_weights()
    if args.task:
        path = builtin_weights_path(args.task)
        info = read_weights_info(path)
        if args.json:
            write_json_output(info, args.json)
        if args.json != "-":
            print(model_card(args.task, path, info))
        return 0
    if args.json:
        write_json_output({task: read_weights_info(builtin_weights_path(task)) for task in tasks}, args.json)
        if args.json == "-":
            return 0
    if not tasks:
        raise PyramidalError(f"no built-in weights found in {WEIGHTS_DIR}")
    total = 0
    print(f"{'task':<9} {'model':<16} {'params':>9} {'MB':>5} {'steps':>7} {'data':<26} scores (built-in val photos)")
    for task in tasks:
        path = builtin_weights_path(task)
        info = read_weights_info(path)
        size = path.stat().st_size
        total += size
        print(
            f"{task:<9} {info['model']:<16} {info.get('parameters', 0):>9,} {size / 1e6:>5.1f} "
            f"{info.get('steps', 0):>7} {info.get('data', '?'):<26} {_scores(info)}"
        )
    print(f"\n{len(tasks)} weight files, {total / 1e6:.1f} MB in all, in {WEIGHTS_DIR}")
    print("Model card, licence and the command that retrains each: `pyramidal weights TASK`.")
    return 0
