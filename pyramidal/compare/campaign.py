"""The GPU campaign's training plan: train a recipe's model at GPU scale in one process, score it against the
shipped weights, pack it.

`train_entries` runs each entry in its share of the time left: `plan`, `probe_start`, the run, `score_entry`
and `pack_entry`. `pyramidal.compare.gpucall` (the one call of scripts/gpu-campaign.sh, docs/gpu-campaign.md)
calls it after the CUDA checks and writes what it returns into the files the device tool brings back.

An entry is one weight file to make: a recipe's task, model, loss, data and task options (the settings of its
last stage, `pyramidal/recipes/NAME.toml`), trained as one run with one cosine schedule at a GPU's batch, with
the learning rate scaled to it, on batches made on the device where the task allows. An entry may change the
architecture (`LABEL=RECIPE` with model options, e.g. a wider pyramid): its file is then a second, named file
beside the task's default.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyramidal.bench.measure import count_flops
from pyramidal.benchmark import PAPERS, run_benchmark
from pyramidal.checkpoint import load_weights, save_weights
from pyramidal.compare import LABEL, parse_model_options
from pyramidal.compare.callsettings import LR_RULES, CallSettings
from pyramidal.compare.runs import evaluate_weights, model_psnr, train_summary
from pyramidal.config import TrainConfig, resolve_config
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import OptionError
from pyramidal.gpudata import DEVICE_DAMAGE, describe
from pyramidal.hub import available_builtin_weights
from pyramidal.inference.model import load_restorer
from pyramidal.models import MODELS, create_model
from pyramidal.recipe import load_recipe
from pyramidal.train.loaders import cached_device_photos, cached_source

# Settings that a recipe's stage sets for its CPU run and the campaign sets for its own: its length and time, its
# threads, its checkpoint and log cadence, where it trains and from which weights.
CPU_RUN_KEYS = ("steps", "epochs", "max_minutes", "max_cpu_minutes", "threads", "num_workers", "checkpoint_minutes",
                "checkpoint_every_steps", "log_every", "log_images", "progress", "quiet", "size_schedule",
                "init_weights", "device", "compile", "patches_per_epoch", "batch_size", "lr", "warmup_steps",
                "min_lr", "schedule")


@dataclass
class Entry:
    """One weight file the campaign makes: `label` names it (the task's name for the default architecture);
    `train_options` are its own `pyramidal train` options (the call's `train_option` for it)."""
    label: str
    recipe: str
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)

    @property
    def changes_architecture(self) -> bool:
        return self.model is not None or bool(self.model_options)


def parse_entries(items: list[str], model_items: list[str] | None = None,
                  option_items: list[str] | None = None, train_items: list[str] | None = None) -> list[Entry]:
    """`--train RECIPE` or `--train LABEL=RECIPE` (a second entry of one recipe), `--model LABEL:MODEL`,
    `--model-option LABEL:KEY=VALUE` (or `KEY=VALUE` for every entry), as `pyramidal compare` reads them, and
    `--train-option [LABEL:]KEY=VALUE` the same way."""
    entries: list[Entry] = []
    for item in items:
        label, sep, recipe = (part.strip() for part in item.partition("="))
        recipe = recipe if sep else label
        if not LABEL.fullmatch(label):
            problem = f"{item!r}: expected RECIPE or LABEL=RECIPE (a label of letters, digits, '.', '_', '+' and '-')"
            raise OptionError(f"items: {problem}", f"--train {problem}")
        load_recipe(recipe)  # one line naming the shipped recipes when it is not one
        entries.append(Entry(label, recipe))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        problem = "a label is given twice (name a second entry LABEL=RECIPE)"
        raise OptionError(f"items={items!r}: {problem}", f"--train {','.join(items)}: {problem}")
    by_label = {e.label: e for e in entries}
    for item in model_items or []:
        label, sep, model = item.partition(":")
        if not sep or label not in by_label:
            problem = f"{item!r}: expected LABEL:MODEL with LABEL one of {', '.join(labels)}"
            raise OptionError(f"model_items: {problem}", f"--model {problem}")

        MODELS.get(model)
        by_label[label].model = model
    for label, options in parse_model_options(option_items, labels).items():
        by_label[label].model_options.update(options)
    for label, options in parse_model_options(train_items, labels).items():
        by_label[label].train_options.update(options)
    return entries


def base_settings(recipe_name: str) -> dict[str, Any]:
    """What the campaign keeps of a recipe: the settings of its last stage, without those of its CPU run."""
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
        problem = f"{rule!r}: choose one of {', '.join(LR_RULES)}"
        raise OptionError(f"rule={problem}", f"--lr-rule {problem}")
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


def train_config(settings: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a run's settings (as `plan` returns them)."""
    return resolve_config(settings)


def preload(settings: dict[str, Any], cache: dict) -> dict[str, Any]:
    """Read an entry's training data into `cache` (and hold its photographs on the device when its batches are
    made there) before its runs need them, e.g. while the CUDA tests run."""
    config = train_config(settings)
    source = cached_source(config, config.size, cache)
    held = {"data": config.data, "source": source.describe()}
    if config.data_on_device:
        held.update(describe(cached_device_photos(config, resolve_device(config.device), cache)))
    return held


def train_settings(settings: dict[str, Any], cache: dict | None = None) -> dict[str, Any]:
    """Train one run as `settings` say, in this process; returns its `runs.run_summary`."""
    return train_summary(train_config(settings), cache)


def start_candidates(entry: Entry, task: str) -> list[str | None]:
    """Where an entry can start: from scratch, and from the shipped weights when its architecture is theirs."""
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
    config = train_config(settings)
    ours = count_flops(create_model(config.model, **config.model_kwargs()), 64, train=True)
    return ours / count_flops(create_model(reference), 64, train=True)


# ----------------------------------------------------------------------------------------------------------
# Scores against the shipped weights


def score_entry(weights: str | Path, task: str, *, device: str = "auto", precision: str = "auto",
                benchmarks: list[str] | None = None, limit: int | None = None, crop: int | str | None = "auto",
                crops: int | None = None) -> dict[str, Any]:
    """The trained file and the shipped one on the same images: the built-in validation photographs with the
    task's evaluation settings (as the shipped scores were measured), and for noise the benchmark folders by
    the papers' and the file protocol (σ 15, 25, 50, seed 0). `wins`: better on the mean of both."""
    shipped = "builtin" if task in available_builtin_weights() else None
    kw = dict(crop=crop, crops=crops, limit=limit, baselines="none", device=device, precision=precision)
    ours = evaluate_weights(str(weights), task, "builtin", **kw)
    rows = []
    theirs = evaluate_weights(shipped, task, "builtin", **kw) if shipped else None
    for i, setting in enumerate(ours["settings"]):
        row = {"setting": setting["label"], "psnr": model_psnr(setting)}
        if theirs is not None:
            row["shipped_psnr"] = model_psnr(theirs["settings"][i])
            row["gain"] = round(row["psnr"] - row["shipped_psnr"], 3)
        rows.append(row)
    result: dict[str, Any] = {"validation": rows, "evaluated_on": ours["described"]}
    if benchmarks and task == "noise":
        result["benchmarks"] = _benchmark_rows(weights, shipped, benchmarks, device, precision, limit)
    gains = [r["gain"] for r in rows if "gain" in r] + [r["gain"] for r in result.get("benchmarks", []) if "gain" in r]
    result["mean_gain"] = round(statistics.mean(gains), 3) if gains else None
    result["wins"] = bool(gains) and statistics.mean(gains) > 0
    return result


def _benchmark_rows(weights, shipped, folders, device, precision, limit) -> list[dict[str, Any]]:

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    runs = [run_benchmark(load_restorer(str(w), "noise"), folders,
                          options=PAPERS.replace(device=dev, precision=prec),
                          limit=limit)
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


# ----------------------------------------------------------------------------------------------------------
# The entries, one after another, each in its share of the time left

# Both CPU cores of the machines the shipped weights were trained on, on the same model and patches: 12.8 images/s
# on one idle thread (docs/performance.md, `pyramidal bench --model pyramidal23456 --size 64 --batch-size 16
# --mode both --threads 1`), twice that for two cores (an upper bound: two threads scale less than 2×).
CPU_REFERENCE = {"images_per_s": 25.6, "model": "pyramidal23456", "size": 64,
                 "machine": "AMD EPYC Zen 4, 2 cores (2 × the 1-thread rate of docs/performance.md)"}


def call_plan(s: CallSettings, entry: Entry, device, **kw) -> dict[str, Any]:
    """The entry's `pyramidal train` settings in the call `s`: `plan` at its batch, precision, data, task
    options and the entry's training options."""
    return plan(entry, batch_size=s.batch_size, out=Path(s.work) / entry.label, device=str(device),
                precision=s.precision, data=s.data, task_options=s.task_options(), lr_rule=s.lr_rule,
                steps_per_epoch=s.steps_per_epoch, num_workers=s.workers, compile=s.compile == "on",
                overrides=entry.train_options, **kw)


def entry_files(summary: dict, packed: Path, scores_path: Path) -> list[tuple[Path, str]]:
    """What an entry's archive holds: (path, name inside)."""
    run = Path(summary["run"])
    files = [(packed, packed.name), (packed.with_suffix(".json"), packed.with_suffix(".json").name),
             (scores_path, scores_path.name)]
    files += [(run / n, f"run/{n}") for n in ("config.json", "best.json", "metrics.csv")]
    return files


def train_entries(s: CallSettings, entries: list[Entry], device, machine: dict, guard, out,
                  cache: dict | None = None) -> None:
    """Each entry in turn; one that fails leaves its error in the report and the next one its time. `guard`
    says the time left (`left()`, `stopped`), `out` holds the report and its files (`gpucall.Out`), `cache`
    the training data already read (`preload`)."""
    section = out.report.setdefault("entries", {})
    for i, entry in enumerate(entries):
        record = section.setdefault(entry.label, {"recipe": entry.recipe, "status": "waiting"})
        if guard.stopped:
            record["status"] = "not started: the campaign was stopped"
            continue
        try:
            train_entry(s, entry, len(entries) - i, device, machine, guard, out, record, cache)
        except Exception as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc().splitlines()[-25:])
            out.log(f"{entry.label}: failed: {traceback.format_exc()}")
            out.save()


def train_entry(s: CallSettings, entry: Entry, remaining: int, device, machine: dict, guard, out, record: dict,
                cache: dict | None = None) -> None:
    """One entry: the start probe, the run, its scores and its archive, in its share of the time left."""
    work = Path(s.work)
    share = (guard.left() - s.final_reserve) / remaining
    # The smoke never skips for time: on a loaded CI machine it must still cover every step (the guard ends it).
    if not s.smoke and share < s.probe_seconds + s.score_reserve + 30:
        record.update(status="skipped", reason=f"{share:.0f} s left for it")
        out.log(f"{entry.label}: skipped, {share:.0f} s left for it")
        out.save()
        return
    end = time.monotonic() + share
    settings = call_plan(s, entry, device, steps=1, seconds=share, init_weights=None)
    task = settings["task"]
    record.update(status="probing", task=task, model=settings["model"],
                  model_options=settings.get("model_options", {}))
    out.save()
    candidates = start_candidates(entry, task)
    probe = probe_start(settings, candidates, s.probe_seconds, work / entry.label / "probe", cache, out.log)
    record["probe"] = probe
    if guard.stopped:
        record["status"] = "stopped in the probe"
        return
    rate = probe["images_per_s"] or probe["runs"][0]["steps"] * s.batch_size / max(
        probe["runs"][0]["training_seconds"], 1e-3)
    seconds = max(1.0, end - time.monotonic() - s.score_reserve)  # late (a loaded smoke machine): train briefly
    steps = max(2, int(0.92 * rate * seconds / s.batch_size))
    if s.max_steps:
        steps = min(steps, s.max_steps)
    settings = call_plan(s, entry, device, steps=steps, seconds=seconds, init_weights=probe["winner"])
    record.update(status="training", start=probe["winner"] or "scratch", planned_steps=steps,
                  planned_seconds=round(seconds, 1), settings={k: settings[k] for k in (
                      "batch_size", "lr", "min_lr", "warmup_steps", "steps", "data", "task_options", "loss",
                      "data_on_device", "num_workers", "precision", "compile")})
    out.save()
    out.log(f"{entry.label}: {steps} steps of batch {s.batch_size} at lr {settings['lr']:.2e} in {seconds:.0f} s "
            f"(start: {probe['winner'] or 'scratch'}, {rate:.0f} images/s in the probe)")
    summary = train_settings(settings, cache)
    record["run"] = summary
    if summary["images_per_s"]:  # against both CPU cores on the same model (FLOPs-scaled for another one)
        flops = flops_ratio(settings)
        summary["times_cpu"] = round(summary["images_per_s"] * flops / CPU_REFERENCE["images_per_s"], 1)
    out.log(f"{entry.label}: {summary['steps']} steps, {summary['images_per_s']} images/s "
            f"(×{summary.get('times_cpu')} both CPU cores), best PSNR/val {summary['best_val_psnr']} dB "
            f"(stopped by {summary['stopped_by']})")
    if summary["best_step"] is None:
        record["status"] = "no weights"
        out.save()
        return
    scores = None
    if not guard.stopped and (s.smoke or guard.left() > s.score_reserve / 2):
        record["status"] = "scoring"
        out.save()
        run_best = Path(summary["run"]) / "best.safetensors"
        scores = score_entry(run_best, task, device=str(device), precision=s.precision,
                             benchmarks=s.benchmark or None, limit=s.eval_limit, crop=s.eval_crop,
                             crops=s.eval_crops)
        record["scores"] = scores
        out.log(f"{entry.label}: " + ", ".join(
            f"{r['setting'] or task} {r['psnr']:.2f}" + (f" ({r['gain']:+.2f})" if "gain" in r else "")
            for r in scores["validation"]) + f"; wins: {scores['wins']}")
    packed = pack_entry(entry, summary["run"], work / "weights" / f"{entry.label}.safetensors",
                        summary=summary, scores=scores, machine=machine)
    scores_path = work / "weights" / f"{entry.label}-scores.json"
    scores_path.write_text(json.dumps({"entry": record, "machine": machine, "argv": out.report["argv"]},
                                      indent=2, default=str) + "\n")
    record["archive"] = out.archive(f"{entry.label}.tar", entry_files(summary, packed, scores_path))
    record["status"] = "done" if not guard.stopped else "stopped by the time guard"
    out.save()
