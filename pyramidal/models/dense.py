"""DenseNet-style layers and blocks, and the registered transitions down and up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pyramidal.models.blocks import NORMS, LayerNorm2d
from pyramidal.registry import Registry

DOWN = Registry("transition down")
UP = Registry("transition up")
# The block kinds a dense pyramid is built from (its `block` option): each takes the feature maps of its
# input and adds `out_channels` new ones, so the pyramid's channel bookkeeping is the same for every kind.
BLOCKS = Registry("block")


def rf_step(kind: str, kernel: int, stride: int = 2) -> Callable[[Callable], Callable]:
    """Declare a transition's step on the longest path, `(kind, kernel, stride)`, for the receptive field.

    kind is "conv" for a transition down and "up" for a transition up (see `models.summary.receptive_field`).
    """

    def mark(factory: Callable) -> Callable:
        factory.rf_step = (kind, kernel, stride)
        return factory

    return mark


class _Concat(torch.autograd.Function):
    """torch.cat along channels whose backward gives each input a dense gradient in the input's memory format.

    torch.cat's own backward hands out channel slices of the output's gradient: views that keep the whole
    concatenation's pixel stride. Autograd sums a feature map's gradient over every later layer that read it,
    and on such bf16 channels_last views the elementwise kernels (that sum, dropout's mask) take a slow
    strided path: 11 ms instead of 0.2 ms for one 16×12×64×64 addition (one thread, measured). Copying each
    slice once costs 1.3 ms. The values are the same; only their layout differs.
    """

    @staticmethod
    def forward(ctx, *features: torch.Tensor) -> torch.Tensor:
        ctx.widths = [f.shape[1] for f in features]
        ctx.formats = [torch.channels_last if f.dim() == 4 and f.is_contiguous(memory_format=torch.channels_last)
                       and not f.is_contiguous() else torch.contiguous_format for f in features]
        return torch.cat(features, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g.contiguous(memory_format=fmt) for g, fmt in zip(grad.split(ctx.widths, 1), ctx.formats))


def concat(features: list[torch.Tensor]) -> torch.Tensor:
    """The feature maps concatenated along channels (the one map itself if there is one)."""
    if len(features) == 1:
        return features[0]
    if torch.is_grad_enabled() and any(f.requires_grad for f in features):
        return _Concat.apply(*features)
    return torch.cat(features, 1)


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers in `module` normalise with batch statistics but leave their running averages alone.

    For recomputation under gradient checkpointing: the first pass already updated the averages. Momentum 0
    runs the very same op (checkpoint checks that the recomputed saved tensors match the first pass's) and
    leaves the averages bit-for-bit unchanged; the batch counter is put back afterwards.
    """
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def checkpointed(fn: Callable[..., torch.Tensor], module: nn.Module, features: list[torch.Tensor],
                 *extra: torch.Tensor, preserve_rng_state: bool = True) -> torch.Tensor:
    """`fn(concat(features), *extra)` under gradient checkpointing, the concatenation included.

    Only the inputs (kept alive anyway) and the output are stored; everything in between is recomputed in
    backward, with `module`'s BatchNorm running averages updated once, not twice. `preserve_rng_state`
    replays the same dropout masks in the recomputation.
    """
    calls = []

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        calls.append(None)
        with nullcontext() if len(calls) == 1 else frozen_running_stats(module):
            return fn(concat(list(tensors[:len(features)])), *tensors[len(features):])

    return checkpoint(run, *features, *extra, use_reentrant=False, preserve_rng_state=preserve_rng_state)


def wants_checkpoint(features: list[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(f.requires_grad for f in features)


class DenseLayer(nn.Module):
    """concat(features) → BN (or another `norm`) → ReLU → 3×3 conv to `growth` features → dropout."""

    def __init__(self, in_channels: int, growth: int, dropout: float = 0.2, memory_efficient: bool = False,
                 norm: str = "batch"):
        super().__init__()
        self.norm = NORMS.get(norm)(in_channels)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.memory_efficient = memory_efficient
        # ReLU in place on a norm's output, a fresh tensor its backward does not need; without a norm that
        # would overwrite the block's input itself (a skip that backward still needs).
        self.relu_in_place = not isinstance(self.norm, nn.Identity)

    def _bn_relu_conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.norm(x), inplace=self.relu_in_place))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and wants_checkpoint(features):
            # Only the conv output is stored; the concat and BN-ReLU maps are recomputed in backward,
            # which makes a block's activation memory linear instead of quadratic in its depth. Dropout
            # stays outside, so no RNG state needs replaying.
            out = checkpointed(self._bn_relu_conv, self.norm, features, preserve_rng_state=False)
        else:
            out = self._bn_relu_conv(concat(features))
        return self.dropout(out)


@BLOCKS.register("dense")
class DenseBlock(nn.Module):
    """`num_layers` DenseLayers; each sees the block input plus every earlier layer's output.

    Returns only the `num_layers * growth` new features, as in FC-DenseNet.
    """

    concat_input = True

    def __init__(
        self,
        in_channels: int,
        growth: int,
        num_layers: int,
        dropout: float = 0.2,
        memory_efficient: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth, growth, dropout, memory_efficient, norm) for i in range(num_layers)
        )
        self.out_channels = num_layers * growth

    def extend(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The input feature maps followed by each layer's new ones, never concatenated here."""
        features = list(features)
        for layer in self.layers:
            features.append(layer(features))
        return features

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        return concat(self.extend(inputs)[len(inputs):])  # B × (num_layers*growth) × H × W


class PlainBlock(nn.Module):
    """`num_layers` BN → ReLU → conv layers in sequence, no dense connections (for the depth baseline)."""

    concat_input = False

    def __init__(self, in_channels: int, growth: int, num_layers: int, dropout: float = 0.2, norm: str = "batch",
                 **_: object):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels if i == 0 else growth, growth, dropout, norm=norm) for i in range(num_layers)
        )
        self.out_channels = growth

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        x = concat(list(x)) if isinstance(x, (list, tuple)) else x
        for layer in self.layers:
            x = layer([x])
        return x


class SimpleGate(nn.Module):
    """NAFNet's gate: split the channels in halves and multiply them, in place of a nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet's block at a fixed width (Chen et al. 2022, "Simple Baselines for Image Restoration").

    x + β·[LN → 1×1 conv to 2c → 3×3 depthwise → SimpleGate → simplified channel attention → 1×1 conv], then
    y + γ·[LN → 1×1 conv to 2c → SimpleGate → 1×1 conv]; no other nonlinearity. β and γ start at 0, so the
    block starts as the identity.
    """

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        c = channels
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.depthwise = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.gate = SimpleGate()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))  # simplified channel attention
        self.conv2 = nn.Conv2d(c, c, 1)
        self.conv3 = nn.Conv2d(c, 2 * c, 1)
        self.conv4 = nn.Conv2d(c, c, 1)
        # Whole channels, as in the dense layers (and far cheaper to draw than NAFNet's per-element masks).
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.depthwise(self.conv1(self.norm1(x))))
        y = self.conv2(y * self.attention(y))
        x = x + self.beta * self.dropout(y)
        y = self.conv4(self.gate(self.conv3(self.norm2(x))))
        return x + self.gamma * self.dropout(y)


@BLOCKS.register("nafnet")
class NAFStage(nn.Module):
    """A 1×1 conv from the block input to `num_layers * growth` channels, then `num_layers` NAFBlocks at that width.

    Like a DenseBlock it returns `num_layers * growth` new features and the pyramid keeps its input beside
    them, so it drops into the same levels, transitions and skips. Its own norm is NAFNet's layer norm.
    """

    concat_input = True

    def __init__(self, in_channels: int, growth: int, num_layers: int, dropout: float = 0.0, **_: object):
        super().__init__()
        self.out_channels = num_layers * growth
        self.project = nn.Conv2d(in_channels, self.out_channels, 1)
        self.blocks = nn.Sequential(*(NAFBlock(self.out_channels, dropout) for _ in range(num_layers)))

    def extend(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The input feature maps followed by the stage's new ones (as `DenseBlock.extend`)."""
        return list(features) + [self.blocks(self.project(concat(list(features))))]

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        return self.extend(inputs)[-1]  # B × (num_layers*growth) × H × W


def _pointwise(channels: int, dropout: float, norm: str = "batch") -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(channels, channels, 1), NORMS.get(norm)(channels), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return layers


@DOWN.register("maxpool")
@rf_step("conv", 2)
def maxpool_down(channels: int, dropout: float = 0.2, norm: str = "batch") -> nn.Module:
    """1×1 conv + BN + ReLU + dropout + 2×2 max pool, as in the research."""
    return nn.Sequential(*_pointwise(channels, dropout, norm), nn.MaxPool2d(2))


@DOWN.register("avgpool")
@rf_step("conv", 2)
def avgpool_down(channels: int, dropout: float = 0.2, norm: str = "batch") -> nn.Module:
    """1×1 conv + BN + ReLU + dropout + 2×2 average pool."""
    return nn.Sequential(*_pointwise(channels, dropout, norm), nn.AvgPool2d(2))


@DOWN.register("strided")
@rf_step("conv", 3)
def strided_down(channels: int, dropout: float = 0.2, norm: str = "batch") -> nn.Module:
    """3×3 stride-2 conv + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=norm == "none"),  # a norm brings its own shift
        NORMS.get(norm)(channels),
        nn.ReLU(inplace=True),
    )


@UP.register("convtranspose")
@rf_step("up", 3)
def convtranspose_up(in_channels: int, out_channels: int) -> nn.Module:
    """3×3 stride-2 transposed conv (exact ×2)."""
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)


@UP.register("upsample")
@rf_step("up", 4)  # ×2 then a 3×3 conv: as far as a 4-wide transposed kernel
def upsample_up(in_channels: int, out_channels: int) -> nn.Module:
    """Bilinear ×2 up-sampling followed by a 3×3 conv."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
    )


@UP.register("upsample_nearest")
@rf_step("up", 4)
def upsample_nearest_up(in_channels: int, out_channels: int) -> nn.Module:
    """Nearest-neighbour ×2 up-sampling followed by a 3×3 conv."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1))


@UP.register("pixelshuffle")
@rf_step("up", 3)
def pixelshuffle_up(in_channels: int, out_channels: int) -> nn.Module:
    """3×3 conv to 4×out_channels, then PixelShuffle(2): sub-pixel up-sampling with a controlled width."""
    return nn.Sequential(nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1), nn.PixelShuffle(2))
