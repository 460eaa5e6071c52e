"""The pixels of training and evaluation patches: crops, rescaling and augmentation.

Every random draw comes from `_rng(tag, ...)`: the tags below keep the seed streams of different purposes
(sample order, augmentation, damage, fixed crops) apart.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from pyramidal.damage import derive_seed

# Tags keep the seed streams of different purposes apart.
_TAG_ORDER = 0x0D3E
_TAG_AUG = 0xA06
_TAG_DAMAGE = 0xDA3A
_TAG_VALCROP = 0x7A1C
_TAG_TESTCROP = 0x7E57


def _rng(*parts: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(*parts)))


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------------------
# Geometry and augmentation


def _upscale_to(im: Image.Image, min_side: int) -> Image.Image:
    """Upscale (bicubic) so that both sides are at least min_side; larger images are untouched."""
    if im.width >= min_side and im.height >= min_side:
        return im
    s = min_side / min(im.width, im.height)
    return im.resize((max(min_side, math.ceil(im.width * s)), max(min_side, math.ceil(im.height * s))), Image.BICUBIC)


def _centre_crop(im: Image.Image, h: int, w: int) -> Image.Image:
    h, w = min(h, im.height), min(w, im.width)
    top, left = (im.height - h) // 2, (im.width - w) // 2
    return im.crop((left, top, left + w, top + h))


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _colour_jitter(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight brightness, saturation and contrast changes (each factor in [0.9, 1.1])."""
    b, c, s = (np.float32(v) for v in rng.uniform(0.9, 1.1, size=3))
    x = arr.reshape(-1, 3).astype(np.float32)
    # brightness ×b, saturation (blend with luma) ×s, contrast (about the mean luma) ×c: one affine map.
    sat = s * np.eye(3, dtype=np.float32) + (1 - s) * np.outer(np.ones(3, dtype=np.float32), _LUMA)
    mean_luma = b * np.float32((x @ _LUMA).mean())
    y = x @ (c * b * sat).T + (1 - c) * mean_luma
    return np.clip(np.round(y), 0, 255).astype(np.uint8).reshape(arr.shape)


def _finish(im: Image.Image, rng: np.random.Generator | None) -> torch.Tensor:
    """PIL crop -> uint8 3×H×W tensor, with flip and colour jitter when rng is given (training)."""
    arr = np.array(im, dtype=np.uint8)
    if rng is not None:
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        arr = _colour_jitter(arr, rng)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def random_patch(im: Image.Image, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Training patch: rescale by s in [0.95, 1.05] (crop size/s, resize to size), random crop, flip, jitter."""
    s = rng.uniform(0.95, 1.05)
    c = max(1, round(size / s))
    im = _upscale_to(im, c)
    top = int(rng.integers(0, im.height - c + 1))
    left = int(rng.integers(0, im.width - c + 1))
    patch = im.crop((left, top, left + c, top + c))
    if c != size:
        patch = patch.resize((size, size), Image.BICUBIC)
    return _finish(patch, rng)


def centre_patch(im: Image.Image, size: int) -> torch.Tensor:
    """Validation/test patch: upscale if smaller than size, then centre crop size×size."""
    return _finish(_centre_crop(_upscale_to(im, size), size, size), None)


def celeba_shape(size: int) -> tuple[int, int]:
    """(H, W) CelebA images are resized to before cropping: 87×71 for 64, 174×142 for 128."""
    return round(87 * size / 64), round(71 * size / 64)


def celeba_patch(im: Image.Image, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """CelebA preparation: resize to celeba_shape(size) then centre-crop size (training: rescale, jitter)."""
    h, w = celeba_shape(size)
    if rng is None:
        return _finish(_centre_crop(im.resize((w, h), Image.BICUBIC), size, size), None)
    s = rng.uniform(0.95, 1.05)
    h, w = max(size, round(h * s)), max(size, round(w * s))
    im = im.resize((w, h), Image.BICUBIC)
    j = max(1, round(size / 16))  # keep the face near the centre: crop within ±4 px at 64
    top = min(max((h - size) // 2 + int(rng.integers(-j, j + 1)), 0), h - size)
    left = min(max((w - size) // 2 + int(rng.integers(-j, j + 1)), 0), w - size)
    return _finish(im.crop((left, top, left + size, top + size)), rng)
