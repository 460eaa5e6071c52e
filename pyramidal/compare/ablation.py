"""Recipe ablation at equal CPU time: one base recipe, one change per candidate, each trained for the same
CPU minutes in this process, scored alike on the built-in validation photographs, tabulated against the
baseline.

A candidate's change is a list of `pyramidal train` flags, so that each row of the table comes with the exact
commands that redo it; scripts/ablation.py turns those flags into the run's settings with the CLI's own parser
and calls `run_candidate`. A candidate finished in its folder (its result.json) is not trained again.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from pathlib import Path
from typing import Any

from pyramidal.compare import trained_steps
from pyramidal.compare.runs import evaluate_weights, model_row, train_run
from pyramidal.config import TrainConfig
from pyramidal.errors import PyramidalError, option_wording
from pyramidal.io import to_toml, write_json
from pyramidal.recipe import load_recipe

# name → (what changes, extra `pyramidal train` flags on top of the base recipe).
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the base recipe unchanged", []),
    "dropout0": ("dropout 0 instead of 0.2", ["--dropout", "0"]),
    "l1": ("L1 loss instead of MSE", ["--loss", "l1"]),
    "charbonnier": ("Charbonnier loss instead of MSE", ["--loss", "charbonnier"]),
    "adamw": ("AdamW (decoupled weight decay, same 1e-4) instead of Adam with L2", ["--optimizer", "adamw"]),
    "norm-none": ("no normalisation instead of BatchNorm", ["--model-option", "norm=none"]),
    "norm-layer": ("layer norm instead of BatchNorm", ["--model-option", "norm=layer"]),
    # growth 7: near the dense blocks' CPU time per step (558 vs 453 ms at 64 px, batch 16, bf16, one thread).
    "nafnet": ("NAFNet blocks in the same pyramid (growth 7: 0.35 M parameters, ~1.2× the CPU time per step)",
               ["--model-option", "block=nafnet", "--growth", "7"]),
    # Architecture, at the same CPU time: GFLOPs per 64×64 image (the shipped pyramidal23456: 0.57, 0.80 M).
    "unshuffle": ("FFDNet-style first level: the pyramid on 2×2-unshuffled images (0.16 GFLOPs, 0.81 M)",
                  ["--model-option", "unshuffle=2"]),
    "unshuffle-wide": ("unshuffled and twice as wide, m 48, growth 24 (0.60 GFLOPs, 3.2 M)",
                       ["--model-option", "unshuffle=2", "--m", "48", "--growth", "24"]),
    "wide": ("twice as wide, m 48, growth 24 (2.2 GFLOPs, 3.2 M)", ["--m", "48", "--growth", "24"]),
    "narrow": ("two thirds as wide, m 16, growth 8 (0.26 GFLOPs, 0.36 M)", ["--m", "16", "--growth", "8"]),
    "image": ("predicting the image (tanh) instead of a correction added to the input", ["--no-residual"]),
    "sigma-low": ("noise σ drawn as 130·u² (more mass at low σ) instead of uniform", ["--sigma-dist", "low"]),
    "noise-map": ("an FFDNet-style σ/255 input channel (evaluated given the true σ)",
                  ["--model-option", "noise_map=true"]),
}
DEFAULT_CANDIDATES = ("baseline", "dropout0", "l1", "adamw", "nafnet", "sigma-low")
# The evaluation settings reported per task (task option → values); other tasks use their own settings.
EVAL_OPTIONS: dict[str, dict[str, list]] = {"noise": {"sigma": [15, 25, 50]}, "jpeg": {"quality": [10]},
                                            "pixelate": {"factor": [8]}}


def eval_flags(task: str) -> list[str]:
    """The evaluation settings of `task` as `pyramidal evaluate` flags, e.g. ['--sigma', '15', '25', '50']."""
    return [a for key, values in EVAL_OPTIONS.get(task, {}).items() for a in (f"--{key}", *map(str, values))]


def eval_settings(task: str) -> list[dict] | None:
    """The evaluation settings of `task` as `evaluate` takes them (one option per task here); None: its own."""
    options = EVAL_OPTIONS.get(task)
    return [{key: value} for key, values in options.items() for value in values] if options else None


def write_base(recipe_name: str, stage: int, path: Path) -> Path:
    """The settings of a recipe's stage (1-based), without its start weights, as the TOML file every candidate
    trains with (`--config`)."""
    recipe = load_recipe(recipe_name)
    if not 1 <= stage <= len(recipe.stages):
        raise PyramidalError(*option_wording("{stage=}{value}: recipe {recipe} has stages 1-{count}", "stage",
                                             value=stage, recipe=recipe_name, count=len(recipe.stages)))
    settings = {k: v for k, v in recipe.settings(stage - 1).items() if k != "init_weights"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# recipe {recipe_name}, stage {stage}, without its start weights\n" + to_toml(settings))
    return path


RUN_WEIGHTS = "RUN/best.safetensors"  # the run's weights in an evaluate command written before the run exists


def run_candidate(name: str, config: TrainConfig, folder: Path, *, task: str, train_command: list[str],
                  evaluate_command: list[str], log=print) -> dict[str, Any]:
    """Train one candidate as `config` says (its log in FOLDER/train.log), score its best weights (FOLDER/
    evaluate.json) and write FOLDER/result.json; a finished candidate's result.json is read instead.
    `train_command` and `evaluate_command` are the command lines that redo it (RUN_WEIGHTS for its weights),
    recorded with its result."""
    done = folder / "result.json"
    if done.is_file():
        log(f"{name}: already done ({done})")
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log(f"{name}: {shlex.join(train_command)}")
    cpu0, wall0 = time.process_time(), time.monotonic()
    with open(folder / "train.log", "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        trainer = train_run(config)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    if trainer.interrupted:
        raise PyramidalError("training was stopped; run the ablation again to train it afresh")
    run_dir = trainer.run_dir
    weights = run_dir / "best.safetensors"
    if not weights.is_file():
        raise PyramidalError(f"training wrote no best weights; see {folder / 'train.log'}")
    scores = evaluate_weights(str(weights), task, settings=eval_settings(task), baselines="none")
    write_json(scores, folder / "evaluate.json")
    psnr = {setting["label"] or task: model_row(setting)["psnr"] for setting in scores["settings"]}
    sidecar = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else {}
    result = {"name": name, "change": CANDIDATES[name][0], "run_dir": str(run_dir), "psnr": psnr,
              "steps": trained_steps(run_dir), "best_step": sidecar.get("steps"),
              "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
              "train_command": shlex.join(train_command),
              "evaluate_command": shlex.join(str(weights) if a == RUN_WEIGHTS else a for a in evaluate_command)}
    done.write_text(json.dumps(result, indent=1) + "\n")
    log(f"{name}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in psnr.items())
        + f" after {result['steps']} steps ({cpu:.0f} CPU s, {wall:.0f} s wall)")
    return result


def markdown(results: list[dict], *, task: str, base: str, data: str, seed: int, cpu_minutes: float,
             threads: int, python: str) -> str:
    """The table (dB per candidate and setting, Δ against the baseline) and each row's commands; `base` says
    what the base settings are, `python` is the interpreter named in the commands (written as `python`)."""
    labels = list(results[0]["psnr"]) if results else []
    baseline = next((r for r in results if r["name"] == "baseline"), None)
    lines = [f"Task `{task}`, base settings {base}, data `{data}`, seed {seed}, "
             f"{cpu_minutes:g} CPU-minutes of training per candidate ({threads} thread(s)); PSNR in dB "
             "on the built-in validation photographs (`pyramidal evaluate`).", "",
             "| candidate | change | steps | " + " | ".join(labels)
             + (" | " + " | ".join(f"Δ {lab}" for lab in labels) if baseline else "") + " |",
             "|---|---|---:|" + "---:|" * (len(labels) * (2 if baseline else 1))]
    for r in results:
        cells = [f"{r['psnr'][lab]:.2f}" for lab in labels]
        if baseline:
            cells += [f"{r['psnr'][lab] - baseline['psnr'][lab]:+.2f}" for lab in labels]
        lines.append(f"| `{r['name']}` | {r['change']} | {r['steps']} | " + " | ".join(cells) + " |")
    lines += ["", "Commands (`RUN` is the run folder the train command prints):", ""]
    for r in results:
        train = r["train_command"].replace(python, "python")
        evaluate = r["evaluate_command"].replace(python, "python").replace(r["run_dir"], "RUN")
        lines += [f"- `{r['name']}`: `{train}`; then `{evaluate}`"]
    return "\n".join(lines) + "\n"
