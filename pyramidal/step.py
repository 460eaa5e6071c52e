"""One training step, shared by `pyramidal train`, `pyramidal bench` and the gradient report.

`train_step` runs the forward pass under autocast, the loss in fp32, the backward pass (scaled for fp16),
optional clipping and the optimizer's update; `make_optimizer` and `grad_scaler` build what it needs, so
the bench times exactly what the trainer runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.damage import Task
from pyramidal.device import autocast
from pyramidal.models.conditions import BLIND, Conditions, check_task, model_input


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB on the 0–1 scale for an MSE measured on [-1, 1] images: 10·log10(4 / MSE)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(4.0 / mse)


def charbonnier_loss(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean √((output − target)² + ε²): L1 with a smooth minimum (LapSRN's Charbonnier), ε on the [-1, 1] scale."""
    return torch.sqrt((output - target).pow(2) + eps * eps).mean()


def psnr_loss(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """mean over the images of 10·log10(MSE + ε): minus their mean PSNR, up to a constant (NAFNet's PSNR loss).

    Each image counts equally in decibels, as in `pyramidal evaluate`'s mean PSNR, where the MSE would let
    the images with the largest errors (a big block hole) outweigh the rest (thin strokes). ε caps an exact
    image at about 106 dB, where its gradient is zero anyway.
    """
    mse = (output - target).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(mse + eps).mean()


# The training objectives by `--loss` name (configcheck.LOSSES); validation and the logged PSNR use the MSE whatever
# the objective, so runs with different losses are compared on the same number. torch's functions are looked
# up at each call, so patching `F.mse_loss` (as the divergence tests do) reaches the training loss too.
LOSS_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda output, target: F.mse_loss(output, target),
    "l1": lambda output, target: F.l1_loss(output, target),
    "charbonnier": charbonnier_loss,
    "psnr": psnr_loss,
}


# ----------------------------------------------------------------------------------------------------------
# One training step: the trainer, `pyramidal bench` and the gradient report all run this.


def make_optimizer(parameters: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """Adam (L2 weight decay, as in the research) or AdamW (decoupled), fused into one kernel on CPU and CUDA.

    Fused, the update runs about twice as fast on one CPU thread as torch's per-tensor default there
    (docs/performance.md); a checkpoint keeps the setting it was made with.
    """
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    fused = True if device.type in ("cpu", "cuda") else None
    return cls(parameters, lr=lr, weight_decay=weight_decay, fused=fused)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling so that small gradients survive; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def training_conditions(options: dict, task: Task) -> Conditions:
    """The conditions of a model built with `options` (`Conditions.from_options`), checked against the training
    `task` (`check_task`): a one-line error when it cannot supply what the model is given besides each image."""
    conditions = Conditions.from_options(options)
    check_task(conditions, task)
    return conditions


def model_output(model: nn.Module, damaged: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor | None = None, *,
                 device: torch.device, precision: str, channels_last: bool = True,
                 noise_level: torch.Tensor | None = None, conditions: Conditions = BLIND) -> torch.Tensor:
    """The model's float32 output on `device` under autocast, as `restore` would return it.

    The model sees `model_input(conditions, damaged, mask, noise_level)`, its `conditions` being what it takes
    besides the image (the default takes `damaged` as the model's whole input): with a bool B×1×H×W `mask` of
    holes, a mask-conditioned model is given them, and only its prediction inside the holes is kept: the clean
    pixels elsewhere, which `restore --mask` keeps exactly, so the loss scores the holes alone; with
    `noise_level`, each image's true σ (0-255), a noise-map model is given it.
    """
    damaged = damaged.to(device, non_blocking=True)
    if mask is not None:
        mask = mask.to(device, non_blocking=True)
    damaged = model_input(conditions, damaged, mask, noise_level)
    if channels_last:
        damaged = damaged.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        output = model(damaged)
    output = output.float()
    if not conditions.mask_input:
        return output
    return torch.where(mask, output, clean.to(device, non_blocking=True).float())


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, damaged: torch.Tensor, clean: torch.Tensor, *,
               device: torch.device, precision: str, channels_last: bool = True,
               scaler: torch.amp.GradScaler | None = None, clip_grad: float | None = None,
               check_loss: Callable[[torch.Tensor], None] | None = None, update: bool = True,
               mask: torch.Tensor | None = None, noise_level: torch.Tensor | None = None,
               conditions: Conditions = BLIND, objective: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """One step of `pyramidal train`; returns the loss and the output, detached.

    Forward under autocast in `precision` (channels_last input), the `objective` (`LOSS_FUNCTIONS`: mse, l1,
    charbonnier, psnr) in fp32, backward (scaled for fp16), optional clipping of the global gradient norm, the
    optimizer's update. `check_loss` sees the loss before the backward pass and may raise to stop;
    `update=False` leaves the gradients in place, unapplied. `conditions`: what the model takes besides the image
    (`model.conditions`); `mask`: the holes, for a mask-conditioned model; `noise_level`: each image's σ, for a
    noise-map model (see `model_output`).
    """
    clean = clean.to(device, non_blocking=True)
    output = model_output(model, damaged, clean, mask, device=device, precision=precision,
                          channels_last=channels_last, noise_level=noise_level, conditions=conditions)
    loss = LOSS_FUNCTIONS[objective](output, clean.float())
    if check_loss is not None:
        check_loss(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is not None:
        scaler.scale(loss).backward()
        if update:
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            scaler.step(optimizer)
            scaler.update()
    else:
        loss.backward()
        if update:
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            optimizer.step()
    return loss.detach(), output.detach()
