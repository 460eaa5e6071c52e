"""Basic building blocks: activations, input / conv / transposed-conv / output blocks, padding helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.registry import Registry

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


def check_hole_fill(hole_fill: str, mask_input: bool) -> str:
    """Validate the `hole_fill` model option: one of HOLE_FILLS, and anything but grey only with mask_input."""
    if hole_fill not in HOLE_FILLS:
        raise ValueError(f"hole_fill {hole_fill!r}: choose one of {', '.join(HOLE_FILLS)}")
    if hole_fill != "grey" and not mask_input:
        raise ValueError(f"hole_fill={hole_fill} fills the holes of the mask given as input; it needs mask_input=true")
    return hole_fill


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


def example_input(model: nn.Module, batch: int, height: int, width: int, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random input of the kind `model` takes, for timing and counting: images in [-1, 1], then a 0/1 mask
    with a fifth of the pixels holes (`mask_input`) or a σ = 25 noise-level channel (`noise_map`)."""
    images = torch.rand(batch, getattr(getattr(model, "config", None), "in_channels", 3), height, width,
                        generator=generator) * 2 - 1
    if getattr(model, "mask_input", False):
        images = mask_conditioned_input(images, torch.rand(batch, 1, height, width, generator=generator) < 0.2)
    elif getattr(model, "noise_map", False):
        images = noise_map_input(images, 25.0)
    return images


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
    """Base for models that down-sample `levels` times: pads the input to 2**levels and crops back."""

    levels: int = 0
    mask_input: bool = False  # True: the input is `mask_conditioned_input(images, mask)`, 4 channels
    noise_map: bool = False  # True: the input is `noise_map_input(images, sigma)`, 4 channels
    hole_fill: str = "grey"  # HOLE_FILLS; "smooth": the holes are `smooth_fill`ed before the first layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hole_fill == "smooth":
            x = fill_holes(x)
        padded, (h, w) = pad_to_multiple(x, 2**self.levels)
        return self.body(padded)[..., :h, :w]

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
