"""Basic building blocks: activations, input / conv / transposed-conv / output blocks, padding helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.damage import MAGENTA
from pyramidal.pixels import model_to_eight_bit_grid
from pyramidal.registry import Registry

if TYPE_CHECKING:
    from pyramidal.models.conditions import Conditions

ACTIVATIONS = Registry("activation")


@ACTIVATIONS.register("relu")
def relu() -> nn.Module:
    return nn.ReLU(inplace=True)


@ACTIVATIONS.register("leakyrelu")
def leakyrelu(negative_slope: float = 0.2) -> nn.Module:
    return nn.LeakyReLU(negative_slope, inplace=True)


def input_block(in_channels: int, out_channels: int, activation: str = "relu") -> nn.Sequential:
    """3×3 conv + activation: the stem that lifts RGB to the first feature width."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), ACTIVATIONS.get(activation)())


def conv_block(in_channels: int, out_channels: int, stride: int = 1, activation: str = "relu") -> nn.Sequential:
    """3×3 conv + BN + activation; stride 2 halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        ACTIVATIONS.get(activation)(),
    )


def convtranspose_block(in_channels: int, out_channels: int, activation: str = "relu") -> nn.Sequential:
    """3×3 stride-2 transposed conv + BN + activation: exactly doubles the resolution."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        ACTIVATIONS.get(activation)(),
    )


class OutputBlock(nn.Module):
    """3×3 conv to RGB, then Tanh; with `residual`, the conv predicts a correction added to the input."""

    def __init__(self, in_channels: int, out_channels: int = 3, residual: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.residual = residual

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        out = self.conv(features)
        if self.residual:
            # Clamp rather than Tanh: identity stays reachable, and output stays in [-1, 1]. A mask-conditioned
            # input carries the mask after the colour channels: the correction applies to the colours.
            return (image[:, : out.shape[1]] + out).clamp(-1.0, 1.0)
        return torch.tanh(out)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H and W at the bottom/right to a multiple; reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    # Reflect needs the pad smaller than the size; tiny images fall back to edge replication.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def mask_conditioned_input(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The input of a model built with `mask_input=True`: B×3×H×W images in [-1, 1] and a B×1×H×W mask
    (true or 1 = hole) → B×4×H×W, the holes set to 0 (mid-grey, whatever colour they were) and the mask as a
    fourth channel of 0 (known) and 1 (hole)."""
    hole = mask.to(device=images.device, dtype=images.dtype)
    return torch.cat([images * (1 - hole), hole], dim=1)


# The research's colour key: hole tasks paint their holes magenta (255, 0, 255). When most pixels near magenta
# are exactly magenta (a lossless file keeps the key), the holes are the exact ones. Otherwise a pixel is a hole
# when every channel is within MAGENTA_TOLERANCE of magenta, or when it is within MAGENTA_GROW px of such a
# pixel and still leans to magenta (min(R, B) − G ≥ MAGENTA_LEAN): JPEG smears the key's edges and thin strokes.
# Measured on strokes and squares over photographs saved at JPEG quality 50 / 75 / 90: 0.2 / 0.07 / 0.05 % of
# the hole pixels missed; no natural pixel of the validation photographs passes on its own.
MAGENTA_TOLERANCE = 64
MAGENTA_LEAN = 48
MAGENTA_GROW = 2
# How a model built with `find_holes` finds them in its 3-channel input (a model option, stored in its weights):
# none (a blind model that sees the key's colour and nothing more), or magenta (`magenta_holes`).
HOLE_FINDERS = ("none", "magenta")


def magenta_holes(images: torch.Tensor, tolerance: int = MAGENTA_TOLERANCE) -> torch.Tensor:
    """B×1×H×W bool: the holes painted in the colour key in B×3×H×W `images` in [-1, 1], per image."""
    px = model_to_eight_bit_grid(images[:, :3])  # unclipped: a value past the range is no exact key
    key = torch.tensor(MAGENTA, dtype=px.dtype, device=px.device).view(1, 3, 1, 1)
    distance = (px - key).abs().amax(dim=1, keepdim=True)
    holes, exact = distance <= tolerance, distance == 0
    grown = holes
    lean = torch.minimum(px[:, :1], px[:, 2:3]) - px[:, 1:2] >= MAGENTA_LEAN
    for _ in range(MAGENTA_GROW):
        near = F.max_pool2d(grown.float(), 3, stride=1, padding=1) > 0
        grown = grown | (near & lean)
    # An image that kept the key exactly (most candidate pixels exact) has exactly those holes: nothing smeared.
    kept = (2 * exact.sum(dim=(1, 2, 3), keepdim=True)) >= holes.sum(dim=(1, 2, 3), keepdim=True)
    return torch.where(kept, exact, grown)


# How a mask-conditioned model sees its holes before its first layer (a model option, stored in its weights):
# grey: as `mask_conditioned_input` leaves them, a constant 0 (mid-grey); smooth: filled from the known pixels
# around them by `smooth_fill`, so that a residual model learns only the correction to a classical fill.
HOLE_FILLS = ("grey", "smooth")


def _laplacian(u: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian / 4 of a B×C×H×W map, edges replicated."""
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    return (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) / 4 - u


def smooth_fill(images: torch.Tensor, hole: torch.Tensor, harmonic: int = 16, biharmonic: int = 64) -> torch.Tensor:
    """Fill the holes of B×C×H×W `images` (B×1×H×W `hole`, 1 = hole) smoothly from the known pixels around them.

    Multigrid on an image pyramid: known-pixel-weighted averages go down (push), and from the coarsest level up
    (pull) each level starts from the bilinear up-sampling of the one below, then relaxes the pixels it does not
    know: `harmonic` Jacobi steps of Laplace's equation (a membrane, like Navier–Stokes inpainting), then
    `biharmonic` gradient steps on the squared Laplacian (a thin plate, which carries edges' slopes into the
    hole, like scikit-image's biharmonic inpainting). On the built-in validation crops it lands between OpenCV's
    Navier–Stokes and scikit-image's biharmonic fill, at a small fraction of their time. Known pixels come back
    unchanged; a hole with no known pixel at all is filled with 0. Float32 throughout, whatever the autocast.
    """
    dtype = images.dtype
    if hole.device.type != "meta" and not hole.any():  # nothing to fill (a tile away from every hole)
        return images
    values, known = images.float(), 1 - hole.float()
    pyramid = [(values * known, known)]
    while max(pyramid[-1][1].shape[-2:]) > 1:  # down to one pixel, so a hole anywhere sees every known pixel
        v, w = pyramid[-1]
        kernel = tuple(2 if n > 1 else 1 for n in w.shape[-2:])
        pyramid.append((F.avg_pool2d(v, kernel, ceil_mode=True), F.avg_pool2d(w, kernel, ceil_mode=True)))
    filled = None
    for v, w in reversed(pyramid):
        mean = v / w.clamp_min(1e-8)
        # How far a level trusts its own average: fully once a sixteenth of its area is known.
        trust = (w * 16).clamp(max=1)
        if filled is None:
            filled = mean * trust
            continue
        filled = F.interpolate(filled, size=v.shape[-2:], mode="bilinear", align_corners=False)
        fixed, free = trust * mean, 1 - trust
        filled = fixed + free * filled
        for _ in range(harmonic):
            filled = torch.addcmul(fixed, free, filled.add_(_laplacian(filled)))
        step = free * -0.2
        for _ in range(biharmonic):
            filled.addcmul_(step, _laplacian(_laplacian(filled)))
    return torch.where(hole.bool(), filled, values).to(dtype)


def start_at_fill(output: OutputBlock, hole_fill: str) -> None:
    """With hole_fill=smooth, zero a residual output conv, so that the model starts as the classical fill itself."""
    if hole_fill == "smooth" and output.residual:
        nn.init.zeros_(output.conv.weight)
        nn.init.zeros_(output.conv.bias)


def fill_holes(x: torch.Tensor) -> torch.Tensor:
    """`mask_conditioned_input`'s B×(C+1)×H×W output with its holes `smooth_fill`ed (the mask channel kept)."""
    # The fill's shifted slices run 2-3× faster on plain NCHW than on a channels-last input.
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    colours, hole = x[:, :-1].contiguous(), x[:, -1:].contiguous()
    out = torch.cat([smooth_fill(colours, hole), hole], dim=1)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def noise_map_input(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """The input of a model built with `noise_map=True` (FFDNet-style): B×3×H×W images in [-1, 1] and the
    noise σ on the 0-255 scale, one per image (a B tensor) or one for all → B×4×H×W, a constant σ/255 channel
    after the colours."""
    level = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1) / 255.0
    return torch.cat([images, level.expand(images.shape[0], 1, *images.shape[2:])], dim=1)


NORMS = Registry("normalisation")


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of each pixel of a B×C×H×W map (NAFNet's), with a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused layer norm over the last dim, on a channels-last view: 9× faster on one CPU thread
        # (fwd + bwd) than the mean/variance written out, which stores every intermediate map.
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


@NORMS.register("batch")
def batch_norm(channels: int) -> nn.Module:
    """BatchNorm2d, as in the research: batch statistics in training, running averages in eval."""
    return nn.BatchNorm2d(channels)


@NORMS.register("layer")
def layer_norm(channels: int) -> nn.Module:
    """LayerNorm2d: per pixel over the channels, the same in training and eval, independent of the batch."""
    return LayerNorm2d(channels)


@NORMS.register("none")
def no_norm(channels: int) -> nn.Module:
    """No normalisation (as EDSR and most super-resolution nets)."""
    return nn.Identity()


class PaddedModel(nn.Module):
    """Base for models that down-sample `levels` times: pads the input to 2**levels and crops back.

    `conditions` (`models.conditions.Conditions`, set by the model from its config) says what the model takes
    besides the image; the forward pass finds the holes of a find_holes model and fills the holes it knows of.
    """

    levels: int = 0
    conditions: Conditions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        given = hole = None
        if self.conditions.find_holes == "magenta":
            # Blind, but it knows the research's key: it finds the holes, fills them like a mask-conditioned
            # model, and keeps every pixel it found no hole in.
            given, hole = x, magenta_holes(x)
            x = mask_conditioned_input(x, hole)
        if self.conditions.hole_fill == "smooth":
            x = fill_holes(x)
        padded, (h, w) = pad_to_multiple(x, 2**self.levels)
        out = self.body(padded)[..., :h, :w]
        return out if hole is None else torch.where(hole, out.to(given.dtype), given)  # known pixels exactly

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
