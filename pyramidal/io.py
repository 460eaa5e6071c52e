"""Files in and out: the one image reader and writer, atomic writes, JSON and text reports, input folders.

Every command reads images through `read_image` (or `read_rgb`, its RGB view for the data pipeline), so
a photograph looks the same to `degrade`, `restore`, training and evaluation: EXIF orientation applied,
16-bit scaled to 8-bit, palette and grayscale expanded, alpha kept aside. A file that cannot be read
gives one PyramidalError line, "<file>: <reason>".
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyramidal.errors import PyramidalError

if TYPE_CHECKING:
    from PIL import Image

# The suffixes of image files, where a name has to be enough (e.g. a folder of masks matched by stem).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file so that a crash never leaves it half-written: `write(tmp)`, fsync, rename over `path`.

    A device, pipe or folder at `path` is refused: renaming over it would replace it, not write into it.
    On failure nothing is left: not the temporary file, nor the folders made for it. A full disk or an I/O
    error is an OSError naming `path`, whatever the serializer raised (safetensors and torch.save have
    their own exception types for it).

    Args:
        path: the file to write.
        write: called with a temporary path in the same folder; it writes the whole content there.

    Returns:
        None.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise PyramidalError(f"{path}: {'is a folder' if path.is_dir() else 'not a regular file'}; "
                             "refusing to replace it")
    created = missing_folders(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        # mkstemp makes the file private (0600); give it the permissions an ordinary new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_empty_folders(created)
        text = str(exc).lower()
        if isinstance(exc, Exception) and not isinstance(exc, (OSError, PyramidalError)) \
                and any(k in text for k in _WRITE_FAILURES):
            code = errno.ENOSPC if "space" in text else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from exc
        raise


# How serializers that raise their own exception types report a failed write (full disk, I/O error).
_WRITE_FAILURES = ("no space left", "i/o error", "file write failed", "disk quota")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write UTF-8 text atomically.

    Args:
        text: the content.
        path: the file to write.

    Returns:
        None.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def jsonable(value: Any) -> Any:
    """A value made JSON-safe: NaN → null, ±inf → the strings 'inf' / '-inf', tuples → lists.

    Args:
        value: any mix of dicts, lists, tuples and plain values.

    Returns:
        The same structure, safe for `json.dumps`.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(value: Any, path: str | os.PathLike) -> None:
    """Write a value as indented UTF-8 JSON, atomically (see `jsonable` for inf and NaN).

    Args:
        value: what to write.
        path: the file to write.

    Returns:
        None.
    """
    write_text(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n", path)


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """Read a JSON file.

    Args:
        path: the file.
        what: what the file is, for the error message ("sidecar", "config").

    Returns:
        The parsed content.

    Raises:
        PyramidalError: "<path>: unreadable <what> (<reason>)" if it cannot be read or parsed.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError (a binary file)
        raise PyramidalError(f"{path}: unreadable {what + ' ' if what else ''}({exc})") from None


def format_number(value: float | int | None, digits: int = 2, unit: str = "", missing: str = "–") -> str:
    """A number for a report.

    Args:
        value: the number; None and NaN are shown as `missing`.
        digits: decimals for floats (thousands are separated).
        unit: text put after the number.
        missing: what to show for None and NaN.

    Returns:
        The formatted text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


# --------------------------------------------------------------------------- planning outputs


def folder_problem(folder: str | os.PathLike, probed: dict[Path, str | None] | None = None) -> str | None:
    """None if files can be written in `folder` (creating it if need be); else a "<path>: <reason>" line.

    The nearest existing folder is probed by creating (and removing) an empty file in it, which finds
    read-only disks and permissions for every user, root included. `probed` caches the verdict per
    existing folder, for many outputs at once.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe}: a broken link"
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe}: exists and is not a folder" + (f", so {folder} cannot be created" if probe != folder else "")
    probed = {} if probed is None else probed
    if probe not in probed:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pyramidal-probe-", dir=probe)
            os.close(fd)
            os.unlink(tmp)
            probed[probe] = None
        except OSError as exc:
            probed[probe] = f"{probe}: cannot write here ({exc.strerror or exc})"
    return probed[probe]


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders on the way to `path` (itself included) that do not exist yet, deepest first."""
    path, missing = Path(path), []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders: Iterable[str | os.PathLike]) -> None:
    """Remove each folder in turn (deepest first) while it is empty: a failed command leaves no folders."""
    for folder in folders:
        try:
            Path(folder).rmdir()
        except OSError:  # not empty (or gone): what is left stays
            break


class OutputPlan:
    """Every file a command will write, checked together before any work starts.

    `add` claims a target for a source (an input file, or a name such as "--json"); `check` then refuses
    the whole plan with one line when a target would replace an input file, when two sources claim one
    target, when a target is a folder or device, when a target exists and `overwrite` is off (unless it
    was added with `replace_ok`, for a file the user named exactly), or when a target's folder cannot be
    created or written. Nothing is written by the plan itself.
    """

    def __init__(self, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 inputs_replaceable: bool = False):
        self.overwrite = overwrite
        self.inputs = {os.path.realpath(p) for p in inputs}
        # restore --overwrite may replace its own inputs; degrade never replaces an original with damage.
        self.inputs_replaceable = inputs_replaceable
        self.targets: dict[str, tuple[Path, str, bool]] = {}

    def add(self, path: str | os.PathLike, source: str | os.PathLike = "", *, replace_ok: bool = False) -> Path:
        """Claim `path` for `source`; two sources claiming one file are refused at once."""
        path = Path(path)
        key = os.path.realpath(path)
        if key in self.targets:
            raise PyramidalError(f"{self.targets[key][1]} and {source} would both be written to {path}; "
                                 "rename one of them")
        self.targets[key] = (path, str(source), replace_ok)
        return path

    def __iter__(self):
        return (path for path, _, _ in self.targets.values())

    def __len__(self) -> int:
        return len(self.targets)

    def check(self) -> OutputPlan:
        """Raise PyramidalError (one line) if any target cannot or may not be written; returns the plan."""
        existing: list[Path] = []
        folders: dict[Path, None] = {}
        for key, (path, source, replace_ok) in self.targets.items():
            if path.is_dir():
                raise PyramidalError(f"{path}: is a folder; the output of {source} cannot go there")
            if path.exists() and not path.is_file():
                raise PyramidalError(f"{path}: not a regular file; refusing to replace it")
            if key in self.inputs and not (self.overwrite and self.inputs_replaceable):
                raise PyramidalError(
                    f"{source}: its output {path} would replace an input file; choose another output folder"
                    + (" or pass --overwrite" if self.inputs_replaceable else ""))
            if path.exists() and not (self.overwrite or replace_ok or key in self.inputs):
                existing.append(path)
            folders.setdefault(path.parent)
        probed: dict[Path, str | None] = {}
        for folder in folders:
            problem = folder_problem(folder, probed)
            if problem:
                raise PyramidalError(problem)
        if existing:
            more = f" (and {len(existing) - 1} more output(s) that exist)" if len(existing) > 1 else ""
            raise PyramidalError(f"{existing[0]}: exists and this run did not write it{more}; pass --overwrite "
                                 "to replace, or choose another output folder")
        return self


# --------------------------------------------------------------------------- reading images


@dataclass
class LoadedImage:
    """An image file as 8-bit RGB, plus what is needed to write a result back in the same form."""

    rgb: np.ndarray  # H×W×3 uint8, writable, upright (EXIF orientation applied)
    alpha: np.ndarray | None  # H×W uint8, kept aside (restore re-attaches it)
    grayscale: bool
    bit_depth: int  # of the source file (16-bit images are also scaled to 8 bits in `rgb`)
    rgb16: np.ndarray | None = None  # H×W×3 uint16: a 16-bit source at full precision (else None)
    alpha16: np.ndarray | None = None  # H×W uint16: the alpha of a 16-bit colour source


def _problem(exc: BaseException) -> str:
    """The reason part of "<file>: <reason>" for an exception raised while opening or decoding an image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large to decode safely ({exc})"
    return f"corrupt or unsupported image ({exc})"


# Everything Pillow raises for a bad file: truncated data (OSError, EOFError), bad headers (SyntaxError,
# ValueError), conversions it does not support (ValueError), and the decompression-bomb limit.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


def image_problem(path: str | os.PathLike, decode: bool = False) -> str | None:
    """Why a file is not a readable, non-empty image, if it is not.

    Args:
        path: the file.
        decode: also decode the pixel data, so that a truncated file is found (JPEGs are decoded at 1/8
            scale, which still reads every byte of the stream); else only the header is read.

    Returns:
        None for a good image, else the reason ("not a readable image", "empty image", ...).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width < 1 or im.height < 1:
                return "empty image"
            if decode:
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
        return None
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        return _problem(exc)


_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _loaded(img: Image.Image) -> LoadedImage:
    """Split a decoded PIL image of any mode into 8-bit RGB, alpha, grayscale flag and source bit depth."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in _DEEP_MODES:
        arr = np.nan_to_num(np.asarray(img).astype(np.float64))
        bit_depth = 8
        if mode == "F":
            # Float images are taken to be 0-1 if they fit there, else 0-255.
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        elif mode.startswith("I;16") or arr.max(initial=0) > 255:
            scale, bit_depth = 255.0 / 65535.0, 16
        else:
            scale = 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        deep = _gray_rgb(np.clip(arr, 0, 65535).astype(np.uint16)) if bit_depth == 16 else None
        return LoadedImage(_gray_rgb(gray), None, True, bit_depth, deep)
    alpha = np.array(img.getchannel("A"), dtype=np.uint8) if "A" in img.getbands() else None
    if mode in ("L", "1", "LA", "La"):
        return LoadedImage(_gray_rgb(np.asarray(img.convert("L"), dtype=np.uint8)), alpha, True, 8)
    return LoadedImage(np.array(img.convert("RGB"), dtype=np.uint8), alpha, False, 8)


def load_pil(img: Image.Image) -> LoadedImage:
    """Split a decoded PIL image of any mode into 8-bit RGB, alpha, grayscale flag and bit depth.

    Args:
        img: a PIL image in any mode (RGB, RGBA, L, LA, P, 1, I;16, I, F, CMYK, ...).

    Returns:
        A LoadedImage; 16-bit grayscale also fills `rgb16`.
    """
    return _loaded(img)


def _rawmode(img: Image.Image) -> str:
    """How the file stores its pixels (e.g. 'RGB;16B'), read from the decoder set-up before `load()`."""
    if not img.tile:
        return ""
    args = img.tile[0][3]  # (codec, extents, offset, args); a plain tuple before Pillow 11
    return args if isinstance(args, str) else str(args[0]) if args else ""


# EXIF orientation → the numpy equivalent of the PIL transpose that `ImageOps.exif_transpose` applies.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270 (PIL turns counter-clockwise)
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90
}


def _read_deep_colour(path: Path, orientation: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A 16-bit colour PNG/TIFF at full precision (Pillow decodes those to 8 bits): (RGB, alpha) uint16."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise OSError("16-bit colour data that OpenCV cannot decode")
    arr = _ORIENT.get(orientation, lambda a: a)(arr)
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    return rgb, alpha


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Read any image Pillow decodes (8/16-bit, grayscale, palette, alpha, CMYK), upright per its EXIF.

    Args:
        path: the image file; for animations and multi-page files, the first frame is read.

    Returns:
        A LoadedImage: 8-bit RGB, alpha kept aside, the grayscale flag, the source bit depth, and for a
        16-bit source (grayscale, or colour PNG/TIFF) the full-precision pixels in `rgb16` / `alpha16`.

    Raises:
        PyramidalError: "<path>: <reason>" for a missing, empty, truncated, corrupt or oversized file.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of animations and multi-page files
            deep_colour = _rawmode(img).startswith(("RGB;16", "RGBA;16"))
            img.load()  # decode now, so a truncated file fails here and not later
            orientation = img.getexif().get(0x0112, 1) if deep_colour else 1
            ImageOps.exif_transpose(img, in_place=True)
            if img.width == 0 or img.height == 0:
                raise PyramidalError(f"{path}: empty image")
            loaded = _loaded(img)
        if deep_colour:
            loaded.rgb16, loaded.alpha16 = _read_deep_colour(path, orientation)
            loaded.bit_depth = 16
        return loaded
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise PyramidalError(f"{path}: {_problem(exc)}") from None


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """`read_image` as an RGB PIL image (alpha dropped): what the data pipeline crops and resizes.

    Args:
        path: the image file.

    Returns:
        An 8-bit RGB PIL image, upright per its EXIF orientation.
    """
    from PIL import Image

    return Image.fromarray(read_image(path).rgb, "RGB")


# Output formats: name → (Pillow format, file suffix, keeps 16 bits, keeps alpha).
FORMATS: dict[str, tuple[str, str, bool, bool]] = {
    "png": ("PNG", ".png", True, True),
    "jpg": ("JPEG", ".jpg", False, False),
    "webp": ("WEBP", ".webp", False, True),
    "tiff": ("TIFF", ".tiff", True, True),
}
_SUFFIX_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
DEFAULT_QUALITY = 95  # JPEG and WebP


def format_for(path: str | os.PathLike, format: str | None = None) -> str:
    """The output format name for `path`: `format` if given, else from the suffix (PNG for an unknown one).

    Args:
        path: the output file.
        format: png, jpg, webp or tiff; None to go by the suffix.

    Returns:
        One of the keys of `FORMATS`.
    """
    if format is None:
        return _SUFFIX_FORMAT.get(Path(path).suffix.lower(), "png")
    name = "jpg" if format.lower() == "jpeg" else "tiff" if format.lower() == "tif" else format.lower()
    if name not in FORMATS:
        raise PyramidalError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    return name


def to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False) -> Image.Image:
    """8-bit pixels as a PIL image: RGB, RGBA with `alpha`, L or LA if `grayscale`.

    Args:
        rgb: H×W×3 uint8.
        alpha: H×W uint8, or None.
        grayscale: make an L / LA image (ITU-R 601 luma, as Pillow converts).

    Returns:
        The PIL image.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if grayscale:
        img = img.convert("L")
        if alpha is not None:
            img = Image.merge("LA", (img, Image.fromarray(np.ascontiguousarray(alpha), "L")))
    elif alpha is not None:
        img = Image.merge("RGBA", (*img.split(), Image.fromarray(np.ascontiguousarray(alpha), "L")))
    return img


def _to8(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype == np.uint8 else np.rint(pixels / 257.0).astype(np.uint8)


def _encode_deep(rgb: np.ndarray, alpha: np.ndarray | None, grayscale: bool, suffix: str) -> bytes:
    """16-bit PNG/TIFF bytes through OpenCV (Pillow writes 16 bits only for single-channel images)."""
    import cv2

    alpha = None if alpha is None else (alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha)
    if grayscale and alpha is None:
        gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        arr = np.clip(np.rint(gray), 0, 65535).astype(np.uint16)
    else:
        arr = rgb[..., ::-1]
        if alpha is not None:
            arr = np.dstack([arr, alpha])
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(arr))
    if not ok:
        raise OSError(f"OpenCV could not encode a 16-bit {suffix} image")
    return buffer.tobytes()


# Masks saved in these formats are thresholded at mid-grey: compression noise around a hole is not a hole.
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".webp")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask image as H×W bool, True = hole, read (and turned upright) exactly as `read_image` reads photos.

    A hole is a non-zero pixel (any channel): white, or any colour, on black. A mask with transparency is
    read from its alpha channel instead (strokes painted on a transparent layer). Lossy files (JPEG, WebP)
    are thresholded at 128 rather than at non-zero.
    """
    loaded = read_image(path)
    if loaded.alpha is not None and (loaded.alpha < 255).any():
        values = loaded.alpha
    else:
        values = loaded.rgb.max(axis=2)
    return values >= (128 if Path(path).suffix.lower() in LOSSY_SUFFIXES else 1)


def write_mask(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write an H×W bool mask as an 8-bit grayscale PNG, 255 = hole, atomically."""
    from PIL import Image

    img = Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8), "L")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def write_image(rgb: np.ndarray, path: str | os.PathLike, alpha: np.ndarray | None = None,
                grayscale: bool = False, *, format: str | None = None, quality: int | None = None) -> None:
    """Write pixels to an image file, atomically.

    Args:
        rgb: H×W×3 uint8, or uint16 for a 16-bit PNG or TIFF (other formats get it scaled to 8 bits).
        path: the output file.
        alpha: H×W uint8 or uint16 alpha to attach (JPEG has no alpha: it is left out there).
        grayscale: write a grayscale image (L / LA; 16-bit gray for 16-bit pixels without alpha).
        format: png, jpg, webp or tiff; None: from the suffix of `path` (PNG for an unknown suffix).
        quality: JPEG / WebP quality 1-100 (default 95); PNG and TIFF are lossless and ignore it.

    Returns:
        None.
    """
    name = format_for(path, format)
    pil_format, suffix, deep_ok, alpha_ok = FORMATS[name]
    if quality is not None and not 1 <= quality <= 100:
        raise PyramidalError(f"--quality {quality}: must be between 1 and 100")
    if not alpha_ok:
        alpha = None
    if rgb.dtype == np.uint16 and deep_ok:
        data = _encode_deep(rgb, alpha, grayscale, suffix)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        return
    img = to_pil(_to8(rgb), None if alpha is None else _to8(alpha), grayscale)
    options: dict[str, Any] = {}
    if name in ("jpg", "webp"):
        options["quality"] = DEFAULT_QUALITY if quality is None else quality
    elif name == "tiff":
        options["compression"] = "tiff_adobe_deflate"
    atomic_write(path, lambda tmp: img.save(tmp, format=pil_format, **options))


# --------------------------------------------------------------------------- folders of images


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
            ignored). A file named as an input is always kept, so that reading it reports what is wrong.
        recursive: also the images in the sub-folders of a folder, keeping the sub-folders in the output path.
        exclude: leave out files under this folder (e.g. the output folder inside an input folder).
        on_skip: called with (file, reason) for files in the folders that are not readable images.

    Returns:
        [(input file, output path relative to the output folder, as `<stem>.png`), ...] in input order.
    """
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
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
