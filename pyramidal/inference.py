"""The one inference path: loading a restorer, `prepare_for_inference`, tiled and batched restoration, file batches.

Every user of a trained model (restore, evaluate, demo, compare, export's parity check, the bench) runs it
through `prepare_for_inference`, so the benchmark times the code the commands run.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyramidal.checkpoint import load_weights
from pyramidal.device import autocast, resolve_device, resolve_precision
from pyramidal.errors import OptionError, PyramidalError
from pyramidal.fastpath import map_one_thread_each, memory_format, tune_cpu_allocator
from pyramidal.hub import resolve_weights
from pyramidal.progress import progress as progress_bar

# --------------------------------------------------------------------------- loading


def load_restorer(weights: str | os.PathLike, task: str | None = None) -> nn.Module:
    """Load a model for restoration.

    Args:
        weights: "builtin", a `.safetensors` file or a folder (see `hub.resolve_weights`).
        task: the damage task; needed for "builtin".

    Returns:
        The model in eval mode on the CPU; `model.info` holds the file's record (architecture, task, scores)
        and `model.weights_path` the file it came from.
    """
    path = resolve_weights(weights, task)
    model = load_weights(path)
    model.weights_path = str(path)
    trained_for = (getattr(model, "info", None) or {}).get("task")
    if task and trained_for and trained_for != task and not _mixture_of(trained_for, task):
        warnings.warn(f"{path} was trained for task {trained_for!r}, not {task!r}", WeightsTaskWarning, stacklevel=2)
    return model


def _mixture_of(mixture: str, task: str) -> bool:
    """True when `mixture` (mixed, inpaint) draws `task` among others: its weights were trained for it too."""
    from pyramidal.damage import TASKS

    return mixture in TASKS.names() and task in getattr(TASKS.get(mixture), "default_tasks", ())


class WeightsTaskWarning(UserWarning):
    """Weights loaded for one task were trained for another."""


# --------------------------------------------------------------------------- the prepared model


class InferenceModel(nn.Module):
    """A model ready for inference: inference_mode, autocast, channels_last in, float32 out on `device`."""

    def __init__(self, model: nn.Module | Callable, device: torch.device, precision: str,
                 channels_last: bool = True, compiled: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        # Kept out of the module tree so that state_dict keys stay the wrapped model's.
        self.__dict__["_compiled"] = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._compiled if self._compiled is not None else self.model
        with torch.inference_mode(), autocast(self.device, self.precision):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(self.channels_last))
            return run(x).float()


def prepare_for_inference(model: nn.Module | Callable, device: str | torch.device = "auto", precision: str = "auto",
                          channels_last: bool = True, compile: bool = False) -> InferenceModel:
    """Get a model ready for inference: eval mode on `device`, channels_last weights, autocast in the
    resolved precision, optional torch.compile.

    Args:
        model: an nn.Module, or any callable batch → batch (an ONNX session), which then runs as it is
            under the same modes.
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        precision: "auto", "fp32", "bf16" or "fp16".
        channels_last: keep weights and inputs channels_last (faster convolutions on CPU and GPU).
        compile: wrap the model with torch.compile.

    Returns:
        A callable module: B×3×H×W in [-1, 1] (any device, any layout) → B×3×H×W float32 on `device`. An
        already prepared model with the same settings is returned unchanged.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    if device.type == "cpu":
        # A restore pass allocates feature maps of 25-45 MB, above glibc's largest mmap threshold (32 MB): by
        # default each is a fresh mmap whose pages fault in again on every pass. Measured, one thread: restore
        # runs 1.6-2.3× faster with freed memory kept for reuse (docs/performance.md).
        tune_cpu_allocator()
    if isinstance(model, InferenceModel):
        same = (model.device, model.precision, model.channels_last) == (device, precision, channels_last)
        if same and (model._compiled is not None or not compile):
            return model
        model = model.model
    compiled = None
    if isinstance(model, nn.Module):
        model.eval()
        model.to(device=device, memory_format=memory_format(channels_last))
        compiled = torch.compile(model, dynamic=True) if compile else None
    return InferenceModel(model, device, precision, channels_last, compiled)


def _model_device(model: Callable) -> torch.device:
    if isinstance(model, InferenceModel):
        return model.device
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _device_and_precision(model: Callable, device: str | torch.device | None, precision: str
                          ) -> tuple[torch.device, str]:
    dev = resolve_device(device) if isinstance(device, str) else (device or _model_device(model))
    return dev, resolve_precision(precision, dev)


# --------------------------------------------------------------------------- tiled restoration


# The 8 symmetries of the square: (k quarter turns, then optional horizontal flip).
DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward(model: InferenceModel, x: torch.Tensor, ensemble: bool) -> torch.Tensor:
    """One batch through the prepared model; with `ensemble`, the mean over the 8 flips/rotations.

    An output holding NaN or infinity is a PyramidalError naming the weights: clamped, it would be written
    as a black image and reported as a success.
    """
    if not ensemble:
        return _finite_output(model, model(x))
    total = None
    for k, flip in DIHEDRAL:
        t = torch.rot90(x, k, dims=(-2, -1))
        if flip:
            t = t.flip(-1)
        y = model(t)
        if flip:
            y = y.flip(-1)
        y = torch.rot90(y, -k, dims=(-2, -1))
        total = y if total is None else total + y
    return _finite_output(model, total / len(DIHEDRAL))


def _finite_output(model: InferenceModel, y: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(y).all():
        source = getattr(_unwrapped(model), "weights_path", None) or "the model"
        raise PyramidalError(f"{source}: the restored pixels hold NaN or infinity (precision {model.precision}); "
                             "these weights are broken, or overflow at this precision (try --precision fp32); "
                             "nothing was written")
    return y


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """The side and start offsets of the fewest tiles that cover a length, spread evenly.

    Args:
        length: the image side in px.
        tile: the largest tile side in px.
        overlap: the least number of px neighbouring tiles share.
        multiple: round the side up to this (a model that pads its input to a multiple of 2**levels does the
            same work for any side up to the next multiple), never above `tile`.

    Returns:
        (side, offsets): the side is as small as the tile count allows, so no tile runs far past its
        neighbour (a fixed-stride layout ends with a tile that mostly repeats the one before it); the first
        offset is 0 and the last tile ends exactly at `length`.
    """
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    side = math.ceil((length + (count - 1) * overlap) / count)
    side = min(tile, math.ceil(side / multiple) * multiple)
    # Integer steps of floor or ceil((length - side) / (count - 1)), never more than side - overlap.
    return side, [i * (length - side) // (count - 1) for i in range(count)]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles `tile_layout` places along a length (tiles of at most `tile` px)."""
    return tile_layout(length, tile, overlap)[1]


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


DEFAULT_OVERLAP = 32
# `restore`'s tiling. Measured on 2 cores, 12 MP (docs/performance.md): 512-px tiles do 15 % less work than
# 256-px ones (less overlap), run as fast per pixel and score as well (closer to the whole image at once);
# one tile per pass with one pass per CPU thread keeps the peak RSS of a 12 MP restore near 1.2 GB.
DEFAULT_TILE = 512
DEFAULT_BATCH_SIZE = 1


def check_tiling(tile: int | None, overlap: int | None, batch_size: int = 1) -> tuple[int | None, int]:
    """Validate the tiling options once, before any model runs; returns (tile or None for whole images, overlap).

    Raises OptionError naming the flag: a negative tile, a negative overlap, or an overlap that is not
    smaller than the tile. Without tiling (None or 0) the overlap does not matter.
    """
    for name, value in (("--tile", tile), ("--overlap", overlap), ("--batch-size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise OptionError(f"{name} {value!r}: must be a whole number")
    if batch_size < 1:
        raise OptionError(f"--batch-size {batch_size}: must be at least 1")
    if tile is not None and tile < 0:
        raise OptionError(f"--tile {tile}: must be 0 (the whole image at once) or a positive size in px")
    if overlap is not None and overlap < 0:
        raise OptionError(f"--overlap {overlap}: must be 0 or more")
    if not tile:
        return None, 0
    if overlap is None:
        return int(tile), min(DEFAULT_OVERLAP, int(tile) // 2)
    if overlap >= tile:
        raise OptionError(f"--overlap {overlap}: must be smaller than --tile {tile}")
    return int(tile), int(overlap)


# --------------------------------------------------------------------------- masks of holes

# `mask="auto"` finds the holes by the research's colour key, as a model built with find_holes=magenta does
# (`models.blocks.magenta_holes`: exact magenta, or near it and smeared by a lossy file).
NEEDS_MASK = ("is mask-conditioned (built with mask_input=true): it fills the holes it is shown and cannot find "
              "them itself; give them with --mask FILE, --mask FOLDER or --mask auto (mask= in Python)")


def magenta_mask(rgb: np.ndarray, tolerance: int | None = None) -> np.ndarray:
    """H×W bool: the holes of an H×W×3 uint8 image painted in the colour key, magenta (255, 0, 255)."""
    from pyramidal.models.blocks import MAGENTA_TOLERANCE, magenta_holes

    px = torch.tensor(np.asarray(rgb)[..., :3]).permute(2, 0, 1)[None].float() / 127.5 - 1
    return magenta_holes(px, MAGENTA_TOLERANCE if tolerance is None else tolerance)[0, 0].numpy()


def check_mask(mask: np.ndarray | torch.Tensor, size: tuple[int, int], source: str = "mask") -> torch.Tensor:
    """A mask of holes as a bool H×W tensor (non-zero = hole), checked against the image's (H, W).

    Raises PyramidalError, one line starting with `source`: not H×W, another size, no hole, nothing known.
    """
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask))
    while m.ndim > 2 and (m.shape[0] == 1 or m.shape[-1] == 1):  # 1×H×W, H×W×1, 1×1×H×W
        m = m[0] if m.shape[0] == 1 else m[..., 0]
    if m.ndim != 2:
        raise PyramidalError(f"{source}: expected an H×W mask, got shape {tuple(m.shape)}")
    h, w = size
    if tuple(m.shape) != (h, w):
        raise PyramidalError(f"{source} is {m.shape[1]}×{m.shape[0]} px but the image is {w}×{h} px; "
                             "a mask must have its image's size")
    m = m != 0
    if not m.any():
        raise PyramidalError(f"{source} marks no hole (every pixel is zero): nothing to fill")
    if m.all():
        raise PyramidalError(f"{source} marks every pixel as a hole: nothing known to fill them from")
    return m


def _unwrapped(model: Callable) -> Callable:
    return model.model if isinstance(model, InferenceModel) else model


def needs_mask(model: Callable) -> bool:
    """True for a mask-conditioned model (built with `mask_input=True`): it must be given the holes."""
    return bool(getattr(_unwrapped(model), "mask_input", False))


NEEDS_SIGMA = ("takes the noise level as an input (built with noise_map=true): give the images' noise σ on the "
               "0-255 scale with --sigma S (sigma= in Python)")


def needs_noise_level(model: Callable) -> bool:
    """True for a noise-map model (built with `noise_map=True`): it must be given the noise σ."""
    return bool(getattr(_unwrapped(model), "noise_map", False))


def check_sigma(model: Callable, sigma: float | None) -> None:
    """PyramidalError naming --sigma unless `sigma` suits `model`: needed by a noise-map model, refused by others."""
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float))):
        raise PyramidalError(f"--sigma {sigma!r}: must be a number (the noise σ on the 0-255 scale)")
    if needs_noise_level(model):
        if sigma is None:
            raise PyramidalError("this model " + NEEDS_SIGMA)
        if not 0 <= sigma <= 255:
            raise PyramidalError(f"--sigma {sigma!r}: must be a number from 0 to 255 (the noise σ on the 0-255 scale)")
    elif isinstance(sigma, (int, float)):
        raise PyramidalError(f"--sigma {sigma:g}: this model has no noise-level input (it was not built with "
                             "noise_map=true); leave --sigma out, or use --strength to apply less or more of it")


def hole_colour(model: Callable) -> tuple[int, int, int] | None:
    """The colour the task in the model's weights record painted holes with (magenta for the hole tasks);
    None when the task keeps its own pixels there (text) or the model has no record."""
    from pyramidal.damage import TASKS

    task = (getattr(_unwrapped(model), "info", None) or {}).get("task")
    return getattr(TASKS.get(task), "hole_colour", None) if task in TASKS.names() else None


def model_input(model: Callable, image: torch.Tensor, mask: torch.Tensor | None,
                sigma: float | None = None) -> torch.Tensor:
    """What `model` is run on for a C×H×W image in [-1, 1], its H×W hole mask (or None) and its noise σ (or None).

    A mask-conditioned model gets the mask as a fourth channel with the holes made neutral; a blind model
    sees the holes painted as its training task painted them (magenta), since that is how it finds them. A
    noise-map model gets σ/255 as a fourth channel (`check_sigma`).
    """
    from pyramidal.models.blocks import mask_conditioned_input, noise_map_input

    check_sigma(model, sigma)
    if sigma is not None:
        image = noise_map_input(image[None], float(sigma))[0]
    if mask is None:
        if needs_mask(model):
            raise PyramidalError("this model " + NEEDS_MASK)
        return image
    if needs_mask(model):
        return mask_conditioned_input(image[None], mask[None, None])[0]
    colour = hole_colour(model)
    if colour is None:
        return image
    fill = torch.tensor(colour, dtype=image.dtype).view(3, 1, 1) / 127.5 - 1
    return torch.where(mask.to(image.device), fill.to(image.device), image)


def _finish(known: torch.Tensor, restored: torch.Tensor, strength: float, mask: torch.Tensor | None) -> torch.Tensor:
    """The model's output at `strength`; with a mask, only inside the holes and the known pixels exactly elsewhere."""
    out = _with_strength(known, restored, strength)
    return out if mask is None else torch.where(mask, out, known.detach().to("cpu", torch.float32))


@torch.inference_mode()
def restore_array(model: Callable, image: torch.Tensor, *, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None, precision: str = "auto",
                  ensemble: bool = False, strength: float = 1.0, progress: bool | None = False,
                  mask: np.ndarray | torch.Tensor | str | None = None, sigma: float | None = None) -> torch.Tensor:
    """Restore one float image of any size, tiled and batched.

    This is the level where the models' own range applies: pixels are floats in [-1, 1] (0 → -1, 255 → 1).

    Args:
        model: an nn.Module (run through `prepare_for_inference`), a prepared model, or any callable
            B×3×H×W → B×3×H×W in [-1, 1].
        image: 3×H×W float tensor in [-1, 1].
        tile: largest tile side in px (default 512); None or 0 runs the whole image at once. Tiles are
            spread evenly and made only as large as their count needs (`tile_layout`).
        overlap: px shared by neighbouring tiles, blended with raised-cosine weights; smaller than `tile`.
            None (default): 32, or half the tile for tiles under 64 px. Ignored for the whole image.
        batch_size: tiles per forward pass (default 1); on the CPU one pass per torch thread runs at once.
        device: "auto", "cpu", "cuda", a torch.device, or None for the model's own device.
        precision: "auto", "fp32", "bf16" or "fp16".
        ensemble: average the 8 flips and rotations (8× the time).
        strength: how much of the model's change to apply, output = input + strength · (model(input) − input),
            0 to 2; 1 is the model as trained, below 1 keeps more of the input (detail and noise), above 1
            smooths more.
        progress: a progress display over the tiles when there are more than one batch of them: None shows
            it (a bar on a terminal, plain lines otherwise), False (default) hides it.
        mask: H×W holes to fill (non-zero = hole), "auto" for the magenta (255, 0, 255) pixels
            (`magenta_mask`), or None. With a mask the output is the model's prediction inside the holes and
            exactly the input elsewhere; a mask-conditioned model needs one.
        sigma: the image's noise σ on the 0-255 scale, for a noise-map model (built with `noise_map=True`),
            which needs it; refused for other models.

    Returns:
        The restored image, float32 3×H×W in [-1, 1] on the CPU.
    """
    if not 0.0 <= strength <= 2.0:
        raise PyramidalError(f"--strength {strength}: must be between 0 and 2 (1 = the model as trained)")
    if image.ndim != 3 or image.shape[0] != 3:
        raise PyramidalError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
    _check_input(image)
    image = image.float()  # float64 or float16 in: the models take float32 (autocast lowers it where asked)
    if isinstance(mask, str):
        if mask != "auto":
            raise PyramidalError(f"mask {mask!r}: give an H×W array of holes, or 'auto' for magenta holes")
        mask = auto_mask(_from_float_chw(image.detach().cpu().float(), False, True))
    mask = None if mask is None else check_mask(mask, tuple(image.shape[1:]))
    known, image = image, model_input(model, image, mask, sigma)  # the model may see 4 channels, or painted holes
    dev, prec = _device_and_precision(model, device, precision)
    model = prepare_for_inference(model, dev, prec)
    _, h, w = image.shape
    tile, overlap = check_tiling(tile, overlap, batch_size)
    if tile is None:
        tile, overlap = max(h, w), 0  # the whole image at once: one tile, nothing to blend
    multiple = 2 ** getattr(_unwrapped(model), "levels", 0)  # the model pads each tile to this anyway
    (th, ys), (tw, xs) = tile_layout(h, tile, overlap, multiple), tile_layout(w, tile, overlap, multiple)
    boxes = [(y, x) for y in ys for x in xs]
    if len(boxes) == 1:
        return _finish(known, _forward(model, image[None], ensemble)[0].clamp(-1, 1).cpu(), strength, mask)
    out = torch.zeros(3, h, w, dtype=torch.float32)
    wy = {y: torch.from_numpy(_ramp(th, overlap, y > 0, y + th < h)) for y in ys}
    wx = {x: torch.from_numpy(_ramp(tw, overlap, x > 0, x + tw < w)) for x in xs}
    shown = progress is not False and len(boxes) > max(1, batch_size)
    bar = progress_bar(total=len(boxes), desc=f"restoring {w}×{h}", unit="tiles", enabled=None if shown else False)
    chunks = [boxes[i:i + max(1, batch_size)] for i in range(0, len(boxes), max(1, batch_size))]

    def run(chunk: list[tuple[int, int]]) -> torch.Tensor:
        batch = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk])
        return _forward(model, batch, ensemble).cpu()

    # On the CPU, one forward pass per torch thread runs at once, each on one thread (see `_tile_workers`).
    for chunk, restored in zip(chunks, map_one_thread_each(run, chunks, _tile_workers(model, len(chunks)))):
        for (y, x), patch in zip(chunk, restored):
            out[:, y:y + th, x:x + tw] += patch * wy[y][:, None] * wx[x]
        bar.update(len(chunk))
    bar.close()
    # The tiles form a full grid, so the blend weights sum to (sum of row ramps) × (sum of column ramps).
    total_y, total_x = torch.zeros(h), torch.zeros(w)
    for y in ys:
        total_y[y:y + th] += wy[y]
    for x in xs:
        total_x[x:x + tw] += wx[x]
    return _finish(known, out.div_(total_y[:, None]).div_(total_x).clamp_(-1, 1), strength, mask)


def _tile_workers(model: InferenceModel, passes: int) -> int:
    """How many forward passes over tiles run at once: on the CPU one per torch thread, each on one thread.

    Measured on 2 cores (docs/performance.md): one intra-op team of 2 threads splits this model's narrow
    convolutions poorly and waits at a barrier after every op, which a busy machine turns into 4-5× longer
    restores; two passes of one thread each do not wait for each other. Memory grows with the passes in
    flight (`batch_size` tiles each). A GPU, or an ONNX session with its own threads, runs one pass at a time.
    """
    if model.device.type != "cpu" or not isinstance(model.model, nn.Module):
        return 1
    return max(1, min(torch.get_num_threads(), passes))


def _with_strength(image: torch.Tensor, restored: torch.Tensor, strength: float) -> torch.Tensor:
    """input + strength · (restored − input): less (< 1) or more (> 1) of the model's change."""
    if strength == 1.0:
        return restored
    source = image.detach().to("cpu", torch.float32)
    return (source + strength * (restored - source)).clamp(-1, 1)


def _check_input(image: torch.Tensor) -> None:
    """PyramidalError for a C×H×W image that cannot be restored: empty, not floats, NaN or infinity."""
    if image.shape[-2] == 0 or image.shape[-1] == 0:
        raise PyramidalError(f"an empty image ({image.shape[-1]}×{image.shape[-2]} px): nothing to restore")
    if not image.is_floating_point():
        raise PyramidalError(f"restore_array takes floats in [-1, 1], not {image.dtype} (restore_image takes "
                             "8-bit pixels)")
    finite = torch.isfinite(image)
    if not finite.all():
        raise PyramidalError(f"{image.numel() - int(finite.sum())} of the image's {image.numel()} values are not "
                             "finite (NaN or infinity); replace them before restoring")


def _to_float_chw(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
    """uint8 image in any accepted layout → (float 3×H×W in [-1, 1], was a tensor, was H×W×3 or H×W numpy)."""
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        arr = image.detach().cpu()
    else:
        image = np.asarray(image)
        # Any layout: a negative-stride view (img[..., ::-1], OpenCV's BGR→RGB) or a read-only array is copied.
        contiguous = image.flags.c_contiguous and image.flags.writeable
        arr = torch.from_numpy(image if contiguous else np.array(image, order="C"))
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
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise PyramidalError(f"an empty image ({arr.shape[2]}×{arr.shape[1]} px): nothing to restore")
    return arr.float().div_(127.5).sub_(1.0), is_tensor, hwc  # in place: one float copy of a large photo, not three


def _from_float_chw(y: torch.Tensor, is_tensor: bool, hwc: bool) -> np.ndarray | torch.Tensor:
    out = y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    if hwc:
        out = out.permute(1, 2, 0).contiguous()
    return out if is_tensor else out.numpy()


# Half the value range of each integer pixel type: v / half - 1 maps [0, max] onto the models' [-1, 1].
_HALF_RANGE = {np.dtype(np.uint8): 127.5, np.dtype(np.uint16): 32767.5}


def to_model_range(pixels: np.ndarray) -> torch.Tensor:
    """Pixels as the models take them.

    Args:
        pixels: H×W×3 array: uint8 (0-255), uint16 (0-65535) or float in [0, 1]; any memory layout.

    Returns:
        float32 3×H×W tensor in [-1, 1].
    """
    arr = np.asarray(pixels)
    half = _HALF_RANGE.get(arr.dtype, 0.5 if np.issubdtype(arr.dtype, np.floating) else None)
    if half is None:
        raise PyramidalError(f"pixels of type {arr.dtype}: expected uint8, uint16 or floats in [0, 1]")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)
    return x.div(half).sub(1.0).clamp(-1, 1)


def from_model_range(y: torch.Tensor, dtype: np.dtype | type) -> np.ndarray:
    """A model output as pixels of `dtype`.

    Args:
        y: 3×H×W float tensor in [-1, 1].
        dtype: uint8, uint16 or a float type (values in [0, 1]).

    Returns:
        H×W×3 array of `dtype`, C-contiguous.
    """
    dtype = np.dtype(dtype)
    hwc = y.detach().cpu().float().permute(1, 2, 0)
    if dtype in _HALF_RANGE:
        half = _HALF_RANGE[dtype]
        return hwc.add(1.0).mul(half).round().clamp(0, 2 * half).numpy().astype(dtype)
    return hwc.add(1.0).mul(0.5).clamp(0, 1).contiguous().numpy().astype(dtype)


def restore_image(model: Callable, image: np.ndarray | torch.Tensor, *, tile: int | None = DEFAULT_TILE,
                  overlap: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None, precision: str = "auto",
                  ensemble: bool = False, strength: float = 1.0,
                  progress: bool | None = False, mask: np.ndarray | torch.Tensor | str | None = None,
                  sigma: float | None = None) -> np.ndarray | torch.Tensor:
    """Restore one 8-bit image; returns uint8 in the layout given.

    Args:
        model: an nn.Module (run through `prepare_for_inference` on `device`), a prepared model, or any
            callable B×3×H×W → B×3×H×W in [-1, 1].
        image: uint8 numpy H×W×3 (PIL layout), numpy or torch 3×H×W (torch layout), or H×W grayscale.
        tile, overlap, batch_size, device, precision, ensemble, strength, progress, sigma: as for
            `restore_array`.
        mask: the holes to fill: an H×W array (non-zero = hole), "auto" for the magenta (255, 0, 255) pixels
            (`magenta_mask`), or None. The pixels outside the holes come back exactly as given.

    Returns:
        uint8 pixels in the layout given (H×W grayscale comes back H×W×3).
    """
    x, is_tensor, hwc = _to_float_chw(image)
    y = restore_array(model, x, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
                      precision=precision, ensemble=ensemble, strength=strength, progress=progress, mask=mask,
                      sigma=sigma)
    return _from_float_chw(y, is_tensor, hwc)


def auto_mask(rgb: np.ndarray, source: str = "mask auto") -> np.ndarray:
    """`mask="auto"`: the magenta holes of H×W×3 uint8 pixels; PyramidalError naming `source` when there are none."""
    found = magenta_mask(rgb)
    if not found.any():
        raise PyramidalError(f"{source}: no magenta (255, 0, 255) pixels found; paint the holes magenta or give "
                             "a mask image")
    return found


@torch.inference_mode()
def restore_images(model: Callable, images: Sequence[np.ndarray | torch.Tensor], *, tile: int | None = 256,
                   overlap: int | None = None, batch_size: int = 4, device: str | torch.device | None = None,
                   precision: str = "auto", ensemble: bool = False, strength: float = 1.0,
                   progress: bool | None = False, desc: str = "restoring",
                   masks: Sequence[np.ndarray | torch.Tensor | None] | None = None,
                   sigma: float | None = None) -> list[np.ndarray | torch.Tensor]:
    """`restore_image` for many images: same-size images that fit in one tile go through in batches.

    Args:
        model: as for `restore_image`.
        images: uint8 images, each in a layout `restore_image` takes.
        tile, overlap, batch_size, device, precision, ensemble, strength: as for `restore_array`.
        progress: None shows a progress display over the images, False (default) hides it.
        desc: what the progress display says is being done.
        masks: None, or one H×W mask of holes (or None) per image, as for `restore_image`.
        sigma: the images' noise σ, for a noise-map model (as for `restore_array`).

    Returns:
        The restored uint8 images, in order, each in its own input's layout.
    """
    check_tiling(tile, overlap, batch_size)  # once, before any image runs
    dev, prec = _device_and_precision(model, device, precision)
    model = prepare_for_inference(model, dev, prec)
    opts = dict(tile=tile, overlap=overlap, batch_size=batch_size, device=dev, precision=prec, ensemble=ensemble,
                strength=strength, sigma=sigma)
    converted = [_to_float_chw(im) for im in images]
    if masks is not None and len(masks) != len(images):
        raise PyramidalError(f"got {len(masks)} masks for {len(images)} images")
    holes = [None if masks is None or masks[i] is None else check_mask(masks[i], tuple(x.shape[1:]), f"mask {i}")
             for i, (x, _, _) in enumerate(converted)]
    inputs = [model_input(model, x, m, sigma) for (x, _, _), m in zip(converted, holes)]
    results: list[np.ndarray | torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (x, _, _) in enumerate(converted):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    bar = progress_bar(total=len(images), desc=desc, unit="images", enabled=None if progress is not False else False,
                       announce=True)
    for (h, w), indices in groups.items():
        if tile and (h > tile or w > tile):
            for i in indices:
                y = restore_array(model, converted[i][0], mask=holes[i], **opts)
                results[i] = _from_float_chw(y, *converted[i][1:])
                bar.update(1)
            continue
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start:start + max(1, batch_size)]
            batch = torch.stack([inputs[i] for i in chunk])
            out = _forward(model, batch, ensemble).clamp(-1, 1).cpu()
            for i, y in zip(chunk, out):
                results[i] = _from_float_chw(_finish(converted[i][0], y, strength, holes[i]), *converted[i][1:])
            bar.update(len(chunk))
    bar.close()
    return results


# --------------------------------------------------------------------------- files


@dataclass
class FileResult:
    """One input of `restore_files`: where its result went, or why it failed."""

    input: Path
    output: Path | None
    error: str | None = None


def plan_restore_outputs(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                         overwrite: bool = False, recursive: bool = False, format: str = "png",
                         on_skip: Callable[[Path, str], None] | None = None) -> list[tuple[Path, Path]]:
    """(input file, output file) for each image `restore_files` would restore, all checked before any work.

    Refused with one PyramidalError line: an output that would replace an input (unless `overwrite`), two
    inputs with one output name, an existing file in `outdir` (unless `overwrite`), an `outdir` that is a
    file or cannot be written. See `pyramidal.io.OutputPlan`.
    """
    from pyramidal.io import FORMATS, OutputPlan, expand_inputs, format_for

    suffix = FORMATS[format_for("", format)][1]
    outdir = Path(outdir)
    items = expand_inputs(inputs, recursive=recursive, exclude=outdir if recursive else None, on_skip=on_skip)
    plan = OutputPlan(overwrite=overwrite, inputs=[p for p, _ in items], inputs_replaceable=True)
    pairs = [(path, plan.add(outdir / Path(name).with_suffix(suffix), path)) for path, name in items]
    plan.check()
    return pairs


def restore_files(
    model: Callable,
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    overwrite: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
    recursive: bool = False,
    format: str = "png",
    quality: int | None = None,
    progress: bool | None = False,
    on_skip: Callable[[Path, str], None] | None = None,
    mask: str | os.PathLike | None = None,
    strip_metadata: bool = False,
    **options,
) -> list[FileResult]:
    """Restore image files into a folder; a bad input becomes an error result and the others go on.

    Args:
        model: as for `restore_image`.
        inputs: image files and folders (a folder stands for the images in it).
        outdir: the output folder; `photo.jpg` becomes `outdir/photo.png` (or the `format`'s suffix).
        overwrite: allow an output to replace an existing file, an input file included (never done otherwise).
            Without it each output is claimed when it is written: a file another run wrote there meanwhile is
            left as it is and this input's result is an error.
        on_result: called with each FileResult as soon as it is known.
        recursive: also read the sub-folders of a folder, mirroring them under `outdir`.
        format: png, jpg, webp or tiff. A 16-bit input gives a 16-bit PNG or TIFF.
        quality: JPEG / WebP quality 1-100 (default 95).
        progress: None shows a progress display over the images (and over the tiles of a large one);
            False (default) hides it.
        on_skip: with `recursive`, called with (file, reason) for files in the folders that are not images.
        mask: the holes to fill, or None: a mask image (`io.read_mask`) when there is one input, a folder of
            masks with the inputs' file stems (any image suffix), or "auto" for magenta holes. An input whose
            mask is missing or bad is an error result.
        strip_metadata: write the outputs without the inputs' EXIF, ICC profile, DPI and PNG colour chunks
            (by default each output carries what its format can hold: `pyramidal.io.FORMAT_METADATA`).
        **options: for `restore_array`: tile, overlap, batch_size, device, precision, ensemble, strength, sigma.

    Returns:
        One FileResult per input image, in input order.

    Raises:
        PyramidalError: before any work, if an output cannot or may not be written (see
        `plan_restore_outputs`); a bad tile, overlap or batch size.
    """
    from pyramidal.io import FORMATS, format_for, read_image, write_image

    fmt = format_for("", format)
    keeps_16_bits = FORMATS[fmt][2]
    check_tiling(options.get("tile"), options.get("overlap"), options.get("batch_size", 1))
    items = plan_restore_outputs(inputs, outdir, overwrite=overwrite, recursive=recursive, format=fmt,
                                 on_skip=on_skip)
    if needs_mask(model) and mask is None:
        raise PyramidalError(f"{getattr(_unwrapped(model), 'weights_path', 'this model')} {NEEDS_MASK}")
    check_sigma(model, options.get("sigma"))  # before any file, not once per file
    holes_of = _mask_finder(mask, len(items))
    dev, prec = _device_and_precision(model, options.pop("device", None), options.pop("precision", "auto"))
    model = prepare_for_inference(model, dev, prec)
    results = []
    bar = progress_bar(total=len(items), desc="restore", unit="images",
                       enabled=False if progress is False or len(items) < 2 else None)
    for path, out in items:
        result = FileResult(path, out)
        # Every output was checked by the plan; a file can still fail to decode or to write.
        try:
            loaded = read_image(path)
            holes = holes_of(path, loaded.rgb)
            if loaded.rgb16 is not None and keeps_16_bits:
                y = restore_array(model, to_model_range(loaded.rgb16), device=dev, precision=prec,
                                  progress=progress, mask=holes, **options)
                rgb = from_model_range(y, np.uint16)
                alpha = loaded.alpha16 if loaded.alpha16 is not None else loaded.alpha
            else:
                rgb = restore_image(model, loaded.rgb, device=dev, precision=prec, progress=progress, mask=holes,
                                    **options)
                alpha = loaded.alpha
            write_image(rgb, out, alpha, loaded.grayscale, format=fmt, quality=quality,
                        metadata=None if strip_metadata else loaded.metadata, exclusive=not overwrite)
        except PyramidalError as exc:
            result.error = str(exc)
        except OSError as exc:
            result.error = f"{path}: cannot write {out} ({exc.strerror or exc})"
        if result.error:
            result.output = None
        results.append(result)
        bar.update(1)
        if on_result:
            on_result(result)
    bar.close()
    return results


def _mask_finder(mask: str | os.PathLike | None, n_inputs: int) -> Callable[[Path, np.ndarray], np.ndarray | None]:
    """`restore_files`' mask argument as a function (input file, its H×W×3 pixels) → its checked holes or None."""
    from pyramidal.io import IMAGE_SUFFIXES

    if mask is None:
        return lambda path, rgb: None
    if str(mask) == "auto":
        return lambda path, rgb: auto_mask(rgb, f"{path}: --mask auto")
    where = Path(mask)
    if where.is_dir():
        by_stem: dict[str, list[Path]] = {}
        for f in sorted(where.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                by_stem.setdefault(f.stem, []).append(f)

        def in_folder(path: Path, rgb: np.ndarray) -> np.ndarray:
            found = by_stem.get(path.stem, [])
            if not found:
                raise PyramidalError(f"{path}: no mask named {path.stem}.* in {where}")
            if len(found) > 1:
                names = ", ".join(f.name for f in found)
                raise PyramidalError(f"{path}: {len(found)} masks for it in {where} ({names}); keep one")
            return _read_mask_for(found[0], path, rgb)

        return in_folder
    if not where.exists():
        raise PyramidalError(f"--mask {where}: no such file or folder")
    if n_inputs > 1:
        raise PyramidalError(f"--mask {where} is one mask for {n_inputs} images; give a folder of masks named "
                             "like the images")
    return lambda path, rgb: _read_mask_for(where, path, rgb)


def _read_mask_for(mask_path: Path, image_path: Path, rgb: np.ndarray) -> np.ndarray:
    """The mask file of one input, read and checked; every error names both files."""
    from pyramidal.io import read_mask

    try:
        holes = read_mask(mask_path)
    except PyramidalError as exc:
        raise PyramidalError(f"{image_path}: mask {exc}") from None
    return check_mask(holes, rgb.shape[:2], f"{image_path}: mask {mask_path}").numpy()
