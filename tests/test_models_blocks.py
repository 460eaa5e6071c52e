"""pyramidal.models.blocks: the normalisation choices and the noise-level map input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyramidal.models import create_model
from pyramidal.models.blocks import NORMS, noise_map_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("norm", NORMS.names())
def test_norm_option(norm):
    model = create_model("pyramidal457", m=8, growth=4, norm=norm).eval()
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")
    x = torch.rand(1, 3, 19, 23) * 2 - 1
    assert model(x).shape == x.shape
    # It trains: a backward pass through every norm (no norm once broke it, ReLU overwriting a skip in place).
    model.train()
    for memory_efficient in (False, True):
        model = create_model("pyramidal457", m=8, growth=4, norm=norm, memory_efficient=memory_efficient)
        model(torch.rand(2, 3, 16, 16)).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_bad_norm_or_block_names_the_choices():
    with pytest.raises(ValueError, match="unknown normalisation 'group'.*batch, layer, none"):
        create_model("pyramidal44", norm="group")
    with pytest.raises(ValueError, match="unknown block 'resnet'.*dense, nafnet"):
        create_model("pyramidal44", block="resnet")
    with pytest.raises(ValueError, match="needs dense=true"):
        create_model("pyramidal44", block="nafnet", dense=False)


def test_noise_map_input():
    images = torch.zeros(2, 3, 5, 7)
    x = noise_map_input(images, torch.tensor([25.5, 51.0]))
    assert x.shape == (2, 4, 5, 7)
    assert torch.allclose(x[0, 3], torch.full((5, 7), 0.1)) and torch.allclose(x[1, 3], torch.full((5, 7), 0.2))
    assert torch.equal(x[:, :3], images)
    assert torch.allclose(noise_map_input(images, 51.0)[:, 3], torch.full((2, 5, 7), 0.2))
