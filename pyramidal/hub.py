"""The hub: built-in weights and recipes, and `create_model` with `pretrained=` (timm's _factory over _hub).

Everything that finds a shipped file lives here: the weights folder and what it holds (`WEIGHTS_DIR`,
`available_builtin_weights`, `builtin_weights_path`), where `--weights` and `--init-weights` point
(`resolve_weights`, `resolve_init_weights`), the pretrained names (`list_pretrained`, `load_pretrained`),
and the recipes folder (`RECIPES_DIR`, `list_recipes`, `recipe_path`). The model zoo below builds fresh
weights only; `create_model` here adds `pretrained=` on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from torch import nn

from pyramidal import models
from pyramidal.checkpoint import load_weights, read_weights_info, weights_file
from pyramidal.damage import TASKS
from pyramidal.errors import OptionError, PyramidalError, command_line

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
BUILTIN_PREFIX = "builtin:"


# --------------------------------------------------------------------------- recipes


def list_recipes() -> list[str]:
    """The recipes shipped with the package, by name (one per task with built-in weights)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml")) if RECIPES_DIR.is_dir() else []


def recipe_path(name: str | os.PathLike) -> Path:
    """The TOML file of a recipe: a shipped name, or a path to a file."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    if str(name) in list_recipes():
        return RECIPES_DIR / f"{name}.toml"
    raise PyramidalError(f"recipe {name}: no such recipe file or shipped recipe; shipped: {', '.join(list_recipes())}")


# --------------------------------------------------------------------------- built-in weights


def available_builtin_weights() -> list[str]:
    """The tasks that have built-in weights shipped inside the package.

    Returns:
        Sorted task names, e.g. `["block", "blur", "grid", ...]`; empty if none are installed.
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def builtin_weights_path(task: str) -> Path:
    """The weight file shipped for `task`.

    Args:
        task: a damage task name, e.g. "noise".

    Returns:
        The path of `pyramidal/weights/<task>.safetensors`.

    Raises:
        PyramidalError: no built-in weights for `task` (the message lists those that exist).
        ValueError: `task` is not a registered task name (it is never taken as a path).
    """
    TASKS.get(task)
    path = WEIGHTS_DIR / f"{task}.safetensors"
    if path.exists():
        return path
    have = available_builtin_weights()
    listing = ", ".join(have) if have else "none are installed in this copy of pyramidal"
    if task in list_recipes():  # a recipe whose weights are not shipped yet
        message = f"no built-in weights for {task} ({listing}); train them with "
        weights = "and pass the last stage's best.safetensors as the weights"
        raise PyramidalError(f"{message}`pyramidal.recipe.run_recipe({task!r})` {weights}",
                             f"{message}`pyramidal train --recipe {task}` {weights}")
    raise PyramidalError(
        f"no built-in weights for task {task!r} ({listing}); "
        "pass a .safetensors file written by `pyramidal train` instead"
    )


def resolve_weights(weights: str | os.PathLike, task: str | None) -> Path:
    """Where to load weights from.

    Args:
        weights: "builtin" (the file shipped for `task`), a `.safetensors` file, or a folder holding
            `model.safetensors` + `config.json` (Hugging Face style) or `best.safetensors` (a training run).
        task: the damage task; needed for "builtin".

    Returns:
        The path of the `.safetensors` file.

    Raises:
        PyramidalError: "builtin" without a task or without weights for it, or nothing at the path.
    """
    if str(weights) == "builtin":
        if not task:
            raise OptionError("weights='builtin' needs task= to know which weights to use",
                              "--weights builtin needs --task to know which weights to use")
        try:
            return builtin_weights_path(task)
        except PyramidalError as exc:
            raise OptionError(f"weights='builtin': {exc}", f"--weights builtin: {command_line(exc)}") from None
    return weights_file(weights)


def resolve_init_weights(path: str | os.PathLike) -> Path:
    """`--init-weights` as a path: `builtin:TASK` is the weight file shipped for TASK (as squares' recipe starts
    from `builtin:inpaint`); anything else is a path as given."""
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        task = text[len(BUILTIN_PREFIX):]
        try:
            return builtin_weights_path(task)
        except (PyramidalError, ValueError) as exc:
            raise OptionError(f"init_weights={text!r}: {exc}", f"--init-weights {text}: {command_line(exc)}") from None
    return Path(path)


# --------------------------------------------------------------------------- pretrained names


def list_pretrained(filter: str = "*") -> list[str]:
    """The pretrained weights that ship inside the package, named `ARCHITECTURE.TASK`.

    Args:
        filter: an fnmatch pattern over the names, e.g. "*noise" or "pyramidal23456.*".

    Returns:
        Sorted names such as "pyramidal23456.noise"; pass one to `create_model(name, pretrained=True)`.
    """
    names = [f"{read_weights_info(builtin_weights_path(task))['model']}.{task}" for task in available_builtin_weights()]
    return sorted(n for n in names if fnmatch(n, filter))


def _shipped_for(architecture: str) -> list[str]:
    """Tasks whose built-in weights are for `architecture`."""
    return [name.split(".", 1)[1] for name in list_pretrained(f"{architecture}.*")]


def pretrained_path(name: str, pretrained: bool | str | os.PathLike) -> Path:
    """The weight file that `create_model(name, pretrained=...)` loads.

    Args:
        name: an architecture ("pyramidal23456") or a pretrained name ("pyramidal23456.noise").
        pretrained: True (the built-in weights for this architecture, or for the task in `name`), a task
            name ("noise"), or a path: a `.safetensors` file or a folder with `model.safetensors` +
            `config.json`.

    Returns:
        The path of the `.safetensors` file.

    Raises:
        PyramidalError: no such task or file, or True where no single built-in file fits.
    """
    architecture, _, tag = name.partition(".")
    if pretrained is True:
        if tag:
            return builtin_weights_path(tag)
        tasks = _shipped_for(architecture)
        if len(tasks) == 1:
            return builtin_weights_path(tasks[0])
        if tasks:
            raise PyramidalError(
                f"pretrained=True: {architecture} has built-in weights for several tasks ({', '.join(tasks)}); "
                f"choose one: create_model({architecture!r}, pretrained={tasks[0]!r}) "
                f"or create_model('{architecture}.{tasks[0]}', pretrained=True)")
        raise PyramidalError(
            f"pretrained=True: no built-in weights for {architecture}; shipped: {', '.join(list_pretrained())}; "
            "or pass pretrained=PATH (a .safetensors file or a model.safetensors + config.json folder)")
    if isinstance(pretrained, (str, os.PathLike)):
        text = str(pretrained)
        if text in available_builtin_weights() and not Path(text).exists():
            return builtin_weights_path(text)
        if not Path(text).exists():
            raise PyramidalError(
                f"pretrained={text!r}: neither a built-in task ({', '.join(available_builtin_weights())}) "
                "nor an existing weights file or folder")
        return weights_file(text)
    raise TypeError(f"pretrained must be True, False, a task name or a path, not {type(pretrained).__name__}")


def load_pretrained(name: str, pretrained: bool | str | os.PathLike = True, **options: Any) -> nn.Module:
    """Build `name` with pretrained weights; what `create_model(name, pretrained=...)` does.

    Args:
        name: an architecture ("pyramidal23456") or a pretrained name ("pyramidal23456.noise").
        pretrained: True, a task name or a path (see `pretrained_path`).
        **options: model options to change that leave the weights' shapes alone (dropout, memory_efficient).

    Returns:
        The model in eval mode on the CPU, `model.info` holding the weights' record (task, scores, licence).
        Call `.train()` to fine-tune it.

    Raises:
        PyramidalError: the weights are for another architecture, or cannot be found or read.
    """
    architecture = name.partition(".")[0]
    models.MODELS.get(architecture)  # an unknown name fails here, listing the registered ones
    path = pretrained_path(name, pretrained)
    model = load_weights(path, **options)
    if model.info["model"] != architecture:
        raise PyramidalError(f"{path}: these weights are for {model.info['model']}, not {architecture}; "
                             f"use create_model({model.info['model']!r}, pretrained=...)")
    model.weights_path = str(path)
    return model


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **options: Any) -> nn.Module:
    """Build a registered model, optionally with trained weights (as timm's `create_model`).

    Args:
        name: a registered architecture ("pyramidal23456"; `list_models()`), or a pretrained name
            "ARCHITECTURE.TASK" ("pyramidal23456.noise"; `list_pretrained()`).
        pretrained: False builds fresh weights. True loads the built-in weights for the task in `name`, or
            for the architecture when exactly one built-in file fits; a task name ("noise") picks that task's
            built-in weights; a path loads a `.safetensors` file or a folder with `model.safetensors` +
            `config.json` (the weights must be for `name`'s architecture).
        **options: the architecture's options (e.g. `growth=8`, `down="maxpool"`, `memory_efficient=True`);
            with `pretrained`, only options that leave the weights' shapes unchanged.

    Returns:
        The model; `model.spec` records name and options so that it can be rebuilt exactly. Fresh models
        are in training mode; pretrained ones in eval mode with `model.info` (task, scores, licence).
    """
    if pretrained is not False and pretrained is not None:
        return load_pretrained(name, pretrained, **options)
    return models.create_model(name, **options)


def list_models(filter: str | Sequence[str] = "", pretrained: bool = False) -> list[str]:
    """Names of the registered models.

    Args:
        filter: an fnmatch pattern ("pyramidal4*") or several; empty for every model.
        pretrained: only the architectures that have built-in weights.

    Returns:
        Sorted model names.
    """
    names = models.list_models(filter)
    if pretrained:
        shipped = {n.split(".", 1)[0] for n in list_pretrained()}
        names = [n for n in names if n in shipped]
    return names
