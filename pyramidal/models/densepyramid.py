"""Dense pyramids (FC-DenseNet-like) built from a block-config tuple, and the registered zoo members."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.errors import OptionError
from pyramidal.models import register_configured
from pyramidal.models.blocks import (
    NORMS,
    OutputBlock,
    PaddedModel,
    start_at_fill,
)
from pyramidal.models.conditions import Conditions
from pyramidal.models.dense import BLOCKS, DOWN, UP, PlainBlock, checkpointed, concat, wants_checkpoint


@dataclass
class DensePyramidConfig:
    """Everything that defines a dense pyramid; stored in checkpoints to rebuild it exactly."""

    blocks: tuple[int, ...] = (4, 5, 7, 10, 12)  # encoder dense-block sizes, one per level
    bottleneck: int = 15
    m: int = 48  # stem width
    growth: int = 16  # k: features each dense layer adds
    down: str = "maxpool"
    up: str = "convtranspose"
    dropout: float = 0.2
    residual: bool = False
    memory_efficient: bool = False
    dense: bool = True  # False: plain sequential layers (the vanishing-gradient baseline)
    skips: bool = True
    in_channels: int = 3
    out_channels: int = 3
    decoder_blocks: tuple[int, ...] | None = field(default=None)  # default: the encoder sizes reversed
    # What the model takes besides the image (models.conditions.Conditions, which says what each means):
    mask_input: bool = False  # the holes given, as one more input channel
    noise_map: bool = False  # the noise σ given, as one more input channel
    hole_fill: str = "grey"  # grey, or smooth: how the holes the model knows of are filled before its first layer
    find_holes: str = "none"  # none, or magenta: blind, but finds its holes by the colour key
    block: str = "dense"  # the block kind of every level (models.dense.BLOCKS): dense, nafnet
    norm: str = "batch"  # normalisation in dense layers and transitions (models.blocks.NORMS): batch, layer, none
    # FFDNet-style first level: the image is pixel-unshuffled into u×u sub-images stacked as channels before the
    # stem, and the output shuffled back, so the whole pyramid runs at 1/u² of the pixels (1: off; 2 or 4).
    unshuffle: int = 1

    # (low, high) for `pyramidal.models.check_options`; other whole numbers must be >= 1.
    LIMITS = {"blocks": (1, 256), "decoder_blocks": (1, 256), "bottleneck": (1, 256), "dropout": (0.0, 1.0)}


class DensePyramid(PaddedModel):
    """Stem → [dense block → transition down]×L → bottleneck → [transition up → concat skip → dense block]×L → output."""

    def __init__(self, config: DensePyramidConfig):
        super().__init__()
        self.config = config
        c = config
        self.conditions = Conditions.from_options(vars(c))
        DOWN.get(c.down), UP.get(c.up), NORMS.get(c.norm)  # fail early with the list of valid names
        if not c.dense and c.block != "dense":
            raise OptionError(f"dense=false (plain sequential layers) replaces the dense block; block={c.block!r} "
                             "needs dense=true")
        block_cls = BLOCKS.get(c.block) if c.dense else PlainBlock
        decoder_sizes = tuple(c.decoder_blocks) if c.decoder_blocks is not None else tuple(reversed(c.blocks))
        if len(decoder_sizes) != len(c.blocks):
            raise OptionError(f"decoder_blocks {decoder_sizes} must have one entry per encoder block {tuple(c.blocks)}")
        if c.unshuffle not in (1, 2, 4):
            raise OptionError(f"unshuffle must be 1 (off), 2 or 4, got {c.unshuffle}")
        self.unshuffle = int(c.unshuffle)
        # The input is padded to a multiple of 2**levels: the pyramid's levels and the unshuffle's factor.
        self.levels = len(c.blocks) + self.unshuffle.bit_length() - 1

        def block(in_ch: int, n: int) -> nn.Module:
            return block_cls(in_ch, c.growth, n, c.dropout, memory_efficient=c.memory_efficient, norm=c.norm)

        stem_in = (c.in_channels + self.conditions.extra_channels) * self.unshuffle**2
        self.stem = nn.Sequential(nn.Conv2d(stem_in, c.m, 3, padding=1), nn.ReLU(inplace=True))
        channels = c.m
        self.encoder, self.down = nn.ModuleList(), nn.ModuleList()
        skip_channels = []
        for n in c.blocks:
            blk = block(channels, n)
            self.encoder.append(blk)
            channels = channels + blk.out_channels if blk.concat_input else blk.out_channels
            skip_channels.append(channels)
            self.down.append(DOWN.get(c.down)(channels, c.dropout, norm=c.norm))
        self.bottleneck = block(channels, c.bottleneck)
        # FC-DenseNet: only the new features of a block go up, which keeps the decoder narrow.
        up_channels = self.bottleneck.out_channels
        self.up, self.decoder = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(decoder_sizes, reversed(skip_channels)):
            self.up.append(UP.get(c.up)(up_channels, up_channels))
            in_ch = up_channels + (skip if c.skips else 0)
            blk = block(in_ch, n)
            self.decoder.append(blk)
            up_channels = blk.out_channels
            last_in = in_ch
        # The last block keeps its input too (FC-DenseNet), so the output sees the stem-level skip.
        final = up_channels + (last_in if self.decoder and self.decoder[-1].concat_input else 0)
        if not c.blocks:
            final = channels + self.bottleneck.out_channels if self.bottleneck.concat_input else up_channels
        # Unshuffled, the colours come first (channel c becomes channels c·u² ... c·u² + u² − 1), so a residual
        # output adds its correction to the image's own sub-images.
        self.output = OutputBlock(final, c.out_channels * self.unshuffle**2, residual=c.residual)
        start_at_fill(self.output, self.conditions.hole_fill)

    def _stage(self, module: nn.Module, features: list[torch.Tensor], *extra: torch.Tensor) -> torch.Tensor:
        """`module(concat(features), *extra)`; memory-efficiently, the concat and the module's inner maps
        (a transition's conv, BN and pooling inputs, the output conv's wide input) are recomputed in backward."""
        if self.config.memory_efficient and wants_checkpoint(features):
            return checkpointed(module, module, features, *extra)
        return module(concat(features), *extra)

    @staticmethod
    def _block(block: nn.Module, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(what goes on: the inputs and the new maps for a dense block, only the output for a plain one;
        the new maps alone)."""
        if block.concat_input:
            features = block.extend(inputs)
            return features, features[len(inputs):]
        out = [block(inputs)]
        return out, out

    def body(self, image: torch.Tensor) -> torch.Tensor:
        # Feature maps travel as lists (block input, then each layer's new maps) and are concatenated only
        # where a layer consumes them, so no level holds a second, concatenated copy of its skip.
        if self.unshuffle > 1:
            image = F.pixel_unshuffle(image, self.unshuffle)  # B×C×H×W → B×C·u²×H/u×W/u
        features = [self.stem(image)]
        skips = []
        for block, down in zip(self.encoder, self.down):
            features, _ = self._block(block, features)
            skips.append(features)
            features = [self._stage(down, features)]
        features, new = self._block(self.bottleneck, features)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            features, new = self._block(block, [self._stage(up, new)] + (skip if self.config.skips else []))
        out = self._stage(self.output, features, image)
        return F.pixel_shuffle(out, self.unshuffle) if self.unshuffle > 1 else out

    def rf_path(self) -> list[tuple[str, int, int]]:
        """Longest path as (kind, kernel, stride) steps, for the theoretical receptive field."""
        c = self.config
        decoder_sizes = tuple(c.decoder_blocks) if c.decoder_blocks is not None else tuple(reversed(c.blocks))
        down, up = DOWN.get(c.down).rf_step, UP.get(c.up).rf_step  # declared where each is registered
        path = [("conv", c.unshuffle, c.unshuffle)] if c.unshuffle > 1 else []  # the unshuffle: a stride-u step
        path += [("conv", 3, 1)]
        for n in c.blocks:
            path += [("conv", 3, 1)] * n + [down]
        path += [("conv", 3, 1)] * c.bottleneck
        for n in decoder_sizes:
            path += [up] + [("conv", 3, 1)] * n
        return path + [("conv", 3, 1)]


def _dense(name: str, **defaults) -> None:
    """Register a dense pyramid with its defaults; any config field can be overridden at creation."""
    register_configured(name, DensePyramid, DensePyramidConfig, ("blocks", "decoder_blocks"), **defaults)


# Names list the encoder block sizes followed by the bottleneck size.
_dense("pyramidal44", blocks=(4,), bottleneck=4)
_dense("pyramidal457", blocks=(4, 5), bottleneck=7)
_dense("pyramidal4571012", blocks=(4, 5, 7, 10), bottleneck=12)
_dense("pyramidal457101215", blocks=(4, 5, 7, 10, 12), bottleneck=15)
# A light 4-level pyramid (0.8 M parameters, 0.57 GFLOPs at 64×64) sized for CPU training:
# the built-in weights use it, residual, so eight of them ship in a few MB.
_dense("pyramidal23456", blocks=(2, 3, 4, 5), bottleneck=6, m=24, growth=12, residual=True)
# Same depth (103 convs) and transitions as pyramidal457101215, but neither dense connections nor skips.
_dense("plain103", blocks=(4, 5, 7, 10, 12), bottleneck=15, dense=False, skips=False, growth=48)
