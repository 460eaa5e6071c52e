"""Recipes: how a weight file is made, in one TOML file that `pyramidal train --recipe NAME` reruns.

A recipe (`pyramidal/recipes/NAME.toml`, or any TOML file given by path) holds the training settings every
stage shares (any `pyramidal train` option, in snake_case) and one `[[stage]]` table per stage, whose keys
override the shared ones for that stage:

    task = "noise"
    model = "pyramidal23456"
    data = "builtin+.data/photos+.data/bsds432"

    [[stage]]
    name = "base"
    steps = 1200
    lr = 1e-3

    [[stage]]
    name = "bsds"
    steps = 20000
    lr = 4e-4

Stage 1 starts from the shared `init_weights` if the recipe gives one: `builtin:TASK` (a shipped file) or
`recipe:OTHER` (what recipe OTHER makes, found in the same output folder). Every later stage starts from the
best weights of the stage before. Each stage trains in its own folder, OUT/NAME/stage-K-NAME/, and a stopped
recipe continues where it stopped when run again: finished stages are not trained again, a stage with a
checkpoint resumes from it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pyramidal.checkpoint import checkpoint_progress
from pyramidal.config import check_options, resolve_config, resume_config
from pyramidal.errors import OptionError, PyramidalError, option_error
from pyramidal.hub import recipe_path
from pyramidal.train import Trainer

RECIPE_PREFIX = "recipe:"
STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# What the runner sets for each stage itself; a recipe may not.
RUNNER_KEYS = ("out", "resume", "config", "recipe", "stage")


@dataclass(frozen=True)
class Recipe:
    """A recipe: its name, the settings its stages share, and each stage's own settings (in order)."""

    name: str
    shared: dict[str, Any]
    stages: tuple[dict[str, Any], ...]
    path: Path | None = field(default=None, compare=False)

    def stage_name(self, index: int) -> str:
        """The folder name of stage `index` (0-based): stage-1-base, stage-2-bsds, ..."""
        own = self.stages[index].get("name")
        return f"stage-{index + 1}" + (f"-{own}" if own else "")

    def settings(self, index: int) -> dict[str, Any]:
        """The training settings of stage `index` (0-based): the shared ones, then the stage's own."""
        stage = {k: v for k, v in self.stages[index].items() if k != "name"}
        merged = {**self.shared, **stage}
        for table in ("task_options", "model_options"):  # tables merge key by key, as --config files do
            if table in self.shared and table in stage:
                merged[table] = {**self.shared[table], **stage[table]}
        return merged


def load_recipe(name: str | os.PathLike) -> Recipe:
    """Read and check a recipe: a shipped name ("noise") or a TOML file."""
    path = recipe_path(name)
    where = f"recipe {name}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PyramidalError(f"{where}: cannot read {path.name}: {exc}") from None
    stages = data.pop("stage", None)
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise PyramidalError(f"{where}: give at least one [[stage]] table")
    for key in RUNNER_KEYS:
        if key in data or any(key in s for s in stages):
            raise PyramidalError(f"{where}: {key} is set by the recipe runner itself; remove it from the recipe",
                                 f"{where}: {key} is set by `train --recipe` itself; remove it from the recipe")
    if any("init_weights" in s for s in stages):
        raise PyramidalError(f"{where}: a stage starts from the stage before; only the shared settings may give "
                             "init_weights (the first stage's start)")
    names = [s.get("name") for s in stages if "name" in s]
    for own in names:
        if not isinstance(own, str) or not STAGE_NAME.fullmatch(own):
            raise PyramidalError(f"{where}: stage name {own!r}: use letters, digits, '-' and '_'")
    if len(set(names)) != len(names):
        raise PyramidalError(f"{where}: two stages have the same name")
    check_options(data, where)
    for i, stage in enumerate(stages):
        check_options({k: v for k, v in stage.items() if k != "name"}, f"{where}, stage {i + 1}")
    return Recipe(path.stem, data, tuple(stages), path)


def parse_stages(text: str | None, count: int) -> range:
    """`--stages K` or `--stages K-L` (1-based, inclusive) as 0-based indices; None: every stage."""
    if text is None:
        return range(count)
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    first, last = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not match or not 1 <= first <= last <= count:
        raise option_error(f"{{stages}}: give K or K-L with 1 <= K <= L <= {count} (the recipe's stages)", stages=text)
    return range(first - 1, last)


def stage_folder(out: str | os.PathLike, recipe: Recipe, index: int) -> Path:
    return Path(out) / recipe.name / recipe.stage_name(index)


def stage_run(folder: Path) -> Path | None:
    """The run folder a stage trained in (the newest one holding a checkpoint), or None."""
    runs = sorted(folder.glob("*/*/*/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def recipe_weights(out: str | os.PathLike, name: str) -> Path:
    """What recipe `name` made in `out`: its last stage's best weights (for `init_weights = "recipe:NAME"`)."""
    other = load_recipe(name)
    run = stage_run(stage_folder(out, other, len(other.stages) - 1))
    progress = checkpoint_progress(run)
    if run is None or not progress or not progress["finished"] or not (run / "best.safetensors").is_file():
        start = f"this recipe starts from what recipe {name} makes: run "
        raise PyramidalError(f"{start}`run_recipe({name!r}, {str(out)!r})` first, or give init_weights "
                             f"(e.g. builtin:{name})",
                             f"{start}`pyramidal train --recipe {name} --out {out}` first, or give --init-weights "
                             f"(e.g. builtin:{name})")
    return run / "best.safetensors"


def run_recipe(name: str | os.PathLike, out: str | os.PathLike = "runs/recipes", stages: str | None = None,
               overrides: dict[str, Any] | None = None, log=print) -> Path:
    """Train a recipe's stages in order, each from the previous stage's best weights; returns the last run folder.

    Args:
        name: a shipped recipe name or a TOML file.
        out: the folder the stages train under (OUT/NAME/stage-K-NAME/).
        stages: "K" or "K-L" to train only those stages (1-based); a first stage after 1 starts from the
            stage before it in `out`, or from `overrides["init_weights"]`.
        overrides: settings given on the command line, for every stage (e.g. threads, device).
        log: where progress lines go.

    Raises:
        PyramidalError: a bad recipe, a missing start, or a stage stopped before its end (run again to go on).
    """
    recipe = load_recipe(name)
    overrides = dict(overrides or {})
    for key in RUNNER_KEYS:
        if key in overrides:
            raise OptionError(f"overrides[{key!r}]: the recipe runner sets it for each stage",
                              f"--{key.replace('_', '-')} and --recipe: the recipe runner sets it for each stage")
    given_start = overrides.pop("init_weights", None)
    selected = parse_stages(stages, len(recipe.stages))
    previous: Path | None = None
    run: Path | None = None
    for index in selected:
        folder = stage_folder(out, recipe, index)
        head = f"recipe {recipe.name}, {recipe.stage_name(index)} ({index + 1}/{len(recipe.stages)})"
        settings = {**recipe.settings(index), **overrides}
        if index == selected[0]:
            start = given_start or (_earlier_stage_weights(out, recipe, index) if index else
                                    recipe.shared.get("init_weights"))
            if start and str(start).startswith(RECIPE_PREFIX):
                start = str(recipe_weights(out, str(start)[len(RECIPE_PREFIX):]))
        else:
            start = str(previous)
        if start:
            settings["init_weights"] = str(start)
        run = stage_run(folder)
        progress = checkpoint_progress(run)
        if progress and progress["finished"]:
            log(f"{head}: trained already ({progress['step']} steps, {run})")
        else:
            if progress:
                log(f"{head}: resuming {run} at step {progress['step']}")
                trainer = Trainer(resume_config(run, overrides))
            else:
                log(f"{head}: training in {folder}")
                trainer = Trainer(resolve_config({**settings, "out": str(folder), "recipe": recipe.name,
                                                  "stage": recipe.stage_name(index)}))
            trainer.fit()
            run = trainer.run_dir
            if trainer.interrupted:
                raise PyramidalError(f"stopped in {head}; run the same command again to continue where it stopped")
        previous = run / "best.safetensors"
    log(f"recipe {recipe.name}: best weights {previous}")
    return run


def _earlier_stage_weights(out: str | os.PathLike, recipe: Recipe, index: int) -> str:
    """The best weights of the stage before `index`, trained in `out`, for a run that starts at stage index+1."""
    run = stage_run(stage_folder(out, recipe, index - 1))
    progress = checkpoint_progress(run)
    if run is None or not progress or not progress["finished"]:
        problem = (f"stage {index + 1} of recipe {recipe.name} starts from stage {index}'s best weights, which "
                   f"{out} does not hold finished; train stage {index} first, or give ")
        raise OptionError(f"stages: {problem}init_weights", f"--stages: {problem}--init-weights")
    return str(run / "best.safetensors")
