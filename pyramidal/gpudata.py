"""Training batches made on the training device (`pyramidal train --data-on-device`).

The training photographs are held in the device's memory once, as one flat uint8 tensor; each batch is cut,
augmented and damaged there by a few batched tensor operations: no worker processes, no PIL, no copy from
the host. On a GPU the CPU pipeline tops out at 12-35k damaged pairs per second on all cores, below what one
GPU trains a small model at; these batches are made at the GPU's own speed. On the CPU the same code runs
(slower than the CPU pipeline, but it is how the tests and the campaign's smoke run check it).

What a batch holds follows the CPU pipeline's recipe (data.random_patch, damage.py's tasks) with other random
streams: a photograph drawn uniformly, a window of side size/s for s in [0.95, 1.05] at a random position,
resampled (bicubic) to size × size, a horizontal flip half of the time, brightness, contrast and saturation
each scaled by a factor in [0.9, 1.1], rounded to 8 bits; then the task's damage with the task's own options.
Every batch is a pure function of (seed, epoch, batch, rank) on a given device, so a resumed run repeats
the batches an uninterrupted one would have made.

Tasks with damage in `DEVICE_DAMAGE`: noise (clipped 8-bit, and the `unclipped` share left as floats), blur,
pixelate, gray and the magenta holes of squares, block and grid. The others need a codec, fonts or a brush
(jpeg, text, strokes, mixed, inpaint) and keep the CPU pipeline, on persistent worker processes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pyramidal.damage import MAGENTA, Task, derive_seed, gaussian_kernel_1d
from pyramidal.data.datasets import ImageFiles, PhotoPatches, SkippedImageWarning
from pyramidal.data.patches import _upscale_to
from pyramidal.errors import OptionError, PyramidalError, flag_error, option_wording
from pyramidal.io import read_rgb
from pyramidal.pixels import eight_bit_to_model
from pyramidal.registry import Registry

__all__ = ["DEVICE_DAMAGE", "DeviceBatches", "DevicePhotos", "bench_device_pairs", "check_device_task",
           "window_side"]

_TAG_BATCH = 0x6B0A
_LUMA = (0.299, 0.587, 0.114)
SCALE_RANGE = (0.95, 1.05)  # as data.random_patch
JITTER_RANGE = (0.9, 1.1)  # as data._colour_jitter

# name -> fn(task, clean, generator) -> (damaged float 0-255, bool B×1×H×W mask or None, B σ or None)
DEVICE_DAMAGE = Registry("on-device damage")


def check_device_task(task: Task) -> None:
    """One-line error when `task` has no on-device damage (it then needs the CPU pipeline)."""
    if task.name not in DEVICE_DAMAGE.names():
        raise flag_error("{data_on_device}: task {task} is damaged on the CPU (a codec, fonts or a brush); on the "
                         "device: {names}. Leave {data_on_device} off (with {num_workers=}N) for this task",
                         "data_on_device", "num_workers", task=task.name, names=", ".join(DEVICE_DAMAGE.names()))


def window_side(size: int) -> int:
    """Side of the square window cut around a patch of `size`: the largest crop (size / 0.95) plus a margin
    for bicubic resampling and the sub-pixel start."""
    return math.ceil(size / SCALE_RANGE[0]) + 3


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, device=g.device)


def _randint(g: torch.Generator, low: torch.Tensor | int, high: torch.Tensor | int, n: int) -> torch.Tensor:
    """n integers uniform in [low, high] (inclusive; per element when tensors)."""
    return (low + (_rand(g, n) * (torch.as_tensor(high, device=g.device) - low + 1)).floor()).long()


# ----------------------------------------------------------------------------------------------------------
# Photographs in device memory


class DevicePhotos:
    """Training photographs as one flat uint8 tensor on `device` (3×H×W each, one after the other)."""

    def __init__(self, images: Sequence[torch.Tensor], device: torch.device | str, min_side: int = 1):
        if not images:
            raise PyramidalError(*option_wording("{data_on_device}: no training photographs", "data_on_device"))
        flat, heights, widths = [], [], []
        for image in images:
            if min(image.shape[1:]) < min_side:  # as the CPU pipeline upscales a photo smaller than its crop
                pil = Image.fromarray(image.permute(1, 2, 0).numpy())
                image = torch.from_numpy(np.asarray(_upscale_to(pil, min_side))).permute(2, 0, 1)
            flat.append(image.reshape(-1))
            heights.append(image.shape[1])
            widths.append(image.shape[2])
        self.device = torch.device(device)
        self.data = torch.cat(flat).to(self.device)
        self.heights = torch.tensor(heights, device=self.device)
        self.widths = torch.tensor(widths, device=self.device)
        sizes = torch.tensor([f.numel() for f in flat])
        self.offsets = (torch.cumsum(sizes, 0) - sizes).to(self.device)
        self.min_side = int(min_side)

    def __len__(self) -> int:
        return len(self.heights)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    @classmethod
    def from_dataset(cls, dataset: torch.utils.data.Dataset, device: torch.device | str,
                     min_side: int = 1) -> DevicePhotos:
        """The photographs a CPU training split reads: PhotoPatches' (built-in and builtin+PATH) or the files
        of a folder's ImageFiles; a file that does not decode is skipped with a warning, as there."""
        def tensor(im) -> torch.Tensor:
            return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()

        if isinstance(dataset, PhotoPatches):
            images = [tensor(im) for im in dataset.photos]
        elif isinstance(dataset, ImageFiles) and dataset.prepare == "crop":
            images = []
            for path in dataset.files:
                try:
                    images.append(tensor(read_rgb(path)))
                except PyramidalError as exc:
                    warnings.warn(f"{exc}; skipped", SkippedImageWarning, stacklevel=2)
        else:
            raise flag_error("{data_on_device}: {where} is prepared on the CPU (CelebA's face crops); leave "
                             "{data_on_device} off for it", "data_on_device",
                             where=getattr(dataset, "where", type(dataset).__name__))
        return cls(images, device, min_side)

    def windows(self, photo: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
        """uint8 B×3×side×side: the windows at (top, left) of photographs `photo` (B long tensors each)."""
        h, w, base = self.heights[photo], self.widths[photo], self.offsets[photo]
        steps = torch.arange(side, device=self.device)
        channel = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        index = (base.view(-1, 1, 1, 1) + channel * (h * w).view(-1, 1, 1, 1)
                 + (top.view(-1, 1, 1, 1) + steps.view(1, 1, -1, 1)) * w.view(-1, 1, 1, 1)
                 + left.view(-1, 1, 1, 1) + steps.view(1, 1, 1, -1))
        return self.data[index]


def clean_patches(photos: DevicePhotos, size: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """float B×3×size×size on the 8-bit grid (0-255): random crops, rescaled, flipped and colour-jittered."""
    side = window_side(size)
    if photos.min_side < side:
        raise ValueError(f"photographs held with a smallest side of {photos.min_side}, patches of {size} need {side}")
    photo = _randint(g, 0, len(photos) - 1, batch)
    h, w = photos.heights[photo].float(), photos.widths[photo].float()
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * _rand(g, batch)
    crop = size / scale  # the crop's side in photo pixels, resampled to `size`
    top, left = _rand(g, batch) * (h - crop), _rand(g, batch) * (w - crop)
    top0 = (top.floor() - 1).clamp(min=0).minimum(h - side).long()
    left0 = (left.floor() - 1).clamp(min=0).minimum(w - side).long()
    window = photos.windows(photo, top0, left0, side).float()
    # Where each output pixel's centre falls in its window, as grid_sample's [-1, 1] (align_corners=False).
    centres = (torch.arange(size, device=g.device) + 0.5) / size
    ys = (top - top0).view(-1, 1) + centres.view(1, -1) * crop.view(-1, 1) - 0.5
    xs = (left - left0).view(-1, 1) + centres.view(1, -1) * crop.view(-1, 1) - 0.5
    flip = _rand(g, batch) < 0.5
    xs = torch.where(flip.view(-1, 1), xs.flip(1), xs)
    grid = torch.stack(torch.broadcast_tensors(xs.view(batch, 1, size), ys.view(batch, size, 1)), dim=-1)
    patch = F.grid_sample(window, (2 * grid + 1) / side - 1, mode="bicubic", padding_mode="border",
                          align_corners=False).clamp_(0, 255)
    return _colour_jitter(patch.round_(), g).round_().clamp_(0, 255)


def _colour_jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness ×b, saturation ×s (a blend with the luma) and contrast ×c about the mean luma, as one
    affine map per image, each factor in [0.9, 1.1] (data._colour_jitter on whole batches)."""
    lo, hi = JITTER_RANGE
    b, c, s = (lo + (hi - lo) * _rand(g, 3, x.shape[0])).view(3, -1, 1, 1, 1).unbind(0)
    luma_weights = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
    luma = (x * luma_weights).sum(dim=1, keepdim=True)
    mean_luma = b * luma.mean(dim=(2, 3), keepdim=True)
    return c * b * (s * x + (1 - s) * luma) + (1 - c) * mean_luma


# ----------------------------------------------------------------------------------------------------------
# Damage on the device: each task's own options, its distributions, other random streams


def _u8(x: torch.Tensor) -> torch.Tensor:
    """Round and clip to the 8-bit grid, staying float (what an 8-bit file holds)."""
    return x.round().clamp_(0, 255)


@DEVICE_DAMAGE.register("noise")
def _noise(task, clean: torch.Tensor, g: torch.Generator):
    """σ per image as the task draws it (fixed, uniform, or `low`); the `unclipped` share of the images keeps
    its noise as unrounded floats (the papers' protocol), the rest are clipped 8-bit files."""
    b = clean.shape[0]
    if task.sigma is not None:
        sigma = torch.full((b,), float(task.sigma), device=clean.device)
    else:
        lo, hi = task.train_range
        u = _rand(g, b)
        sigma = lo + (hi - lo) * (u * u if task.sigma_dist == "low" else u)
    noisy = clean + torch.randn(clean.shape, generator=g, device=g.device) * sigma.view(-1, 1, 1, 1)
    keep = (_rand(g, b) < getattr(task, "unclipped", 0.0)).view(-1, 1, 1, 1)
    return torch.where(keep, noisy, _u8(noisy)), None, sigma


@DEVICE_DAMAGE.register("blur")
def _blur(task, clean: torch.Tensor, g: torch.Generator):
    """The task's separable Gaussian (15 taps, σ 2.6) with replicated borders."""
    taps = torch.tensor(gaussian_kernel_1d(task.size, task.sigma), dtype=clean.dtype, device=clean.device)
    p = task.size // 2
    x = F.pad(clean, (p, p, p, p), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return _u8(x), None, None


@DEVICE_DAMAGE.register("pixelate")
def _pixelate(task, clean: torch.Tensor, g: torch.Generator):
    """Bicubic antialiased down-scale by the task's factor, rounded, nearest-neighbour up-scale."""
    small = _u8(F.interpolate(clean, size=task.small_size(*clean.shape[2:]), mode="bicubic", antialias=True,
                              align_corners=False))
    return F.interpolate(small, size=tuple(clean.shape[2:]), mode="nearest"), None, None


@DEVICE_DAMAGE.register("gray")
def _gray(task, clean: torch.Tensor, g: torch.Generator):
    y = _u8((clean * torch.tensor(_LUMA, device=clean.device).view(1, 3, 1, 1)).sum(dim=1, keepdim=True))
    return y.expand(-1, 3, -1, -1).contiguous(), None, None


def _box_mask(top: torch.Tensor, left: torch.Tensor, side: torch.Tensor, active: torch.Tensor,
              h: int, w: int) -> torch.Tensor:
    """bool B×1×H×W: the union of the active square boxes (B×N tensors each)."""
    rows = torch.arange(h, device=top.device).view(1, 1, h)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    in_rows = (rows >= top.unsqueeze(-1)) & (rows < (top + side).unsqueeze(-1)) & active.unsqueeze(-1)
    in_cols = (cols >= left.unsqueeze(-1)) & (cols < (left + side).unsqueeze(-1))
    return (in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)).any(dim=1, keepdim=True)


def _paint(clean: torch.Tensor, mask: torch.Tensor):
    colour = torch.tensor(MAGENTA, dtype=clean.dtype, device=clean.device).view(1, 3, 1, 1)
    return torch.where(mask, colour, clean), mask, None


def _jitter(g: torch.Generator, m: int, b: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, dx) per image: ±2 px at 64 px in training (damage._jitter), none in evaluation."""
    j = round(2 * m / 64) if train else 0
    return _randint(g, -j, j, b), _randint(g, -j, j, b)


@DEVICE_DAMAGE.register("squares")
def _squares(task, clean: torch.Tensor, g: torch.Generator):
    """3-4 squares of side 4-14 px at 64 px (scaled by min(H, W)/64), fully inside (SquaresTask.boxes)."""
    b, _, h, w = clean.shape
    m = min(h, w)
    u = m / 64
    lo = max(1, round(4 * u))
    hi = max(lo, min(m, round(14 * u)))
    lo = min(lo, hi)
    count = _randint(g, 3, 4, b)
    side = _randint(g, lo, hi, 4 * b).view(b, 4)
    top = (_rand(g, 4 * b).view(b, 4) * (h - side + 1)).floor().long()
    left = (_rand(g, 4 * b).view(b, 4) * (w - side + 1)).floor().long()
    active = torch.arange(4, device=clean.device).view(1, 4) < count.view(-1, 1)
    return _paint(clean, _box_mask(top, left, side, active, h, w))


@DEVICE_DAMAGE.register("block")
def _block(task, clean: torch.Tensor, g: torch.Generator):
    """One centred square of side min(H, W)//2, jittered in training (BlockTask.boxes)."""
    b, _, h, w = clean.shape
    m = min(h, w)
    side = max(1, m // 2)
    dy, dx = _jitter(g, m, b, task.train)
    top = ((h - side) // 2 + dy).clamp(0, h - side).view(b, 1)
    left = ((w - side) // 2 + dx).clamp(0, w - side).view(b, 1)
    full = torch.full_like(top, side)
    return _paint(clean, _box_mask(top, left, full, torch.ones_like(top, dtype=torch.bool), h, w))


@DEVICE_DAMAGE.register("grid")
def _grid(task, clean: torch.Tensor, g: torch.Generator):
    """3×3 squares of 12/64 side at a 14/64 pitch from 12/64 in the centred square, jittered (GridTask.boxes)."""
    b, _, h, w = clean.shape
    m = min(h, w)
    u = m / 64
    side = max(1, round(12 * u))
    dy, dx = _jitter(g, m, b, task.train)
    rows = torch.tensor([round((h - m) / 2 + (12 + 14 * r) * u) for r in range(3)], device=clean.device)
    cols = torch.tensor([round((w - m) / 2 + (12 + 14 * c) * u) for c in range(3)], device=clean.device)
    top = (rows.view(1, 3, 1) + dy.view(-1, 1, 1)).clamp(0, h - side).expand(b, 3, 3).reshape(b, 9)
    left = (cols.view(1, 1, 3) + dx.view(-1, 1, 1)).clamp(0, w - side).expand(b, 3, 3).reshape(b, 9)
    full = torch.full_like(top, side)
    return _paint(clean, _box_mask(top, left, full, torch.ones_like(top, dtype=torch.bool), h, w))


# ----------------------------------------------------------------------------------------------------------
# The loader


class DeviceBatches:
    """(damaged, clean[, mask or σ]) float batches in [-1, 1] on the photographs' device, as PairLoader yields
    them: `steps_per_epoch` batches per epoch; `set_epoch` and `skip_batches` as there, for exact resume.

    `rank` and `world_size`: a torchrun process's share (other random streams per rank, an epoch's steps
    divided among the processes).
    """

    def __init__(self, photos: DevicePhotos, task: Task, size: int, batch_size: int, steps_per_epoch: int,
                 seed: int = 0, rank: int = 0, with_mask: bool = False, with_noise_level: bool = False):
        check_device_task(task)
        if with_mask and not task.has_mask:
            raise OptionError(f"with_mask=True: task {task.name} makes no holes, so it has no mask to give")
        if with_noise_level and not task.has_noise_level:
            raise OptionError(f"with_noise_level=True: task {task.name} has no noise level to give")
        self.photos, self.task, self.size, self.batch_size = photos, task, int(size), int(batch_size)
        self.steps_per_epoch, self.seed, self.rank = max(1, int(steps_per_epoch)), int(seed), int(rank)
        self.with_mask, self.with_noise_level = bool(with_mask), bool(with_noise_level)
        self.damage: Callable = DEVICE_DAMAGE.get(task.name)
        self.generator = torch.Generator(device=photos.device)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_batches(self, k: int) -> None:
        self._skip = max(0, int(k))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, ...]:
        """Batch `index` of `epoch`: the same tensors whenever it is asked for."""
        g = self.generator
        g.manual_seed(derive_seed(_TAG_BATCH, self.seed, epoch, index, self.rank))
        clean = clean_patches(self.photos, self.size, self.batch_size, g)
        damaged, mask, sigma = self.damage(self.task, clean, g)
        pair = (eight_bit_to_model(damaged), eight_bit_to_model(clean))  # in place: float32 on the 8-bit grid
        if self.with_mask:
            return (*pair, mask)
        if self.with_noise_level:
            return (*pair, sigma)
        return pair

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        for index in range(skip, self.steps_per_epoch):
            yield self.batch(epoch, index)


def bench_device_pairs(photos: DevicePhotos, task: Task, size: int = 64, batch_size: int = 256,
                       seconds: float = 1.0) -> float:
    """Damaged training pairs per second made on the photographs' device (after one warm-up batch)."""
    loader = DeviceBatches(photos, task, size, batch_size, steps_per_epoch=10**9)

    def sync() -> None:
        if photos.device.type == "cuda":
            torch.cuda.synchronize(photos.device)

    loader.batch(0, 0)
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loader.batch(0, n // batch_size + 1)
        n += batch_size
        if photos.device.type == "cuda" and n // batch_size % 8 == 0:
            sync()
    sync()
    return n / (time.perf_counter() - start)


def describe(photos: DevicePhotos) -> dict[str, Any]:
    """What is held on the device: photographs, bytes, the device."""
    return {"photographs": len(photos), "megabytes": round(photos.nbytes / 2**20, 1), "device": str(photos.device)}
