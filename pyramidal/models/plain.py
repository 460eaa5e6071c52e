"""The research's plain and pyramidal autoencoders: basic21/22/51/52, pyramidal51/52/51cat."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pyramidal.errors import OptionError
from pyramidal.models import register_configured
from pyramidal.models.blocks import (
    ACTIVATIONS,
    OutputBlock,
    PaddedModel,
    conv_block,
    convtranspose_block,
    input_block,
    start_at_fill,
)
from pyramidal.models.conditions import Conditions
from pyramidal.models.dense import UP


def default_channels(levels: int, width: int = 32, max_width: int = 256) -> tuple[int, ...]:
    """Width per resolution: `width` at full size, doubling per level, capped at `max_width`."""
    return tuple(min(width * 2**i, max_width) for i in range(levels + 1))


@dataclass
class AutoencoderConfig:
    levels: int = 5
    convs_per_level: int = 1
    skip: str = "none"  # none | add | cat
    channels: tuple[int, ...] | None = None  # levels+1 widths; default 32, 64, 128, 256, 256, 256
    activation: str = "relu"
    up: str = "convtranspose"  # a registered transition up (models.dense.UP), then BN + activation
    residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    # What the model takes besides the image (models.conditions.Conditions, which says what each means):
    mask_input: bool = False  # the holes given, as one more input channel
    hole_fill: str = "grey"  # grey, or smooth: how the holes the model knows of are filled before its first layer
    find_holes: str = "none"  # none, or magenta: blind, but finds its holes by the colour key

    # (low, high) for `pyramidal.models.check_options`; other whole numbers must be >= 1.
    LIMITS = {"levels": (1, 12), "convs_per_level": (1, 64)}


def up_block(in_channels: int, out_channels: int, up: str = "convtranspose", activation: str = "relu") -> nn.Module:
    """×2 up-sampling + BN + activation: the research's bias-free transposed conv, or any registered `UP`
    transition (`upsample`: bilinear ×2 then a 3×3 conv, free of the transposed conv's checkerboard)."""
    if up == "convtranspose":
        return convtranspose_block(in_channels, out_channels, activation)
    return nn.Sequential(UP.get(up)(in_channels, out_channels), nn.BatchNorm2d(out_channels),
                         ACTIVATIONS.get(activation)())


class Autoencoder(PaddedModel):
    """Conv encoder-decoder: stride-2 convs down, ×2 up-sampling (`up`, default transposed convs), optional skips.

    Level i: (convs_per_level - 1) conv blocks at width c[i-1], then a stride-2 conv to c[i].
    The decoder mirrors it; with skips, the encoder map at each resolution joins the decoder there.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        c = config
        if c.skip not in ("none", "add", "cat"):
            raise OptionError(f"unknown skip mode {c.skip!r}; choose one of: add, cat, none")
        if c.levels < 1 or c.convs_per_level < 1:
            raise OptionError("levels and convs_per_level must be at least 1")
        widths = tuple(c.channels) if c.channels is not None else default_channels(c.levels)
        if len(widths) != c.levels + 1:
            raise OptionError(f"channels needs {c.levels + 1} widths for {c.levels} levels, got {widths}")
        self.config, self.levels, self.widths = c, c.levels, widths
        self.conditions = Conditions.from_options(vars(c))
        act = c.activation
        UP.get(c.up)  # fail early with the list of valid names
        extra = c.convs_per_level - 1
        self.stem = input_block(c.in_channels + self.conditions.extra_channels, widths[0], act)
        self.encoder = nn.ModuleList()
        for i in range(c.levels):
            self.encoder.append(
                nn.Sequential(
                    *[conv_block(widths[i], widths[i], activation=act) for _ in range(extra)],
                    conv_block(widths[i], widths[i + 1], stride=2, activation=act),
                )
            )
        self.decoder = nn.ModuleList()
        self.up = nn.ModuleList()
        incoming = widths[-1]
        for i in reversed(range(c.levels)):
            self.up.append(up_block(incoming, widths[i], c.up, act))
            merged = 2 * widths[i] if c.skip == "cat" else widths[i]
            convs = [conv_block(merged if j == 0 else widths[i], widths[i], activation=act) for j in range(extra)]
            self.decoder.append(nn.Sequential(*convs))
            incoming = widths[i] if extra else merged
        self.output = OutputBlock(incoming, c.out_channels, residual=c.residual)
        start_at_fill(self.output, self.conditions.hole_fill)

    def body(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        skips = []
        for stage in self.encoder:
            skips.append(x)
            x = stage(x)
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips)):
            x = up(x)
            if self.config.skip == "add":
                x = x + skip
            elif self.config.skip == "cat":
                x = torch.cat([x, skip], 1)
            x = stage(x)
        return self.output(x, image)

    def rf_path(self) -> list[tuple[str, int, int]]:
        n = self.config.convs_per_level - 1
        up = UP.get(self.config.up).rf_step  # declared where the transition is registered
        path = [("conv", 3, 1)]
        for _ in range(self.levels):
            path += [("conv", 3, 1)] * n + [("conv", 3, 2)]
        for _ in range(self.levels):
            path += [up] + [("conv", 3, 1)] * n
        return path + [("conv", 3, 1)]


def _autoencoder(name: str, **defaults) -> None:
    register_configured(name, Autoencoder, AutoencoderConfig, ("channels",), **defaults)


_autoencoder("basic21", levels=2, convs_per_level=1)
_autoencoder("basic22", levels=2, convs_per_level=2)
_autoencoder("basic51", levels=5, convs_per_level=1)
_autoencoder("basic52", levels=5, convs_per_level=2)
_autoencoder("pyramidal51", levels=5, convs_per_level=1, skip="add")
_autoencoder("pyramidal52", levels=5, convs_per_level=2, skip="add")
_autoencoder("pyramidal51cat", levels=5, convs_per_level=1, skip="cat")
