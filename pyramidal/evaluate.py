"""Honest evaluation: fixed eval damage, PSNR/SSIM on 8-bit RGB, the model against classical baselines.

Metrics are scikit-image's `peak_signal_noise_ratio(data_range=255)` and
`structural_similarity(channel_axis=-1, data_range=255)` on H×W×3 uint8 images, averaged over images.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyramidal.errors import PyramidalError

HOLE_TASKS = ("squares", "block", "grid")
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


def ssim(reference: np.ndarray | torch.Tensor, image: np.ndarray | torch.Tensor) -> float:
    """SSIM on 8-bit RGB (scikit-image, channel_axis=-1, data_range=255; 7×7 window, smaller for tiny images)."""
    from skimage.metrics import structural_similarity

    ref, img = _hwc(reference), _hwc(image)
    side = min(ref.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(ref, img, channel_axis=-1, data_range=255, win_size=win))


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


def bm3d_denoise(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """CBM3D (the `bm3d` package's colour BM3D) given the true σ, on [0, 1] images."""
    import bm3d

    sigma = float(ctx.task.sigma)
    return _to_u8(bm3d.bm3d_rgb(damaged.astype(np.float64) / 255.0, sigma_psd=sigma / 255.0))


def nlmeans_strength(sigma: float) -> float:
    """OpenCV non-local means filter strength h for noise σ (tuned on the built-in validation crops)."""
    return 0.6 * sigma if sigma <= 60 else 0.4 * sigma


def nlmeans_denoise(damaged: np.ndarray, ctx: Context) -> np.ndarray:
    """cv2.fastNlMeansDenoisingColored (7×7 template, 21×21 search) with h tuned to the true σ."""
    import cv2

    h = nlmeans_strength(float(ctx.task.sigma))
    bgr = cv2.cvtColor(damaged, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21), cv2.COLOR_BGR2RGB)


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


def baselines_for(task_name: str) -> list[Baseline]:
    """The classical methods reported next to the model for a task (the damaged input is always added)."""
    if task_name == "noise":
        return [
            Baseline("BM3D (CBM3D, true σ)", bm3d_denoise, slow=True, requires="bm3d"),
            Baseline("OpenCV non-local means (true σ)", nlmeans_denoise),
        ]
    if task_name == "pixelate":
        return [
            Baseline("bilinear up-scaling", _upscale("bilinear")),
            Baseline("bicubic up-scaling", _upscale("bicubic")),
            Baseline("Lanczos up-scaling", _upscale("lanczos")),
        ]
    if task_name == "blur":
        return [
            Baseline("Wiener deconvolution (known kernel)", wiener_deblur),
            Baseline(f"Richardson–Lucy, {RL_ITERATIONS} it. (known kernel)", richardson_lucy_deblur),
        ]
    if task_name in HOLE_TASKS:
        return [
            Baseline("OpenCV Telea inpainting (true mask)", _inpaint("INPAINT_TELEA")),
            Baseline("OpenCV Navier–Stokes inpainting (true mask)", _inpaint("INPAINT_NS")),
        ]
    return []  # jpeg: the decoded JPEG is the damaged input; gray, text, mixed: only the input


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------- evaluation


def default_crop(task_name: str) -> int:
    """Crop side of the evaluation protocol: 64 px for the hole tasks, 256 px for the others."""
    return 64 if task_name in HOLE_TASKS else 256


def default_crops(task_name: str) -> int:
    """Crops per validation photograph: 16 fixed 64-px crops for the hole tasks, one centre crop otherwise."""
    return 16 if task_name in HOLE_TASKS else 1


def eval_images(data: str, split: str = "val", crop: int | None = 256, crops: int = 1,
                limit: int | None = None) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """The evaluation images as (name, uint8 3×H×W) and a description.

    `crop=None` or 0: whole images. `crops > 1` (built-in photographs only): that many fixed crops per
    photograph, the same ones every run; otherwise one centre crop (whole image if smaller) per image.
    """
    from pyramidal.data import BuiltinSource, load_source

    crop = crop or None
    source = load_source(data, size=crop or 64, val_crops=max(1, crops))
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
        raise PyramidalError(f"{data}: no {split} images to evaluate")
    return items, f"{source.describe()}; split {split}, {len(items)} images, {how}"


def setting_label(options: dict) -> str:
    """'sigma=25', 'quality=10' or '' for a task without settings."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _resolve_model(model_or_weights: Any, task_name: str):
    if model_or_weights is None:
        return None, None, None
    if isinstance(model_or_weights, (str, os.PathLike)):
        from pyramidal.restore import load_restorer

        model = load_restorer(model_or_weights, task_name)
        return model, model.info["model"], f"{model.info['model']} ({model.weights_path})"
    info = getattr(model_or_weights, "info", None) or getattr(model_or_weights, "spec", None) or {}
    name = info.get("model", type(model_or_weights).__name__)
    return model_or_weights, name, name


def _summarize(method: str, kind: str, scores: list[tuple[float, float]], seconds: float | None,
               note: str | None = None) -> dict:
    def mean(values: list[float]) -> float | None:
        # NaN (SSIM of a too-small image) is left out; inf (an identical image) makes the mean inf.
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else None

    return {
        "method": method,
        "kind": kind,
        "psnr": mean([p for p, _ in scores]),
        "ssim": mean([s for _, s in scores]),
        "seconds_per_image": seconds,
        "per_image": [{"psnr": p, "ssim": s} for p, s in scores],
        "note": note,
    }


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
    tile: int | None = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    precision: str = "auto",
    keep_images: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Damage the eval images with their fixed seeds, restore them, score model and baselines.

    `model_or_weights`: an nn.Module (or callable), a .safetensors path, 'builtin', or None (baselines only).
    `settings`: option dicts to report (default: the task's eval settings, e.g. σ = 25, 50, 125).
    `baselines`: none | fast | all | auto (all, but the slow ones only up to 16 images).
    Returns a JSON-ready dict; with `keep_images`, `result['images']` also holds uint8 H×W×3 arrays per
    setting: {'clean': [...], 'damaged': [...], '<method>': [...]} (left out by `write_json`).
    """
    from pyramidal.damage import create_task, eval_seed
    from pyramidal.device import resolve_device, resolve_precision
    from pyramidal.restore import restore_images

    if baselines not in BASELINE_LEVELS:
        raise PyramidalError(f"--baselines {baselines!r}: choose one of {', '.join(BASELINE_LEVELS)}")
    base_task = create_task(task_name, train=False)
    if crop == "auto":
        crop = default_crop(task_name)
    if crops is None:
        crops = default_crops(task_name) if crop == default_crop(task_name) else 1
    images, described = eval_images(data, split, crop, crops, limit)
    model, model_name, model_label = _resolve_model(model_or_weights, task_name)
    dev = resolve_device(device) if isinstance(device, str) else device
    prec = resolve_precision(precision, dev)
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
        if progress:
            progress(f"{task_name} {label}".strip() + f": damaging {len(images)} images")
        clean, damaged, masks = [], [], []
        for index, (_, image) in enumerate(images):
            out, mask = task.apply(image[None], seeds=[eval_seed(index)])
            clean.append(_hwc(image))
            damaged.append(_hwc(out[0]))
            masks.append(mask[0, 0].numpy() if mask is not None else None)
        outputs: dict[str, list[np.ndarray]] = {"clean": clean, "damaged": damaged}
        rows = [_summarize("damaged input", "input", [(psnr(c, d), ssim(c, d)) for c, d in zip(clean, damaged)],
                           None, "the decoded JPEG" if task_name == "jpeg" else None)]
        for baseline in chosen:
            if baseline.requires and not _module_available(baseline.requires):
                rows.append(_summarize(baseline.name, "baseline", [], None, INSTALL_HINT))
                continue
            if baseline.slow and not run_slow:
                rows.append(_summarize(baseline.name, "baseline", [], None,
                                       f"skipped: slow on {len(images)} images (use --baselines all)"))
                continue
            if progress:
                progress(f"{task_name} {label}".strip() + f": {baseline.name}")
            start = time.perf_counter()
            restored = [baseline.run(d, Context(task, c, m)) for d, c, m in zip(damaged, clean, masks)]
            seconds = (time.perf_counter() - start) / len(images)
            outputs[baseline.name] = restored
            rows.append(_summarize(baseline.name, "baseline", [(psnr(c, r), ssim(c, r)) for c, r in zip(clean, restored)],
                                   seconds))
        passes = [(False, f"model {model_name}")] if model is not None else []
        if model is not None and ensemble:
            passes.append((True, f"model {model_name} + self-ensemble ×8"))
        for use_ensemble, name in passes:
            if progress:
                progress(f"{task_name} {label}".strip() + f": {name}")
            start = time.perf_counter()
            restored = restore_images(model, damaged, ensemble=use_ensemble, **restore_opts)
            seconds = (time.perf_counter() - start) / len(images)
            outputs[name] = restored
            rows.append(_summarize(name, "ensemble" if use_ensemble else "model",
                                   [(psnr(c, r), ssim(c, r)) for c, r in zip(clean, restored)], seconds))
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


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


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
        header = f"  {'method':<{width}} {'PSNR dB':>8} {'SSIM':>7} {'s/img':>7}"
        lines.append(header)
        lines.append("  " + "-" * (len(header) - 2))
        for r in setting["rows"]:
            secs = "" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.2f}"
            note = f"  {r['note']}" if r["note"] else ""
            lines.append(f"  {r['method']:<{width}} {_fmt(r['psnr'], 2):>8} {_fmt(r['ssim'], 4):>7} {secs:>7}{note}")
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    """Markdown report: one table per setting."""
    out = [f"### `{result['task']}`", "", f"{result['described']}."]
    if result.get("model"):
        out.append(f"Model: {result['model']} on {result['device']} ({result['precision']}).")
    out.append(f"Metrics: {result['metrics']}.")
    for setting in result["settings"]:
        out += ["", f"**{result['task']}" + (f", {setting['label']}" if setting["label"] else "") + "**", ""]
        out += ["| method | PSNR (dB) | SSIM | s/image | note |", "|---|---:|---:|---:|---|"]
        for r in setting["rows"]:
            secs = "" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.2f}"
            out.append(f"| {r['method']} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 4)} | {secs} | {r['note'] or ''} |")
    return "\n".join(out) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "images"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(result: dict | list, path: str | os.PathLike) -> None:
    """Write results as JSON (non-finite PSNR as the string 'inf'; kept images left out)."""
    from pyramidal.restore import write_atomic

    text = json.dumps(_jsonable(result), indent=2, ensure_ascii=False) + "\n"
    write_atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_text(text: str, path: str | os.PathLike) -> None:
    from pyramidal.restore import write_atomic

    write_atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
