"""What every study of the orchestrator does alike: train one run in this process, sum it up, score weights.

`evaluate_weights` is the one place where the studies call `evaluate`: the research comparison, the ablation
and the campaign's scores all go through it.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyramidal.checkpoint import load_weights
from pyramidal.config import TrainConfig
from pyramidal.evaluate import evaluate
from pyramidal.options import EVALUATION
from pyramidal.train import Trainer


def train_run(config: TrainConfig, cache: dict | None = None,
              started: Callable[[Trainer], None] | None = None) -> Trainer:
    """Train one run as `config` says, in this process (`cache`: training data shared between runs; `started`:
    called with the Trainer once its run folder exists, before the first step); returns the Trainer, finished,
    stopped by its budget or interrupted (`trainer.interrupted`)."""
    trainer = Trainer(config, cache=cache)
    if started is not None:
        started(trainer)
    trainer.fit()
    return trainer


def run_summary(trainer: Trainer, wall_seconds: float) -> dict[str, Any]:
    """Steps, rate and best validation PSNR of a finished Trainer run."""
    rates = []
    try:
        with open(trainer.run_dir / "metrics.csv", newline="") as fh:
            rates = [float(r["images_per_s"]) for r in csv.DictReader(fh) if r.get("images_per_s")]
    except OSError:
        pass
    c = trainer.config
    return {
        "run": str(trainer.run_dir), "steps": trainer.step, "planned_steps": c.steps,
        "images": trainer.step * c.batch_size, "seconds": round(wall_seconds, 1),
        "training_seconds": round(trainer.clock.elapsed(), 1),
        "images_per_s": round(statistics.median(rates), 1) if rates else None,
        "best_val_psnr": None if trainer.best_step is None else round(trainer.best_psnr, 4),
        "best_step": trainer.best_step, "val_input_psnr": getattr(trainer, "val_input_psnr", None),
        "stopped_by": "stop request" if trainer.interrupted else (
            "time" if trainer.stopping.out_of_time else "steps"),
        "batch_size": c.batch_size, "lr": c.lr, "warmup_steps": c.warmup_steps,
        "data_on_device": c.data_on_device, "compile": c.compile, "init_weights": c.init_weights,
    }


def train_summary(config: TrainConfig, cache: dict | None = None) -> dict[str, Any]:
    """Train one run (`train_run`); returns its `run_summary`."""
    start = time.monotonic()
    trainer = train_run(config, cache)
    return run_summary(trainer, time.monotonic() - start)


def evaluate_weights(weights: Any, task: str, data: str = "builtin", *, crop: int | None | str = "auto",
                     crops: int | None = None, limit: int | None = None, settings: list[dict] | None = None,
                     baselines: str = "none", device: str = "auto", precision: str = "auto",
                     keep_images: bool = False) -> dict:
    """`evaluate` of one weight file (or "builtin") on the task's evaluation images, as every study scores it."""
    return evaluate(weights, task, data, crop=crop, crops=crops, limit=limit, settings=settings,
                    baselines=baselines, options=EVALUATION.replace(device=device, precision=precision),
                    keep_images=keep_images)


def model_row(setting: dict) -> dict:
    """The trained model's row of one evaluation setting."""
    return next(r for r in setting["rows"] if r["kind"] == "model")


def model_psnr(setting: dict) -> float:
    """The trained model's PSNR in one evaluation setting, to 3 decimals."""
    return round(model_row(setting)["psnr"], 3)


def count_parameters(weights: str | Path) -> int:
    """The parameters of the network in a weight file."""
    return sum(p.numel() for p in load_weights(weights).parameters())
