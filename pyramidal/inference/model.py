"""The prepared model: weights loaded for restoring, `prepare_for_inference`, and one batch through it.

Every user of a trained model (restore, evaluate, demo, compare, export's parity check, the bench) runs it
through `prepare_for_inference`, so the benchmark times the code the commands run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from pyramidal.checkpoint import load_weights
from pyramidal.damage import TASKS
from pyramidal.device import autocast, resolve_device, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.fastpath import memory_format, tune_cpu_allocator
from pyramidal.hub import resolve_weights


def load_restorer(weights: str | os.PathLike, task: str | None = None) -> nn.Module:
    """Load a model for restoration.

    Args:
        weights: "builtin", a `.safetensors` file or a folder (see `hub.resolve_weights`).
        task: the damage task; needed for "builtin".

    Returns:
        The model in eval mode on the CPU; `model.info` holds the file's record (architecture, task, scores)
        and `model.weights_path` the file it came from.
    """
    path = resolve_weights(weights, task)
    model = load_weights(path)
    model.weights_path = str(path)
    trained_for = (getattr(model, "info", None) or {}).get("task")
    if task and trained_for and trained_for != task and not _mixture_of(trained_for, task):
        warnings.warn(f"{path} was trained for task {trained_for!r}, not {task!r}", WeightsTaskWarning, stacklevel=2)
    return model


def _mixture_of(mixture: str, task: str) -> bool:
    """True when `mixture` (mixed, inpaint) draws `task` among others: its weights were trained for it too."""
    return mixture in TASKS.names() and task in getattr(TASKS.get(mixture), "default_tasks", ())


class WeightsTaskWarning(UserWarning):
    """Weights loaded for one task were trained for another."""


class InferenceModel(nn.Module):
    """A model ready for inference: inference_mode, autocast, channels_last in, float32 out on `device`."""

    def __init__(self, model: nn.Module | Callable, device: torch.device, precision: str,
                 channels_last: bool = True, compiled: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        # Kept out of the module tree so that state_dict keys stay the wrapped model's.
        self.__dict__["_compiled"] = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._compiled if self._compiled is not None else self.model
        with torch.inference_mode(), autocast(self.device, self.precision):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(self.channels_last))
            return run(x).float()


def prepare_for_inference(model: nn.Module | Callable, device: str | torch.device = "auto", precision: str = "auto",
                          channels_last: bool = True, compile: bool = False) -> InferenceModel:
    """Get a model ready for inference: eval mode on `device`, channels_last weights, autocast in the
    resolved precision, optional torch.compile.

    Args:
        model: an nn.Module, or any callable batch → batch (an ONNX session), which then runs as it is
            under the same modes.
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        precision: "auto", "fp32", "bf16" or "fp16".
        channels_last: keep weights and inputs channels_last (faster convolutions on CPU and GPU).
        compile: wrap the model with torch.compile.

    Returns:
        A callable module: B×3×H×W in [-1, 1] (any device, any layout) → B×3×H×W float32 on `device`. An
        already prepared model with the same settings is returned unchanged.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    if device.type == "cpu":
        # A restore pass allocates feature maps of 25-45 MB, above glibc's largest mmap threshold (32 MB): by
        # default each is a fresh mmap whose pages fault in again on every pass. Measured, one thread: restore
        # runs 1.6-2.3× faster with freed memory kept for reuse (docs/performance.md).
        tune_cpu_allocator()
    if isinstance(model, InferenceModel):
        same = (model.device, model.precision, model.channels_last) == (device, precision, channels_last)
        if same and (model._compiled is not None or not compile):
            return model
        model = model.model
    compiled = None
    if isinstance(model, nn.Module):
        model.eval()
        model.to(device=device, memory_format=memory_format(channels_last))
        compiled = torch.compile(model, dynamic=True) if compile else None
    return InferenceModel(model, device, precision, channels_last, compiled)


def unwrapped(model: Callable) -> Callable:
    return model.model if isinstance(model, InferenceModel) else model


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, InferenceModel):
        return model.device
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def device_and_precision(model: Callable, device: str | torch.device | None, precision: str
                          ) -> tuple[torch.device, str]:
    dev = resolve_device(device) if isinstance(device, str) else (device or _model_device(model))
    return dev, resolve_precision(precision, dev)


# The 8 symmetries of the square: (k quarter turns, then optional horizontal flip).
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def forward_batch(model: InferenceModel, x: torch.Tensor, ensemble: bool) -> torch.Tensor:
    """One batch through the prepared model; with `ensemble`, the mean over the 8 flips/rotations.

    An output holding NaN or infinity is a PyramidalError naming the weights: clamped, it would be written
    as a black image and reported as a success.
    """
    if not ensemble:
        return _finite_output(model, model(x))
    total = None
    for k, flip in DIHEDRAL:
        t = torch.rot90(x, k, dims=(-2, -1))
        if flip:
            t = t.flip(-1)
        y = model(t)
        if flip:
            y = y.flip(-1)
        y = torch.rot90(y, -k, dims=(-2, -1))
        total = y if total is None else total + y
    return _finite_output(model, total / len(DIHEDRAL))


def _finite_output(model: InferenceModel, y: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(y).all():
        source = getattr(unwrapped(model), "weights_path", None) or "the model"
        raise PyramidalError(f"{source}: the restored pixels hold NaN or infinity (precision {model.precision}); "
                             "these weights are broken, or overflow at this precision (try precision fp32); "
                             "nothing was written")
    return y
