"""A plain fp32 NCHW FC-DenseNet, written the straightforward way, as the speed reference for `pyramidal bench`.

It is deliberately kept out of the package: no channels_last, no autocast, no fused or in-place tricks,
a fresh `torch.cat` of every earlier feature map in each layer, `torch.no_grad()` for inference.
It builds exactly the architecture of the package's dense pyramids with max-pool transitions down and
transposed-conv transitions up (e.g. `pyramidal457101215`: m=48, k=16, blocks 4-5-7-10-12, bottleneck 15,
103 convs, 9.33 M parameters), with the same module names, so the package model's `state_dict` loads into it
and both compute the same function.

`pyramidal bench --reference` loads this file by path; it can also be run on its own:
    python benchmarks/plain_fc_densenet.py [--size 64] [--batch-size 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class PlainDenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.dropout(self.conv(F.relu(self.norm(x))))


class PlainDenseBlock(nn.Module):
    def __init__(self, in_channels: int, growth: int, num_layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            PlainDenseLayer(in_channels + i * growth, growth, dropout) for i in range(num_layers)
        )
        self.out_channels = num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features[1:], 1)


def transition_down(channels: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class PlainOutput(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, residual: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.residual = residual

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.residual:  # the conv predicts a correction to the input
            return (image + self.conv(x)).clamp(-1.0, 1.0)
        return torch.tanh(self.conv(x))


class PlainFCDenseNet(nn.Module):
    """Stem → [dense block → concat → transition down]×L → bottleneck → [up → concat skip → dense block]×L → output."""

    def __init__(self, blocks=(4, 5, 7, 10, 12), bottleneck: int = 15, m: int = 48, growth: int = 16,
                 dropout: float = 0.2, in_channels: int = 3, out_channels: int = 3, residual: bool = False):
        super().__init__()
        self.levels = len(blocks)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, m, 3, padding=1), nn.ReLU())
        channels, skip_channels = m, []
        self.encoder, self.down = nn.ModuleList(), nn.ModuleList()
        for n in blocks:
            self.encoder.append(PlainDenseBlock(channels, growth, n, dropout))
            channels += n * growth
            skip_channels.append(channels)
            self.down.append(transition_down(channels, dropout))
        self.bottleneck = PlainDenseBlock(channels, growth, bottleneck, dropout)
        up_channels = bottleneck * growth
        self.up, self.decoder = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(reversed(blocks), reversed(skip_channels)):
            self.up.append(nn.ConvTranspose2d(up_channels, up_channels, 3, stride=2, padding=1, output_padding=1))
            in_ch = up_channels + skip
            self.decoder.append(PlainDenseBlock(in_ch, growth, n, dropout))
            up_channels = n * growth
        self.output = PlainOutput(in_ch + up_channels, out_channels, residual)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] % 2**self.levels or image.shape[-2] % 2**self.levels:
            raise ValueError(f"the plain reference needs H and W divisible by {2**self.levels}")
        x = self.stem(image)
        skips = []
        for block, down in zip(self.encoder, self.down):
            x = torch.cat([x, block(x)], 1)
            skips.append(x)
            x = down(x)
        new = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = torch.cat([up(new), skip], 1)
            new = block(x)
        return self.output(torch.cat([x, new], 1), image)


def from_config(config) -> PlainFCDenseNet:
    """The plain twin of a package `DensePyramidConfig`; ValueError if the config is not a plain FC-DenseNet."""
    c = config
    decoder = tuple(c.decoder_blocks) if c.decoder_blocks is not None else tuple(reversed(c.blocks))
    unsupported = []
    if not c.dense or not c.skips:
        unsupported.append("dense=True and skips=True")
    if c.down != "maxpool" or c.up != "convtranspose":
        unsupported.append("down=maxpool, up=convtranspose")
    if c.memory_efficient:
        unsupported.append("memory_efficient=False")
    if decoder != tuple(reversed(c.blocks)) or not c.blocks:
        unsupported.append("a mirrored decoder")
    if unsupported:
        raise ValueError("the plain reference only builds FC-DenseNets with " + "; ".join(unsupported))
    return PlainFCDenseNet(tuple(c.blocks), c.bottleneck, c.m, c.growth, c.dropout, c.in_channels, c.out_channels,
                           c.residual)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    model = PlainFCDenseNet()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(args.batch_size, 3, args.size, args.size) * 2 - 1
    times = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        loss = F.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    print(f"plain fp32 NCHW training: {args.batch_size / statistics.median(times):.2f} images/s")


if __name__ == "__main__":
    main()
