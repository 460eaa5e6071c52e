"""The library's front door: `restore` in one call, with the model cache it shares with `pyramidal serve`.

Pixel ranges: this API speaks the values images are stored in, 8-bit (0-255), 16-bit (0-65535) or floats in
[0, 1], and gives back the same. The models themselves work on floats in [-1, 1] (`restore_array` and a
model's `forward` take and return that range); `pyramidal.pixels` converts between the two.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.hub import resolve_weights
from pyramidal.inference import restore_array
from pyramidal.inference.model import load_restorer, prepare_for_inference
from pyramidal.io import NonFinitePixels, image_metadata, load_pil, read_image
from pyramidal.options import RestoreOptions
from pyramidal.pixels import from_model_range, to_model_range

# Prepared models kept for the next `restore` call: (weights file, its mtime and size, device, precision).
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 8  # models kept loaded by restore() and pyramidal serve
_CACHE_LOCK = threading.Lock()

# PIL modes that map one-to-one onto a numpy array and back.
_ARRAY_MODES = ("RGB", "RGBA", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N")
# ITU-R 601 luma, as Pillow converts RGB to L.
_LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------- one-call restore


def cached_model(weights: Any, task: str | None, device: str = "auto", precision: str = "auto") -> Any:
    """The one model cache of `restore` and `pyramidal serve`: a prepared model, loaded once and kept while
    the file is unchanged.

    Args:
        weights: "builtin", a weights file, run folder or checkpoint, or a model (prepared, not cached).
        task: the damage task, used to pick built-in weights.
        device: "auto", "cpu" or "cuda".
        precision: "auto", "fp32", "bf16" or "fp16".

    Returns:
        The model prepared by `inference.model.prepare_for_inference`; `.model.info` holds the file's record.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    prec = resolve_precision(precision, dev)
    if isinstance(weights, nn.Module) or (callable(weights) and not isinstance(weights, (str, os.PathLike))):
        return prepare_for_inference(weights, dev, prec)
    path = resolve_weights(weights, task).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(dev), prec)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        model = prepare_for_inference(load_restorer(path), dev, prec)
        _CACHE[key] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model


def clear_cache() -> None:
    """Forget the models `restore` keeps loaded (they are reloaded on the next call).

    Returns:
        None.
    """
    with _CACHE_LOCK:
        _CACHE.clear()


def _check_finite(arr: np.ndarray) -> None:
    """PyramidalError unless every value is finite: min and max skip NaN, and one NaN spreads over the output."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise PyramidalError(f"restore: {arr.size - int(finite.sum())} of the image's {arr.size} pixel values are "
                             "not finite (NaN or infinity); replace them before restoring")


def _split_channels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """H×W, H×W×1/2/3/4 → (H×W×3 colour, alpha or None, grayscale)."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), None, True
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        gray = arr[..., 0]
        return np.repeat(gray[..., None], 3, axis=2), (arr[..., 1] if arr.shape[2] == 2 else None), True
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return arr[..., :3], (arr[..., 3] if arr.shape[2] == 4 else None), False
    raise PyramidalError(f"restore: expected an H×W or H×W×C image with C = 1, 2, 3 or 4, got shape {arr.shape}")


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Restored colour pixels as one luma channel, in the same dtype."""
    if rgb.dtype == np.uint8:
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))  # exactly what the CLI writes
    luma = rgb.astype(np.float64) @ _LUMA
    if np.issubdtype(rgb.dtype, np.integer):
        return np.clip(np.rint(luma), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)
    return luma.astype(rgb.dtype)


def _restore_pixels(model: Any, image: np.ndarray, options: RestoreOptions, **per_call: Any) -> np.ndarray:
    """An array image restored into a new array of the same shape and dtype (alpha copied unchanged)."""
    arr = np.asarray(image)
    if arr.dtype == np.bool_ or not (arr.dtype in (np.uint8, np.uint16) or np.issubdtype(arr.dtype, np.floating)):
        raise PyramidalError(f"restore: pixels of type {arr.dtype}; expected uint8, uint16 or floats in [0, 1]")
    if np.issubdtype(arr.dtype, np.floating) and arr.size:
        _check_finite(arr)
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise PyramidalError(f"restore: float pixels must lie in [0, 1], got {low:g} to {high:g} "
                                 "(divide 8-bit values by 255, or pass a uint8 array)")
    rgb, alpha, grayscale = _split_channels(arr)
    restored = from_model_range(restore_array(model, to_model_range(rgb), options, **per_call), rgb)
    if not grayscale:
        return restored if alpha is None else np.dstack([restored, alpha]).astype(arr.dtype)
    gray = _gray(restored)
    if arr.ndim == 2:
        return gray
    return gray[..., None] if alpha is None else np.dstack([gray, alpha]).astype(arr.dtype)


def _pil_from_array(arr: np.ndarray) -> Image.Image:
    """uint8 H×W / H×W×2 / H×W×3 / H×W×4 → L / LA / RGB / RGBA; uint16 H×W → I;16."""
    if arr.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray(arr))
    mode = {2: "L", 3: {2: "LA", 3: "RGB", 4: "RGBA"}.get(arr.shape[-1], "RGB")}[arr.ndim]
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def _restore_pil(model: Any, img: Image.Image, options: RestoreOptions, **per_call: Any) -> Image.Image:
    """A PIL image restored into a new one; its metadata (EXIF as it is, ICC profile, DPI, PNG colour chunks) is
    carried into the result's `info`, as Pillow's readers put it there."""
    metadata = image_metadata(img)  # not turned upright here: a PIL image is taken as it is
    if img.mode in _ARRAY_MODES:
        arr = np.asarray(img)
        arr = arr.astype(np.uint16) if img.mode.startswith("I;16") else arr
        return _with_metadata(_pil_from_array(_restore_pixels(model, arr, options, **per_call)), metadata)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        _check_finite(arr)
        scale = 1.0 if arr.max(initial=0) <= 1.0 else 255.0  # as the file reader takes F images
        out = _restore_pixels(model, np.clip(arr / scale, 0, 1), options, **per_call) * scale
        return _with_metadata(Image.fromarray(out.astype(np.float32), "F"), metadata)
    try:
        loaded = load_pil(img)  # palette, 1-bit, CMYK, I, ...: as the file reader sees them
    except NonFinitePixels as exc:
        raise PyramidalError(f"restore: {exc}") from None
    return _with_metadata(_pil_from_array(_restore_pixels(model, _loaded_pixels(loaded, deep=True), options, **per_call)),
                          metadata)


def _with_metadata(img: Image.Image, metadata: Any) -> Image.Image:
    """`img` with `metadata` (an `io.ImageMetadata`) in its `info`; an ICC profile of the other colour kind is
    left out."""
    gray = img.mode in ("L", "LA", "I;16", "F")
    img.info.update(metadata.for_colour(grayscale=gray).pil_info())
    return img


def _loaded_pixels(loaded: Any, deep: bool) -> np.ndarray:
    """A LoadedImage as one array: gray H×W (or H×W×2 with alpha), colour H×W×3/4; 16-bit where there is one."""
    use16 = deep and loaded.rgb16 is not None
    rgb = loaded.rgb16 if use16 else loaded.rgb
    alpha = loaded.alpha16 if use16 and loaded.alpha16 is not None else loaded.alpha
    if use16 and alpha is not None and alpha.dtype == np.uint8:
        alpha = alpha.astype(np.uint16) * 257
    base = rgb[..., 0] if loaded.grayscale else rgb
    return base if alpha is None else np.dstack([base, alpha])


def restore(image: str | os.PathLike | Image.Image | np.ndarray, task: str = "noise", weights: Any = "builtin",
            options: RestoreOptions | None = None, *, progress: bool | None = False,
            mask: np.ndarray | str | None = None, **option_values: Any) -> Image.Image | np.ndarray:
    """Restore one image in one call; weights load on the first call and stay cached for the next.

    Args:
        image: a file path (read like `pyramidal restore` reads it: EXIF orientation, 16-bit, alpha), a PIL
            image, or a numpy array: uint8 or uint16 H×W, H×W×1, H×W×2 (gray + alpha), H×W×3 or H×W×4, or
            floats in [0, 1] of those shapes; any memory layout (views, negative strides).
        task: the damage to undo; picks the built-in weights ("noise", "jpeg", "pixelate", "blur", "squares",
            "block", "grid", "mixed"; `pyramidal weights` lists them).
        weights: "builtin", a `.safetensors` file, a folder with `model.safetensors` + `config.json`, or a
            model (an nn.Module from `create_model`/`load_weights`).
        options: how to restore (`pyramidal.RestoreOptions`); by default `pyramidal restore`'s own.
        progress: None shows a progress display over the tiles; False (default) hides it.
        mask: the holes to fill: an H×W array (non-zero = hole), or "auto" for the pixels painted magenta
            (255, 0, 255). The pixels outside the holes come back exactly as given.
        **option_values: RestoreOptions fields given one by one, over `options`: tile, overlap, batch_size,
            device, precision, ensemble, strength, sigma (the noise σ, for a model built with `noise_map=True`).

    Returns:
        The same kind as given. An array comes back with the same shape and dtype, alpha unchanged. A PIL
        image comes back in its mode (RGB, RGBA, L, LA, I;16, F); other modes come back as RGB(A) or L(A).
        A path gives a PIL image: RGB, RGBA, L, LA, or I;16 for a 16-bit grayscale file (a 16-bit colour file
        is restored at 16 bits and returned as 8-bit RGB, the deepest colour mode PIL has; write 16-bit
        files with `pyramidal restore`). A PIL image out carries the input's metadata in its `info`, as
        Pillow's readers put it there: "exif" (for a path, with the orientation set to 1, since the pixels
        are upright), "icc_profile", "dpi", and PNG's "gamma", "chromaticity" and "srgb".

    Raises:
        PyramidalError: an unreadable file, pixels outside the accepted types or ranges, NaN or infinity among
            the pixels, an empty image, unknown weights, weights that give NaN or infinity; an OptionError
            (also a ValueError) for a bad option, naming it (`tile=-1`).
        TypeError: `image` is none of the accepted kinds, or an option that RestoreOptions does not have.
    """
    if isinstance(mask, str):  # "auto" is a mask policy, an array the holes of this image
        option_values["mask"], mask = mask, None
    options = (options or RestoreOptions()).replace(**option_values)
    model = cached_model(weights, task, options.device, options.precision)
    options = options.replace(device=model.device, precision=model.precision)
    per_call = {"progress": progress, "mask": mask}
    if isinstance(image, (str, os.PathLike)):
        loaded = read_image(image)
        out = _restore_pixels(model, _loaded_pixels(loaded, deep=True), options, **per_call)
        if out.dtype == np.uint16 and out.ndim == 3:  # 16-bit colour: PIL has no such mode
            out = np.rint(out / 257.0).astype(np.uint8)
        return _with_metadata(_pil_from_array(out), loaded.metadata)
    if isinstance(image, Image.Image):
        return _restore_pil(model, image, options, **per_call)
    if isinstance(image, np.ndarray):
        return _restore_pixels(model, image, options, **per_call)
    raise TypeError(f"restore() takes a file path, a PIL image or a numpy array, not {type(image).__name__}")
