"""Memory-efficient dense blocks: same outputs, gradients and BN statistics as the plain path, linear memory."""

from __future__ import annotations

import pytest
import torch

from pyramidal.models import create_model
from pyramidal.models.dense import DenseBlock, DenseLayer

OPTIONS = dict(m=8, growth=4, dropout=0.0)


def _pair(name: str = "pyramidal457", **options):
    torch.manual_seed(0)
    plain = create_model(name, **{**OPTIONS, **options})
    efficient = create_model(name, **{**OPTIONS, **options}, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    return plain.train(), efficient.train()


def _step(model, x, target):
    out = model(x)
    loss = torch.nn.functional.mse_loss(out, target)
    loss.backward()
    return out.detach(), loss.item()


def test_memory_efficient_is_used():
    _, efficient = _pair()
    layers = [m for m in efficient.modules() if isinstance(m, DenseLayer)]
    assert layers and all(layer.memory_efficient for layer in layers)


def test_same_outputs_and_gradients_fp32():
    plain, efficient = _pair()
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(1)) * 2 - 1
    target = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out_p, loss_p = _step(plain, x, target)
    out_e, loss_e = _step(efficient, x, target)
    assert torch.equal(out_p, out_e)
    assert loss_p == loss_e
    grads_p = dict((n, p.grad) for n, p in plain.named_parameters())
    for name, p in efficient.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads_p[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("down", ["maxpool", "avgpool", "strided"])
def test_same_outputs_and_gradients_with_dropout(down):
    """Dropout in the layers and inside the checkpointed transitions: the recomputation replays the same
    masks, so the same seed gives the plain path's outputs and gradients exactly."""
    plain, efficient = _pair(dropout=0.2, down=down)
    x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    results = []
    for model in (plain, efficient):
        torch.manual_seed(5)
        results.append(_step(model, x, x))
    assert torch.equal(results[0][0], results[1][0])
    grads_p = dict((n, p.grad) for n, p in plain.named_parameters())
    for name, p in efficient.named_parameters():
        torch.testing.assert_close(p.grad, grads_p[name], rtol=1e-5, atol=1e-7, msg=name)


def test_whole_model_keeps_far_less_for_backward():
    """Transitions and the output conv are recomputed too: beyond the dense layers, nothing full-width stays."""
    plain, efficient = _pair("pyramidal4571012")
    x = torch.rand(2, 3, 32, 32)
    saved = [_saved_bytes(model, x) for model in (plain, efficient)]
    assert saved[1] * 4 < saved[0], saved


def test_bn_running_stats_match_plain_path_after_steps():
    plain, efficient = _pair()
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.01)
    opt_e = torch.optim.SGD(efficient.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
        for model, opt in ((plain, opt_p), (efficient, opt_e)):
            opt.zero_grad()
            _step(model, x, x)
            opt.step()
    buffers_p = dict(plain.named_buffers())
    for name, buf in efficient.named_buffers():
        torch.testing.assert_close(buf, buffers_p[name], rtol=1e-5, atol=1e-6, msg=name)
    # The recomputation in backward must not count as a batch either.
    tracked = [b for n, b in efficient.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(b) == 2 for b in tracked)
    # And evaluation with those statistics gives the same result.
    x = torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x), rtol=1e-5, atol=1e-6)


def test_eval_and_no_grad_take_the_plain_path():
    _, efficient = _pair("pyramidal44")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert efficient(x).shape == x.shape
    efficient.eval()
    x.requires_grad_(True)
    efficient(x).sum().backward()  # eval mode with gradients (e.g. gradient maps) also works
    assert x.grad is not None


def test_bf16_autocast_runs():
    _, efficient = _pair("pyramidal44", dropout=0.2)
    x = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = efficient(x)
    out.float().mean().backward()
    assert all(p.grad is not None for p in efficient.parameters())


def _saved_bytes(block: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages autograd keeps for backward after a block's (or model's) forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(x)
    # The block's own input and the features are alive anyway; count them once too.
    storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_activation_memory_growth(memory_efficient):
    """Plain: quadratic in depth. Memory-efficient: linear (doubling the depth about doubles it)."""
    torch.manual_seed(0)
    x = torch.rand(2, 16, 16, 16, requires_grad=True)
    sizes = {}
    for depth in (8, 16):
        block = DenseBlock(16, 16, depth, dropout=0.0, memory_efficient=memory_efficient).train()
        sizes[depth] = _saved_bytes(block, x)
    ratio = sizes[16] / sizes[8]
    if memory_efficient:
        assert ratio < 2.3, sizes
    else:
        assert ratio > 2.8, sizes


def test_memory_efficient_saves_most_activation_memory():
    torch.manual_seed(0)
    x = torch.rand(2, 16, 16, 16, requires_grad=True)
    plain = _saved_bytes(DenseBlock(16, 16, 12, dropout=0.0).train(), x)
    efficient = _saved_bytes(DenseBlock(16, 16, 12, dropout=0.0, memory_efficient=True).train(), x)
    assert efficient * 3 < plain, (plain, efficient)


def test_training_flops_include_the_recomputation():
    """The FLOP count of a memory-efficient step adds exactly the convs that really run again in backward."""
    from pyramidal.bench.measure import count_flops

    plain, efficient = _pair()
    size = 16
    assert count_flops(efficient, size, train=False) == count_flops(plain, size, train=False)
    rerun: list[float] = []

    def record(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        if isinstance(module, torch.nn.ConvTranspose2d):
            rerun.append(2.0 * inputs[0].numel() * module.out_channels * kh * kw)
        else:
            rerun.append(2.0 * output.numel() * module.in_channels * kh * kw)

    loss = efficient(torch.rand(1, 3, size, size)).square().mean()
    hooks = [m.register_forward_hook(record) for m in efficient.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    loss.backward()
    for h in hooks:
        h.remove()
    assert len(rerun) >= 3  # two transitions down and the output conv at least
    assert count_flops(efficient, size, train=True) == count_flops(plain, size, train=True) + sum(rerun)
