"""The scores: PSNR/SSIM on 8-bit RGB, and over the holes alone.

Metrics are scikit-image's `peak_signal_noise_ratio(data_range=255)` and
`structural_similarity(channel_axis=-1, data_range=255)` on H×W×3 uint8 images.
Tasks with holes are also scored over the hole alone (`hole_scores`): PSNR from the hole pixels' MSE, SSIM
as the mean of the SSIM map over the hole pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 H×W×3 numpy from a 3×H×W tensor or an H×W×3 array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 H×W×3, got {image.dtype} {image.shape}")
    return image


def psnr(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB on 8-bit RGB (scikit-image, data_range=255); inf for identical images."""
    from skimage.metrics import peak_signal_noise_ratio

    ref, img = hwc(reference), hwc(image)
    if np.array_equal(ref, img):
        return math.inf  # skimage would warn about a division by zero
    return float(peak_signal_noise_ratio(ref, img, data_range=255))


def _ssim_full(ref: np.ndarray, img: np.ndarray) -> tuple[float, np.ndarray | None]:
    """(SSIM, its H×W×3 map); (NaN, None) for images under 3 px."""
    from skimage.metrics import structural_similarity

    side = min(ref.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float("nan"), None
    value, full = structural_similarity(ref, img, channel_axis=-1, data_range=255, win_size=win, full=True)
    return float(value), full


def ssim(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor) -> float:
    """SSIM on 8-bit RGB (scikit-image, channel_axis=-1, data_range=255; 7×7 window, smaller for tiny images)."""
    return _ssim_full(hwc(reference), hwc(image))[0]


def hole_scores(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor,
                mask: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) over the hole pixels (H×W bool mask) alone; NaN for an empty hole.

    PSNR comes from the MSE of the hole's pixels (all three channels); SSIM is the mean of scikit-image's SSIM
    map over them, so each hole pixel is scored with its 7×7 window, which reaches into the known pixels.
    """
    ref, img = hwc(reference), hwc(image)
    hole = np.asarray(mask, dtype=bool)
    if not hole.any():
        return float("nan"), float("nan")
    mse = float(np.mean((ref[hole].astype(np.float64) - img[hole].astype(np.float64)) ** 2))
    value = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    _, full = _ssim_full(ref, img)
    return value, float("nan") if full is None else float(full[hole].mean())


def scores(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor,
           mask: np.ndarray | None = None) -> dict[str, float]:
    """{"psnr", "ssim"} of one image; with a mask also {"psnr_hole", "ssim_hole"} (`hole_scores`)."""
    out = {"psnr": psnr(reference, image), "ssim": ssim(reference, image)}
    if mask is not None:
        out["psnr_hole"], out["ssim_hole"] = hole_scores(reference, image, mask)
    return out
