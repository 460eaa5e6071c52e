"""Model zoo: shapes, value range, gradient flow, layer counts and registry behaviour."""

import json
import time

import pytest
import torch
from torch import nn

import pyramidal
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.models import MODELS, create_model
from pyramidal.models.dense import DOWN, UP, DenseBlock
from pyramidal.models.summary import count_convs, count_parameters, receptive_field

from helpers import cli, one_error

# Narrow variants keep the parametrized tests fast; structure (levels, depth, skips) is unchanged.
SMALL = {
    "basic21": {"channels": (4, 8, 8)},
    "basic22": {"channels": (4, 8, 8)},
    "basic51": {"channels": (4, 8, 8, 8, 8, 8)},
    "basic52": {"channels": (4, 8, 8, 8, 8, 8)},
    "pyramidal51": {"channels": (4, 8, 8, 8, 8, 8)},
    "pyramidal52": {"channels": (4, 8, 8, 8, 8, 8)},
    "pyramidal51cat": {"channels": (4, 8, 8, 8, 8, 8)},
}
DENSE_SMALL = {"m": 8, "growth": 4}


def small(name: str) -> nn.Module:
    options = SMALL.get(name, DENSE_SMALL)
    return create_model(name, **options)


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("size", [(64, 64), (37, 53), (1, 1)])
def test_output_shape_range_and_gradient(name, size):
    torch.manual_seed(0)
    model = small(name)
    x = torch.rand(2, 3, *size) * 2 - 1
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= -1 and y.max() <= 1
    y.square().mean().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["basic21", "pyramidal51", "pyramidal44"])
def test_full_size_defaults_build_and_run(name):
    model = create_model(name).eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 33, 47))
    assert y.shape == (1, 3, 33, 47)


def _dense_layer(c, k):
    return 2 * c + 9 * c * k + k  # BN (scale, shift) + 3×3 conv weights + bias


def _dense_block(c, k, n):
    return sum(_dense_layer(c + i * k, k) for i in range(n))


def fc_densenet_parameters(m=48, k=16, blocks=(4, 5, 7, 10, 12), bottleneck=15, out=3):
    """Parameter count of the FC-DenseNet-style pyramid, written out independently of the model code."""
    total = 9 * 3 * m + m  # stem
    c, skips = m, []
    for n in blocks:
        total += _dense_block(c, k, n)
        c += n * k
        skips.append(c)
        total += c * c + c + 2 * c  # transition down: 1×1 conv + BN
    total += _dense_block(c, k, bottleneck)
    up = bottleneck * k
    for n, skip in zip(reversed(blocks), reversed(skips)):
        total += 9 * up * up + up  # 3×3 transposed conv
        c = up + skip
        total += _dense_block(c, k, n)
        up = n * k
    total += 9 * (c + up) * out + out  # output conv sees the last block's input and its new features
    return total


def test_final_model_has_103_layers_and_formula_parameters():
    model = create_model("pyramidal457101215")
    assert count_convs(model) == 103
    expected = fc_densenet_parameters()
    assert count_parameters(model) == expected
    assert 9.2e6 < expected < 9.4e6


def test_dense_block_channels_and_connectivity():
    block = DenseBlock(in_channels=6, growth=4, num_layers=5)
    assert [layer.conv.in_channels for layer in block.layers] == [6, 10, 14, 18, 22]
    out = block(torch.randn(2, 6, 8, 8))
    assert out.shape == (2, 20, 8, 8)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'.*pyramidal51"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown transition down 'bogus'.*maxpool"):
        create_model("pyramidal44", down="bogus")
    with pytest.raises(ValueError, match="unknown transition up 'bogus'.*convtranspose"):
        create_model("pyramidal44", up="bogus")
    with pytest.raises(ValueError, match="unknown option"):
        create_model("pyramidal44", widht=3)


def _kinds(modules):
    return {type(m).__name__ for mod in modules for m in mod.modules()}


@pytest.mark.parametrize("down", DOWN.names())
@pytest.mark.parametrize("up", UP.names())
def test_swapping_transitions_changes_every_transition(down, up):
    model = create_model("pyramidal457", m=8, growth=4, down=down, up=up)
    reference_down = _kinds([DOWN.get(down)(8)])
    reference_up = _kinds([UP.get(up)(8, 8)])
    assert len(model.down) == 2 and len(model.up) == 2
    for transition in model.down:
        assert _kinds([transition]) == reference_down
    for transition in model.up:
        assert _kinds([transition]) == reference_up
    x = torch.rand(1, 3, 20, 28) * 2 - 1
    assert model(x).shape == x.shape


def test_residual_output_is_clamped_correction():
    model = create_model("pyramidal44", m=8, growth=4, residual=True)
    with torch.no_grad():
        model.output.conv.weight.zero_()
        model.output.conv.bias.zero_()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(model.eval()(x), x)


def test_receptive_field_of_a_chain():
    assert receptive_field([("conv", 3, 1)] * 3) == 7
    assert receptive_field([("conv", 3, 1), ("conv", 2, 2), ("conv", 3, 1)]) == 8


@pytest.mark.parametrize("name", DOWN.names())
def test_transition_down_declares_its_receptive_field(name):
    kind, kernel, stride = DOWN.get(name).rf_step
    assert (kind, stride) == ("conv", 2)
    # The input pixels that reach one output pixel span `kernel` pixels per axis (max pooling passes the
    # gradient to one pixel per channel, so many channels and images together show the whole window).
    torch.manual_seed(0)
    x = torch.rand(8, 16, 16, 16, requires_grad=True)
    DOWN.get(name)(16, 0.0).eval()(x)[:, :, 4, 4].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1)), as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == kernel and int(cols.max() - cols.min()) + 1 == kernel


@pytest.mark.parametrize("name", UP.names())
def test_transition_up_declares_its_receptive_field(name):
    kind, kernel, stride = UP.get(name).rf_step
    assert kind == "up" and stride == 2 and kernel >= 3


def test_spec_rebuilds_the_same_architecture():
    model = create_model("pyramidal457", m=8, growth=4, blocks=[3, 2])
    rebuilt = create_model(model.spec["model"], **model.spec["options"])
    assert [tuple(p.shape) for p in rebuilt.parameters()] == [tuple(p.shape) for p in model.parameters()]


def test_public_api():
    assert "pyramidal457101215" in pyramidal.list_models()
    assert isinstance(pyramidal.create_model("basic21"), nn.Module)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_concat_gives_dense_gradients_equal_to_torch_cat(dtype):
    """The dense blocks' concatenation: torch.cat's values and gradients, each gradient dense in its input's
    layout (a channel slice of a channels_last gradient makes later elementwise sums slow)."""
    from pyramidal.models.dense import concat

    torch.manual_seed(0)
    leaves = [torch.randn(2, c, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
              for c in (24, 12, 12)]
    grad = torch.randn(2, 48, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)

    def gradients(cat):
        # Feature maps inside a model are not leaves: their gradients arrive as the concatenation hands them out.
        seen = []
        features = [leaf * 1 for leaf in leaves]
        for f in features:
            f.register_hook(seen.append)
        out = cat(features)
        out.backward(grad)
        return out, seen

    ours, mine = gradients(concat)
    theirs, ref = gradients(lambda features: torch.cat(features, 1))
    assert torch.equal(ours, theirs)
    for a, b in zip(mine, ref):
        assert torch.equal(a, b) and a.is_contiguous(memory_format=torch.channels_last)
    assert not ref[1].is_contiguous(memory_format=torch.channels_last)  # torch.cat's own: a strided slice
    with torch.no_grad():
        assert concat([leaf * 1 for leaf in leaves]).grad_fn is None  # without autograd it is torch.cat itself


@pytest.mark.parametrize("options", [{"unshuffle": 2}, {"unshuffle": 4, "m": 8, "growth": 4},
                                     {"unshuffle": 2, "mask_input": True}, {"unshuffle": 2, "residual": False}])
def test_an_unshuffled_pyramid_restores_any_size_at_a_quarter_of_the_pixels(options):
    from pyramidal.models.summary import forward_flops

    torch.manual_seed(0)
    model = create_model("pyramidal23456", **options).eval()
    channels = 4 if options.get("mask_input") else 3
    x = torch.rand(2, channels, 37, 23) * 2 - 1
    y = model(x)
    assert y.shape == (2, 3, 37, 23) and torch.isfinite(y).all() and y.abs().max() <= 1
    y.sum().backward()
    assert model.stem[0].weight.grad.abs().sum() > 0  # gradients reach the first layer
    if options == {"unshuffle": 2}:
        plain = create_model("pyramidal23456")
        assert forward_flops(model, 64) < 0.35 * forward_flops(plain, 64)


def test_an_unshuffled_residual_pyramid_adds_its_correction_to_the_right_pixels():
    model = create_model("pyramidal23456", unshuffle=2).eval()
    with torch.no_grad():
        model.output.conv.weight.zero_()
        model.output.conv.bias.zero_()
        x = torch.rand(1, 3, 16, 20) * 2 - 1
        assert torch.equal(model(x), x)  # a zero correction returns every pixel where it was


@pytest.mark.parametrize("factor", [3, 8])
def test_unshuffle_takes_only_1_2_or_4(factor):
    with pytest.raises(ValueError, match="unshuffle must be 1"):
        create_model("pyramidal23456", unshuffle=factor)


@pytest.mark.parametrize("name, options, needle", [
    ("pyramidal44", {"m": -1}, "option m must be a whole number >= 1, got -1"),
    ("pyramidal44", {"growth": 2.5}, "option growth must be a whole number >= 1, got 2.5"),
    ("basic21", {"channels": "abc"}, "option channels must be a list of whole numbers >= 1, got 'abc'"),
    ("basic21", {"channels": (0, 0, 0)}, "option channels must be a list of whole numbers >= 1"),
    ("pyramidal44", {"dropout": 1.5}, "option dropout must be a number from 0.0 to 1.0"),
    ("pyramidal44", {"residual": "yes"}, "option residual must be true or false"),
    ("pyramidal44", {"m": 10**9}, "parameters, more than the limit"),
])
def test_model_options_validated_at_construction(name, options, needle, tmp_path, capsys):
    with pytest.raises(OptionError, match=needle) as info:
        create_model(name, **options)
    assert isinstance(info.value, ValueError) and isinstance(info.value, PyramidalError)
    # The CLI says the same.
    flags = [f"--model-option={k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in options.items()]
    code, _, err = cli(["train", "--model", name, *flags, "--steps", "1", "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and needle.split(",")[0] in one_error(err)
    assert not (tmp_path / "runs").exists()


def test_huge_model_refused_before_allocating():
    start = time.perf_counter()
    with pytest.raises(OptionError, match="limit"):
        create_model("pyramidal457101215", m=2**20, growth=2**16)  # would need terabytes
    assert time.perf_counter() - start < 30


def test_noise_map_model_takes_four_channels():
    model = create_model("pyramidal44", m=8, growth=4, noise_map=True).eval()
    assert model.conditions.noise_map and model.stem[0].in_channels == 4
    assert model(torch.zeros(1, 4, 9, 9)).shape == (1, 3, 9, 9)
    with pytest.raises(ValueError, match="not both"):
        create_model("pyramidal44", noise_map=True, mask_input=True)
