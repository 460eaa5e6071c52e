"""Honest evaluation: fixed eval damage, PSNR/SSIM on 8-bit RGB, the model against classical baselines.

Metrics are scikit-image's `peak_signal_noise_ratio(data_range=255)` and
`structural_similarity(channel_axis=-1, data_range=255)` on H×W×3 uint8 images, averaged over images.
Tasks with holes are also scored over the hole alone (`hole_scores`): PSNR from the hole pixels' MSE, SSIM
as the mean of the SSIM map over the hole pixels.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyramidal.damage import TASKS
from pyramidal.errors import PyramidalError
from pyramidal.io import format_number
from pyramidal.models.conditions import BLIND, check_task
from pyramidal.options import MANY_IMAGES_BATCH_SIZE, MANY_IMAGES_TILE, check_tiling
from pyramidal.registry import Registry

BASELINE_LEVELS = ("auto", "none", "fast", "all")
# `auto` runs the slow baselines (BM3D) only up to this many images.
AUTO_SLOW_LIMIT = 16
INSTALL_HINT = "not installed (pip install -e .[baselines])"


# --------------------------------------------------------------------------- metrics


def _hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
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

    ref, img = _hwc(reference), _hwc(image)
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
    return _ssim_full(_hwc(reference), _hwc(image))[0]


def hole_scores(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor,
                mask: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) over the hole pixels (H×W bool mask) alone; NaN for an empty hole.

    PSNR comes from the MSE of the hole's pixels (all three channels); SSIM is the mean of scikit-image's SSIM
    map over them, so each hole pixel is scored with its 7×7 window, which reaches into the known pixels.
    """
    ref, img = _hwc(reference), _hwc(image)
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


# --------------------------------------------------------------------------- baselines


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
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------- evaluation


def default_crop(task_name: str) -> int:
    """Crop side of the task's evaluation protocol (`Task.eval_crop`: 64 px for inpainting, else 256 px)."""
    return TASKS.get(task_name).eval_crop


def default_crops(task_name: str) -> int:
    """Crops per validation photograph at the default crop (`Task.eval_crops`; 1: one centre crop)."""
    return TASKS.get(task_name).eval_crops


def eval_images(data: str, split: str = "val", crop: int | None = 256, crops: int = 1,
                limit: int | None = None) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """The evaluation images as (name, uint8 3×H×W) and a description.

    `crop=None` or 0: whole images. `crops > 1` (built-in photographs only): that many fixed crops per
    photograph, the same ones every run; otherwise one centre crop (whole image if smaller) per image.
    """
    from pyramidal.data.sources import BuiltinSource, FolderSource, load_source

    crop = crop or None
    source = load_source(data, size=crop or 64, val_crops=max(1, crops))
    if split == "all" and not isinstance(source, FolderSource):
        raise PyramidalError(f"{data}: --split all scores every image of a folder kept out of training; "
                             "use it with --data folder:PATH")
    if crop and crops > 1 and isinstance(source, BuiltinSource):
        dataset = source.split(split)
        names = source.names[split]
        items = []
        for i, (p, top, left) in enumerate(dataset.boxes):
            items.append((f"{names[p]}@{top},{left}", dataset[i]))
        items = items[:limit] if limit else items
        how = f"{crops} fixed {crop}-px crops per photograph"
    else:
        items = source.eval_images(split, crop=crop, limit=limit)
        how = f"{crop}-px centre crops (whole image if smaller)" if crop else "whole images"
    if not items:
        skipped = f" ({source.num_skipped} unreadable files were skipped)" if source.num_skipped else ""
        raise PyramidalError(f"{data}: the {split} split holds no readable images to evaluate{skipped}")
    return items, f"{source.describe()}; split {split}, {len(items)} images, {how}"


def setting_label(options: dict) -> str:
    """'sigma=25', 'quality=10' or '' for a task without settings."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


def resolve_model(model_or_weights: Any, task_name: str, device: torch.device, precision: str):
    """(model prepared for inference, model name, label for the report); all None without a model."""
    from pyramidal.inference.model import load_restorer, prepare_for_inference

    if model_or_weights is None:
        return None, None, None
    if isinstance(model_or_weights, (str, os.PathLike)):
        model = load_restorer(model_or_weights, task_name)
        name, label = model.info["model"], f"{model.info['model']} ({model.weights_path})"
    else:
        model = model_or_weights
        info = getattr(model, "info", None) or getattr(model, "spec", None) or {}
        name = label = info.get("model", type(model).__name__)
    return prepare_for_inference(model, device, precision), name, label


HOLE_METRICS = ("psnr_hole", "ssim_hole")


def summarize(method: str, kind: str, per_image: list[dict[str, float]], seconds: float | None,
              note: str | None = None, holes: bool = False) -> dict:
    """One row of the report: the mean of each metric over the images (`scores` per image)."""
    def mean(values: list[float]) -> float | None:
        # NaN (SSIM of a too-small image) is left out; inf (an identical image) makes the mean inf.
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else None

    row = {"method": method, "kind": kind}
    for key in ("psnr", "ssim") + (HOLE_METRICS if holes else ()):
        row[key] = mean([p[key] for p in per_image])
    return {**row, "seconds_per_image": seconds, "per_image": per_image, "note": note}


def evaluate(
    model_or_weights: Any,
    task_name: str,
    data: str = "builtin",
    *,
    split: str = "val",
    crop: int | None | str = "auto",
    crops: int | None = None,
    limit: int | None = None,
    settings: list[dict] | None = None,
    baselines: str = "auto",
    ensemble: bool = False,
    tile: int | None = MANY_IMAGES_TILE,
    overlap: int | None = None,
    batch_size: int = MANY_IMAGES_BATCH_SIZE,
    device: str | torch.device = "auto",
    precision: str = "auto",
    keep_images: bool = False,
    progress: bool | None = False,
) -> dict:
    """Damage the eval images with their fixed seeds, restore them, score model and baselines.

    Args:
        model_or_weights: an nn.Module (or callable), a .safetensors path or folder, "builtin", or None
            (the baselines alone).
        task_name: the damage task, e.g. "noise".
        data: "builtin", "folder:PATH" or "celeba:PATH".
        split: "val", "test", or "all" (every image of a folder source: a held-out folder never trained on).
        crop: crop side in px; "auto" for the task's protocol; 0 or None for whole images.
        crops: fixed crops per built-in photograph (default: the task's, at its default side; else 1).
        limit: evaluate at most this many images.
        settings: option dicts to report (default: the task's eval settings, e.g. σ = 25, 50, 125).
        baselines: none | fast | all | auto (all, but the slow ones only up to 16 images).
        ensemble: also score the 8-fold self-ensemble.
        tile, overlap, batch_size, device, precision: as for `pyramidal.inference.restore_array`.
        keep_images: also return the images (for figures).
        progress: None shows progress over the images of each stage (damage, each baseline, the model): a bar
            on a terminal, plain lines otherwise; False (default) shows nothing.

    Returns:
        A JSON-ready dict: task, data, crops, image names, model, device, and per setting the rows (method,
        kind, PSNR, SSIM, seconds per image, per-image scores). With `keep_images`, `result['images']` also
        holds uint8 H×W×3 arrays per setting: {'clean': [...], 'damaged': [...], '<method>': [...]} (leave
        them out before writing JSON).
    """
    from pyramidal.damage import create_task, eval_seed
    from pyramidal.device import resolve_device, resolve_precision
    from pyramidal.inference import restore_images
    from pyramidal.inference.inputs import model_conditions
    from pyramidal.progress import progress as progress_bar

    if baselines not in BASELINE_LEVELS:
        raise PyramidalError(f"--baselines {baselines!r}: choose one of {', '.join(BASELINE_LEVELS)}")
    check_tiling(tile, overlap, batch_size)
    base_task = create_task(task_name, train=False)
    if crop == "auto":
        crop = default_crop(task_name)
    if crops is None:
        crops = default_crops(task_name) if crop == default_crop(task_name) else 1
    images, described = eval_images(data, split, crop, crops, limit)
    dev = resolve_device(device) if isinstance(device, str) else device
    prec = resolve_precision(precision, dev)
    model, model_name, model_label = resolve_model(model_or_weights, task_name, dev, prec)
    # A mask-conditioned model is given the true mask, as the classical inpainting rows are; a noise-map model
    # the true σ of each setting, as BM3D is.
    conditions = BLIND if model is None else model_conditions(model)
    check_task(conditions, base_task, model_label)
    mask_given, sigma_given = conditions.mask_input, conditions.noise_map
    run_slow = baselines == "all" or (baselines == "auto" and len(images) <= AUTO_SLOW_LIMIT)
    chosen = [] if baselines == "none" else baselines_for(task_name)
    settings = settings if settings is not None else base_task.eval_settings()
    restore_opts = dict(tile=tile, overlap=overlap, batch_size=batch_size, device=dev, precision=prec)

    result: dict[str, Any] = {
        "task": task_name,
        "data": data,
        "split": split,
        "described": described,
        "crop": crop,
        "crops_per_image": crops,
        "image_names": [n for n, _ in images],
        "model": model_label,
        "device": str(dev),
        "precision": prec,
        "baselines": baselines,
        "metrics": "scikit-image peak_signal_noise_ratio / structural_similarity, 8-bit RGB, data_range=255",
        "settings": [],
    }
    kept: list[dict] = []
    for options in settings:
        task = create_task(task_name, train=False, **options)
        label = setting_label(options)

        def stage(name: str, label=label) -> str:
            return f"{task_name} {label}".strip() + f": {name}"

        def over_images(items, name: str):
            return progress_bar(items, total=len(images), desc=stage(name), unit="images",
                                enabled=False if progress is False else None, announce=True)

        clean, damaged, masks = [], [], []
        for index, (_, image) in over_images(enumerate(images), "damaging"):
            out, mask = task.apply(image[None], seeds=[eval_seed(index)])
            clean.append(_hwc(image))
            damaged.append(_hwc(out[0]))
            masks.append(mask[0, 0].numpy() if mask is not None else None)
        outputs: dict[str, list[np.ndarray]] = {"clean": clean, "damaged": damaged}
        holes = base_task.has_mask

        def scored(restored: list[np.ndarray], clean=clean, masks=masks) -> list[dict[str, float]]:
            return [scores(c, r, m) for c, r, m in zip(clean, restored, masks)]

        rows = [summarize("damaged input", "input", scored(damaged), None, base_task.input_note, holes)]
        for baseline in chosen:
            if baseline.requires and not module_available(baseline.requires):
                rows.append(summarize(baseline.name, "baseline", [], None, INSTALL_HINT, holes))
                continue
            if baseline.slow and not run_slow:
                rows.append(summarize(baseline.name, "baseline", [], None,
                                       f"skipped: slow on {len(images)} images (use --baselines all)", holes))
                continue
            start = time.perf_counter()
            restored = [baseline.run(d, Context(task, c, m))
                        for d, c, m in over_images(zip(damaged, clean, masks), baseline.name)]
            seconds = (time.perf_counter() - start) / len(images)
            outputs[baseline.name] = restored
            rows.append(summarize(baseline.name, "baseline", scored(restored), seconds, None, holes))
        given = " (mask given)" if mask_given else " (σ given)" if sigma_given else ""
        sigma = task.noise_levels([eval_seed(0)])[0] if sigma_given else None
        passes = [(False, f"model {model_name}{given}")] if model is not None else []
        if model is not None and ensemble:
            passes.append((True, f"model {model_name} + self-ensemble ×8{given}"))
        for use_ensemble, name in passes:
            start = time.perf_counter()
            restored = restore_images(model, damaged, ensemble=use_ensemble, masks=masks if mask_given else None,
                                      sigma=sigma,
                                      progress=False if progress is False else None, desc=stage(name),
                                      **restore_opts)
            seconds = (time.perf_counter() - start) / len(images)
            outputs[name] = restored
            rows.append(summarize(name, "ensemble" if use_ensemble else "model", scored(restored), seconds, None,
                                   holes))
        result["settings"].append({"options": dict(options), "label": label, "rows": rows})
        kept.append(outputs)
    if keep_images:
        result["images"] = kept
    return result


# --------------------------------------------------------------------------- reporting


def best_baseline(rows: list[dict]) -> dict | None:
    """The classical row (damaged input included) with the highest mean PSNR."""
    scored = [r for r in rows if r["kind"] in ("input", "baseline") and r["psnr"] is not None]
    return max(scored, key=lambda r: r["psnr"], default=None)


def per_image_psnr(row: dict) -> list[float]:
    """A result row's PSNR for each image, in image order."""
    return [p["psnr"] for p in row["per_image"]]


def format_table(result: dict) -> str:
    """Plain-text table, one block per setting."""
    lines = [f"task {result['task']} — {result['described']}"]
    if result.get("model"):
        lines.append(f"model {result['model']} on {result['device']} ({result['precision']})")
    width = max([len(r["method"]) for s in result["settings"] for r in s["rows"]] + [20])
    for setting in result["settings"]:
        lines.append("")
        title = f"{result['task']}" + (f" ({setting['label']})" if setting["label"] else "")
        lines.append(title)
        holes = _has_hole_metrics(setting)
        extra = f" {'hole dB':>8} {'hole SSIM':>9}" if holes else ""
        header = f"  {'method':<{width}} {'PSNR dB':>8} {'SSIM':>7}{extra} {'s/img':>7}"
        lines.append(header)
        lines.append("  " + "-" * (len(header) - 2))
        for r in setting["rows"]:
            secs = "" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.2f}"
            note = f"  {r['note']}" if r["note"] else ""
            hole = f" {format_number(r['psnr_hole'], 2):>8} {format_number(r['ssim_hole'], 4):>9}" if holes else ""
            lines.append(f"  {r['method']:<{width}} {format_number(r['psnr'], 2):>8} {format_number(r['ssim'], 4):>7}"
                         f"{hole} {secs:>7}{note}")
    return "\n".join(lines)


def _has_hole_metrics(setting: dict) -> bool:
    """True when the rows carry the hole-only metrics (tasks with holes)."""
    return any("psnr_hole" in r for r in setting["rows"])


def format_markdown(result: dict) -> str:
    """Markdown report: one table per setting."""
    out = [f"### `{result['task']}`", "", f"{result['described']}."]
    if result.get("model"):
        out.append(f"Model: {result['model']} on {result['device']} ({result['precision']}).")
    out.append(f"Metrics: {result['metrics']}.")
    for setting in result["settings"]:
        out += ["", f"**{result['task']}" + (f", {setting['label']}" if setting["label"] else "") + "**", ""]
        holes = _has_hole_metrics(setting)
        if holes:
            out += ["| method | PSNR (dB) | SSIM | hole PSNR (dB) | hole SSIM | s/image | note |",
                    "|---|---:|---:|---:|---:|---:|---|"]
        else:
            out += ["| method | PSNR (dB) | SSIM | s/image | note |", "|---|---:|---:|---:|---|"]
        for r in setting["rows"]:
            secs = "" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.2f}"
            hole = f" {format_number(r['psnr_hole'], 2)} | {format_number(r['ssim_hole'], 4)} |" if holes else ""
            out.append(f"| {r['method']} | {format_number(r['psnr'], 2)} | {format_number(r['ssim'], 4)} |{hole} "
                       f"{secs} | {r['note'] or ''} |")
    return "\n".join(out) + "\n"
