"""The one inference path: an image of any size restored, tiled and batched, by a prepared model.

The package's parts: `model` (loading weights for restoring, `prepare_for_inference`, one batch through
it), `inputs` (masks of holes and the noise σ a model takes), `tiling` (where tiles go and how they blend),
`pixels` (the one conversion between stored pixels and the models' [-1, 1]) and `files` (folders of image
files in, files out). This module restores arrays: `restore_array`, `restore_image` and `restore_images`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pyramidal.errors import PyramidalError
from pyramidal.fastpath import map_one_thread_each
from pyramidal.inference.inputs import auto_mask, check_mask, restore_input
from pyramidal.inference.model import (
    InferenceModel,
    device_and_precision,
    forward_batch,
    prepare_for_inference,
    unwrapped,
)
from pyramidal.inference.tiling import blend_ramp, tile_layout
from pyramidal.options import EVALUATION, RestoreOptions
from pyramidal.pixels import from_model_range, to_model_range
from pyramidal.progress import progress as progress_bar


def _finish(known: torch.Tensor, restored: torch.Tensor, strength: float, mask: torch.Tensor | None) -> torch.Tensor:
    """The model's output at `strength`; with a mask, only inside the holes and the known pixels exactly elsewhere."""
    out = _with_strength(known, restored, strength)
    return out if mask is None else torch.where(mask, out, known.detach().to("cpu", torch.float32))


def _eight_bit_input(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`restore_image`'s pixels (uint8 only) in the models' range."""
    dtype = image.dtype if isinstance(image, torch.Tensor) else np.asarray(image).dtype
    if dtype not in (torch.uint8, np.uint8):
        raise PyramidalError(f"restore_image expects uint8 pixels, got {dtype}")
    return to_model_range(image)


@torch.inference_mode()
def restore_array(model: Callable, image: torch.Tensor, options: RestoreOptions = RestoreOptions(), *,
                  progress: bool | None = False, mask: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Restore one float image of any size, tiled and batched.

    This is the level where the models' own range applies: pixels are floats in [-1, 1] (0 → -1, 255 → 1).

    Args:
        model: an nn.Module (run through `prepare_for_inference`), a prepared model, or any callable
            B×3×H×W → B×3×H×W in [-1, 1].
        image: 3×H×W float tensor (or NumPy float array, any layout) in [-1, 1].
        options: how to restore (`pyramidal.options.RestoreOptions`: tiling, batching, device, precision,
            ensemble, strength, σ, mask policy); the defaults restore as `pyramidal restore` does.
        progress: a progress display over the tiles when there are more than one batch of them: None shows
            it (a bar on a terminal, plain lines otherwise), False (default) hides it.
        mask: H×W holes to fill (non-zero = hole), or None; with `options.mask="auto"` the magenta
            (255, 0, 255) pixels are the holes (`magenta_mask`). With holes the output is the model's
            prediction inside them and exactly the input elsewhere; a mask-conditioned model needs them.

    Returns:
        The restored image, float32 3×H×W in [-1, 1] on the CPU.
    """
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):  # any layout or byte order
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if not isinstance(image, torch.Tensor):
        raise PyramidalError(f"restore_array takes a 3×H×W tensor (or NumPy array) of floats in [-1, 1], not "
                             f"{type(image).__name__}" + (f" of {image.dtype}" if hasattr(image, "dtype") else ""))
    if image.ndim != 3 or image.shape[0] != 3:
        raise PyramidalError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
    _check_input(image)
    image = image.float()  # float64 or float16 in: the models take float32 (autocast lowers it where asked)
    if isinstance(mask, str):
        raise PyramidalError(f"mask {mask!r}: give an H×W array of holes, or options.mask='auto' for magenta holes")
    mask = _holes(image, mask, options)
    known, image = image, restore_input(model, image, mask, options.sigma)  # the model may see 4 channels
    dev, prec = device_and_precision(model, options.device, options.precision)
    model = prepare_for_inference(model, dev, prec)
    _, h, w = image.shape
    tile, overlap = options.tiling()
    batch_size, ensemble, strength = options.batch_size, options.ensemble, options.strength
    if tile is None:
        tile, overlap = max(h, w), 0  # the whole image at once: one tile, nothing to blend
    multiple = 2 ** getattr(unwrapped(model), "levels", 0)  # the model pads each tile to this anyway
    (th, ys), (tw, xs) = tile_layout(h, tile, overlap, multiple), tile_layout(w, tile, overlap, multiple)
    boxes = [(y, x) for y in ys for x in xs]
    if len(boxes) == 1:
        return _finish(known, forward_batch(model, image[None], ensemble)[0].clamp(-1, 1).cpu(), strength, mask)
    out = torch.zeros(3, h, w, dtype=torch.float32)
    wy = {y: torch.from_numpy(blend_ramp(th, overlap, y > 0, y + th < h)) for y in ys}
    wx = {x: torch.from_numpy(blend_ramp(tw, overlap, x > 0, x + tw < w)) for x in xs}
    shown = progress is not False and len(boxes) > max(1, batch_size)
    bar = progress_bar(total=len(boxes), desc=f"restoring {w}×{h}", unit="tiles", enabled=None if shown else False)
    chunks = [boxes[i:i + max(1, batch_size)] for i in range(0, len(boxes), max(1, batch_size))]

    def run(chunk: list[tuple[int, int]]) -> torch.Tensor:
        batch = torch.stack([image[:, y:y + th, x:x + tw] for y, x in chunk])
        return forward_batch(model, batch, ensemble).cpu()

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


def _holes(image: torch.Tensor, mask: np.ndarray | torch.Tensor | None, options: RestoreOptions,
           source: str = "mask") -> torch.Tensor | None:
    """The checked H×W holes of a 3×H×W image in [-1, 1]: `mask` as given, else the magenta pixels under the
    "auto" mask policy, else None."""
    if mask is None and options.mask == "auto":
        mask = auto_mask(from_model_range(image, np.uint8), f"{source} auto")
    return None if mask is None else check_mask(mask, tuple(image.shape[1:]), source)


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


def restore_image(model: Callable, image: np.ndarray | torch.Tensor, options: RestoreOptions = RestoreOptions(), *,
                  progress: bool | None = False,
                  mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """Restore one 8-bit image; returns uint8 in the layout given.

    Args:
        model: an nn.Module (run through `prepare_for_inference` on `options.device`), a prepared model, or any
            callable B×3×H×W → B×3×H×W in [-1, 1].
        image: uint8 numpy H×W×3 (PIL layout), numpy or torch 3×H×W (torch layout), or H×W grayscale.
        options, progress: as for `restore_array`.
        mask: the holes to fill: an H×W array (non-zero = hole), or None (with `options.mask="auto"`: the
            magenta (255, 0, 255) pixels). The pixels outside the holes come back exactly as given.

    Returns:
        uint8 pixels in the layout given (H×W grayscale comes back H×W×3).
    """
    y = restore_array(model, _eight_bit_input(image), options, progress=progress, mask=mask)
    return from_model_range(y, image)


@torch.inference_mode()
def restore_images(model: Callable, images: Sequence[np.ndarray | torch.Tensor],
                   options: RestoreOptions = EVALUATION, *, progress: bool | None = False, desc: str = "restoring",
                   masks: Sequence[np.ndarray | torch.Tensor | None] | None = None) -> list[np.ndarray | torch.Tensor]:
    """`restore_image` for many images: same-size images that fit in one tile go through in batches.

    Args:
        model: as for `restore_image`.
        images: uint8 images, each in a layout `restore_image` takes.
        options: as for `restore_array`; by default `options.EVALUATION` (crops up to 256 px whole, four to a
            forward pass), as `pyramidal evaluate` scores.
        progress: None shows a progress display over the images, False (default) hides it.
        desc: what the progress display says is being done.
        masks: None, or one H×W mask of holes (or None) per image, as for `restore_image`.

    Returns:
        The restored uint8 images, in order, each in its own input's layout.
    """
    dev, prec = device_and_precision(model, options.device, options.precision)
    model = prepare_for_inference(model, dev, prec)
    options = options.replace(device=dev, precision=prec)
    tile, batch_size = options.tiling()[0], options.batch_size
    converted = [_eight_bit_input(im) for im in images]
    if masks is not None and len(masks) != len(images):
        raise PyramidalError(f"got {len(masks)} masks for {len(images)} images")
    holes = [_holes(x, None if masks is None else masks[i], options, f"mask {i}") for i, x in enumerate(converted)]
    inputs = [restore_input(model, x, m, options.sigma) for x, m in zip(converted, holes)]
    results: list[np.ndarray | torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(converted):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    bar = progress_bar(total=len(images), desc=desc, unit="images", enabled=None if progress is not False else False,
                       announce=True)
    for (h, w), indices in groups.items():
        if tile and (h > tile or w > tile):
            for i in indices:
                y = restore_array(model, converted[i], options, mask=holes[i])
                results[i] = from_model_range(y, images[i])
                bar.update(1)
            continue
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start:start + max(1, batch_size)]
            batch = torch.stack([inputs[i] for i in chunk])
            out = forward_batch(model, batch, options.ensemble).clamp(-1, 1).cpu()
            for i, y in zip(chunk, out):
                results[i] = from_model_range(_finish(converted[i], y, options.strength, holes[i]), images[i])
            bar.update(len(chunk))
    bar.close()
    return results
