"""Restore images of any size: reading awkward files, tiled and batched inference, self-ensemble, writing PNGs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyramidal.device import autocast, resolve_device, resolve_precision
from pyramidal.errors import PyramidalError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


# --------------------------------------------------------------------------- weights


def available_builtin_weights() -> list[str]:
    """Tasks that have built-in weights shipped inside the package."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").exists())


def builtin_weights_path(task: str) -> Path:
    """Path of the weights shipped for `task`; a clear PyramidalError naming the available ones if none."""
    path = WEIGHTS_DIR / f"{task}.safetensors"
    if path.exists():
        return path
    have = available_builtin_weights()
    listing = ", ".join(have) if have else "none are installed in this copy of pyramidal"
    raise PyramidalError(
        f"--weights builtin: no built-in weights for task {task!r} ({listing}); "
        "pass a .safetensors file written by `pyramidal train` instead"
    )


def resolve_weights(weights: str | os.PathLike, task: str | None) -> Path:
    """`builtin` → the packaged file for `task`; anything else is a path to a .safetensors file."""
    if str(weights) == "builtin":
        if not task:
            raise PyramidalError("--weights builtin needs --task to know which weights to use")
        return builtin_weights_path(task)
    path = Path(weights)
    if not path.exists():
        raise PyramidalError(f"{path}: no such weights file")
    return path


def load_restorer(weights: str | os.PathLike, task: str | None = None) -> nn.Module:
    """Load a model for restoration from `builtin` or a file (eval mode, `model.info` from the sidecar)."""
    from pyramidal.checkpoint import load_weights

    path = resolve_weights(weights, task)
    model = load_weights(path)
    model.weights_path = str(path)
    return model


# --------------------------------------------------------------------------- image files


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """`atomic_write`, then the permissions a plain open() would give (the temporary file is private)."""
    from pyramidal.checkpoint import atomic_write

    atomic_write(path, write)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@dataclass
class LoadedImage:
    """An input image as 8-bit RGB plus what is needed to write the result back in the same form."""

    rgb: np.ndarray  # H×W×3 uint8
    alpha: np.ndarray | None  # H×W uint8, kept and re-attached to the output
    grayscale: bool
    bit_depth: int  # of the source file (16-bit inputs are reduced to 8-bit)


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read any image Pillow can decode: grayscale, palette, RGBA, 16-bit; EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise PyramidalError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PyramidalError(f"{path}: is a directory") from None
    except UnidentifiedImageError:
        raise PyramidalError(f"{path}: not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PyramidalError(f"{path}: unreadable image ({exc})") from None
    if img.width == 0 or img.height == 0:
        raise PyramidalError(f"{path}: empty image")
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    bit_depth = 8
    alpha = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            # Float images are taken to be 0-1 if they fit there, else 0-255.
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        elif mode.startswith("I;16") or arr.max(initial=0) > 255:
            scale, bit_depth = 255.0 / 65535.0, 16
        else:
            scale = 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        grayscale = True
    elif mode in ("L", "1", "LA", "La"):
        if mode in ("LA", "La"):
            alpha = np.asarray(img.getchannel("A"), dtype=np.uint8).copy()
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        grayscale = True
    else:
        if "A" in img.getbands():
            alpha = np.asarray(img.getchannel("A"), dtype=np.uint8).copy()
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        grayscale = False
    return LoadedImage(np.ascontiguousarray(rgb), alpha, grayscale, bit_depth)


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
                grayscale: bool = False) -> None:
    """Write an 8-bit PNG atomically: RGB, RGBA with the given alpha, or grayscale (L / LA)."""
    from PIL import Image

    if grayscale:
        img = Image.fromarray(rgb, "RGB").convert("L")
        if alpha is not None:
            img = Image.merge("LA", (img, Image.fromarray(alpha, "L")))
    else:
        img = Image.fromarray(rgb, "RGB")
        if alpha is not None:
            img = Image.merge("RGBA", (*img.split(), Image.fromarray(alpha, "L")))
    write_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


# --------------------------------------------------------------------------- inference


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The inference fast path: eval mode, on `device`, channels_last (oneDNN/cuDNN prefer NHWC)."""
    if isinstance(model, nn.Module):
        model.eval()
        model.to(device=device, memory_format=torch.channels_last)
    return model


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


# The 8 symmetries of the square: (k quarter turns, then optional horizontal flip).
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward(model: Callable, x: torch.Tensor, ensemble: bool) -> torch.Tensor:
    """One batch through the model (float32 out); with `ensemble`, the mean over the 8 flips/rotations."""
    if not ensemble:
        return model(x).float()
    total = None
    for k, flip in DIHEDRAL:
        t = torch.rot90(x, k, dims=(-2, -1))
        if flip:
            t = t.flip(-1)
        y = model(t.contiguous(memory_format=torch.channels_last)).float()
        if flip:
            y = y.flip(-1)
        y = torch.rot90(y, -k, dims=(-2, -1))
        total = y if total is None else total + y
    return total / len(DIHEDRAL)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `length`, neighbours sharing at least `overlap` px."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends exactly at the border
    return starts


def _ramp(size: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """Blend weights along one axis: raised-cosine ramps over `overlap` px at edges shared with a neighbour."""
    w = np.ones(size, dtype=np.float32)
    n = min(overlap, size)
    if n > 0:
        # Strictly positive, so every pixel has some weight even where only one tile covers it.
        r = np.sin(0.5 * math.pi * (np.arange(n) + 0.5) / n) ** 2
        if fade_start:
            w[:n] *= r
        if fade_end:
            w[size - n:] *= r[::-1]
    return w


def restore_array(
    model: Callable,
    image: torch.Tensor,
    *,
    tile: int | None = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    ensemble: bool = False,
) -> torch.Tensor:
    """Restore one float image 3×H×W in [-1, 1] (any size), tiled and batched; returns float32 3×H×W on the CPU."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise PyramidalError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
    dev = resolve_device(device) if isinstance(device, str) else (device or _model_device(model))
    prec = resolve_precision(precision, dev)
    model = prepare_model(model, dev)
    _, h, w = image.shape
    if tile is None or tile <= 0:
        tile = max(h, w)
    if overlap < 0 or overlap >= tile:
        raise PyramidalError(f"--overlap {overlap}: must be at least 0 and smaller than --tile {tile}")
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    if len(boxes) == 1:
        with torch.inference_mode(), autocast(dev, prec):
            x = image[None].to(dev).contiguous(memory_format=torch.channels_last)
            return _forward(model, x, ensemble)[0].clamp(-1, 1).cpu()
    out = torch.zeros(3, h, w, dtype=torch.float32)
    weight = torch.zeros(1, h, w, dtype=torch.float32)
    wy = {y: _ramp(th, overlap, y > 0, y + th < h) for y in ys}
    wx = {x: _ramp(tw, overlap, x > 0, x + tw < w) for x in xs}
    for i in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[i:i + max(1, batch_size)]
        batch = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk])
        with torch.inference_mode(), autocast(dev, prec):
            restored = _forward(model, batch.to(dev).contiguous(memory_format=torch.channels_last), ensemble).cpu()
        for (y, x), patch in zip(chunk, restored):
            wt = torch.from_numpy(np.outer(wy[y], wx[x]))[None]
            out[:, y:y + th, x:x + tw] += patch * wt
            weight[:, y:y + th, x:x + tw] += wt
    return (out / weight).clamp(-1, 1)


def _to_float_chw(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
    """uint8 image in any accepted layout → (float 3×H×W in [-1, 1], was a tensor, was H×W×3 or H×W numpy)."""
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        arr = image.detach().cpu()
    else:
        image = np.asarray(image)
        arr = torch.from_numpy(image if image.flags.writeable else image.copy())
    if arr.dtype != torch.uint8:
        raise PyramidalError(f"restore_image expects uint8 pixels, got {arr.dtype}")
    hwc = False
    if arr.ndim == 2:
        arr = arr[None].expand(3, -1, -1)
        hwc = not is_tensor
    elif arr.ndim == 3 and not is_tensor and arr.shape[-1] == 3:
        arr = arr.permute(2, 0, 1)
        hwc = True
    elif arr.ndim != 3 or arr.shape[0] != 3:
        raise PyramidalError(f"restore_image expects H×W×3, 3×H×W or H×W pixels, got shape {tuple(arr.shape)}")
    return arr.float().div(127.5).sub(1.0), is_tensor, hwc


def _from_float_chw(y: torch.Tensor, is_tensor: bool, hwc: bool) -> np.ndarray | torch.Tensor:
    out = y.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    if hwc:
        out = out.permute(1, 2, 0).contiguous()
    return out if is_tensor else out.numpy()


def restore_image(
    model: Callable,
    image: np.ndarray | torch.Tensor,
    *,
    tile: int | None = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    ensemble: bool = False,
) -> np.ndarray | torch.Tensor:
    """Restore one 8-bit image; returns uint8 in the layout given.

    `image`: numpy H×W×3 (PIL layout), numpy or torch 3×H×W (torch layout), or H×W grayscale (returned H×W×3).
    `model`: an nn.Module (moved to `device`, eval, channels_last) or any callable B×3×H×W → B×3×H×W in [-1, 1].
    `tile=None` or 0 runs the whole image at once.
    """
    x, is_tensor, hwc = _to_float_chw(image)
    y = restore_array(model, x, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
                      precision=precision, ensemble=ensemble)
    return _from_float_chw(y, is_tensor, hwc)


def restore_images(
    model: Callable,
    images: Sequence[np.ndarray | torch.Tensor],
    *,
    tile: int | None = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    ensemble: bool = False,
) -> list[np.ndarray | torch.Tensor]:
    """`restore_image` for many images: same-size images that fit in one tile go through in batches."""
    dev = resolve_device(device) if isinstance(device, str) else (device or _model_device(model))
    prec = resolve_precision(precision, dev)
    opts = dict(tile=tile, overlap=overlap, batch_size=batch_size, device=dev, precision=prec, ensemble=ensemble)
    converted = [_to_float_chw(im) for im in images]
    results: list[np.ndarray | torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (x, _, _) in enumerate(converted):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    for (h, w), indices in groups.items():
        if tile and (h > tile or w > tile):
            for i in indices:
                results[i] = _from_float_chw(restore_array(model, converted[i][0], **opts), *converted[i][1:])
            continue
        model = prepare_model(model, dev)
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start:start + max(1, batch_size)]
            batch = torch.stack([converted[i][0] for i in chunk]).to(dev).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(dev, prec):
                out = _forward(model, batch, ensemble).clamp(-1, 1).cpu()
            for i, y in zip(chunk, out):
                results[i] = _from_float_chw(y, *converted[i][1:])
    return results


# --------------------------------------------------------------------------- files


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Input paths, with a directory standing for the image files directly inside it (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(p)
    return paths


@dataclass
class FileResult:
    input: Path
    output: Path | None
    error: str | None = None


def restore_files(
    model: Callable,
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    overwrite: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
    **options,
) -> list[FileResult]:
    """Restore each input into `outdir/<stem>.png`; a bad input becomes an error result, the rest go on.

    An input file is never replaced unless `overwrite`; two inputs with the same stem are refused.
    `options` go to `restore_image` (tile, overlap, batch_size, device, precision, ensemble).
    """
    outdir = Path(outdir)
    paths = expand_inputs(inputs)
    input_set = {os.path.realpath(p) for p in paths}
    claimed: dict[str, Path] = {}
    results = []
    for path in paths:
        out = outdir / f"{path.stem}.png"
        key = os.path.realpath(out)
        result = FileResult(path, out)
        if key in claimed:
            result.error = f"{path}: output {out} would also be written from {claimed[key]}; rename one of them"
        elif key in input_set and not overwrite:
            result.error = f"{path}: output {out} is an input file; use another -o folder or --overwrite"
        else:
            claimed[key] = path
            try:
                loaded = read_image(path)
                rgb = restore_image(model, loaded.rgb, **options)
                outdir.mkdir(parents=True, exist_ok=True)
                write_image(out, rgb, loaded.alpha, loaded.grayscale)
            except PyramidalError as exc:
                result.error = str(exc)
            except OSError as exc:
                result.error = f"{path}: cannot write {out} ({exc.strerror or exc})"
        if result.error:
            result.output = None
        results.append(result)
        if on_result:
            on_result(result)
    return results
