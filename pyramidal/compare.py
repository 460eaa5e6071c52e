"""Train several models under one budget, seed and data set, evaluate them alike, and tabulate and draw them.

This reproduces the research's comparisons (its "Basic21 / Basic51 / Pyramidal51" figure) with one command.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import time
from pathlib import Path
from typing import Any

from pyramidal.errors import PyramidalError
from pyramidal.io import format_number

PRESETS: dict[str, dict[str, Any]] = {
    # The research's comparison: plain shallow, plain deep, pyramidal (add skips), pyramidal (concat skips).
    "research": {"task": "squares", "models": ["basic21", "basic51", "pyramidal51", "pyramidal51cat"]},
}


def parse_model_options(items: list[str] | None, models: list[str]) -> dict[str, dict]:
    """'KEY=VALUE' (every model) or 'MODEL:KEY=VALUE' (one model) → {model: options}; values as in
    `config.parse_options` (TOML syntax)."""
    from pyramidal.config import parse_options

    options: dict[str, dict] = {m: {} for m in models}
    for item in items or []:
        target, key_value = (item.split(":", 1) if ":" in item.split("=", 1)[0] else (None, item))
        if target is not None and target not in options:
            raise PyramidalError(f"--model-option {item!r}: {target} is not one of --models {','.join(models)}")
        parsed = parse_options([key_value], "--model-option")
        for m in [target] if target else models:
            options[m].update(parsed)
    return options


def trained_steps(run_dir: Path) -> int | None:
    """The last step logged in a run's metrics.csv (the steps actually trained)."""
    import csv

    try:
        with open(run_dir / "metrics.csv", newline="") as fh:
            steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("step")]
    except (OSError, ValueError):
        return None
    return max(steps, default=None)


def _count_parameters(weights: Path) -> int:
    from pyramidal.checkpoint import load_weights

    return sum(p.numel() for p in load_weights(weights).parameters())


def compare(
    models: list[str],
    task: str = "squares",
    *,
    steps: int | None = None,
    budget_minutes: float | None = None,
    data: str = "builtin",
    size: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    out: str | os.PathLike = "runs/compare",
    model_options: dict[str, dict] | None = None,
    train_options: dict[str, Any] | None = None,
    eval_crop: int | None | str = "auto",
    eval_crops: int | None = None,
    eval_limit: int | None = None,
    settings: list[dict] | None = None,
    baselines: str = "fast",
    device: str = "auto",
    precision: str = "auto",
    figure_rows: int = 4,
    log=print,
) -> dict:
    """Train each model (same budget, seed, data), evaluate each on the same images, write table and figure.

    Exactly one of `steps` and `budget_minutes` sets the budget of every model. Returns the results dict
    with 'folder', 'files' (written paths), 'runs' (per model) and 'settings' (merged evaluation rows).
    """
    from pyramidal.config import resolve_config, validate_config
    from pyramidal.evaluate import evaluate
    from pyramidal.train import train

    if not models:
        raise PyramidalError("--models: give at least one model name")
    if len(set(models)) != len(models):
        raise PyramidalError(f"--models {','.join(models)}: a model is listed twice")
    if (steps is None) == (budget_minutes is None):
        raise PyramidalError("give exactly one budget: --steps N or --budget-minutes M")
    if steps is not None and steps < 1 or budget_minutes is not None and budget_minutes <= 0:
        raise PyramidalError("the budget must be positive")
    from pyramidal.models import MODELS

    for name in models:
        MODELS.get(name)  # an unknown name fails before any training
    model_options = model_options or {}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(out) / task / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = Path(out) / task / f"{stamp}-{n}"
    configs = []
    for name in models:
        overrides = {
            **(train_options or {}),
            "task": task, "model": name, "data": data, "size": size, "batch_size": batch_size, "seed": seed,
            "steps": steps, "max_minutes": budget_minutes, "device": device, "precision": precision,
            "out": str(folder / "runs"), "model_options": model_options.get(name, {}),
        }
        if budget_minutes is not None:
            overrides["epochs"] = None
        configs.append(resolve_config(overrides))
        validate_config(dataclasses.replace(configs[-1]))  # every model's options, before any folder or training
    folder.mkdir(parents=True)
    budget = f"{steps} steps" if steps is not None else f"{budget_minutes:g} minutes"
    log(f"compare {', '.join(models)} on {task}: {budget} each, seed {seed}, data {data}, {size} px, "
        f"batch {batch_size}; results in {folder}")

    runs = []
    for name, config in zip(models, configs):
        log(f"\n[{len(runs) + 1}/{len(models)}] training {name}")
        start = time.perf_counter()
        run_dir = Path(train(config))
        seconds = time.perf_counter() - start
        weights = run_dir / "best.safetensors"
        if not weights.exists():
            raise PyramidalError(f"{run_dir}: training wrote no best.safetensors")
        from pyramidal.checkpoint import read_sidecar

        info = read_sidecar(weights)
        runs.append({
            "model": name,
            "options": model_options.get(name, {}),
            "run_dir": str(run_dir),
            "weights": str(weights),
            "train_seconds": round(seconds, 1),
            "steps": trained_steps(run_dir),
            "best_step": info.get("steps"),
            "val_psnr_training": info.get("val_psnr"),
            "parameters": _count_parameters(weights),
        })

    log("\nevaluating")
    merged = None
    kept = []
    for i, run in enumerate(runs):
        result = evaluate(run["weights"], task, data, crop=eval_crop, crops=eval_crops, limit=eval_limit,
                          settings=settings, baselines=baselines if i == 0 else "none", device=device,
                          precision=precision, keep_images=True)
        images = result.pop("images")
        if merged is None:
            merged = copy.deepcopy(result)
            merged["model"] = None
            kept = [{"clean": im["clean"], "damaged": im["damaged"]} for im in images]
            for setting in merged["settings"]:
                setting["rows"] = [r for r in setting["rows"] if r["kind"] != "model"]
        for setting, new_setting, keep, im in zip(merged["settings"], result["settings"], kept, images):
            row = next(r for r in new_setting["rows"] if r["kind"] == "model")
            row.update(model=run["model"], parameters=run["parameters"], steps=run["steps"], best_step=run["best_step"],
                       train_seconds=run["train_seconds"], val_psnr_training=run["val_psnr_training"])
            setting["rows"].append(row)
            keep[run["model"]] = im[row["method"]]
    merged.update(models=models, budget=budget, seed=seed, size=size, batch_size=batch_size, runs=runs,
                  folder=str(folder))
    files = write_outputs(merged, kept, folder, figure_rows)
    merged["files"] = [str(p) for p in files]
    return merged


def format_markdown(result: dict) -> str:
    """Markdown: the setup, then per setting one table of baselines and trained models."""
    lines = [f"### `pyramidal compare` on `{result['task']}`", "",
             f"Budget {result['budget']} per model, seed {result['seed']}, training data {result['data']}, "
             f"{result['size']} px patches, batch {result['batch_size']}.",
             f"Evaluation: {result['described']}.", f"Metrics: {result['metrics']}."]
    for setting in result["settings"]:
        lines += ["", f"**{result['task']}" + (f", {setting['label']}" if setting["label"] else "") + "**", "",
                  "| method | parameters | steps (best at) | train time | PSNR (dB) | SSIM |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in setting["rows"]:
            if r["kind"] == "model":
                extra = f"{r['parameters']:,} | {r['steps']} ({r['best_step']}) | {r['train_seconds']:.0f} s"
                name = f"`{r['model']}`"
            else:
                extra, name = " | | ", r["method"]
            lines.append(f"| {name} | {extra} | {format_number(r['psnr'], 2)} | {format_number(r['ssim'], 4)} |")
    return "\n".join(lines) + "\n"


def format_table(result: dict) -> str:
    """Plain-text version of the results for the terminal."""
    lines = []
    for setting in result["settings"]:
        title = result["task"] + (f" ({setting['label']})" if setting["label"] else "")
        lines += [title, f"  {'method':<44} {'params':>10} {'steps':>6} {'train s':>8} {'PSNR dB':>8} {'SSIM':>7}"]
        for r in setting["rows"]:
            if r["kind"] == "model":
                name, extra = r["model"], f"{r['parameters']:>10,} {r['steps']:>6} {r['train_seconds']:>8.0f}"
            else:
                name, extra = r["method"], f"{'':>10} {'':>6} {'':>8}"
            lines.append(f"  {name:<44} {extra} {format_number(r['psnr'], 2):>8} {format_number(r['ssim'], 4):>7}")
        lines.append("")
    return "\n".join(lines).rstrip()


def write_outputs(result: dict, images: list[dict], folder: Path, figure_rows: int = 4) -> list[Path]:
    """compare.json, compare.md and one figure per setting (ground truth, input, one column per model)."""
    from pyramidal.evaluate import per_image_psnr
    from pyramidal.figures import comparison_figure, file_suffix
    from pyramidal.io import write_json, write_text

    files = [folder / "compare.json", folder / "compare.md"]
    write_json(result, files[0])
    write_text(format_markdown(result), files[1])
    for setting, im in zip(result["settings"], images):
        damaged = next(r for r in setting["rows"] if r["kind"] == "input")
        by_model = {r["model"]: r for r in setting["rows"] if r["kind"] == "model"}
        columns = [("input", im["damaged"], per_image_psnr(damaged))]
        columns += [(m, im[m], per_image_psnr(by_model[m])) for m in result["models"]]
        path = folder / f"compare_{result['task']}{file_suffix(setting['label'])}.png"
        title = (f"{result['task']} {setting['label']}".strip()
                 + f": {result['budget']} each, seed {result['seed']}, {result['data']}")
        comparison_figure(path, im["clean"], columns, names=result["image_names"], rows=figure_rows, title=title)
        files.append(path)
    return files
