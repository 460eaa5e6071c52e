"""`pyramidal compare --task T --models a,b,c [--budget-minutes M | --steps N] [-o DIR]`: the research's
comparisons; the same command again (or `--resume DIR`) continues an interrupted one."""

from __future__ import annotations

import argparse

from pyramidal.cli.common import (
    add_device,
    add_out,
    add_precision,
    at_least,
    batch_size,
    check_out_folder,
    positive_number,
    side,
    step_count,
    task_help,
    task_name,
)
from pyramidal.compare import PRESETS, parse_model_options
from pyramidal.configfiles import parse_options
from pyramidal.errors import PyramidalError

HELP = ("train several models under the same budget, seed and data, evaluate them alike; tables, learning "
        "curves and figure; the same command again continues an interrupted comparison")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="; ".join(f"{name}: {', '.join(p['models'])} on {p['task']}" for name, p in PRESETS.items()))
    parser.add_argument("--task", type=task_name, help=task_help() + " (default squares)")
    parser.add_argument("--models", help="comma-separated model names; LABEL=MODEL adds another row of one model "
                                         "(its options: --model-option LABEL:KEY=VALUE)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=positive_number, help="training time per model (default 5)")
    budget.add_argument("--steps", type=step_count(), help="training steps per model")
    parser.add_argument("--data", help="builtin (default), folder:PATH or celeba:PATH")
    parser.add_argument("--size", type=side(), help="training patch side (default 64)")
    parser.add_argument("--batch-size", type=batch_size(), help="training batch size (default 16)")
    parser.add_argument("--seed", type=int, help="seed for every model (default 0)")
    parser.add_argument("--model-option", action="append", metavar="[MODEL:]KEY=VALUE",
                        help="model option for every model, or for one with MODEL: in front (value in TOML syntax)")
    parser.add_argument("--train-option", action="append", metavar="KEY=VALUE",
                        help="any other `pyramidal train` setting (value in TOML syntax), e.g. lr=1e-3 or val_images=64")
    parser.add_argument("--eval-crop", type=side(0), default=None,
                        help="evaluation crop side, 0 = whole images (default as in `pyramidal evaluate`)")
    parser.add_argument("--eval-limit", type=at_least(1), default=None, help="evaluate on at most N images")
    parser.add_argument("--baselines", choices=("none", "fast", "all"),
                        help="classical rows in the table (default fast: BM3D is left out)")
    parser.add_argument("--figure-rows", type=at_least(1), help="validation images in the figure (default 4)")
    add_device(parser)
    add_precision(parser)
    add_out(parser, "the comparison's folder; the same command again continues the comparison in it "
                    "(default runs/compare/TASK)")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue the comparison in DIR with its own arguments (flags given must agree)")


def run(args: argparse.Namespace) -> int:
    from pyramidal.compare.research import (  # lazy: torch, kept out of `pyramidal compare --help`
        compare,
        format_table,
        parse_entries,
        read_plan,
    )

    plan: dict = {}
    if args.resume:
        if args.out and args.out != args.resume:
            raise PyramidalError(f"--out {args.out} and --resume {args.resume}: give one comparison folder")
        plan = read_plan(args.resume)
        args.out = args.resume
    other = plan.get("other_settings", {})

    def pick(given, key: str, default):
        """The flag if given, else the resumed comparison's value, else the default."""
        if given is not None:
            return given
        return plan[key] if key in plan else other.get(key, default)

    preset = PRESETS[args.preset] if args.preset else {}
    task = args.task or preset.get("task") or plan.get("task") or "squares"
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    elif preset or plan:
        models = list(preset.get("models") or plan["models"])
    else:
        raise PyramidalError("give --models a,b,... or --preset research (or --resume DIR)")
    labels = [label for label, _ in parse_entries(models)]
    # Model and training options: the preset's or the resumed plan's, then the flags' on top (a resumed plan
    # given other values is refused by `compare`).
    base = preset.get("model_options", {}) if preset or args.models else plan.get("model_options", {})
    given = parse_model_options(args.model_option, labels)
    model_options = {label: {**base.get(label, {}), **given[label]} for label in labels}
    train_options = {**plan.get("train_options", {}), **parse_options(args.train_option, "--train-option")}
    steps, budget_minutes = args.steps, args.budget_minutes
    if steps is None and budget_minutes is None:
        steps, budget_minutes = plan.get("steps"), plan.get("budget_minutes")
        if steps is None and budget_minutes is None:
            budget_minutes = 5.0
    out = args.out or f"runs/compare/{task}"
    check_out_folder(out)
    result = compare(
        models, task, steps=steps, budget_minutes=budget_minutes, data=pick(args.data, "data", "builtin"),
        size=pick(args.size, "size", 64), batch_size=pick(args.batch_size, "batch_size", 16),
        seed=pick(args.seed, "seed", 0), out=out, model_options=model_options, train_options=train_options,
        eval_crop=pick(args.eval_crop, "eval_crop", "auto"), eval_crops=other.get("eval_crops"),
        eval_limit=pick(args.eval_limit, "eval_limit", None), settings=other.get("settings"),
        baselines=pick(args.baselines, "baselines", "fast"),
        # auto, the shared flags' default, also stands for "as the comparison was started" when resuming
        device=pick(None if args.device == "auto" else args.device, "device", "auto"),
        precision=pick(None if args.precision == "auto" else args.precision, "precision", "auto"),
        figure_rows=pick(args.figure_rows, "figure_rows", 4),
    )
    print()
    print(format_table(result))
    print()
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
