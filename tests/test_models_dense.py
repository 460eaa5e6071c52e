"""pyramidal.models.dense: every registered block kind, at any image size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyramidal.models import create_model
from pyramidal.models.dense import BLOCKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("block", BLOCKS.names())
@pytest.mark.parametrize("size", [(17, 29), (32, 32), (5, 70)])
def test_every_block_kind_any_size(block, size):
    torch.manual_seed(0)
    model = create_model("pyramidal457", m=8, growth=4, block=block, dropout=0.0).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1


@pytest.mark.parametrize("block", BLOCKS.names())
def test_every_block_kind_trains_from_its_first_layer(block):
    torch.manual_seed(0)
    model = create_model("pyramidal457", m=8, growth=4, block=block, dropout=0.0).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    # One update first: NAFNet's β and γ start at 0 (the identity), which would block gradients to the convs inside.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.mse_loss(model(x), x.flip(-1)).backward()
    opt.step()
    opt.zero_grad()
    F.mse_loss(model(x), x.flip(-1)).backward()
    first = model.stem[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    inner = [p.grad for n, p in model.encoder[0].named_parameters() if p.grad is not None and p.dim() == 4]
    assert inner and all(g.abs().sum() > 0 for g in inner)


def test_block_kinds_count_their_parameters():
    counts = {b: sum(p.numel() for p in create_model("pyramidal457", m=8, growth=4, block=b).parameters())
              for b in BLOCKS.names()}
    assert all(n > 0 for n in counts.values())
    assert len(set(counts.values())) == len(counts)  # each kind builds its own layers
    stage = BLOCKS.get("nafnet")(10, 4, 3)
    assert stage.out_channels == 12 and stage.concat_input
    features = [torch.rand(1, 6, 8, 8), torch.rand(1, 4, 8, 8)]
    out = stage.extend(features)
    assert len(out) == 3 and out[:2] == features and out[2].shape == (1, 12, 8, 8)
