"""Image files in, image files out: `restore_files` over files and folders, every output planned first."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyramidal.errors import OptionError, PyramidalError, option_error
from pyramidal.inference import restore_array, restore_image
from pyramidal.inference.inputs import (
    NEEDS_MASK,
    NEEDS_MASK_FLAGS,
    auto_mask,
    check_mask,
    check_sigma,
    needs_mask,
)
from pyramidal.inference.model import device_and_precision, prepare_for_inference, unwrapped
from pyramidal.io import (
    FORMATS,
    IMAGE_SUFFIXES,
    OutputPlan,
    expand_inputs,
    format_for,
    read_image,
    read_mask,
    write_image,
)
from pyramidal.options import RestoreOptions
from pyramidal.pixels import from_model_range, to_model_range
from pyramidal.progress import progress as progress_bar


@dataclass
class FileResult:
    """One input of `restore_files`: where its result went, or why it failed."""

    input: Path
    output: Path | None
    error: str | None = None
    error_flags: str | None = None  # the error as the command line words it (`--mask auto`, not `mask='auto'`)


def plan_restore_outputs(inputs: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                         overwrite: bool = False, recursive: bool = False, format: str = "png",
                         on_skip: Callable[[Path, str], None] | None = None) -> list[tuple[Path, Path]]:
    """(input file, output file) for each image `restore_files` would restore, all checked before any work.

    Refused with one PyramidalError line: an output that would replace an input (unless `overwrite`), two
    inputs with one output name, an existing file in `outdir` (unless `overwrite`), an `outdir` that is a
    file or cannot be written. See `pyramidal.io.OutputPlan`.
    """
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
    options: RestoreOptions = RestoreOptions(),
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
) -> list[FileResult]:
    """Restore image files into a folder; a bad input becomes an error result and the others go on.

    Args:
        model: as for `restore_image`.
        inputs: image files and folders (a folder stands for the images in it).
        outdir: the output folder; `photo.jpg` becomes `outdir/photo.png` (or the `format`'s suffix).
        options: how to restore, as for `restore_array`; the mask policy "auto" finds each image's magenta holes.
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
        mask: the holes to fill, or None: a mask image (`io.read_mask`) when there is one input, or a folder
            of masks with the inputs' file stems (any image suffix). An input whose mask is missing or bad is an
            error result.
        strip_metadata: write the outputs without the inputs' EXIF, ICC profile, DPI and PNG colour chunks
            (by default each output carries what its format can hold: `pyramidal.io.FORMAT_METADATA`).

    Returns:
        One FileResult per input image, in input order.

    Raises:
        PyramidalError: before any work, if an output cannot or may not be written (see
        `plan_restore_outputs`); a mask file or folder that is not there, or one mask for several inputs.
    """
    fmt = format_for("", format)
    keeps_16_bits = FORMATS[fmt][2]
    items = plan_restore_outputs(inputs, outdir, overwrite=overwrite, recursive=recursive, format=fmt,
                                 on_skip=on_skip)
    if needs_mask(model) and mask is None and options.mask is None:
        name = getattr(unwrapped(model), "weights_path", "this model")
        raise PyramidalError(f"{name} {NEEDS_MASK}", f"{name} {NEEDS_MASK_FLAGS}")
    check_sigma(model, options.sigma)  # before any file, not once per file
    holes_of = _mask_finder(mask, options.mask, len(items))
    dev, prec = device_and_precision(model, options.device, options.precision)
    model = prepare_for_inference(model, dev, prec)
    options = options.replace(device=dev, precision=prec)
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
                y = restore_array(model, to_model_range(loaded.rgb16), options, progress=progress, mask=holes)
                rgb = from_model_range(y, np.uint16)
                alpha = loaded.alpha16 if loaded.alpha16 is not None else loaded.alpha
            else:
                rgb = restore_image(model, loaded.rgb, options, progress=progress, mask=holes)
                alpha = loaded.alpha
            write_image(rgb, out, alpha, loaded.grayscale, format=fmt, quality=quality,
                        metadata=None if strip_metadata else loaded.metadata, exclusive=not overwrite)
        except PyramidalError as exc:
            result.error, result.error_flags = str(exc), getattr(exc, "flags", None)
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


def _mask_finder(mask: str | os.PathLike | None, policy: str | None,
                 n_inputs: int) -> Callable[[Path, np.ndarray], np.ndarray | None]:
    """`restore_files`' mask file or folder, or its mask policy, as a function (input file, its H×W×3 pixels) →
    its checked holes or None."""
    if mask is not None and policy is not None:
        raise option_error("{mask}: give mask files or the mask policy 'auto', not both", mask=str(mask))
    if policy == "auto":
        return _auto_holes
    if mask is None:
        return lambda path, rgb: None
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
        raise option_error("{mask}: no such file or folder", mask=str(where))
    if n_inputs > 1:
        raise option_error(f"{{mask}} is one mask for {n_inputs} images; give a folder of masks named like the "
                           "images", mask=str(where))
    return lambda path, rgb: _read_mask_for(where, path, rgb)


def _auto_holes(path: Path, rgb: np.ndarray) -> np.ndarray:
    """The magenta holes of one input under the mask policy "auto"; an error names the file and the policy."""
    source = f"{path}: mask='auto'"
    try:
        return auto_mask(rgb, source)
    except PyramidalError as exc:
        text = str(exc)
        raise OptionError(text, f"{path}: --mask auto{text[len(source):]}") from None


def _read_mask_for(mask_path: Path, image_path: Path, rgb: np.ndarray) -> np.ndarray:
    """The mask file of one input, read and checked; every error names both files."""
    try:
        holes = read_mask(mask_path)
    except PyramidalError as exc:
        raise PyramidalError(f"{image_path}: mask {exc}") from None
    return check_mask(holes, rgb.shape[:2], f"{image_path}: mask {mask_path}").numpy()
