"""`pyramidal compare --task T --models a,b,c [--budget-minutes M | --steps N]`: the research's comparisons."""

from __future__ import annotations

import argparse

HELP = "train several models under the same budget, seed and data, evaluate them alike; table and figure"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pyramidal.cli.common import (
        add_device,
        add_out,
        add_precision,
        at_least,
        positive_number,
        task_help,
        task_name,
    )

    parser.add_argument("--preset", choices=("research",),
                        help="research: basic21, basic51, pyramidal51, pyramidal51cat on squares")
    parser.add_argument("--task", type=task_name, help=task_help() + " (default squares)")
    parser.add_argument("--models", help="comma-separated model names")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=positive_number, help="training time per model (default 5)")
    budget.add_argument("--steps", type=at_least(1), help="training steps per model")
    parser.add_argument("--data", default="builtin", help="builtin (default), folder:PATH or celeba:PATH")
    parser.add_argument("--size", type=at_least(1), default=64, help="training patch side (default 64)")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="training batch size (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every model (default 0)")
    parser.add_argument("--model-option", action="append", metavar="[MODEL:]KEY=VALUE",
                        help="model option for every model, or for one with MODEL: in front (value in TOML syntax)")
    parser.add_argument("--train-option", action="append", metavar="KEY=VALUE",
                        help="any other `pyramidal train` setting (value in TOML syntax), e.g. lr=1e-3 or val_images=64")
    parser.add_argument("--eval-crop", type=at_least(0), default=None,
                        help="evaluation crop side, 0 = whole images (default as in `pyramidal evaluate`)")
    parser.add_argument("--eval-limit", type=at_least(1), default=None, help="evaluate on at most N images")
    parser.add_argument("--baselines", default="fast", choices=("none", "fast", "all"),
                        help="classical rows in the table (default fast: BM3D is left out)")
    parser.add_argument("--figure-rows", type=at_least(1), default=4, help="validation images in the figure (default 4)")
    add_device(parser)
    add_precision(parser)
    add_out(parser, "output folder", default="runs/compare")


def run(args: argparse.Namespace) -> int:
    from pyramidal.compare import PRESETS, compare, format_table, parse_model_options
    from pyramidal.config import parse_options
    from pyramidal.errors import PyramidalError

    preset = PRESETS[args.preset] if args.preset else {}
    task = args.task or preset.get("task", "squares")
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    elif preset:
        models = list(preset["models"])
    else:
        raise PyramidalError("give --models a,b,... or --preset research")
    from pyramidal.cli.common import check_out_folder

    check_out_folder(args.out)
    budget_minutes = args.budget_minutes
    if args.steps is None and budget_minutes is None:
        budget_minutes = 5.0
    result = compare(
        models, task, steps=args.steps, budget_minutes=budget_minutes, data=args.data, size=args.size,
        batch_size=args.batch_size, seed=args.seed, out=args.out,
        model_options=parse_model_options(args.model_option, models), train_options=parse_options(args.train_option, "--train-option"),
        eval_crop="auto" if args.eval_crop is None else args.eval_crop, eval_limit=args.eval_limit,
        baselines=args.baselines, device=args.device, precision=args.precision, figure_rows=args.figure_rows,
    )
    print()
    print(format_table(result))
    print()
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
