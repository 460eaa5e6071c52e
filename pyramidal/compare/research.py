"""The research's comparisons (`pyramidal compare`): several models under one budget, seed and data set,
evaluated alike, tabulated and drawn.

This reproduces the research's comparisons (its "Basic21 / Basic51 / Pyramidal51" figure) with one command.
A comparison lives in one folder: its plan (plan.json), its training runs (runs/), how far each got
(state.json) and the report (compare.md, compare.json, the picture grid and the learning curves). The same
comparison run again into the same folder carries on where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from pyramidal import __version__
from pyramidal.checkpoint import checkpoint_progress, read_weights_info
from pyramidal.compare import LABEL, learning_curve, trained_steps
from pyramidal.compare.runs import count_parameters, evaluate_weights, model_row, train_run
from pyramidal.config import RESUME_QUIET, resolve_config, resume_config
from pyramidal.configcheck import validate_config
from pyramidal.configfiles import parse_value
from pyramidal.errors import OptionError, PyramidalError, flag_error, option_wording
from pyramidal.evaluate import per_image_psnr
from pyramidal.figures import comparison_figure, file_suffix, line_plot
from pyramidal.io import format_number, read_json, to_toml, write_json, write_text
from pyramidal.models import MODELS
from pyramidal.runstate import RunLock

PLAN_FILE, STATE_FILE = "plan.json", "state.json"
# What makes a comparison what it is: a folder holding one refuses to continue it with other values.
PLAN_KEYS = ("task", "models", "model_options", "steps", "budget_minutes", "data", "size", "batch_size", "seed",
             "train_options")
# Training settings that compare's own flags set alike for every model; --train-option may not change them.
OWN_SETTINGS = ("task", "model", "model_options", "data", "size", "batch_size", "seed", "steps", "max_minutes",
                "epochs", "device", "precision", "out", "resume")


def parse_entries(entries: list[str]) -> list[tuple[str, str]]:
    """`--models` entries → [(label, model)]: 'MODEL', or 'LABEL=MODEL' for another row of an architecture
    (its options then given as `--model-option LABEL:KEY=VALUE`). Labels name rows, never folders."""
    out: list[tuple[str, str]] = []
    for entry in entries:
        label, sep, model = (part.strip() for part in entry.partition("="))
        model = model if sep else label
        if not LABEL.fullmatch(label) or not model:
            raise flag_error("{models=}{entry!r}: expected MODEL or LABEL=MODEL (a label of letters, digits, "
                             "'.', '_', '+' and '-')", "models", entry=entry)
        MODELS.get(model)  # ValueError naming the registered models, before any training
        if label != model and label in MODELS:
            raise flag_error("{models=}{entry!r}: {label} is another model's name; choose another label", "models",
                             entry=entry, label=label)
        out.append((label, model))
    labels = [label for label, _ in out]
    if not out:
        raise flag_error("{models}: give at least one model name", "models")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise flag_error("{models=}{entries}: {label} is listed twice (give a second row of one model a label: "
                         "LABEL=MODEL)", "models", entries=",".join(entries), label=repeated[0])
    return out


def read_plan(folder: str | os.PathLike) -> dict:
    """The plan of the comparison in `folder` (its plan.json); PyramidalError if there is none."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise PyramidalError(*option_wording("{folder}: not a comparison folder (no {plan}) ({resume})", "resume",
                                             folder=folder, plan=PLAN_FILE))
    plan = read_json(path, "comparison plan")
    if not isinstance(plan, dict) or not all(key in plan for key in PLAN_KEYS):
        raise PyramidalError(f"{path}: not a comparison plan written by `pyramidal compare`")
    return plan


def _check_folder(folder: Path, plan: dict) -> bool:
    """True when `folder` holds this very comparison (a resume), False when it is new or empty; else one
    PyramidalError line: another comparison's plan, or a folder with other files in it."""
    if (folder / PLAN_FILE).is_file():
        stored = read_plan(folder)
        new = json.loads(json.dumps(plan))  # as it reads back: tuples become lists
        for key in PLAN_KEYS:
            if stored[key] != new[key]:
                message = f"{folder}: holds a comparison with {key} {json.dumps(stored[key])}, not " \
                          f"{json.dumps(new[key])}; continue it with its own arguments"
                raise PyramidalError(f"{message}, or give another out=",
                                     f"{message} (or `pyramidal compare --resume {folder}`), or give another --out")
        return True
    if folder.exists() and not folder.is_dir():
        raise PyramidalError(*option_wording("{folder}: exists and is not a folder ({out})", "out", folder=folder))
    if folder.is_dir() and any(p.name != RunLock.NAME for p in folder.iterdir()):
        raise PyramidalError(*option_wording("{folder}: exists and holds other files, but no comparison ({plan}); "
                                             "give an empty or new folder as {out}", "out", folder=folder,
                                             plan=PLAN_FILE))
    return False


class _State:
    """state.json of a comparison: each row's run folder (relative to the comparison) and whether it is done."""

    def __init__(self, folder: Path):
        self.path = folder / STATE_FILE
        self.rows: dict[str, dict] = read_json(self.path, "comparison state") if self.path.is_file() else {}

    def run_dir(self, label: str) -> Path | None:
        entry = self.rows.get(label)
        return self.path.parent / entry["run_dir"] if entry else None

    def record(self, label: str, run_dir: Path, done: bool) -> None:
        self.rows[label] = {"run_dir": run_dir.relative_to(self.path.parent).as_posix(), "done": done}
        write_json(self.rows, self.path)


def _train_row(index: int, entries: list, config, state: _State, steps: int | None, resume_overrides: dict,
               log) -> Path:
    """Train one row of the comparison to the budget: skip it when done, resume it from its last.ckpt when
    interrupted, start it afresh otherwise. Returns its run folder."""
    label = entries[index][0]
    head = f"\n[{index + 1}/{len(entries)}] {label}"
    run_dir = state.run_dir(label)
    progress = checkpoint_progress(run_dir)
    if progress and progress["finished"] and (steps is None or progress["step"] >= steps):
        log(f"{head}: trained already ({progress['step']} steps, {run_dir}); not trained again")
        state.record(label, run_dir, done=True)
        return run_dir
    if progress is not None:
        log(f"{head}: resuming {run_dir} at step {progress['step']}")
        config = resume_config(run_dir, resume_overrides)
    else:
        if run_dir is not None and run_dir.is_dir():  # stopped before its first checkpoint: nothing to keep
            log(f"{head}: {run_dir} stopped before its first checkpoint; training afresh")
            shutil.rmtree(run_dir)
        else:
            log(f"{head}: training")
    def started(trainer) -> None:  # a new run: its folder is the row's from its first step
        state.record(label, trainer.run_dir, done=False)

    trainer = train_run(config, started=None if progress is not None else started)
    if trainer.interrupted:
        folder = state.path.parent
        raise PyramidalError(f"stopped while training {label}; call compare again with the same arguments to "
                             "continue where it stopped",
                             f"stopped while training {label}; run the same command again, or `pyramidal compare "
                             f"--resume {folder}`, to continue where it stopped")
    state.record(label, trainer.run_dir, done=True)
    return trainer.run_dir


def _run_record(label: str, model: str, options: dict, run_dir: Path) -> dict:
    """What the report says about one trained row: steps, best step, training time, parameters, weights."""
    weights = run_dir / "best.safetensors"
    if not weights.exists():
        raise PyramidalError(f"{run_dir}: training wrote no best.safetensors")
    info = read_weights_info(weights)
    progress = checkpoint_progress(run_dir) or {}
    return {
        "model": label,
        "architecture": model,
        "options": options,
        "run_dir": str(run_dir),
        "weights": str(weights),
        "train_seconds": round(progress.get("elapsed_s", 0.0), 1),  # summed over resumes
        "steps": progress.get("step", trained_steps(run_dir)),
        "best_step": info.get("steps"),
        "val_psnr_training": info.get("val_psnr"),
        "parameters": count_parameters(weights),
    }


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
    out: str | os.PathLike | None = None,
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
    """Train each model (same budget, seed, data), evaluate each on the same images, write tables and figures.

    `models` are model names, or 'LABEL=MODEL' for another row of one architecture; `model_options` is keyed by
    these labels. Exactly one of `steps` and `budget_minutes` sets the budget of every model. `out` is the
    comparison's folder (default runs/compare/TASK): run again with the same arguments, a comparison carries on
    where it stopped (rows already trained are not trained again, an interrupted one resumes exactly from its
    last checkpoint); other arguments for a folder that holds a comparison are refused.

    Returns the results dict with 'folder', 'files' (written paths), 'runs' (per row), 'curves' (PSNR/val
    against step per row) and 'settings' (merged evaluation rows).
    """
    entries = parse_entries(models)
    labels = [label for label, _ in entries]
    if (steps is None) == (budget_minutes is None):
        raise flag_error("give exactly one budget: {steps=}N or {budget_minutes=}M", "steps", "budget_minutes")
    if steps is not None and steps < 1 or budget_minutes is not None and budget_minutes <= 0:
        raise PyramidalError("the budget must be positive")
    unknown = sorted(set(model_options or {}) - set(labels))
    if unknown:
        raise OptionError(f"model_options[{unknown[0]!r}]: not one of models {','.join(labels)}",
                          f"--model-option {unknown[0]}: not one of --models {','.join(labels)}")
    options = {label: dict((model_options or {}).get(label, {})) for label in labels}
    train_options = dict(train_options or {})
    own = [key for key in OWN_SETTINGS if key in train_options]
    if own:
        raise OptionError(f"train_options[{own[0]!r}]: compare sets it alike for every model; use its own parameter",
                          f"--train-option {own[0]}: compare sets it alike for every model; use its own flag")
    folder = Path(out) if out is not None else Path("runs/compare") / task
    configs = []
    for label, name in entries:
        overrides = {
            **train_options,
            "task": task, "model": name, "data": data, "size": size, "batch_size": batch_size, "seed": seed,
            "steps": steps, "max_minutes": budget_minutes, "device": device, "precision": precision,
            "out": str(folder / "runs"), "model_options": options[label],
        }
        if budget_minutes is not None:
            overrides["epochs"] = None
        configs.append(resolve_config(overrides))
        validate_config(dataclasses.replace(configs[-1]))  # every model's options, before any folder or training
    plan = {
        "task": task,
        "models": [label if label == name else f"{label}={name}" for label, name in entries],
        "model_options": options, "steps": steps, "budget_minutes": budget_minutes, "data": data, "size": size,
        "batch_size": batch_size, "seed": seed,
        # Settings that leave the computation alone (threads, checkpoint cadence) may change between sessions.
        "train_options": {k: v for k, v in train_options.items() if k not in RESUME_QUIET},
    }
    resuming = _check_folder(folder, plan)
    created = []  # folders made here: removed again if a new comparison fails before its first training run
    missing = folder
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    # How it was run and reported: not part of the plan, the defaults of `pyramidal compare --resume DIR`.
    other = {"device": device, "precision": precision, "eval_crop": eval_crop, "eval_crops": eval_crops,
             "eval_limit": eval_limit, "settings": settings, "baselines": baselines, "figure_rows": figure_rows}
    lock = RunLock(folder)  # one process per comparison: a second is refused with one line
    ok = False
    try:
        result = _run(folder, plan, other, entries, configs, resuming, train_options, log)
        ok = True
        return result
    finally:
        lock.release()
        if not ok and not resuming and not (folder / STATE_FILE).exists():
            # Failed before any run folder was made (bad data, say): leave nothing behind.
            for name in (PLAN_FILE, RunLock.NAME):
                (folder / name).unlink(missing_ok=True)
            for path in created:
                try:
                    path.rmdir()
                except OSError:
                    break


def _run(folder: Path, plan: dict, other: dict, entries: list, configs: list, resuming: bool,
         train_options: dict, log) -> dict:
    """`compare` once its arguments are checked and its folder is locked: train, evaluate, write."""
    if not resuming:
        write_json({**plan, "other_settings": other, "written_by": f"pyramidal {__version__} compare"},
                   folder / PLAN_FILE)
    steps = plan["steps"]
    budget = f"{steps} steps" if steps is not None else f"{plan['budget_minutes']:g} minutes"
    log(f"{'resuming the comparison' if resuming else 'compare'} {', '.join(plan['models'])} on {plan['task']}: "
        f"{budget} each, seed {plan['seed']}, data {plan['data']}, {plan['size']} px, batch {plan['batch_size']}; "
        f"results in {folder}")
    state = _State(folder)
    resume_overrides = {"device": other["device"], "precision": other["precision"],
                        **{k: v for k, v in train_options.items() if k in RESUME_QUIET}}
    runs = []
    for index, ((label, name), config) in enumerate(zip(entries, configs)):
        run_dir = _train_row(index, entries, config, state, steps, resume_overrides, log)
        runs.append(_run_record(label, name, plan["model_options"][label], run_dir))
    result, images = _evaluate_runs(runs, plan, other, log)
    result.update(models=[label for label, _ in entries], budget=budget, seed=plan["seed"], size=plan["size"],
                  batch_size=plan["batch_size"], runs=runs, folder=str(folder), command=plan_command(plan, folder),
                  curves={run["model"]: dict(zip(("step", "psnr_val"), learning_curve(run["run_dir"])))
                          for run in runs})
    files = write_outputs(result, images, folder, other["figure_rows"])
    result["files"] = [str(p) for p in files]
    return result


def _evaluate_runs(runs: list[dict], plan: dict, other: dict, log) -> tuple[dict, list[dict]]:
    """Every row's best weights through `evaluate` on the same images; the classical rows once."""
    log("\nevaluating")
    merged: dict | None = None
    kept: list[dict] = []
    for i, run in enumerate(runs):
        result = evaluate_weights(run["weights"], plan["task"], plan["data"], crop=other["eval_crop"],
                                  crops=other["eval_crops"], limit=other["eval_limit"], settings=other["settings"],
                                  baselines=other["baselines"] if i == 0 else "none", device=other["device"],
                                  precision=other["precision"], keep_images=True)
        images = result.pop("images")
        if merged is None:
            merged = copy.deepcopy(result)
            merged["model"] = None
            kept = [{"clean": im["clean"], "damaged": im["damaged"]} for im in images]
            for setting in merged["settings"]:
                setting["rows"] = [r for r in setting["rows"] if r["kind"] != "model"]
        for setting, new_setting, keep, im in zip(merged["settings"], result["settings"], kept, images):
            row = model_row(new_setting)
            row.update(model=run["model"], architecture=run["architecture"], parameters=run["parameters"],
                       steps=run["steps"], best_step=run["best_step"], train_seconds=run["train_seconds"],
                       val_psnr_training=run["val_psnr_training"])
            setting["rows"].append(row)
            keep[run["model"]] = im[row["method"]]
    return merged, kept


def plan_command(plan: dict, folder: str | os.PathLike) -> str:
    """The `pyramidal compare` command line that runs (or continues) this plan into `folder`."""

    def value(v: Any) -> str:  # TOML syntax, as --model-option and --train-option read it; plain words bare
        return v if isinstance(v, str) and parse_value(v) == v else to_toml({"v": v}).strip().removeprefix("v = ")

    args = ["pyramidal", "compare", "--task", plan["task"], "--models", ",".join(plan["models"])]
    args += ["--steps", str(plan["steps"])] if plan["steps"] is not None else \
        ["--budget-minutes", f"{plan['budget_minutes']:g}"]
    args += ["--data", plan["data"], "--size", str(plan["size"]), "--batch-size", str(plan["batch_size"]),
             "--seed", str(plan["seed"])]
    labels = [m.split("=", 1)[0] for m in plan["models"]]
    options = plan["model_options"]
    shared = {k: v for k, v in (options[labels[0]] if labels else {}).items()
              if all(options[label].get(k, object()) == v for label in labels)}
    args += [a for k, v in shared.items() for a in ("--model-option", f"{k}={value(v)}")]
    for label in labels:
        args += [a for k, v in options[label].items() if k not in shared
                 for a in ("--model-option", f"{label}:{k}={value(v)}")]
    args += [a for k, v in plan["train_options"].items() for a in ("--train-option", f"{k}={value(v)}")]
    return shlex.join(args + ["--out", str(folder)])


def _has_holes(result: dict) -> bool:
    """True when the rows carry the hole-only metrics (tasks with holes)."""
    return any("psnr_hole" in r for s in result["settings"] for r in s["rows"])


def format_markdown(result: dict) -> str:
    """Markdown: the setup and the command, per setting one table of classical methods and trained models
    (whole crop and, for tasks with holes, the hole alone), then the figures."""
    holes = _has_holes(result)
    lines = [f"### `pyramidal compare` on `{result['task']}`", "",
             f"Budget {result['budget']} per model, seed {result['seed']}, training data {result['data']}, "
             f"{result['size']} px patches, batch {result['batch_size']}; the weights with the best PSNR/val "
             "of each run are scored.",
             f"Evaluation: {result['described']}.", f"Metrics: {result['metrics']}."
             + (" Hole columns score the damaged pixels alone." if holes else ""),
             "", "```bash", result["command"], "```"]
    hole_head = " hole PSNR (dB) | hole SSIM |" if holes else ""
    for setting in result["settings"]:
        lines += ["", f"**{result['task']}" + (f", {setting['label']}" if setting["label"] else "") + "**", "",
                  f"| method | parameters | steps (best at) | train time | PSNR (dB) | SSIM |{hole_head}",
                  "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if holes else "")]
        for r in setting["rows"]:
            if r["kind"] == "model":
                extra = f"{r['parameters']:,} | {r['steps']} ({r['best_step']}) | {r['train_seconds']:.0f} s"
                name = f"`{r['model']}`"
            else:
                extra, name = " | | ", r["method"]
            hole = f" {format_number(r.get('psnr_hole'), 2)} | {format_number(r.get('ssim_hole'), 4)} |" if holes else ""
            lines.append(f"| {name} | {extra} | {format_number(r['psnr'], 2)} | {format_number(r['ssim'], 4)} |{hole}")
    figures = [Path(p).name for p in result.get("figures", [])]
    if figures:
        lines.append("")
        lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def format_table(result: dict) -> str:
    """Plain-text version of the results for the terminal."""
    holes = _has_holes(result)
    lines = []
    for setting in result["settings"]:
        title = result["task"] + (f" ({setting['label']})" if setting["label"] else "")
        lines += [title, f"  {'method':<44} {'params':>10} {'steps':>6} {'train s':>8} {'PSNR dB':>8} {'SSIM':>7}"
                  + (f" {'hole dB':>8} {'hole SSIM':>9}" if holes else "")]
        for r in setting["rows"]:
            if r["kind"] == "model":
                name, extra = r["model"], f"{r['parameters']:>10,} {r['steps']:>6} {r['train_seconds']:>8.0f}"
            else:
                name, extra = r["method"], f"{'':>10} {'':>6} {'':>8}"
            hole = (f" {format_number(r.get('psnr_hole'), 2):>8} {format_number(r.get('ssim_hole'), 4):>9}"
                    if holes else "")
            lines.append(f"  {name:<44} {extra} {format_number(r['psnr'], 2):>8} {format_number(r['ssim'], 4):>7}"
                         + hole)
        lines.append("")
    return "\n".join(lines).rstrip()


def write_outputs(result: dict, images: list[dict], folder: Path, figure_rows: int = 4) -> list[Path]:
    """The figures (one picture grid per setting: ground truth, input, one column per model; the learning
    curves of every model in one plot), then compare.json and compare.md."""
    figures = []
    for setting, im in zip(result["settings"], images):
        damaged = next(r for r in setting["rows"] if r["kind"] == "input")
        by_model = {r["model"]: r for r in setting["rows"] if r["kind"] == "model"}
        columns = [("input", im["damaged"], per_image_psnr(damaged))]
        columns += [(m, im[m], per_image_psnr(by_model[m])) for m in result["models"]]
        path = folder / f"compare_{result['task']}{file_suffix(setting['label'])}.png"
        title = (f"{result['task']} {setting['label']}".strip()
                 + f": {result['budget']} each, seed {result['seed']}, {result['data']}")
        figures.append(comparison_figure(path, im["clean"], columns, names=result["image_names"], rows=figure_rows,
                                         title=title))
    curves = {label: (c["step"], c["psnr_val"]) for label, c in result["curves"].items() if c["step"]}
    if curves:
        figures.append(line_plot(curves, folder / f"curves_{result['task']}.png", "step",
                                 "PSNR/val (dB, fixed validation crops)",
                                 title=f"{result['task']}: learning curves, {result['budget']} each, "
                                       f"seed {result['seed']}"))
    result["figures"] = [str(p) for p in figures]
    files = [folder / "compare.json", folder / "compare.md"]
    write_json(result, files[0])
    write_text(format_markdown(result), files[1])
    return files + figures
