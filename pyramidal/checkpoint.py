"""Safe, atomic weight files: `.safetensors` weights plus a JSON sidecar holding the architecture."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pyramidal.errors import PyramidalError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`: a crash never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the permissions an ordinary new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sidecar_path(weights: str | os.PathLike) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None, half: bool = False) -> None:
    """Write `model`'s state to `path` (safetensors) and its spec plus `metadata` to the JSON sidecar."""
    from safetensors.torch import save_file

    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model has no .spec; build it with pyramidal.create_model")
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    sidecar = {**spec, **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"model": spec["model"]}))
    atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2) + "\n"))


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    if not side.exists():
        raise PyramidalError(f"{path}: no sidecar {side.name} describing the architecture")
    try:
        info = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PyramidalError(f"{side}: unreadable sidecar ({exc})") from None
    if "model" not in info:
        raise PyramidalError(f"{side}: sidecar does not name a model")
    return info


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, naming exactly what does not match."""
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


def load_weights(path: str | os.PathLike, **overrides) -> nn.Module:
    """Rebuild the model named in the sidecar and load the safetensors weights into it (eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pyramidal.models import create_model

    path = Path(path)
    if not path.exists():
        raise PyramidalError(f"{path}: no such weights file")
    info = read_sidecar(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PyramidalError(f"{path}: not a readable safetensors file ({exc})") from None
    model = create_model(info["model"], **{**info.get("options", {}), **overrides})
    load_state_into(model, state, str(path))
    model.info = info
    return model.eval()


# ----------------------------------------------------------------------------------------------------------
# Training checkpoints: one torch.save dict of tensors and plain types, loadable with weights_only=True.

CHECKPOINT_FORMAT = "pyramidal-train-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically write a training checkpoint (`state` holds only tensors and plain Python types)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint safely (weights_only=True); damaged or foreign files raise PyramidalError."""
    path = Path(path)
    if not path.exists():
        raise PyramidalError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, disallowed global: all mean "not loadable"
        size = path.stat().st_size
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
    """`name(opt=value, ...)` for messages."""
    options = spec.get("options") or {}
    return spec.get("model", "?") + "(" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")"


def load_checkpoint_model(saved: dict, model: nn.Module, source: str) -> None:
    """Load a checkpoint's weights into `model`, refusing another architecture with a message naming both.

    Options that leave the weights unchanged (dropout, memory_efficient) may differ; the model name may not.
    """
    own = getattr(model, "spec", None) or {"model": type(model).__name__, "options": {}}
    spec = saved.get("spec") or {"model": "?", "options": {}}
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
