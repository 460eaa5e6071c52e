"""Self-contained weight files and training checkpoints.

A `.safetensors` weight file carries everything needed to rebuild its model in its own metadata (safetensors
metadata maps strings to strings, so the record is stored JSON-encoded under the key "pyramidal"): the
architecture name and options, the task, scores and provenance. A JSON sidecar beside it (`best.json` for
`best.safetensors`) is a human-readable copy; older files that only have the sidecar still load. A Hugging
Face-style folder (`model.safetensors` + `config.json`) loads too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyramidal.errors import OptionError, PyramidalError, command_line
from pyramidal.io import atomic_write, jsonable, read_json, special_file
from pyramidal.models import check_model, create_model

# The safetensors metadata key holding the JSON-encoded record (architecture, options, task, scores, ...).
METADATA_KEY = "pyramidal"
# A folder in the shape `from_pretrained` users carry around.
FOLDER_WEIGHTS = "model.safetensors"
FOLDER_CONFIG = "config.json"


def sidecar_path(weights: str | os.PathLike) -> Path:
    """The JSON sidecar of a weight file: `best.safetensors` → `best.json`.

    Args:
        weights: path of a `.safetensors` file.

    Returns:
        The sidecar's path (it may not exist).
    """
    return Path(weights).with_suffix(".json")


def weights_file(path: str | os.PathLike) -> Path:
    """The weight file that `path` names: the file itself, or inside a folder `model.safetensors`
    (Hugging Face style) or `best.safetensors` (a training run).

    Args:
        path: a `.safetensors` file or a folder holding one.

    Returns:
        The path of the `.safetensors` file.

    Raises:
        PyramidalError: nothing to load there.
    """
    path = Path(path)
    if path.is_dir():
        for name in (FOLDER_WEIGHTS, "best.safetensors"):
            if (path / name).is_file():
                return path / name
        raise PyramidalError(f"{path}: folder holds no {FOLDER_WEIGHTS} (with {FOLDER_CONFIG}) or best.safetensors")
    if not path.exists():
        raise PyramidalError(f"{path}: no such weights file")
    if special_file(path):  # opening a FIFO would wait for a writer
        raise PyramidalError(f"{path}: not a regular file ({special_file(path)}); not a weights file")
    return path


def _state_for_saving(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    return state


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike, info: dict[str, Any],
               sidecar: bool = True) -> None:
    """Write tensors and their record to one self-contained `.safetensors` file, atomically.

    Args:
        state: tensor name → tensor, written as they are (dtype and bytes unchanged).
        path: the `.safetensors` file to write.
        info: the record; must name the architecture (`"model"`) and may hold `options`, `task`, scores,
            provenance... Any JSON-serialisable values.
        sidecar: also write the record as indented JSON beside the file (`<stem>.json`), for people to read.

    Returns:
        None.
    """
    from safetensors.torch import save_file

    if "model" not in info:
        raise ValueError("the record of a weight file must name its model")
    record = jsonable(info)
    header = {"format": "pt", "model": str(info["model"]), METADATA_KEY: json.dumps(record, ensure_ascii=False)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))
    if sidecar:
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None, half: bool = False) -> None:
    """Write `model`'s weights and everything needed to rebuild it into one `.safetensors` file.

    Args:
        model: a model built by `pyramidal.create_model` (it carries `model.spec`: name and options).
        path: the `.safetensors` file to write (a JSON sidecar copy of the record is written beside it).
        metadata: more of the record: task, steps, scores, licence, provenance...
        half: store floating-point tensors as float16 (half the size; loading converts back).

    Returns:
        None.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model has no .spec; build it with pyramidal.create_model")
    save_state(_state_for_saving(model, half), path, {**spec, **(metadata or {})})


def save_pretrained(model: nn.Module, folder: str | os.PathLike, metadata: dict | None = None,
                    half: bool = False) -> Path:
    """Write a Hugging Face-style folder: `model.safetensors` (self-contained) plus `config.json`.

    Args:
        model: a model built by `pyramidal.create_model`.
        folder: the folder to write (created if needed).
        metadata: more of the record (task, scores, ...), as for `save_weights`.
        half: store floating-point tensors as float16.

    Returns:
        The folder's path; `create_model(name, pretrained=folder)` and `--weights folder` load it.
    """
    folder = Path(folder)
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model has no .spec; build it with pyramidal.create_model")
    info = {**spec, **(metadata or {})}
    save_state(_state_for_saving(model, half), folder / FOLDER_WEIGHTS, info, sidecar=False)
    text = json.dumps(jsonable(info), indent=2, ensure_ascii=False) + "\n"
    atomic_write(folder / FOLDER_CONFIG, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder


def _embedded_info(path: Path) -> dict | None:
    """The record stored in the file's own metadata, or None for a file written before it was embedded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise PyramidalError(f"{path}: not a readable safetensors file ({exc})") from None
    if METADATA_KEY not in header:
        return None
    try:
        info = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise PyramidalError(f"{path}: unreadable {METADATA_KEY!r} metadata ({exc})") from None
    if not isinstance(info, dict) or "model" not in info:
        raise PyramidalError(f"{path}: its {METADATA_KEY!r} metadata does not name a model")
    return info


def read_weights_info(path: str | os.PathLike) -> dict:
    """The record of a weight file: architecture, options, task, scores, provenance.

    Read from the file's own metadata; for a file without it, from its JSON sidecar (`best.json`), or from
    `config.json` beside a `model.safetensors`. Only the header is read, not the tensors.

    Args:
        path: a `.safetensors` file, or a folder holding `model.safetensors` or `best.safetensors`.

    Returns:
        The record as a dict; it always has `"model"` (the architecture name).

    Raises:
        PyramidalError: unreadable file, or no record anywhere.
    """
    if Path(path).suffix == ".ckpt":
        return _checkpoint_info(load_checkpoint(path), path)
    path = weights_file(path)
    info = _embedded_info(path)
    if info is not None:
        return info
    candidates = [sidecar_path(path)]
    if path.name == FOLDER_WEIGHTS:
        candidates.append(path.parent / FOLDER_CONFIG)
    for side in candidates:
        if side.exists():
            info = read_json(side, "sidecar")
            if not isinstance(info, dict) or "model" not in info:
                raise PyramidalError(f"{side}: sidecar does not name a model")
            return info
    raise PyramidalError(f"{path}: no architecture recorded (neither in the file's metadata nor in a sidecar "
                         f"{candidates[0].name}); was it written by `pyramidal train`?")


# The name the commands and older code use: the record, wherever it is stored.
read_sidecar = read_weights_info


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PyramidalError(f"{path}: not a readable safetensors file ({exc})") from None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy weights into a model, naming exactly what does not match.

    Args:
        model: the model to fill.
        state: tensor name → tensor (any float dtype; converted to the model's).
        source: where the weights came from, for messages.

    Returns:
        None.

    Raises:
        PyramidalError: missing, unexpected or differently shaped tensors (counted, with an example each), or
        tensors holding NaN or infinity (weights of a diverged run restore black images).
    """
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise PyramidalError(f"{source}: {len(broken)} tensor(s) hold NaN or infinity (e.g. {broken[0]}); these "
                             "weights are broken (a diverged run?) and cannot restore anything")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        model_name = getattr(model, "spec", {}).get("model", type(model).__name__)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
        raise PyramidalError(f"{source}: weights do not match model {model_name}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_weights(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild the model a weight file describes and load its weights (eval mode).

    Args:
        path: a `.safetensors` file (self-contained, or with an older JSON sidecar), or a folder holding
            `model.safetensors` + `config.json` (Hugging Face style) or `best.safetensors` (a training run).
        **overrides: model options to change, e.g. `memory_efficient=True` (options that change the weights'
            shapes fail with a message naming the mismatch).

    Returns:
        The model in eval mode on the CPU, float32, with `model.info` holding the file's record.

    Raises:
        PyramidalError: missing or unreadable file, no record, or weights that do not fit the architecture.
    """
    if Path(path).suffix == ".ckpt":
        return _model_from_checkpoint(Path(path), overrides)
    path = weights_file(path)
    info = read_weights_info(path)
    model = build_recorded_model(info, path, overrides)
    load_state_into(model, _read_state(path), str(path))
    model.info = info
    return model.eval()


def recorded_spec(info: Any, source: str | os.PathLike, check: bool = False) -> dict:
    """{"model": name, "options": {...}} from a weight file's or checkpoint's record.

    A malformed record is a PyramidalError naming `source`; with `check`, so are options the model does not
    accept (types, limits, size; nothing is built), so that a bad file is refused when it is first named.
    """
    if not isinstance(info, dict) or not isinstance(info.get("model"), str):
        model = info.get("model") if isinstance(info, dict) else info
        raise PyramidalError(f"{source}: the record's model must be a model name, got {model!r}")
    options = info.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise PyramidalError(f"{source}: the record's options must be a table of model options, got {options!r}")
    if check:
        try:
            check_model(info["model"], **options)
        except ValueError as exc:  # OptionError, unknown model names
            raise PyramidalError(f"{source}: {exc}") from None
    return {"model": info["model"], "options": options}


def build_recorded_model(spec: dict, source: str | os.PathLike, overrides: dict | None = None) -> nn.Module:
    """`create_model` from a file's record ({"model": name, "options": {...}}); a bad record names the file.

    The options are validated (types, limits, size) before anything is allocated, so a damaged or hostile
    record gives one line instead of a torch error or a huge allocation.
    """
    spec = recorded_spec(spec, source)
    try:
        return create_model(spec["model"], **{**spec["options"], **(overrides or {})})
    except ValueError as exc:  # OptionError, unknown model names
        raise PyramidalError(f"{source}: {exc}") from None


def _model_from_checkpoint(path: Path, overrides: dict) -> nn.Module:
    """The weights in a training checkpoint as a model for inference: the EMA weights if the run kept
    them (they are what its validation scored), else the trained ones; `model.info` from its config."""
    saved = load_checkpoint(path)
    spec = saved.get("spec") or {}
    model = build_recorded_model(spec, path, overrides)
    state = saved.get("ema") or saved.get("model")
    if not isinstance(state, dict):
        raise PyramidalError(f"{path}: checkpoint holds no model weights")
    load_state_into(model, state, str(path))
    model.info = _checkpoint_info(saved, path)
    return model.eval()


def _checkpoint_info(saved: dict, path: str | os.PathLike) -> dict:
    """A training checkpoint's record, shaped like a weight file's: architecture, options, task, steps."""
    spec = saved.get("spec") or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise PyramidalError(f"{path}: checkpoint does not name its model")
    config = saved.get("config") or {}
    return {**spec, "task": config.get("task"), "steps": saved.get("step"), "checkpoint": str(path)}


# ----------------------------------------------------------------------------------------------------------
# Training checkpoints: one torch.save dict of tensors and plain types, loadable with weights_only=True.

CHECKPOINT_FORMAT = "pyramidal-train-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write a training checkpoint, loadable with `torch.load(weights_only=True)`.

    Args:
        path: the `.ckpt` file to write.
        state: tensors and plain Python types only (model, optimizer, RNG states, counters).

    Returns:
        None.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint safely (`weights_only=True`).

    Args:
        path: a `.ckpt` file written by `save_checkpoint`.

    Returns:
        The checkpoint's dict.

    Raises:
        PyramidalError: missing, truncated, corrupt, foreign or newer-version files.
    """
    path = Path(path)
    if not path.exists():
        raise PyramidalError(f"{path}: no such checkpoint")
    if special_file(path):
        raise PyramidalError(f"{path}: not a regular file ({special_file(path)}); not a checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, disallowed global: all mean "not loadable"
        if "weights only load failed" in str(exc).lower():
            # torch's own text suggests the unsafe weights_only=False; it is not quoted on purpose.
            raise PyramidalError(
                f"{path}: holds Python objects that pyramidal refuses to load (a checkpoint written by "
                "`pyramidal train` holds only tensors and plain values); it was not written by pyramidal, "
                "or it was altered"
            ) from None
        size = path.stat().st_size
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise PyramidalError(
            f"{path}: truncated or corrupt checkpoint ({size} bytes; {reason}); "
            "resume from an intact copy or restart the run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise PyramidalError(f"{path}: not a pyramidal training checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise PyramidalError(
            f"{path}: checkpoint version {state['version']} is newer than this pyramidal "
            f"(reads up to {CHECKPOINT_VERSION})"
        )
    return state


def describe_spec(spec: dict) -> str:
    """A model spec as `name(opt=value, ...)`, for messages.

    Args:
        spec: {"model": name, "options": {...}}.

    Returns:
        The text.
    """
    options = spec.get("options") or {}
    return spec.get("model", "?") + "(" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")"


def load_checkpoint_model(saved: dict, model: nn.Module, source: str) -> None:
    """Load a checkpoint's weights into `model`, refusing another architecture with a message naming both.

    Options that leave the weights unchanged (dropout, memory_efficient) may differ; the model name may not.

    Args:
        saved: a checkpoint dict with "spec" and "model" (the state dict).
        model: the model to fill.
        source: the file, for messages.

    Returns:
        None.
    """
    own = getattr(model, "spec", None) or {"model": type(model).__name__, "options": {}}
    spec = recorded_spec(saved.get("spec") or {"model": "?"}, source)
    if spec.get("model") != own.get("model"):
        raise PyramidalError(
            f"{source}: checkpoint is for {describe_spec(spec)}, but this run builds {describe_spec(own)}; "
            "different architectures"
        )
    try:
        load_state_into(model, saved["model"], source)
    except PyramidalError as exc:
        raise PyramidalError(
            f"{exc} (checkpoint: {describe_spec(spec)}; this run: {describe_spec(own)})"
        ) from None


def load_init_weights(model: nn.Module, path: str) -> None:
    """Start from weights in a .safetensors file, a .ckpt or a folder (its model.safetensors or best weights).

    Args:
        model: the model to fill (its architecture must match the file's).
        path: a `.safetensors` file, a `.ckpt` training checkpoint, or a run / Hugging Face-style folder
            (`hub.resolve_init_weights` turns `builtin:TASK` into the shipped file first).

    Returns:
        None.
    """
    p = Path(path)
    if p.suffix == ".ckpt":
        saved = load_checkpoint(p)
    else:
        try:
            p = weights_file(p)
        except PyramidalError as exc:
            raise OptionError(f"{exc} (init_weights)", f"{command_line(exc)} (--init-weights)") from None
        saved = {"spec": read_weights_info(p), "model": _read_state(p)}
    load_checkpoint_model(saved, model, str(p))


def checkpoint_progress(run_dir: str | os.PathLike | None) -> dict | None:
    """{'step', 'finished', 'elapsed_s'} of a run from its last.ckpt, or None without one."""
    if run_dir is None or not (Path(run_dir) / "last.ckpt").is_file():
        return None
    saved = load_checkpoint(Path(run_dir) / "last.ckpt")
    return {"step": int(saved["step"]), "finished": bool(saved.get("finished")),
            "elapsed_s": float(saved.get("elapsed_s", 0.0))}
