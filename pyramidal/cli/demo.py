"""`pyramidal demo`: restore built-in photos for every task, then train a small model for two minutes."""

from __future__ import annotations

import argparse
import time

from pyramidal.cli.common import add_out, check_out_folder, positive_number
from pyramidal.damage import TASKS

HELP = "show the whole system: restore built-in photos for every task, then train a small model (~5 min on a CPU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out(parser, "where figures, tables and the training run go", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes: one photo, a few steps")
    parser.add_argument("--train-minutes", type=positive_number, default=2.0, help="training budget in minutes [2]")
    parser.add_argument("--tasks", help="comma-separated tasks to restore (default: every built-in weight file)")


def run(args: argparse.Namespace) -> int:
    from pyramidal.demo import run_demo  # lazy: torch loads when the demo runs, not for --help

    start = time.perf_counter()
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    for task in tasks or ():
        TASKS.get(task)  # an unknown name fails before the demo starts
    check_out_folder(args.out)
    run_demo(args.out, quick=args.quick, train_minutes=args.train_minutes, tasks=tasks)
    print(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min")
    return 0
