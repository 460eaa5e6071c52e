"""Describe a model: parameters, conv layers, pyramid levels, receptive field and FLOPs."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyramidal.device import device_memory
from pyramidal.errors import PyramidalError, option_wording
from pyramidal.models import check_model, create_model
from pyramidal.models.conditions import example_input


@dataclass
class ModelSummary:
    name: str
    parameters: int
    conv_layers: int
    levels: int
    receptive_field: int
    gflops: float  # one forward pass of a 3×size×size image


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_convs(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def receptive_field(path: list[tuple[str, int, int]]) -> int:
    """Theoretical receptive field (input pixels) of the longest path of (kind, kernel, stride) steps."""
    rf, jump = 1, 1.0
    for kind, kernel, stride in path:
        if kind == "up":
            # A transposed conv reaches ceil(k/s) coarse pixels, then the grid gets `stride` times finer.
            rf += (-(-kernel // stride) - 1) * jump
            jump /= stride
        else:
            rf += (kernel - 1) * jump
            jump *= stride
    return int(rf)


def forward_flops(model: nn.Module, size: int = 64, batch: int = 1) -> float:
    """FLOPs of one forward pass, counted by torch's FlopCounterMode (a multiply-add counts as 2)."""
    was_training = model.training
    model.eval()
    x = example_input(model, batch, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / batch


def summarize(name: str, model: nn.Module, size: int = 64) -> ModelSummary:
    return ModelSummary(
        name=name,
        parameters=count_parameters(model),
        conv_layers=count_convs(model),
        levels=getattr(model, "levels", 0),
        receptive_field=receptive_field(model.rf_path()),
        gflops=forward_flops(model, size) / 1e9,
    )


def memory_estimate(name: str, options: dict | None = None, *, batch: int, size: int,
                    training: bool = True) -> int | None:
    """Bytes a step of `name` at `batch` × `size`² needs at least, counted on the meta device (nothing is allocated).

    Training: the tensors autograd keeps for the backward pass, plus the weights, their gradients and Adam's two
    moments. Inference: the largest feature map, plus the weights. A lower bound (temporary buffers and the
    allocator's slack come on top), so a step it refuses could never fit. None if the model cannot run on the
    meta device.
    """
    key = (name, json.dumps(options or {}, sort_keys=True, default=str), int(batch), int(size), bool(training))
    return _memory_estimate(*key)


@functools.lru_cache(maxsize=64)
def _memory_estimate(name: str, options: str, batch: int, size: int, training: bool) -> int | None:
    kept: dict[int, torch.Tensor] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        kept[id(t)] = t  # held, so that no id is reused while counting
        return t

    largest = [0]

    def track(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    try:
        with torch.device("meta"):
            model = create_model(name, **json.loads(options)).train(training)
            x = example_input(model, batch, size, size)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        if training:
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
                model(x)
            return sum(t.numel() * t.element_size() for t in kept.values()) + 4 * weights
        hooks = [m.register_forward_hook(track) for m in model.modules()]
        with torch.no_grad():
            model(x)
        for hook in hooks:
            hook.remove()
        return largest[0] + weights
    except (RuntimeError, NotImplementedError):  # a step that reads values: it cannot be counted without them
        return None


def check_memory(name: str, options: dict | None, *, batch: int, size: int, device: torch.device,
                 training: bool = True) -> None:
    """PyramidalError (one line naming size and batch_size) when a step cannot fit in the device's memory.

    Checked before anything is allocated, from `memory_estimate` against `device.device_memory`.
    """
    need = memory_estimate(name, options, batch=batch, size=size, training=training)
    have = device_memory(device)
    if need is None or have is None or need <= have:
        return
    hint = "; or memory_efficient=true" if training and _takes_memory_efficient(name, options) else ""
    raise PyramidalError(*option_wording(
        "{size=}{s} {batch_size=}{b}: {step} {name} needs at least {need}, more than the {have} of memory {where} "
        "has; lower {size} or {batch_size}{hint}", "size", "batch_size", s=size, b=batch,
        step="a training step of" if training else "running", name=name, need=_bytes(need), have=_bytes(have),
        where="this machine" if device.type == "cpu" else device, hint=hint))


def _takes_memory_efficient(name: str, options: dict | None) -> bool:
    if (options or {}).get("memory_efficient"):
        return False
    try:
        check_model(name, **{**(options or {}), "memory_efficient": True})
        return True
    except ValueError:
        return False


def _bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"
