"""`pyramidal gradients --models plain103,pyramidal457101215`: gradient norm per conv layer vs depth."""

from __future__ import annotations

import argparse

from pyramidal.cli.common import (
    add_device,
    add_out,
    batch_size,
    positive_number,
    side,
    step_count,
    task_help,
    task_name,
    write_outputs,
)
from pyramidal.configfiles import parse_options
from pyramidal.device import resolve_device
from pyramidal.errors import PyramidalError

HELP = "gradient-flow report: conv gradient norms vs depth after a few steps (plain deep stack vs dense)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="plain103,pyramidal457101215",
                        help="comma-separated model names (default plain103,pyramidal457101215)")
    parser.add_argument("--task", default="squares", type=task_name, help=task_help() + " (default squares)")
    parser.add_argument("--data", default="builtin", help="builtin (default), folder:PATH or celeba:PATH")
    parser.add_argument("--steps", type=step_count(0), default=3, help="Adam steps before measuring (default 3)")
    parser.add_argument("--size", type=side(), default=32, help="patch side in px (default 32)")
    parser.add_argument("--batch-size", type=batch_size(), default=2, help="batch size (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data (default 0)")
    parser.add_argument("--lr", type=positive_number, default=3e-4, help="Adam learning rate (default 3e-4)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="model option for every model (value in TOML syntax), e.g. --option m=8 --option growth=4")
    add_device(parser)
    add_out(parser, "output folder", default="runs/gradients")


def run(args: argparse.Namespace) -> int:
    # lazy: torch loads when the command runs, not for --help
    from pyramidal.gradients import measure, report_paths, report_writes, summary
    from pyramidal.io import OutputPlan
    from pyramidal.models import check_model
    from pyramidal.models.summary import check_memory

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise PyramidalError("--models: give at least one model name")
    if args.steps < 0 or args.size < 1 or args.batch_size < 1:
        raise PyramidalError("--steps must be >= 0, --size and --batch-size >= 1")
    # Batch norm needs more than one value per channel in training.
    if args.batch_size * args.size * args.size < 2:
        raise PyramidalError("--batch-size × --size² must be at least 2 for batch norm")
    options = parse_options(args.option, "--option")
    device = resolve_device(args.device)
    for name in models:  # before any model is built: a step that cannot fit is one line, not a machine out of memory
        check_model(name, **options)
        check_memory(name, options, batch=args.batch_size, size=args.size, device=device)
    plan = OutputPlan()  # the reports in -o may replace earlier ones, never a file another run writes meanwhile
    for path in report_paths(args.out).values():
        plan.add(path, "--out", replace_ok=True)
    plan.check()
    report = measure(models, task=args.task, data=args.data, steps=args.steps, size=args.size,
                     batch_size=args.batch_size, seed=args.seed, lr=args.lr, options=options,
                     device=args.device)
    print(summary(report))
    print("first/last: weight-gradient norm at the first conv layer (input side) over that at the last "
          "(output side); far below 1: the gradient vanishes on its way back, far above 1: it explodes. "
          "Healthy flow stays within a few orders of magnitude.")
    return write_outputs("gradients", plan, [(str(p), w) for p, w in report_writes(report, args.out).items()])
