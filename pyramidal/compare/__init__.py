"""The one orchestrator: train several runs alike, evaluate them alike, tabulate them.

Three studies are built on it:

- `research`: the research's comparisons (`pyramidal compare`): several models under one budget, seed and data,
  in one resumable folder with tables, a picture grid and learning curves;
- `ablation`: one base recipe with one change per candidate, each trained for the same CPU time
  (`scripts/ablation.py`);
- `campaign`: a recipe's model trained at GPU scale and scored against the shipped weights, and `gpucall`, the
  one call on a lent GPU that runs it under a wall-clock budget (`scripts/gpu-campaign.sh`), with its settings,
  `callsettings.CallSettings`.

`runs` holds what they share: training a run in this process, its summary, and the one call into `evaluate`.

This module stays free of torch and NumPy: `pyramidal compare --help` lists its presets, and scripts read
learning curves with it. The studies are submodules, imported by name.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from pyramidal.configfiles import parse_options
from pyramidal.errors import OptionError

RESEARCH_MODELS = ["basic21", "basic51", "pyramidal51", "pyramidal51cat"]
PRESETS: dict[str, dict[str, Any]] = {
    # The research's comparison: plain shallow, plain deep, pyramidal (add skips), pyramidal (concat skips).
    "research": {"task": "squares", "models": RESEARCH_MODELS},
    # The same and one more row: pyramidal51 up-sampling bilinearly, against the transposed convs' checkerboard.
    "research-upsample": {"task": "squares", "models": RESEARCH_MODELS + ["pyramidal51-upsample=pyramidal51"],
                          "model_options": {"pyramidal51-upsample": {"up": "upsample"}}},
    # The research's second claim, depth needs dense skips: 103 convs with them and without.
    "depth": {"task": "block", "models": ["pyramidal457101215", "plain103"]},
}
# The research experiment, part by part: (preset, task). scripts/research-comparison.sh runs each part with
# `--steps 10000 --batch-size 16 --size 64 --seed 0`.
RESEARCH_PARTS: dict[str, tuple[str, str]] = {
    "squares": ("research-upsample", "squares"),
    "block": ("research-upsample", "block"),
    "depth": ("depth", "block"),
}

# A row's or an entry's label: it names rows and files, never folders of the user's choosing.
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def parse_model_options(items: list[str] | None, models: list[str]) -> dict[str, dict]:
    """'KEY=VALUE' (every model) or 'MODEL:KEY=VALUE' (one model) → {model: options}; values as in
    `configfiles.parse_options` (TOML syntax)."""
    options: dict[str, dict] = {m: {} for m in models}
    for item in items or []:
        target, key_value = (item.split(":", 1) if ":" in item.split("=", 1)[0] else (None, item))
        if target is not None and target not in options:
            raise OptionError(f"{item!r}: {target} is not one of {','.join(models)}",
                              f"--model-option {item!r}: {target} is not one of --models {','.join(models)}")
        parsed = parse_options([key_value], "--model-option")
        for m in [target] if target else models:
            options[m].update(parsed)
    return options


def trained_steps(run_dir: str | os.PathLike) -> int | None:
    """The last step logged in a run's metrics.csv (the steps actually trained)."""
    try:
        with open(Path(run_dir) / "metrics.csv", newline="") as fh:
            steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("step")]
    except (OSError, ValueError):
        return None
    return max(steps, default=None)


def learning_curve(run_dir: str | os.PathLike, column: str = "PSNR/val") -> tuple[list[int], list[float]]:
    """(steps, values) of one column of a run's metrics.csv, the rows that have it."""
    steps, values = [], []
    try:
        with open(Path(run_dir) / "metrics.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    step, value = int(row["step"]), float(row[column])
                except (KeyError, TypeError, ValueError):  # a row without this column (training scalars)
                    continue
                steps.append(step)
                values.append(value)
    except OSError:
        pass
    return steps, values
