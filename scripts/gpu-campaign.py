#!/usr/bin/env python
"""The GPU campaign in one call: CUDA checks, training at GPU scale, scores against the shipped weights.

This parses the flags; the call is `pyramidal.compare.gpucall.run` (the entries' training plan is
`pyramidal.compare.campaign`). OUT (--out or $OUT) receives at most 6 files: report.json, campaign.log,
check.json and one LABEL.tar per entry. docs/gpu-campaign.md has the `run` call and its budget.

Usage: scripts/gpu-campaign.sh all [--smoke] [--out DIR] [--seconds S] [--train RECIPE|LABEL=RECIPE ...]
       scripts/gpu-campaign.sh prepare [--data SPEC]   # here: the training photographs, sized to travel
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyramidal, installed or not

from pyramidal.compare import gpucall  # noqa: E402
from pyramidal.compare.gpucall import COMPILE_GAIN  # noqa: E402
from pyramidal.errors import PyramidalError  # noqa: E402

DEFAULT_TRAIN = ["noise", "noise-wide=noise"]
DEFAULT_OPTIONS = ["noise-wide:m=48", "noise-wide:growth=24"]  # 2× the width: 3.2 M parameters, 3.9× the FLOPs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", default="all", choices=("all", "prepare"),
                   help="all: everything, in one call; prepare: here, the training photographs sized to travel")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--out", help="where the returned files go (default $OUT)")
    p.add_argument("--work", default="runs/gpu-campaign", help="scratch folder for the runs [runs/gpu-campaign]")
    p.add_argument("--seconds", type=float, help="wall-clock budget of the whole call [480; smoke 45]")
    p.add_argument("--check-seconds", type=float, help="cap on the CUDA tests [45]")
    p.add_argument("--test-timeout", type=int, default=25, help="per-test timeout (pytest-timeout) [25]")
    p.add_argument("--train", action="append", metavar="RECIPE|LABEL=RECIPE",
                   help=f"an entry to train, named by a recipe (repeatable; at most two) [{' '.join(DEFAULT_TRAIN)}]")
    p.add_argument("--model", action="append", default=[], metavar="LABEL:MODEL", help="another architecture")
    p.add_argument("--model-option", action="append", metavar="[LABEL:]KEY=VALUE",
                   help=f"model options per entry [{' '.join(DEFAULT_OPTIONS)}]")
    p.add_argument("--data", help="training data spec for every entry, relative to the checkout [the recipe's]")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option for every entry, e.g. unclipped=0.5")
    p.add_argument("--train-option", action="append", default=[], metavar="[LABEL:]KEY=VALUE",
                   help="any other `pyramidal train` option, for one entry or every entry")
    p.add_argument("--batch-size", type=int, help="training batch [256; smoke 4]")
    p.add_argument("--lr-rule", default="sqrt", choices=("sqrt", "linear"),
                   help="learning rate from the recipe's: ×√k or ×k for k times its batch [sqrt]")
    p.add_argument("--steps-per-epoch", type=int, help="validation and last.ckpt every N steps [500; smoke 4]")
    p.add_argument("--workers", type=int, help="loader processes for tasks damaged on the CPU [CPUs - 2]")
    p.add_argument("--size", type=int, default=64, help="patch side of the bench [64; smoke 32]")
    p.add_argument("--sweep", help="bench batches for the default architecture [64,256,1024; smoke 1,2]")
    p.add_argument("--bench-steps", type=int, help="timed bench steps per batch [10; smoke 2]")
    p.add_argument("--precision", help="[bf16; smoke auto]")
    p.add_argument("--compile", choices=("off", "on", "auto"),
                   help="torch.compile the training model; auto: time it beside the CUDA tests and use it if it "
                        f"trains {COMPILE_GAIN}× as fast as the sweep's eager rate [auto; smoke off]")
    p.add_argument("--probe-seconds", type=float, help="seconds per start candidate [8; smoke 1]")
    p.add_argument("--max-steps", type=int, help="cap on each entry's steps")
    p.add_argument("--benchmark", action="append", default=[], metavar="DIR",
                   help="folder of clean benchmark images to score noise entries on (repeatable)")
    p.add_argument("--eval-limit", type=int, help="validation images per setting [all]")
    s = p.parse_args(argv)
    s.out = s.out or os.environ.get("OUT")
    if not s.out and s.phase == "all":
        p.error("give --out DIR (or set OUT, as the device tool does)")
    smoke = s.smoke
    s.seconds = s.seconds or (45.0 if smoke else 480.0)
    s.check_seconds = s.check_seconds or 45.0
    s.train = s.train or DEFAULT_TRAIN
    s.model_option = s.model_option if s.model_option is not None else (
        DEFAULT_OPTIONS if s.train == DEFAULT_TRAIN else [])
    s.batch_size = s.batch_size or (4 if smoke else 256)
    s.steps_per_epoch = s.steps_per_epoch or (4 if smoke else 500)
    s.workers = s.workers if s.workers is not None else (0 if smoke else max(1, (os.cpu_count() or 4) - 2))
    s.size = 32 if smoke and s.size == 64 else s.size
    s.sweep = [int(b) for b in (s.sweep or ("1,2" if smoke else "64,256,1024")).split(",")]
    s.bench_steps = s.bench_steps or (1 if smoke else 10)
    s.precision = s.precision or ("auto" if smoke else "bf16")
    s.compile = s.compile or ("off" if smoke else "auto")
    s.probe_seconds = s.probe_seconds if s.probe_seconds is not None else (1.0 if smoke else 8.0)
    s.score_reserve = 4.0 if smoke else 30.0
    s.final_reserve = 2.0 if smoke else 10.0
    s.device = "cpu" if smoke else "cuda"
    s.eval_crop, s.eval_crops = (64, 1) if smoke else ("auto", None)
    s.eval_limit = s.eval_limit or (1 if smoke else None)
    if smoke:  # small enough for a CI machine: 32-px patches, 4 validation crops, one thread, the built-in photos
        s.train_option = ["size=32", "val_images=4", "threads=1", *s.train_option]
        s.data = s.data or "builtin"
    if len(s.train) > 2:
        p.error("--train: at most two entries (the budget has room for two)")
    return s


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    if s.phase == "prepare":
        try:
            gpucall.prepare(s.data)
        except PyramidalError as exc:
            sys.exit(f"gpu-campaign prepare: {exc}")
        return 0
    s.argv = sys.argv[1:] if argv is None else argv
    return gpucall.run(s)


if __name__ == "__main__":
    sys.exit(main())
