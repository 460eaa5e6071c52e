"""The GPU campaign: train a recipe's model at GPU scale in one process, score it against the shipped weights.

`scripts/gpu-campaign.sh` is a thin wrapper over this module (docs/gpu-campaign.md): it checks the CUDA paths,
then calls `plan`, `probe_start`, `train_entry`, `score_entry` and `pack_entry` for each entry under its own
deadline, and writes what they return into the files the device tool brings back.

An entry is one weight file to make: a recipe's task, model, loss, data and task options (the settings of its
last stage, `pyramidal/recipes/NAME.toml`), trained as one run with one cosine schedule at a GPU's batch, with
the learning rate scaled to it, on batches made on the device where the task allows. An entry may change the
architecture (`LABEL=RECIPE` with model options, e.g. a wider pyramid): its file is then a second, named file
beside the task's default.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyramidal.errors import PyramidalError

# Settings that a recipe's stage sets for its CPU run and the campaign sets for its own: its length and time, its
# threads, its checkpoint and log cadence, where it trains and from which weights.
CPU_RUN_KEYS = ("steps", "epochs", "max_minutes", "max_cpu_minutes", "threads", "num_workers", "checkpoint_minutes",
                "checkpoint_every_steps", "log_every", "log_images", "progress", "quiet", "size_schedule",
                "init_weights", "device", "compile", "patches_per_epoch", "batch_size", "lr", "warmup_steps",
                "min_lr", "schedule")
LR_RULES = ("sqrt", "linear")


@dataclass
class Entry:
    """One weight file the campaign makes: `label` names it (the task's name for the default architecture)."""

    label: str
    recipe: str
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    @property
    def changes_architecture(self) -> bool:
        return self.model is not None or bool(self.model_options)


def parse_entries(items: list[str], model_items: list[str] | None = None,
                  option_items: list[str] | None = None) -> list[Entry]:
    """`--train RECIPE` or `--train LABEL=RECIPE` (a second entry of one recipe), `--model LABEL:MODEL` and
    `--model-option LABEL:KEY=VALUE` (or `KEY=VALUE` for every entry), as `pyramidal compare` reads them."""
    from pyramidal.compare import LABEL, parse_model_options
    from pyramidal.recipe import load_recipe

    entries: list[Entry] = []
    for item in items:
        label, sep, recipe = (part.strip() for part in item.partition("="))
        recipe = recipe if sep else label
        if not LABEL.fullmatch(label):
            raise PyramidalError(f"--train {item!r}: expected RECIPE or LABEL=RECIPE (a label of letters, digits, "
                                 "'.', '_', '+' and '-')")
        load_recipe(recipe)  # one line naming the shipped recipes when it is not one
        entries.append(Entry(label, recipe))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise PyramidalError(f"--train {','.join(items)}: a label is given twice (name a second entry LABEL=RECIPE)")
    by_label = {e.label: e for e in entries}
    for item in model_items or []:
        label, sep, model = item.partition(":")
        if not sep or label not in by_label:
            raise PyramidalError(f"--model {item!r}: expected LABEL:MODEL with LABEL one of {', '.join(labels)}")
        from pyramidal.models import MODELS

        MODELS.get(model)
        by_label[label].model = model
    for label, options in parse_model_options(option_items, labels).items():
        by_label[label].model_options.update(options)
    return entries


def base_settings(recipe_name: str) -> dict[str, Any]:
    """What the campaign keeps of a recipe: the settings of its last stage, without those of its CPU run."""
    from pyramidal.recipe import load_recipe

    recipe = load_recipe(recipe_name)
    settings = recipe.settings(len(recipe.stages) - 1)
    base = {k: v for k, v in settings.items() if k not in CPU_RUN_KEYS}
    base["recipe_batch_size"] = settings.get("batch_size", 32)
    base["recipe_lr"] = settings.get("lr", 3e-4)
    base["recipe_min_lr"] = settings.get("min_lr", 0.0)
    base["recipe_warmup_steps"] = settings.get("warmup_steps", 0)
    return base


def scaled_lr(lr: float, batch: int, recipe_batch: int, rule: str = "sqrt") -> float:
    """The learning rate for `batch` from the recipe's (`lr` at `recipe_batch`): ×√k (the square-root rule for
    Adam: the update's noise falls as 1/√B) or ×k (linear, for SGD-like steps; it needs the warm-up)."""
    if rule not in LR_RULES:
        raise PyramidalError(f"--lr-rule {rule!r}: choose one of {', '.join(LR_RULES)}")
    k = batch / recipe_batch
    return lr * (math.sqrt(k) if rule == "sqrt" else k)


def plan(entry: Entry, *, batch_size: int, steps: int, seconds: float, out: str | Path, device: str = "cuda",
         precision: str = "bf16", data: str | None = None, task_options: dict | None = None,
         lr_rule: str = "sqrt", warmup_fraction: float = 0.03, steps_per_epoch: int = 500,
         num_workers: int = 0, init_weights: str | None = None, compile: bool = False,
         overrides: dict | None = None) -> dict[str, Any]:
    """`pyramidal train` settings for one entry: the recipe's, at `batch_size` with the learning rate scaled
    (`lr_rule`), one cosine schedule over `steps` with a warm-up of `warmup_fraction` of them, `seconds` as
    the run's limit (--max-minutes), and batches made on the device when the task allows it.

    `overrides`: any other training options, for every entry (the campaign's --train-option).
    """
    from pyramidal.gpudata import DEVICE_DAMAGE

    base = base_settings(entry.recipe)
    recipe_batch, recipe_lr = base.pop("recipe_batch_size"), base.pop("recipe_lr")
    recipe_min_lr, recipe_warmup = base.pop("recipe_min_lr"), base.pop("recipe_warmup_steps")
    lr = scaled_lr(recipe_lr, batch_size, recipe_batch, lr_rule)
    settings = {
        **base,
        "batch_size": batch_size, "lr": lr, "min_lr": recipe_min_lr * lr / recipe_lr, "schedule": "cosine",
        "warmup_steps": max(min(recipe_warmup, steps // 10), round(warmup_fraction * steps)),
        "steps": max(1, int(steps)), "max_minutes": seconds / 60, "device": device, "precision": precision,
        "patches_per_epoch": batch_size * steps_per_epoch, "out": str(out), "init_weights": init_weights,
        "data_on_device": base["task"] in DEVICE_DAMAGE.names(), "num_workers": num_workers,
        "compile": compile, "log_every": 100, "log_images": 0, "checkpoint_minutes": 1.0, "progress": False,
        "quiet": True, "recipe": entry.recipe, "stage": "gpu-campaign",
    }
    if settings["data_on_device"]:
        settings["num_workers"] = 0
    if data is not None:
        settings["data"] = data
    if task_options:
        settings["task_options"] = {**settings.get("task_options", {}), **task_options}
    if entry.model:
        settings["model"] = entry.model
    if entry.model_options:
        settings["model_options"] = {**settings.get("model_options", {}), **entry.model_options}
    settings.update(overrides or {})
    return settings


# ----------------------------------------------------------------------------------------------------------
# Training in this process


def train_config(settings: dict[str, Any]):
    """The TrainConfig of a run's settings (as `plan` returns them)."""
    from pyramidal.config import resolve_config

    return resolve_config(settings)


def preload(settings: dict[str, Any], cache: dict) -> dict[str, Any]:
    """Read an entry's training data into `cache` (and hold its photographs on the device when its batches are
    made there) before its runs need them, e.g. while the CUDA tests run."""
    from pyramidal.device import resolve_device
    from pyramidal.gpudata import describe
    from pyramidal.train.loaders import cached_device_photos, cached_source

    config = train_config(settings)
    source = cached_source(config, config.size, cache)
    held = {"data": config.data, "source": source.describe()}
    if config.data_on_device:
        held.update(describe(cached_device_photos(config, resolve_device(config.device), cache)))
    return held


def run_summary(trainer, wall_seconds: float) -> dict[str, Any]:
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
            "time" if trainer._out_of_time else "steps"),
        "batch_size": c.batch_size, "lr": c.lr, "warmup_steps": c.warmup_steps,
        "data_on_device": c.data_on_device, "compile": c.compile, "init_weights": c.init_weights,
    }


def train_settings(settings: dict[str, Any], cache: dict | None = None) -> dict[str, Any]:
    """Train one run as `settings` say, in this process; returns its `run_summary`."""
    from pyramidal.train import Trainer

    start = time.monotonic()
    trainer = Trainer(train_config(settings), cache=cache)
    trainer.fit()
    return run_summary(trainer, time.monotonic() - start)


def start_candidates(entry: Entry, task: str) -> list[str | None]:
    """Where an entry can start: from scratch, and from the shipped weights when its architecture is theirs."""
    from pyramidal.hub import available_builtin_weights

    if entry.changes_architecture or task not in available_builtin_weights():
        return [None]
    return [None, f"builtin:{task}"]


def probe_start(settings: dict[str, Any], candidates: list[str | None], seconds: float, out: str | Path,
                cache: dict | None = None, log=print) -> dict[str, Any]:
    """Train from each candidate start for the same number of steps (as many as the first makes in `seconds`)
    at the run's peak learning rate after a short warm-up; the start with the best PSNR/val wins. Also measures
    the rate (images/s) that sizes the real run."""
    results: list[dict[str, Any]] = []
    steps = None
    for start in candidates:
        probe = {**settings, "init_weights": start, "schedule": "none", "out": str(out),
                 "steps": steps or 10**9, "max_minutes": seconds / 60, "checkpoint_minutes": 0.0, "min_lr": 0.0}
        probe["warmup_steps"] = max(1, (steps or 20) // 4)
        summary = train_settings(probe, cache)
        steps = steps or max(1, summary["steps"])
        results.append({"start": start or "scratch", **summary})
        log(f"probe from {start or 'scratch'}: {summary['steps']} steps, PSNR/val {summary['best_val_psnr']} dB, "
            f"{summary['images_per_s']} images/s")
    best = max(results, key=lambda r: r["best_val_psnr"] if r["best_val_psnr"] is not None else -math.inf)
    rates = [r["images_per_s"] for r in results if r["images_per_s"]]
    return {"winner": None if best["start"] == "scratch" else best["start"], "steps": steps, "runs": results,
            "images_per_s": statistics.median(rates) if rates else None}


def flops_ratio(settings: dict[str, Any], reference: str = "pyramidal23456") -> float:
    """The training model's FLOPs per image over `reference`'s (default options), for rates on other models."""
    from pyramidal.bench import count_flops
    from pyramidal.models import create_model

    config = train_config(settings)
    ours = count_flops(create_model(config.model, **config.model_kwargs()), 64, train=True)
    return ours / count_flops(create_model(reference), 64, train=True)


# ----------------------------------------------------------------------------------------------------------
# Scores against the shipped weights


def shipped_scores(task: str) -> dict[str, float]:
    """The shipped weights' PSNR per evaluation setting, as their record holds it."""
    from pyramidal.checkpoint import read_weights_info
    from pyramidal.hub import available_builtin_weights, builtin_weights_path

    if task not in available_builtin_weights():
        return {}
    info = read_weights_info(builtin_weights_path(task))
    return {s["setting"]: s["ours_psnr"] for s in info.get("scores", []) if "ours_psnr" in s}


def score_entry(weights: str | Path, task: str, *, device: str = "auto", precision: str = "auto",
                benchmarks: list[str] | None = None, limit: int | None = None, crop: int | str | None = "auto",
                crops: int | None = None) -> dict[str, Any]:
    """The trained file and the shipped one on the same images: the built-in validation photographs with the
    task's evaluation settings (as the shipped scores were measured), and for noise the benchmark folders by
    the papers' and the file protocol (σ 15, 25, 50, seed 0). `wins`: better on the mean of both."""
    from pyramidal.evaluate import evaluate
    from pyramidal.hub import available_builtin_weights

    shipped = "builtin" if task in available_builtin_weights() else None
    kw = dict(crop=crop, crops=crops, limit=limit, baselines="none", device=device, precision=precision)
    ours = evaluate(str(weights), task, "builtin", **kw)
    rows = []
    theirs = evaluate(shipped, task, "builtin", **kw) if shipped else None
    for i, setting in enumerate(ours["settings"]):
        row = {"setting": setting["label"], "psnr": _model_psnr(setting)}
        if theirs is not None:
            row["shipped_psnr"] = _model_psnr(theirs["settings"][i])
            row["gain"] = round(row["psnr"] - row["shipped_psnr"], 3)
        rows.append(row)
    result: dict[str, Any] = {"validation": rows, "evaluated_on": ours["described"]}
    if benchmarks and task == "noise":
        result["benchmarks"] = _benchmark_rows(weights, shipped, benchmarks, device, precision, limit)
    gains = [r["gain"] for r in rows if "gain" in r] + [r["gain"] for r in result.get("benchmarks", []) if "gain" in r]
    result["mean_gain"] = round(statistics.mean(gains), 3) if gains else None
    result["wins"] = bool(gains) and statistics.mean(gains) > 0
    return result


def _model_psnr(setting: dict) -> float:
    return round(next(r["psnr"] for r in setting["rows"] if r["kind"] == "model"), 3)


def _benchmark_rows(weights, shipped, folders, device, precision, limit) -> list[dict[str, Any]]:
    from pyramidal.benchmark import run_benchmark
    from pyramidal.device import resolve_device, resolve_precision
    from pyramidal.inference.model import load_restorer

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    runs = [run_benchmark(load_restorer(str(w), "noise"), folders, device=dev, precision=prec, limit=limit)
            for w in ([weights, shipped] if shipped else [weights])]
    rows = []
    for i, s in enumerate(runs[0]["sets"]):
        for j, r in enumerate(s["rows"]):
            row = {"set": s["name"], "images": s["images"], "sigma": r["sigma"], "protocol": r["protocol"],
                   "psnr": round(r["psnr"], 3), "input_psnr": round(r["input_psnr"], 3)}
            if len(runs) > 1:
                row["shipped_psnr"] = round(runs[1]["sets"][i]["rows"][j]["psnr"], 3)
                row["gain"] = round(row["psnr"] - row["shipped_psnr"], 3)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------
# The weight file a campaign returns


def pack_entry(entry: Entry, run_dir: str | Path, path: str | Path, *, summary: dict[str, Any],
               scores: dict[str, Any] | None, machine: dict[str, Any]) -> Path:
    """The run's best weights as fp16 with the campaign's record: the recipe, the entry, the device, the
    steps of this run alone (the packager adds the shipped chain's once when it started from them)."""
    from pyramidal.checkpoint import load_weights, save_weights

    model = load_weights(Path(run_dir) / "best.safetensors")
    info = model.info
    device = machine.get("gpu") or machine.get("cpu") or "unknown device"
    record = {
        "task": info.get("task"), "task_options": info.get("task_options", {}), "label": entry.label,
        "recipe": entry.recipe, "parameters": sum(p.numel() for p in model.parameters()),
        "steps": info.get("steps"), "val_psnr_64px": info.get("val_psnr"), "dtype": "float16",
        "trained_on": device, "init_weights": summary.get("init_weights"),
        "campaign": {"device": device, "torch": machine.get("torch"), "cuda": machine.get("cuda"),
                     **{k: summary.get(k) for k in ("steps", "images", "training_seconds", "images_per_s",
                                                    "batch_size", "lr", "warmup_steps", "best_step",
                                                    "data_on_device", "compile", "stopped_by")}},
        "config": {k: v for k, v in info.get("config", {}).items() if k not in ("out", "resume") and v is not None},
    }
    if scores is not None:
        record["campaign_scores"] = scores
    save_weights(model, path, record, half=True)
    return Path(path)
