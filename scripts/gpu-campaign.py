#!/usr/bin/env python
"""The GPU campaign in one call: CUDA checks, training at GPU scale, scores against the shipped weights.

This parses the flags into a `pyramidal.compare.callsettings.CallSettings`; the call is
`pyramidal.compare.gpucall.run` (the entries' training plan is `pyramidal.compare.campaign`). OUT (--out or
$OUT) receives at most 6 files: report.json, campaign.log, check.json and one LABEL.tar per entry.
docs/gpu-campaign.md has the `run` call and its budget.

Usage: scripts/gpu-campaign.sh all [--smoke] [--out DIR] [--seconds S] [--train RECIPE|LABEL=RECIPE ...]
       scripts/gpu-campaign.sh prepare [--data SPEC]   # here: the training photographs, sized to travel
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyramidal, installed or not

from pyramidal.compare import callsettings, gpucall  # noqa: E402
from pyramidal.compare.gpucall import COMPILE_GAIN  # noqa: E402
from pyramidal.errors import OptionError, PyramidalError, command_line  # noqa: E402


def default(name: str) -> str:
    """A setting's default as the help shows it: [GPU; smoke SMOKE], or [GPU] when they are the same."""
    def shown(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(
            value, float) else str(value)
    gpu = shown(getattr(callsettings.CallSettings, name))
    smoke = shown(callsettings.SMOKE_DEFAULTS.get(name, getattr(callsettings.CallSettings, name)))
    return f"[{gpu}]" if smoke == gpu else f"[{gpu}; smoke {smoke}]"


def parse_args(argv: list[str] | None) -> tuple[str, callsettings.CallSettings]:
    """The phase and the call's settings, built from the flags here alone."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", default="all", choices=("all", "prepare"),
                   help="all: everything, in one call; prepare: here, the training photographs sized to travel")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--out", help="where the returned files go (default $OUT)")
    p.add_argument("--work", help=f"scratch folder for the runs {default('work')}")
    p.add_argument("--seconds", type=float, help=f"wall-clock budget of the whole call {default('seconds')}")
    p.add_argument("--check-seconds", type=float, help=f"cap on the CUDA tests {default('check_seconds')}")
    p.add_argument("--test-timeout", type=int, help=f"per-test timeout (pytest-timeout) {default('test_timeout')}")
    p.add_argument("--train", action="append", metavar="RECIPE|LABEL=RECIPE",
                   help=f"an entry to train, named by a recipe (repeatable; at most two) [{' '.join(callsettings.DEFAULT_TRAIN)}]")
    p.add_argument("--model", action="append", metavar="LABEL:MODEL", help="another architecture")
    p.add_argument("--model-option", action="append", metavar="[LABEL:]KEY=VALUE",
                   help=f"model options per entry [{' '.join(callsettings.DEFAULT_MODEL_OPTIONS)}]")
    p.add_argument("--data", help="training data spec for every entry, relative to the checkout [the recipe's]")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="task option for every entry, e.g. unclipped=0.5")
    p.add_argument("--train-option", action="append", metavar="[LABEL:]KEY=VALUE",
                   help="any other `pyramidal train` option, for one entry or every entry")
    p.add_argument("--batch-size", type=int, help=f"training batch {default('batch_size')}")
    p.add_argument("--lr-rule", choices=callsettings.LR_RULES,
                   help=f"learning rate from the recipe's: ×√k or ×k for k times its batch {default('lr_rule')}")
    p.add_argument("--steps-per-epoch", type=int, help=f"validation and last.ckpt every N steps {default('steps_per_epoch')}")
    p.add_argument("--workers", type=int, help="loader processes for tasks damaged on the CPU [CPUs - 2]")
    p.add_argument("--size", type=int, help=f"patch side of the bench {default('size')}")
    p.add_argument("--sweep", help=f"bench batches for the default architecture {default('sweep')}")
    p.add_argument("--bench-steps", type=int, help=f"timed bench steps per batch {default('bench_steps')}")
    p.add_argument("--precision", help=default("precision"))
    p.add_argument("--compile", choices=callsettings.COMPILE_CHOICES,
                   help="torch.compile the training model; auto: time it beside the CUDA tests and use it if it "
                        f"trains {COMPILE_GAIN}× as fast as the sweep's eager rate {default('compile')}")
    p.add_argument("--probe-seconds", type=float, help=f"seconds per start candidate {default('probe_seconds')}")
    p.add_argument("--max-steps", type=int, help="cap on each entry's steps")
    p.add_argument("--benchmark", action="append", metavar="DIR",
                   help="folder of clean benchmark images to score noise entries on (repeatable)")
    p.add_argument("--eval-limit", type=int, help="validation images per setting [all]")
    args = p.parse_args(argv)
    out = args.out or os.environ.get("OUT")
    if not out and args.phase == "all":
        p.error("give --out DIR (or set OUT, as the device tool does)")
    flags = {k: v for k, v in vars(args).items() if k not in ("phase", "smoke", "out", "sweep")}
    try:
        settings = callsettings.CallSettings.resolve(
            args.smoke, **flags, out=out, argv=sys.argv[1:] if argv is None else argv,
            sweep=[int(b) for b in args.sweep.split(",")] if args.sweep else None)
    except OptionError as exc:
        p.error(command_line(exc))
    return args.phase, settings


def main(argv: list[str] | None = None) -> int:
    phase, settings = parse_args(argv)
    if phase == "prepare":
        try:
            gpucall.prepare(settings.data)
        except PyramidalError as exc:
            sys.exit(f"gpu-campaign prepare: {exc}")
        return 0
    return gpucall.run(settings)


if __name__ == "__main__":
    sys.exit(main())
