"""Real noisy photographs: a model and the classical denoisers scored on pairs of a noisy photograph and its
clean reference, instead of synthetic damage.

A pairs folder holds, directly inside it, `NAME_real.EXT` (the noisy photograph) and `NAME_mean.EXT` (its
clean reference: in PolyU's real-noise set, the mean of many shots of the same scene), in any format
`pyramidal.io.read_image` reads; the suffixes' case is ignored. Both images of a pair must have the same size.
Whole photographs are scored, with the metrics of `pyramidal.evaluate`. The classical rows are non-local means
and CBM3D, each with σ estimated from the noisy photograph (what a user can run) and with an oracle σ (the
grid's best against the clean reference, which no user can choose).

Real pairs are for evaluation only: never train on them or choose a recipe by them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyramidal.baselines import BASELINES, INSTALL_HINT, Context, module_available
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.evaluate import AUTO_SLOW_LIMIT, check_baselines, resolve_model, summarize
from pyramidal.inference import restore_images
from pyramidal.inference.inputs import needs_mask, needs_noise_level
from pyramidal.io import IMAGE_SUFFIXES, read_image
from pyramidal.metrics import scores
from pyramidal.options import EVALUATION, RestoreOptions
from pyramidal.progress import progress as progress_bar

REAL_SUFFIX, CLEAN_SUFFIX = "_real", "_mean"
# The classical rows, in the order reported: blind (σ estimated) first, then the oracles.
PAIR_BASELINES = ("opencv-nlmeans-est", "bm3d-est", "opencv-nlmeans-oracle", "bm3d-oracle")


@dataclass(frozen=True)
class Pair:
    """One noisy photograph and its clean reference."""

    name: str  # NAME, without the suffix
    real: Path
    clean: Path


def _folder_error(folder: str | os.PathLike, problem: str) -> OptionError:
    """An error about the pairs folder: `folder=...` for Python callers, `--pairs ...` on the command line."""
    return OptionError(f"folder={str(folder)!r}: {problem}", f"--pairs {folder}: {problem}")


def find_pairs(folder: str | os.PathLike) -> tuple[list[Pair], list[str]]:
    """The pairs directly inside `folder`, sorted by name, and a note for each file left without its partner.

    Raises:
        PyramidalError: no such folder, or no pair in it (the message gives the naming rule).
    """
    root = Path(folder)
    if not root.is_dir():
        raise _folder_error(root, "no such folder")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        stem = path.stem
        for suffix in (REAL_SUFFIX, CLEAN_SUFFIX):
            if stem.lower().endswith(suffix):
                found.setdefault(stem[: -len(suffix)], {})[suffix] = path
    pairs, unmatched = [], []
    for name, files in sorted(found.items()):
        if len(files) == 2:
            pairs.append(Pair(name, files[REAL_SUFFIX], files[CLEAN_SUFFIX]))
        else:
            (suffix, path), = files.items()
            other = CLEAN_SUFFIX if suffix == REAL_SUFFIX else REAL_SUFFIX
            unmatched.append(f"{path.name}: skipped, no {name}{other}.* beside it")
    if not pairs:
        raise _folder_error(root, f"no pairs found; a pair is NAME{REAL_SUFFIX}.EXT (noisy) and "
                                  f"NAME{CLEAN_SUFFIX}.EXT (clean reference) in the folder itself")
    return pairs, unmatched


def _read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) H×W×3 uint8; PyramidalError naming the file for an unreadable one or differing sizes."""
    noisy, clean = read_image(pair.real).rgb, read_image(pair.clean).rgb
    if noisy.shape != clean.shape:
        raise PyramidalError(f"{pair.real.name}: {noisy.shape[1]}×{noisy.shape[0]}, but {pair.clean.name} is "
                             f"{clean.shape[1]}×{clean.shape[0]}")
    return noisy, clean


def evaluate_pairs(
    model_or_weights: Any,
    folder: str | os.PathLike,
    task: str = "camera",
    *,
    baselines: str = "auto",
    limit: int | None = None,
    options: RestoreOptions = EVALUATION,
    progress: bool | None = False,
) -> dict:
    """Score a model and the classical denoisers on the real/clean pairs of `folder`.

    Args:
        model_or_weights: an nn.Module, a .safetensors path or folder, "builtin" (the weights of `task`), or
            None (the classical rows alone).
        folder: the pairs folder (see the module's docstring).
        task: whose built-in weights "builtin" means: "camera" or "noise".
        baselines: none | fast (no CBM3D) | all | auto (CBM3D only up to 16 pairs).
        limit: score the first N pairs (by name) only.
        options, progress: as for `pyramidal.evaluate.evaluate` (with `ensemble`, a self-ensemble row too).

    Returns:
        A JSON-ready dict shaped as `evaluate`'s (one setting), which `format_table` and `format_markdown`
        print; `skipped` lists the files left out, each with its reason.
    """
    check_baselines(baselines)
    pairs, skipped = find_pairs(folder)
    pairs = pairs[:limit] if limit else pairs
    dev = resolve_device(options.device) if isinstance(options.device, str) else options.device
    prec = resolve_precision(options.precision, dev)
    options = options.replace(device=dev, precision=prec)
    model, model_name, model_label = resolve_model(model_or_weights, task, dev, prec)
    if model is not None and (needs_mask(model) or needs_noise_level(model)):
        raise PyramidalError(f"{model_label} takes a mask or a noise level as an input; a real photograph has "
                             "neither to give: score a blind model")

    def over(items, name: str):
        return progress_bar(items, total=len(pairs), desc=f"pairs: {name}", unit="images",
                            enabled=False if progress is False else None, announce=True)

    names, noisy, clean = [], [], []
    for pair in over(pairs, "reading"):
        try:
            n, c = _read_pair(pair)
        except PyramidalError as exc:  # a bad pair is reported; the others are still scored
            skipped.append(str(exc))
            continue
        names.append(pair.name)
        noisy.append(n)
        clean.append(c)
    if not names:
        raise _folder_error(folder, f"no readable pair ({'; '.join(skipped)})")

    def scored(restored: list[np.ndarray]) -> list[dict[str, float]]:
        return [scores(c, r) for c, r in zip(clean, restored)]

    rows = [summarize("noisy input", "input", scored(noisy), None, "the camera's photograph")]
    run_slow = baselines == "all" or (baselines == "auto" and len(names) <= AUTO_SLOW_LIMIT)
    for key in () if baselines == "none" else PAIR_BASELINES:
        baseline = BASELINES.get(key)
        if baseline.requires and not module_available(baseline.requires):
            rows.append(summarize(baseline.name, "baseline", [], None, INSTALL_HINT))
            continue
        if baseline.slow and not run_slow:
            rows.append(summarize(baseline.name, "baseline", [], None,
                                  f"skipped: slow on {len(names)} images (use --baselines all)"))
            continue
        start = time.perf_counter()
        restored = [baseline.run(n, Context(None, c, None)) for n, c in over(zip(noisy, clean), baseline.name)]
        rows.append(summarize(baseline.name, "baseline", scored(restored), (time.perf_counter() - start) / len(names)))
    if model is not None:
        loaded = getattr(model, "model", model)  # the prepared InferenceModel keeps the loaded one as .model
        trained_for = (getattr(loaded, "info", None) or {}).get("task")
        passes = [(False, f"model {model_name}" + (f" ({trained_for} weights)" if trained_for else ""))]
        if options.ensemble:
            passes.append((True, passes[0][1] + " + self-ensemble ×8"))
        for use_ensemble, name in passes:
            start = time.perf_counter()
            restored = restore_images(model, noisy, options.replace(ensemble=use_ensemble),
                                      progress=False if progress is False else None, desc=f"pairs: {name}")
            rows.append(summarize(name, "ensemble" if use_ensemble else "model", scored(restored),
                                  (time.perf_counter() - start) / len(names)))
    return {
        "task": task,
        "data": f"pairs:{folder}",
        "split": "pairs",
        "described": f"real noisy photographs: {len(names)} {REAL_SUFFIX}/{CLEAN_SUFFIX} pairs of {Path(folder).name}, "
                     "whole images",
        "crop": None,
        "crops_per_image": 1,
        "image_names": names,
        "skipped": skipped,
        "model": model_label,
        "device": str(dev),
        "precision": prec,
        "baselines": baselines,
        "oracle_note": "oracle σ: the best of a σ grid against the clean reference, which no user can choose",
        "metrics": "scikit-image peak_signal_noise_ratio / structural_similarity, 8-bit RGB, data_range=255",
        "settings": [{"options": {}, "label": "", "rows": rows}],
    }
