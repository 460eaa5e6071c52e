#!/usr/bin/env python
"""Recipe ablation at equal CPU time: train named candidate recipes, evaluate them alike, write a Markdown table.

Every candidate is the same base settings (one stage of a recipe, by default the first stage of the task's
built-in recipe, or a `--config` file) with one change, trained with the same seed, data and `--max-cpu-minutes` budget (this process's CPU time, so a
busy machine slows a run down but does not shorten it), one after another. Each is then scored by
`pyramidal evaluate` on the built-in validation photographs. Every row comes with the exact commands that
made it, so a reader can redo any row.

    scripts/ablation.py --task noise --cpu-minutes 4 --nice 10 --markdown runs/ablation/noise.md
    scripts/ablation.py --task noise --candidates baseline,dropout0,l1 --cpu-minutes 2

A candidate already finished in --out (its result.json) is not trained again, so a stopped ablation
continues where it stopped. Run it on a quiet machine or with equal `--nice`: CPU time is fair to each
candidate, but memory bandwidth and caches are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's pyramidal, installed or not

from pyramidal.compare import trained_steps  # noqa: E402

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
# The evaluation settings reported per task (`pyramidal evaluate` flags); other tasks use their defaults.
EVAL_FLAGS = {"noise": ["--sigma", "15", "25", "50"], "jpeg": ["--quality", "10"], "pixelate": ["--factor", "8"]}


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
    p.add_argument("--python", default=sys.executable, help="the Python that has pyramidal installed")
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
    from pyramidal.io import to_toml
    from pyramidal.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if not 1 <= args.stage <= len(recipe.stages):
        raise SystemExit(f"--stage {args.stage}: recipe {args.recipe} has stages 1-{len(recipe.stages)}")
    settings = {k: v for k, v in recipe.settings(args.stage - 1).items() if k != "init_weights"}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "base.toml"
    path.write_text(f"# recipe {args.recipe}, stage {args.stage}, without its start weights\n" + to_toml(settings))
    return str(path)


def commands(args: argparse.Namespace, name: str, folder: Path) -> tuple[list[str], list[str]]:
    """(train command, evaluate command) of one candidate; the evaluate one names the run's weights as RUN."""
    pyramidal = [args.python, "-m", "pyramidal"]
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    train = prefix + pyramidal + [
        "train", "--config", args.config, "--task", args.task, "--data", args.data, "--seed", str(args.seed),
        "--threads", str(args.threads), "--max-cpu-minutes", f"{args.cpu_minutes:g}", "--out", str(folder / "runs"),
        "--no-progress", "--log-images", "0", *CANDIDATES[name][1]]
    evaluate = prefix + pyramidal + ["evaluate", "--task", args.task, "--weights", "RUN/best.safetensors",
                                     "--baselines", "none", "--json", str(folder / "evaluate.json"),
                                     *EVAL_FLAGS.get(args.task, [])]
    return train, evaluate


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_candidate(args: argparse.Namespace, name: str, out: Path) -> dict:
    """Train and evaluate one candidate (or read its finished result); returns its result dict."""
    folder = out / name
    done = folder / "result.json"
    if done.is_file():
        print(f"{name}: already done ({done})", flush=True)
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    train, evaluate = commands(args, name, folder)
    print(f"{name}: {shlex.join(train)}", flush=True)
    cpu0, wall0 = child_cpu_seconds(), time.monotonic()
    with open(folder / "train.log", "w") as log:
        code = subprocess.run(train, stdout=log, stderr=subprocess.STDOUT).returncode
    cpu, wall = child_cpu_seconds() - cpu0, time.monotonic() - wall0
    if code != 0:
        raise SystemExit(f"{name}: training failed (exit {code}); see {folder / 'train.log'}")
    run_dir = max((folder / "runs").glob("*/*/*"), key=lambda p: p.name)
    evaluate = [str(run_dir / "best.safetensors") if a == "RUN/best.safetensors" else a for a in evaluate]
    with open(folder / "evaluate.log", "w") as log:
        code = subprocess.run(evaluate, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"{name}: evaluation failed (exit {code}); see {folder / 'evaluate.log'}")
    scores = json.loads((folder / "evaluate.json").read_text())
    psnr = {}
    for setting in scores["settings"]:
        row = next(r for r in setting["rows"] if r["kind"] == "model")
        psnr[setting["label"] or args.task] = row["psnr"]
    sidecar = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else {}
    result = {"name": name, "change": CANDIDATES[name][0], "run_dir": str(run_dir), "psnr": psnr,
              "steps": trained_steps(run_dir), "best_step": sidecar.get("steps"),
              "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
              "train_command": shlex.join(train), "evaluate_command": shlex.join(evaluate)}
    done.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in psnr.items())
          + f" after {result['steps']} steps ({cpu:.0f} CPU s, {wall:.0f} s wall)", flush=True)
    return result


def markdown(args: argparse.Namespace, results: list[dict]) -> str:
    """The table (dB per candidate and setting, Δ against the baseline) and each row's commands."""
    labels = list(results[0]["psnr"]) if results else []
    base = next((r for r in results if r["name"] == "baseline"), None)
    base_settings = f"recipe `{args.recipe}` stage {args.stage}" if args.recipe else f"`{args.config}`"
    lines = [f"Task `{args.task}`, base settings {base_settings}, data `{args.data}`, seed {args.seed}, "
             f"{args.cpu_minutes:g} CPU-minutes of training per candidate ({args.threads} thread(s)); PSNR in dB "
             "on the built-in validation photographs (`pyramidal evaluate`).", "",
             "| candidate | change | steps | " + " | ".join(labels)
             + (" | " + " | ".join(f"Δ {lab}" for lab in labels) if base else "") + " |",
             "|---|---|---:|" + "---:|" * (len(labels) * (2 if base else 1))]
    for r in results:
        cells = [f"{r['psnr'][lab]:.2f}" for lab in labels]
        if base:
            cells += [f"{r['psnr'][lab] - base['psnr'][lab]:+.2f}" for lab in labels]
        lines.append(f"| `{r['name']}` | {r['change']} | {r['steps']} | " + " | ".join(cells) + " |")
    lines += ["", "Commands (`RUN` is the run folder the train command prints):", ""]
    for r in results:
        train = r["train_command"].replace(args.python, "python")
        evaluate = r["evaluate_command"].replace(args.python, "python").replace(r["run_dir"], "RUN")
        lines += [f"- `{r['name']}`: `{train}`; then `{evaluate}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) / args.task
    args.config = base_config(args, out)
    if args.config != str(out / "base.toml"):
        args.recipe = None
    results = []
    print(f"ablation on {args.task}: {len(args.candidates)} candidate(s), {args.cpu_minutes:g} CPU-minutes each, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    for name in args.candidates:
        results.append(run_candidate(args, name, out))
        table = markdown(args, results)
        path = Path(args.markdown) if args.markdown else out / "ablation.md"
        path.write_text(table)  # after every candidate: a stopped ablation still leaves its table
    print("\n" + table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
