"""Describe a model: parameters, conv layers, pyramid levels, receptive field and FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyramidal.models.blocks import example_input


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
