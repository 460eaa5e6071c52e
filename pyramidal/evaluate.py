"""Honest evaluation: fixed eval damage, the model against classical baselines, and the report's tables.

The scores are `pyramidal.metrics`' (PSNR/SSIM on 8-bit RGB, and over the holes alone), averaged over the
images; the classical methods are `pyramidal.baselines`'.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch

from pyramidal.baselines import INSTALL_HINT, Context, baselines_for, module_available
from pyramidal.damage import TASKS, create_task, eval_seed
from pyramidal.data.sources import BuiltinSource, FolderSource, load_source
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError, option_error, option_wording
from pyramidal.inference import restore_images
from pyramidal.inference.inputs import model_conditions
from pyramidal.inference.model import load_restorer, prepare_for_inference
from pyramidal.io import format_number
from pyramidal.metrics import hwc, scores
from pyramidal.models.conditions import BLIND, check_task
from pyramidal.options import EVALUATION, RestoreOptions
from pyramidal.progress import progress as progress_bar

BASELINE_LEVELS = ("auto", "none", "fast", "all")
# `auto` runs the slow baselines (BM3D) only up to this many images.
AUTO_SLOW_LIMIT = 16


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
    crop = crop or None
    source = load_source(data, size=crop or 64, val_crops=max(1, crops))
    if split == "all" and not isinstance(source, FolderSource):
        raise PyramidalError(*option_wording("{source}: {split=}all scores every image of a folder kept out of "
                                             "training; use it with {data=}folder:PATH", "split", "data", source=data))
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


def check_baselines(baselines: str) -> None:
    """OptionError naming `baselines` unless it is one of BASELINE_LEVELS."""
    if baselines not in BASELINE_LEVELS:
        raise option_error(f"{{baselines}}: choose one of {', '.join(BASELINE_LEVELS)}", baselines=baselines)


def setting_label(options: dict) -> str:
    """'sigma=25', 'quality=10' or '' for a task without settings."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


def resolve_model(model_or_weights: Any, task_name: str, device: torch.device, precision: str):
    """(model prepared for inference, model name, label for the report); all None without a model."""
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
    options: RestoreOptions = EVALUATION,
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
        options: how the model restores (`pyramidal.options.RestoreOptions`; by default `options.EVALUATION`,
            crops up to 256 px whole, four to a forward pass); with `ensemble`, the 8-fold self-ensemble is
            scored as a row of its own after the plain model's.
        keep_images: also return the images (for figures).
        progress: None shows progress over the images of each stage (damage, each baseline, the model): a bar
            on a terminal, plain lines otherwise; False (default) shows nothing.

    Returns:
        A JSON-ready dict: task, data, crops, image names, model, device, and per setting the rows (method,
        kind, PSNR, SSIM, seconds per image, per-image scores). With `keep_images`, `result['images']` also
        holds uint8 H×W×3 arrays per setting: {'clean': [...], 'damaged': [...], '<method>': [...]} (leave
        them out before writing JSON).
    """
    check_baselines(baselines)
    base_task = create_task(task_name, train=False)
    if crop == "auto":
        crop = default_crop(task_name)
    if crops is None:
        crops = default_crops(task_name) if crop == default_crop(task_name) else 1
    images, described = eval_images(data, split, crop, crops, limit)
    dev = resolve_device(options.device) if isinstance(options.device, str) else options.device
    prec = resolve_precision(options.precision, dev)
    model, model_name, model_label = resolve_model(model_or_weights, task_name, dev, prec)
    # A mask-conditioned model is given the true mask, as the classical inpainting rows are; a noise-map model
    # the true σ of each setting, as BM3D is.
    conditions = BLIND if model is None else model_conditions(model)
    check_task(conditions, base_task, model_label)
    mask_given, sigma_given = conditions.mask_input, conditions.noise_map
    run_slow = baselines == "all" or (baselines == "auto" and len(images) <= AUTO_SLOW_LIMIT)
    chosen = [] if baselines == "none" else baselines_for(task_name)
    settings = settings if settings is not None else base_task.eval_settings()
    options = options.replace(device=dev, precision=prec)

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
    for task_options in settings:
        task = create_task(task_name, train=False, **task_options)
        label = setting_label(task_options)

        def stage(name: str, label=label) -> str:
            return f"{task_name} {label}".strip() + f": {name}"

        def over_images(items, name: str):
            return progress_bar(items, total=len(images), desc=stage(name), unit="images",
                                enabled=False if progress is False else None, announce=True)

        clean, damaged, masks = [], [], []
        for index, (_, image) in over_images(enumerate(images), "damaging"):
            out, mask = task.apply(image[None], seeds=[eval_seed(index)])
            clean.append(hwc(image))
            damaged.append(hwc(out[0]))
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
        if model is not None and options.ensemble:
            passes.append((True, f"model {model_name} + self-ensemble ×8{given}"))
        for use_ensemble, name in passes:
            start = time.perf_counter()
            restored = restore_images(model, damaged, options.replace(ensemble=use_ensemble, sigma=sigma),
                                      masks=masks if mask_given else None,
                                      progress=False if progress is False else None, desc=stage(name))
            seconds = (time.perf_counter() - start) / len(images)
            outputs[name] = restored
            rows.append(summarize(name, "ensemble" if use_ensemble else "model", scored(restored), seconds, None,
                                   holes))
        result["settings"].append({"options": dict(task_options), "label": label, "rows": rows})
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
