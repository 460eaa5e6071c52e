"""Validation: a model's scores on the run's fixed validation crops, and the one the best weights are chosen by."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.models.conditions import Conditions
from pyramidal.step import model_output, psnr_from_mse
from pyramidal.train.machine import Machine


@dataclass
class Scores:
    """`values`: loss/val (the crops' mean MSE), PSNR/val (its PSNR) and PSNR/val_images (the mean of each
    crop's PSNR, as `pyramidal evaluate` reports; an exact crop counts 100 dB). `input_psnr`: the damaged
    crops' PSNR. `shown`: the first batch's output, input and ground truth, `log_images` of each."""

    values: dict[str, float]
    input_psnr: float
    shown: list[torch.Tensor]


@torch.no_grad()
def validation_scores(model: nn.Module, loader, machine: Machine, *, channels_last: bool, log_images: int,
                      conditions: Conditions) -> Scores:
    """`model`'s scores over `loader` (put in eval mode; the caller puts its training model back)."""
    model.eval()
    se = se_in = 0.0
    count = 0
    image_psnrs: list[float] = []
    shown: list[torch.Tensor] = []
    # A third item comes only for a conditioned model: the holes (mask_input) or each σ (noise_map).
    for damaged, clean, *condition in loader:
        given = condition[0] if condition else None
        out = model_output(model, damaged, clean, given if conditions.mask_input else None, device=machine.device,
                           precision=machine.precision, channels_last=channels_last,
                           noise_level=given if conditions.noise_map else None, conditions=conditions).cpu()
        squared = (out - clean).pow(2).flatten(1)
        se += squared.sum().item()
        image_psnrs += [psnr_from_mse(v) for v in squared.mean(dim=1).tolist()]
        se_in += F.mse_loss(damaged, clean, reduction="sum").item()
        count += clean.numel()
        if not shown:
            shown = [out[:log_images], damaged[:log_images], clean[:log_images]]
    mse = se / count
    mean_psnr = sum(min(v, 100.0) for v in image_psnrs) / len(image_psnrs)  # an exact image counts 100 dB
    values = {"loss/val": mse, "PSNR/val": psnr_from_mse(mse), "PSNR/val_images": mean_psnr}
    return Scores(values, psnr_from_mse(se_in / count), shown)


def val_label(objective: str) -> str:
    """The validation number the best weights are chosen by: PSNR/val, or PSNR/val_images (each image's PSNR
    counts alike) when the objective is `psnr`, which optimizes it."""
    return "PSNR/val_images" if objective == "psnr" else "PSNR/val"
