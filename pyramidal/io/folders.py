"""Folders of images: the readable images in a folder, and the files that command-line inputs stand for."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyramidal.errors import PyramidalError
from pyramidal.io.images import image_problem, special_file


def scan_images(root: str | os.PathLike, decode: bool = False,
                recursive: bool = True) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files in a folder (hidden ones ignored), split into images and the rest.

    Args:
        root: a folder (or a single file).
        decode: decode every file (see `image_problem`), so that truncated images land among the unreadable.
        recursive: also the files in its sub-folders (hidden ones ignored).

    Returns:
        (readable images, [(file, reason), ...] for the others), each sorted.
    """
    root = Path(root)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        files.sort()
    elif special_file(root):
        raise PyramidalError(f"{root}: not a regular file or folder ({special_file(root)})")
    else:
        raise PyramidalError(f"{root}: no such file or folder")
    # Only headers are read here; opening is I/O bound, so threads help on big folders.
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(lambda f: image_problem(f, decode), files))
    good = [f for f, r in zip(files, reasons) if r is None]
    bad = [(f, r) for f, r in zip(files, reasons) if r is not None]
    return good, bad


def expand_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: str | os.PathLike | None = None,
    on_skip: Callable[[Path, str], None] | None = None,
) -> list[tuple[Path, Path]]:
    """The image files that command-line inputs stand for, with their output paths.

    Every command reads folders this way: `restore` and `degrade` alike, with `--recursive` for sub-folders.

    Args:
        inputs: files and folders. A folder stands for the readable images directly inside it (hidden files
            ignored). A file named as an input is always kept, so that reading it reports what is wrong,
            unless it is not a regular file (a FIFO, device or socket is skipped, never opened).
        recursive: also the images in the sub-folders of a folder, keeping the sub-folders in the output path.
        exclude: leave out files under this folder (e.g. the output folder inside an input folder).
        on_skip: called with (file, reason) for files in the folders that are not readable images, and for
            inputs that are not regular files.

    Returns:
        [(input file, output path relative to the output folder, as `<stem>.png`), ...] in input order.
    """
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        kind = special_file(p)
        if kind:
            if on_skip:
                on_skip(p, f"not a regular file ({kind})")
        elif not p.is_dir():
            pairs.append((p, Path(p.stem + ".png")))
        else:
            good, bad = scan_images(p, recursive=recursive)
            for f, reason in bad:
                if on_skip:
                    on_skip(f, reason)
            skip = Path(exclude).resolve() if exclude is not None else None
            if skip is not None and skip != p.resolve() and skip.is_relative_to(p.resolve()):
                # Outputs written inside the input folder by an earlier run are not inputs. An output folder
                # that is the input folder (or holds it) excludes nothing: the output plan refuses that.
                good = [f for f in good if not f.resolve().is_relative_to(skip)]
            pairs.extend((f, f.relative_to(p).with_suffix(".png")) for f in good)
    return pairs
