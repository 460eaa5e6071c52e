#!/usr/bin/env python
"""Recipe ablation at equal CPU time: train named candidate recipes, evaluate them alike, write a Markdown table.

Every candidate is the same base settings (one stage of a recipe, by default the first stage of the task's
built-in recipe, or a `--config` file) with one change, trained with the same seed, data and `--max-cpu-minutes`
budget (this process's CPU time, so a busy machine slows a run down but does not shorten it), one after another
in this process. Each is then scored as `pyramidal evaluate` scores it, on the built-in validation photographs.
Every row comes with the exact commands that redo it. The training and scoring are
`pyramidal.compare.ablation`; this script parses the flags.

    scripts/ablation.py --task noise --cpu-minutes 4 --nice 10 --markdown runs/ablation/noise.md
    scripts/ablation.py --task noise --candidates baseline,dropout0,l1 --cpu-minutes 2

A candidate already finished in --out (its result.json) is not trained again, so a stopped ablation
continues where it stopped. Run it on a quiet machine or with equal `--nice`: CPU time is fair to each
candidate, but memory bandwidth and caches are shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyramidal, installed or not

from pyramidal.cli import build_parser  # noqa: E402
from pyramidal.cli.train import overrides_from_args  # noqa: E402
from pyramidal.compare import ablation  # noqa: E402
from pyramidal.compare.ablation import CANDIDATES, DEFAULT_CANDIDATES, RUN_WEIGHTS  # noqa: E402
from pyramidal.config import TrainConfig, resolve_config  # noqa: E402
from pyramidal.errors import PyramidalError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="noise", help="damage task (default noise)")
    p.add_argument("--config", help="base settings: a --config preset or TOML file (default: --recipe's --stage)")
    p.add_argument("--recipe", help="base settings from this recipe (default TASK's) ...")
    p.add_argument("--stage", type=int, default=1, help="... at this stage (default 1)")
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES),
                   help=f"comma-separated, from: {', '.join(CANDIDATES)} (default {','.join(DEFAULT_CANDIDATES)})")
    p.add_argument("--cpu-minutes", type=float, default=4.0, help="training CPU minutes per candidate (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of every candidate (default 0)")
    p.add_argument("--data", default="builtin", help="training data of every candidate (default builtin)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run (default 1)")
    p.add_argument("--nice", type=int, default=0, help="run every command under `nice -n N` (default 0: not)")
    p.add_argument("--out", default="runs/ablation", help="folder for the runs and results (default runs/ablation)")
    p.add_argument("--markdown", help="also write the table here (default OUT/TASK/ablation.md)")
    p.add_argument("--python", default=sys.executable, help="the Python named in the recorded commands (default this one)")
    args = p.parse_args(argv)
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown or not args.candidates:
        p.error(f"--candidates: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CANDIDATES)}")
    if args.cpu_minutes <= 0:
        p.error("--cpu-minutes must be positive")
    args.recipe = args.recipe or args.task
    return args


def base_config(args: argparse.Namespace, out: Path) -> str:
    """The --config every candidate trains with: the file given, else the recipe stage's settings written to
    OUT/TASK/base.toml."""
    if args.config:
        return args.config
    try:
        return str(ablation.write_base(args.recipe, args.stage, out / "base.toml"))
    except PyramidalError as exc:
        raise SystemExit(str(exc)) from None


def commands(args: argparse.Namespace, name: str, folder: Path) -> tuple[list[str], list[str]]:
    """(train command, evaluate command) of one candidate; the evaluate one names the run's weights as RUN."""
    pyramidal = [args.python, "-m", "pyramidal"]
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    train = prefix + pyramidal + [
        "train", "--config", args.config, "--task", args.task, "--data", args.data, "--seed", str(args.seed),
        "--threads", str(args.threads), "--max-cpu-minutes", f"{args.cpu_minutes:g}", "--out", str(folder / "runs"),
        "--no-progress", "--log-images", "0", *CANDIDATES[name][1]]
    evaluate = prefix + pyramidal + ["evaluate", "--task", args.task, "--weights", RUN_WEIGHTS,
                                     "--baselines", "none", "--json", str(folder / "evaluate.json"),
                                     *ablation.eval_flags(args.task)]
    return train, evaluate


def train_config(train: list[str]) -> TrainConfig:
    """The settings a train command line trains with, read by `pyramidal train`'s own parser."""
    argv = train[train.index("train"):]
    return resolve_config(overrides_from_args(build_parser().parse_args(argv)))


def markdown(args: argparse.Namespace, results: list[dict]) -> str:
    """The table (dB per candidate and setting, Δ against the baseline) and each row's commands."""
    base = f"recipe `{args.recipe}` stage {args.stage}" if args.recipe else f"`{args.config}`"
    return ablation.markdown(results, task=args.task, base=base, data=args.data, seed=args.seed,
                             cpu_minutes=args.cpu_minutes, threads=args.threads, python=args.python)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) / args.task
    args.config = base_config(args, out)
    if args.config != str(out / "base.toml"):
        args.recipe = None
    if args.nice:
        os.nice(args.nice)  # the whole ablation, as `nice -n N` in its commands says
    results = []
    print(f"ablation on {args.task}: {len(args.candidates)} candidate(s), {args.cpu_minutes:g} CPU-minutes each, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    for name in args.candidates:
        folder = out / name
        train, evaluate = commands(args, name, folder)
        try:
            results.append(ablation.run_candidate(name, train_config(train), folder, task=args.task,
                                                  train_command=train, evaluate_command=evaluate,
                                                  log=lambda line: print(line, flush=True)))
        except PyramidalError as exc:
            raise SystemExit(f"{name}: {exc}") from None
        table = markdown(args, results)
        path = Path(args.markdown) if args.markdown else out / "ablation.md"
        path.write_text(table)  # after every candidate: a stopped ablation still leaves its table
    print("\n" + table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
