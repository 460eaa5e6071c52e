"""pyramidal.step: the training objectives (losses), the optimisers, one training step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.configcheck import LOSSES
from pyramidal.models import create_model
from pyramidal.step import LOSS_FUNCTIONS, make_optimizer, psnr_from_mse, train_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("objective", LOSSES)
def test_train_step_minimises_the_chosen_objective(objective):
    torch.manual_seed(0)
    model = create_model("pyramidal44", m=8, growth=4, dropout=0.0)
    opt = make_optimizer(model.parameters(), "adam", 1e-3, 0.0, torch.device("cpu"))
    clean = torch.rand(2, 3, 16, 16) * 2 - 1
    damaged = (clean + 0.3 * torch.randn_like(clean)).clamp(-1, 1)
    loss, output = train_step(model, opt, damaged, clean, device=torch.device("cpu"), precision="fp32",
                              objective=objective)
    assert loss.item() == pytest.approx(LOSS_FUNCTIONS[objective](output, clean).item(), rel=1e-5)


def test_charbonnier_is_a_smooth_l1():
    a, b = torch.zeros(100), torch.linspace(-1, 1, 100)
    assert LOSS_FUNCTIONS["charbonnier"](a, b).item() == pytest.approx(F.l1_loss(a, b).item(), abs=1e-3)
    assert LOSS_FUNCTIONS["charbonnier"](a, a).item() == pytest.approx(1e-3)  # ε at zero error, smooth there


def test_the_psnr_loss_is_minus_the_images_mean_psnr():
    clean = torch.zeros(3, 3, 8, 8)
    output = clean + torch.tensor([0.5, 0.05, 0.005]).view(3, 1, 1, 1)
    psnrs = [psnr_from_mse(e * e) for e in (0.5, 0.05, 0.005)]
    assert LOSS_FUNCTIONS["psnr"](output, clean).item() == pytest.approx(10 * math.log10(4) - sum(psnrs) / 3,
                                                                         abs=1e-4)


def test_the_psnr_loss_weighs_each_image_equally_in_decibels():
    """Halving a small error gains as much as halving a large one (6 dB of one image's PSNR); under the MSE the
    small error hardly counts."""
    clean = torch.zeros(2, 3, 8, 8)
    errors = torch.tensor([0.4, 0.01]).view(2, 1, 1, 1)
    for name, equal in (("psnr", True), ("mse", False)):
        loss = LOSS_FUNCTIONS[name]
        base = loss(clean + errors, clean).item()
        gain_large = base - loss(clean + errors * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1), clean).item()
        gain_small = base - loss(clean + errors * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1), clean).item()
        assert (gain_small == pytest.approx(gain_large, rel=1e-4)) is equal
        assert gain_small > 0
    assert LOSS_FUNCTIONS["psnr"](clean, clean).item() == pytest.approx(-100.0)  # ε caps an exact image


def test_adamw_decouples_the_weight_decay():
    """With no gradient, AdamW shrinks a weight by lr·wd; Adam's L2 term goes through the adaptive step."""
    after = {}
    for name in ("adam", "adamw"):
        p = nn.Parameter(torch.ones(1))
        opt = make_optimizer([p], name, lr=0.1, weight_decay=0.1, device=torch.device("cpu"))
        p.grad = torch.zeros(1)
        opt.step()
        after[name] = p.item()
    assert after["adamw"] == pytest.approx(1 - 0.1 * 0.1)
    assert after["adam"] == pytest.approx(1 - 0.1, rel=1e-3)  # L2 grad 0.1, normalised to a full lr step
