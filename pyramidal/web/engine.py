"""The web app's link to the library's models and photographs: tasks and weights, a model cache, restoring
with masks and progress, samples from the built-in validation photographs, and their scores.

The HTTP side (`app`, `jobs`) asks the library for models, restores, samples and scores through these functions.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pyramidal.api import cached_model
from pyramidal.baselines import Context, baselines_for
from pyramidal.checkpoint import read_sidecar, recorded_spec, weights_file
from pyramidal.damage import TASKS, Task, create_task, eval_seed
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.evaluate import eval_images
from pyramidal.hub import available_builtin_weights
from pyramidal.inference import restore_image
from pyramidal.inference.tiling import tile_layout
from pyramidal.io import ImageMetadata, encode_image, read_image
from pyramidal.metrics import psnr, ssim
from pyramidal.options import RestoreOptions

ProgressFn = Callable[[int, int], None]


class TooLarge(PyramidalError):
    """An image with more pixels than the server accepts."""


def tasks() -> list[dict]:
    """Every registered damage task: name, one-line description, mask kind, whether built-in weights exist.

    `hole`: its damage is coloured holes (its `hole_colour`), which "auto (magenta)" can find; `maskable`: a user
    mask makes sense (the task reports a mask of what it damaged, `has_mask`).
    """
    have = set(available_builtin_weights())
    out = []
    for name in TASKS.names():
        task = TASKS.get(name)
        out.append({"name": name, "description": task.description, "hole": task.hole_colour is not None,
                    "maskable": task.has_mask, "builtin": name in have})
    return out


@dataclass(frozen=True)
class WeightsChoice:
    """One entry of the server-side weights list; the browser only ever sends its `id`."""

    id: str
    label: str
    path: Path | None  # None: the built-in weights of the chosen task
    task: str | None  # the task the file was trained for (None for built-in)
    model: str | None


# `weights_choices`' parameters as `pyramidal serve` names them.
_SERVE_FLAGS = {"files": "--weights", "folders": "--weights-dir"}


def _choice_error(parameter: str, path: Path, problem: str) -> OptionError:
    """An error about one entry of `weights_choices`' files or folders, worded for Python and for `serve`."""
    return OptionError(f"{parameter}: {path}: {problem}", f"{_SERVE_FLAGS[parameter]} {path}: {problem}")


def weights_choices(files: Sequence[str | Path] = (), folders: Sequence[str | Path] = ()) -> list[WeightsChoice]:
    """`builtin` plus each trained .safetensors file given, or found under a folder (each needs its sidecar)."""
    found: list[tuple[Path, str]] = [(Path(f), Path(f).name) for f in files]
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise _choice_error("folders", root, "no such folder")
        listed = sorted(p for p in root.rglob("*.safetensors") if p.with_suffix(".json").is_file())
        if not listed:
            raise _choice_error("folders", root, "no .safetensors files with their .json sidecar")
        found += [(p, p.relative_to(root).as_posix()) for p in listed]
    choices = [WeightsChoice("builtin", "built-in, for the chosen task", None, None, None)]
    seen: set[Path] = set()
    for path, name in found:
        if path.is_dir():  # a training run folder, or a folder with model.safetensors + config.json
            path = weights_file(path)
        if path.suffix not in (".safetensors", ".ckpt"):
            raise _choice_error("files", path, "not a .safetensors file or a training checkpoint (.ckpt)")
        if not path.is_file():
            raise _choice_error("files", path, "no such file")
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        info = read_sidecar(path)
        recorded_spec(info, path, check=True)  # a file the page could not load is refused now, not per request
        task = info.get("task")
        label = f"{name} ({info['model']}" + (f", trained for {task})" if task else ")")
        choices.append(WeightsChoice(f"file{len(choices)}", label, path, task, info["model"]))
    return choices


# --------------------------------------------------------------------------- models


@dataclass
class Runtime:
    """Where models run: the resolved device and precision (resolved once, at the first restore)."""

    device: Any
    precision: str


@functools.lru_cache(maxsize=4)
def runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """The resolved device and numeric precision for `device`/`precision` specs (auto picks as the CLI does)."""
    dev = resolve_device(device)
    return Runtime(dev, resolve_precision(precision, dev))


def model_name(task: str, weights: str | Path = "builtin", options: RestoreOptions = RestoreOptions()) -> str:
    """The architecture of the model `restore` runs for `task` and `weights`, as its weights record names it."""
    return cached_model(weights, task, options.device, options.precision).model.info["model"]


def forward_passes(height: int, width: int, options: RestoreOptions) -> int:
    """How many times restoring an image of this size with `options` calls the model (what progress counts)."""
    tile, overlap = options.tiling()
    if tile is None:
        tiles = 1
    else:
        tiles = len(tile_layout(height, tile, overlap)[1]) * len(tile_layout(width, tile, overlap)[1])
    batches = 1 if tiles == 1 else math.ceil(tiles / options.batch_size)
    return batches * (8 if options.ensemble else 1)


def restore(
    rgb: np.ndarray,
    task: str,
    weights: str | Path = "builtin",
    options: RestoreOptions = RestoreOptions(),
    *,
    mask: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Restore uint8 H×W×3 `rgb` with the library's `restore_image` and `options`; returns uint8 H×W×3.

    With a `mask` (H×W bool, True = damaged), the output is the model's prediction inside the mask and exactly
    the input outside it, the holes shown to the model as its training task painted them.
    `progress(done, total)` is called after each forward pass over a batch of tiles.
    """
    # The library's one model cache, which `pyramidal.restore` uses too; restore_image checks the mask.
    model = cached_model(weights, task, options.device, options.precision)
    rt = runtime(options.device, options.precision)
    options = options.replace(device=rt.device, precision=rt.precision)
    hook = None
    if progress is not None:
        total = forward_passes(rgb.shape[0], rgb.shape[1], options)
        done = [0]

        def count(*_: Any) -> None:
            done[0] += 1
            progress(min(done[0], total), total)

        progress(0, total)
        # The library's own progress is a display, not a callback: count the model's forward passes instead.
        hook = model.register_forward_hook(count)
    try:
        out = restore_image(model, rgb, options, mask=mask)
    finally:
        if hook is not None:
            hook.remove()
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- image bytes


@dataclass
class Decoded:
    """An uploaded image: 8-bit RGB plus what writing the result back in the same form needs."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    metadata: ImageMetadata | None = None  # EXIF (upright), ICC profile, DPI, PNG colour chunks: for the download


def display_name(filename: str | None) -> str:
    """A browser-sent file name fit for messages: base name only, printable, at most 80 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(c for c in name if c.isprintable())[:80]
    return name or "upload"


def check_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the file header alone, without decoding; TooLarge over `max_pixels`."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise TooLarge(f"{name}: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP; "
                       f"the limit is {max_pixels / 1e6:g} MP") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise PyramidalError(f"{name}: not an image file Pillow can read") from None
    if width * height > max_pixels:
        raise TooLarge(f"{name}: {width}×{height} px is {width * height / 1e6:.3g} MP; "
                       f"the limit is {max_pixels / 1e6:g} MP")
    return width, height


def decode_image(data: bytes, filename: str | None, max_pixels: int) -> Decoded:
    """Decode uploaded bytes with the library's reader; images over `max_pixels` are refused before decoding."""
    name = display_name(filename)
    if not data:
        raise PyramidalError(f"{name}: empty file")
    check_size(data, name, max_pixels)
    # The reader takes a path: the bytes go to a private folder (mode 0700) that is deleted right after.
    with tempfile.TemporaryDirectory(prefix="pyramidal-serve-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            loaded = read_image(path)
        except PyramidalError as exc:
            raise PyramidalError(str(exc).replace(str(path), name)) from None
    return Decoded(loaded.rgb, loaded.alpha, bool(loaded.grayscale), loaded.metadata)


def decode_mask(data: bytes, filename: str | None, width: int, height: int) -> np.ndarray:
    """A painted mask PNG → H×W bool (opaque pixels, or bright ones in a mask without alpha, are holes)."""
    name = display_name(filename or "mask")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (width, height):
                raise PyramidalError(f"{name}: the mask is {img.width}×{img.height} px but the image is "
                                     f"{width}×{height} px")
            img.load()
            band = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
            return np.asarray(band, dtype=np.uint8) >= 128
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise PyramidalError(f"{name}: not an image file Pillow can read") from None


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False,
               metadata: ImageMetadata | None = None) -> bytes:
    """PNG bytes as `pyramidal restore` writes them (the library's one encoder): RGB, or L for grayscale inputs,
    alpha re-attached, the upload's metadata (EXIF, ICC profile, DPI, PNG colour chunks) carried."""
    # fast: large results are encoded on the request path
    return encode_image(rgb, alpha, grayscale, format="png", metadata=metadata, fast=True)


# --------------------------------------------------------------------------- samples and scores


@dataclass
class Sample:
    """A built-in validation crop damaged with a task's fixed evaluation seed, as `pyramidal evaluate` does."""

    name: str
    index: int
    count: int
    setting: str
    clean: np.ndarray
    damaged: np.ndarray
    mask: np.ndarray | None
    task: Any = field(repr=False)


@functools.lru_cache(maxsize=4)
def _validation_crops(crop: int, crops: int) -> tuple:
    items, _ = eval_images("builtin", "val", crop, crops)
    return tuple((name, image.permute(1, 2, 0).numpy().copy()) for name, image in items)


def sample(task: str, index: int = 0) -> Sample:
    """Crop number `index` (modulo the count) of the built-in validation photographs, damaged by `task` in its
    default evaluation setting with the fixed evaluation seed: the pixels `pyramidal evaluate` scores."""
    cls: type[Task] = TASKS.get(task)
    crop, crops = cls.eval_crop, cls.eval_crops
    items = _validation_crops(crop, crops)
    i = int(index) % len(items)
    name, clean = items[i]
    damage = create_task(task, train=False)
    damaged, mask = damage.apply(torch.from_numpy(clean).permute(2, 0, 1)[None], seeds=[eval_seed(i)])
    declared = [o.name for o in damage.declared_options]
    # The values the task uses when no option is given (σ = 50, quality 10, ×8), for the page to state.
    setting = ", ".join(f"{k}={getattr(damage, k):g}" for k in declared
                        if isinstance(getattr(damage, k, None), (int, float)))
    return Sample(name=name, index=i, count=len(items), setting=setting, clean=clean,
                  damaged=damaged[0].permute(1, 2, 0).numpy().copy(),
                  mask=None if mask is None else mask[0, 0].numpy().copy(), task=damage)


def _number(value: float) -> float | str | None:
    """JSON-safe: NaN → None, ±inf → 'inf' / '-inf'."""
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def scores(item: Sample, restored: np.ndarray, model_label: str, slow: bool = False) -> dict:
    """PSNR/SSIM against the ground truth for the damaged input, each classical baseline of the task (the slow
    ones only with `slow`) and the model; `best_classical` names the best baseline by PSNR."""
    def row(method: str, kind: str, image: np.ndarray | None, seconds: float | None = None,
            note: str | None = None) -> dict:
        if image is None:
            return {"method": method, "kind": kind, "psnr": None, "ssim": None, "seconds": None, "note": note}
        return {"method": method, "kind": kind, "psnr": _number(psnr(item.clean, image)),
                "ssim": _number(ssim(item.clean, image)), "seconds": seconds, "note": note}

    rows = [row("damaged input", "input", item.damaged)]
    for baseline in baselines_for(item.task.name):
        if baseline.requires and importlib.util.find_spec(baseline.requires) is None:
            rows.append(row(baseline.name, "baseline", None, note="not run: not installed (pip install -e .[baselines])"))
            continue
        if baseline.slow and not slow:
            rows.append(row(baseline.name, "baseline", None,
                            note="not run: slow (start the server with --slow-baselines to include it)"))
            continue
        start = time.perf_counter()
        out = baseline.run(item.damaged, Context(item.task, item.clean, item.mask))
        rows.append(row(baseline.name, "baseline", out, time.perf_counter() - start))
    rows.append(row(model_label, "model", restored))

    def key(r: dict) -> float:
        return math.inf if r["psnr"] == "inf" else r["psnr"]

    scored = [r for r in rows if r["kind"] == "baseline" and r["psnr"] is not None]
    best = max(scored, key=key, default=None)
    return {"rows": rows, "best_classical": best["method"] if best else None}
