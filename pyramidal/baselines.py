"""The classical methods a model is scored against: CBM3D and non-local means (true, estimated or oracle σ),
up-scaling, deconvolution with the known kernel, and inpainting with the true mask.

Each damage task names the methods it is scored against (`Task.baselines`, names in `BASELINES`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyramidal.damage import TASKS
from pyramidal.metrics import psnr
from pyramidal.registry import Registry

INSTALL_HINT = "not installed (pip install -e .[baselines])"


@dataclass
class Context:
    """What a baseline may know about one damaged image: the task, its clean-image side info, the mask."""

    task: Any
    clean: np.ndarray  # H×W×3 uint8 (used only to recompute side information such as the small image)
    mask: np.ndarray | None  # H×W bool, painted pixels (hole tasks)


@dataclass
class Baseline:
    name: str
    run: Callable[[np.ndarray, Context], np.ndarray]  # damaged H×W×3 uint8 -> restored H×W×3 uint8
    slow: bool = False
    requires: str | None = None  # optional module; missing → a "not installed" row


def _to_u8(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    return np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)


def cbm3d(damaged: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D (the `bm3d` package's colour BM3D) for noise σ (0-255), on [0, 1] images."""
    import bm3d

    return _to_u8(bm3d.bm3d_rgb(damaged.astype(np.float64) / 255.0, sigma_psd=float(sigma) / 255.0))


def bm3d_denoise(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """CBM3D given the true σ."""
    return cbm3d(damaged, float(ctx.task.sigma))


def nlmeans_strength(sigma: float) -> float:
    """OpenCV non-local means filter strength h for noise σ (tuned on the built-in validation crops)."""
    return 0.6 * sigma if sigma <= 60 else 0.4 * sigma


def nlmeans(damaged: np.ndarray, sigma: float) -> np.ndarray:
    """cv2.fastNlMeansDenoisingColored (7×7 template, 21×21 search) with h = `nlmeans_strength(σ)`."""
    import cv2

    h = nlmeans_strength(float(sigma))
    bgr = cv2.cvtColor(damaged, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21), cv2.COLOR_BGR2RGB)


def nlmeans_denoise(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """OpenCV non-local means with h tuned to the true σ."""
    return nlmeans(damaged, float(ctx.task.sigma))


# Real noise has no σ to give: the blind rows estimate one from the image, the oracle rows pick from this grid
# (0-255 scale) the σ that scores best against the clean image, which no user can do.
ORACLE_SIGMAS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)


def estimated_sigma(image: np.ndarray) -> float:
    """The noise σ (0-255) of an H×W×3 uint8 image: scikit-image's wavelet estimate (`estimate_sigma`, the
    finest diagonal sub-band's median absolute deviation), averaged over the channels."""
    from skimage.restoration import estimate_sigma

    return 255.0 * float(estimate_sigma(image.astype(np.float64) / 255.0, channel_axis=-1, average_sigmas=True))


def _blind(method: Callable[[np.ndarray, float], np.ndarray]) -> Callable[[np.ndarray, Context], np.ndarray]:
    def run(damaged: np.ndarray, ctx: Context) -> np.ndarray:
        return method(damaged, estimated_sigma(damaged))

    return run


def _oracle(method: Callable[[np.ndarray, float], np.ndarray]) -> Callable[[np.ndarray, Context], np.ndarray]:
    """The method at the σ of ORACLE_SIGMAS that scores best against the clean image. PSNR against σ has one
    peak, so a climb finds the grid's best in a few tries (CBM3D is slow); it starts at the grid's σ nearest
    the noise's RMS, which the oracle knows from the clean image."""
    def run(damaged: np.ndarray, ctx: Context) -> np.ndarray:
        tried: dict[int, tuple[float, np.ndarray]] = {}

        def score(i: int) -> float:
            if i not in tried:
                out = method(damaged, ORACLE_SIGMAS[i])
                tried[i] = (psnr(ctx.clean, out), out)
            return tried[i][0]

        rms = float(np.sqrt(np.mean((damaged.astype(np.float64) - ctx.clean) ** 2)))
        best = min(range(len(ORACLE_SIGMAS)), key=lambda i: abs(math.log(ORACLE_SIGMAS[i] / max(rms, 0.5))))
        while True:
            neighbours = [i for i in (best - 1, best + 1) if 0 <= i < len(ORACLE_SIGMAS)]
            better = max(neighbours, key=score)
            if score(better) <= score(best):
                return tried[best][1]
            best = better

    return run


def _upscale(method: str) -> Callable[[np.ndarray, Context], np.ndarray]:
    def run(damaged: np.ndarray, ctx: Context) -> np.ndarray:
        import cv2

        flags = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
        clean = torch.from_numpy(ctx.clean).permute(2, 0, 1)
        small = ctx.task.pixelate_small(clean).permute(1, 2, 0).numpy()
        h, w = damaged.shape[:2]
        return cv2.resize(np.ascontiguousarray(small), (w, h), interpolation=flags[method])

    run.__doc__ = f"{method} up-scaling of the task's small image"
    return run


def _deconvolve(damaged: np.ndarray, kernel: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    # Edge padding: both methods assume periodic or zero borders, the task replicates them.
    p = 2 * kernel.shape[0]
    x = np.pad(damaged.astype(np.float64) / 255.0, ((p, p), (p, p), (0, 0)), mode="edge")
    out = np.stack([fn(x[..., c]) for c in range(3)], axis=-1)[p:-p, p:-p]
    return _to_u8(out)


WIENER_BALANCE = 2e-4  # tuned on the built-in validation crops
RL_ITERATIONS = 50


def wiener_deblur(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """skimage.restoration.wiener with the known kernel, per channel."""
    from skimage.restoration import wiener

    k = ctx.task.kernel()
    return _deconvolve(damaged, k, lambda ch: wiener(ch, k, WIENER_BALANCE, clip=False))


def richardson_lucy_deblur(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """skimage.restoration.richardson_lucy with the known kernel, per channel."""
    from skimage.restoration import richardson_lucy

    k = ctx.task.kernel()
    return _deconvolve(damaged, k, lambda ch: richardson_lucy(ch, k, num_iter=RL_ITERATIONS, clip=False))


INPAINT_RADIUS = 5  # tuned on the built-in validation crops


def _inpaint(flag_name: str) -> Callable[[np.ndarray, Context], np.ndarray]:
    def run(damaged: np.ndarray, ctx: Context) -> np.ndarray:
        import cv2

        if ctx.mask is None or not ctx.mask.any():
            return damaged.copy()
        mask = ctx.mask.astype(np.uint8) * 255
        return cv2.inpaint(np.ascontiguousarray(damaged), mask, INPAINT_RADIUS, getattr(cv2, flag_name))

    return run


def biharmonic_inpaint(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """skimage.restoration.inpaint_biharmonic with the true mask, the three channels together."""
    from skimage.restoration import inpaint_biharmonic

    if ctx.mask is None or not ctx.mask.any():
        return damaged.copy()
    filled = inpaint_biharmonic(damaged.astype(np.float64) / 255.0, ctx.mask, channel_axis=-1)
    return np.where(ctx.mask[..., None], _to_u8(filled), damaged)


# Every classical method by name; each damage task names those it is scored against (`Task.baselines`).
BASELINES = Registry("baseline")
for _name, _baseline in (
    ("bm3d", Baseline("BM3D (CBM3D, true σ)", bm3d_denoise, slow=True, requires="bm3d")),
    ("opencv-nlmeans", Baseline("OpenCV non-local means (true σ)", nlmeans_denoise)),
    ("bm3d-est", Baseline("BM3D (CBM3D, σ estimated)", _blind(cbm3d), slow=True, requires="bm3d")),
    ("opencv-nlmeans-est", Baseline("OpenCV non-local means (σ estimated)", _blind(nlmeans))),
    ("bm3d-oracle", Baseline("BM3D (CBM3D, oracle σ: the grid's best against the clean image)", _oracle(cbm3d),
                             slow=True, requires="bm3d")),
    ("opencv-nlmeans-oracle", Baseline("OpenCV non-local means (oracle σ: the grid's best against the clean image)",
                                       _oracle(nlmeans))),
    ("bilinear", Baseline("bilinear up-scaling", _upscale("bilinear"))),
    ("bicubic", Baseline("bicubic up-scaling", _upscale("bicubic"))),
    ("lanczos", Baseline("Lanczos up-scaling", _upscale("lanczos"))),
    ("wiener", Baseline("Wiener deconvolution (known kernel)", wiener_deblur)),
    ("richardson-lucy", Baseline(f"Richardson–Lucy, {RL_ITERATIONS} it. (known kernel)", richardson_lucy_deblur)),
    ("opencv-telea", Baseline("OpenCV Telea inpainting (true mask)", _inpaint("INPAINT_TELEA"))),
    ("opencv-ns", Baseline("OpenCV Navier–Stokes inpainting (true mask)", _inpaint("INPAINT_NS"))),
    ("biharmonic", Baseline("scikit-image biharmonic inpainting (true mask)", biharmonic_inpaint)),
):
    BASELINES.register(_name)(_baseline)


def baselines_for(task_name: str) -> list[Baseline]:
    """The classical methods reported next to the model for a task (the damaged input is always added)."""
    return [BASELINES.get(name) for name in TASKS.get(task_name).baselines]


def module_available(name: str) -> bool:
    """Whether the optional module a baseline needs (`Baseline.requires`) is installed."""
    return importlib.util.find_spec(name) is not None
