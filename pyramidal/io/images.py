"""Image files: the one reader (`read_image`, `read_rgb`, masks), the file checks, the one encoder and writer.

Every command reads images through `read_image` (or `read_rgb`, its RGB view for the data pipeline), so
a photograph looks the same to `degrade`, `restore`, training and evaluation: EXIF orientation applied,
16-bit scaled to 8-bit, palette and grayscale expanded, alpha kept aside. A file that cannot be read
gives one PyramidalError line, "<file>: <reason>".
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyramidal.errors import PyramidalError, flag_error
from pyramidal.io.files import atomic_write
from pyramidal.io.metadata import (
    _ORIENTATION,
    ImageMetadata,
    _encode_tiff,
    _png_with_metadata,
    image_metadata,
)

if TYPE_CHECKING:
    from PIL import Image

# The suffixes of image files, where a name has to be enough (e.g. a folder of masks matched by stem).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


@dataclass
class LoadedImage:
    """An image file as 8-bit RGB, plus what is needed to write a result back in the same form."""

    rgb: np.ndarray  # H×W×3 uint8, writable, upright (EXIF orientation applied)
    alpha: np.ndarray | None  # H×W uint8, kept aside (restore re-attaches it)
    grayscale: bool
    bit_depth: int  # of the source file (16-bit images are also scaled to 8 bits in `rgb`)
    rgb16: np.ndarray | None = None  # H×W×3 uint16: a 16-bit source at full precision (else None)
    alpha16: np.ndarray | None = None  # H×W uint16: the alpha of a 16-bit colour source
    metadata: ImageMetadata = field(default_factory=ImageMetadata)  # EXIF (upright), ICC profile, DPI, ...


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
    if isinstance(exc, NonFinitePixels):
        return str(exc)
    return f"corrupt or unsupported image ({exc})"


# Everything Pillow raises for a bad file: truncated data (OSError, EOFError), bad headers (SyntaxError,
# ValueError), conversions it does not support (ValueError), and the decompression-bomb limit.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


class NonFinitePixels(ValueError):
    """A floating-point image holds NaN or infinity: there is no pixel value to restore there."""

    def __init__(self, count: int, total: int):
        super().__init__(f"{count} of its {total} pixel values are not finite (NaN or infinity)")


def special_file(path: str | os.PathLike) -> str | None:
    """What `path` is when it is neither a regular file nor a folder ("a FIFO", "a device", "a socket"), found
    without opening it (opening a FIFO waits for a writer); None for files, folders and missing paths."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, a broken link, a name with a NUL byte
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


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

    kind = special_file(path)
    if kind:
        return f"not a regular file ({kind})"
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
        arr = np.asarray(img).astype(np.float64)
        finite = np.isfinite(arr)
        if not finite.all():
            raise NonFinitePixels(int(arr.size - finite.sum()), arr.size)
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
        16-bit source (grayscale, or colour PNG/TIFF) the full-precision pixels in `rgb16` / `alpha16`, and
        the file's metadata (`ImageMetadata`: EXIF with the orientation set to 1, ICC profile, DPI, ...).

    Raises:
        PyramidalError: "<path>: <reason>" for a missing, empty, truncated, corrupt or oversized file, a
        float image holding NaN or infinity, and anything that is not a regular file (a FIFO or device is
        never opened: that could wait forever).
    """
    from PIL import Image, ImageOps

    path = Path(path)
    kind = special_file(path)
    if kind:
        raise PyramidalError(f"{path}: not a regular file ({kind}); not read")
    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of animations and multi-page files
            deep_colour = _rawmode(img).startswith(("RGB;16", "RGBA;16"))
            img.load()  # decode now, so a truncated file fails here and not later
            orientation = img.getexif().get(_ORIENTATION, 1) if deep_colour else 1
            metadata = image_metadata(img, upright=True)  # before exif_transpose rewrites the EXIF
            ImageOps.exif_transpose(img, in_place=True)
            if img.width == 0 or img.height == 0:
                raise PyramidalError(f"{path}: empty image")
            loaded = _loaded(img)
            loaded.metadata = metadata
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
        raise flag_error("{format=}{value!r}: choose one of {names}", "format", value=format, names=", ".join(FORMATS))
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


def _deep_pixels(rgb: np.ndarray, alpha: np.ndarray | None, grayscale: bool) -> np.ndarray:
    """16-bit pixels as one H×W×C uint16 array: gray (C = 1) for grayscale without alpha, else RGB(A)."""
    if grayscale and alpha is None:
        gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(gray), 0, 65535).astype(np.uint16)[..., None]
    if alpha is None:
        return np.ascontiguousarray(rgb)
    return np.dstack([rgb, alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha])


def _encode_png16(pixels: np.ndarray, fast: bool) -> bytes:
    """16-bit PNG bytes through OpenCV (Pillow writes 16 bits only for single-channel images)."""
    import cv2

    arr = pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., [2, 1, 0, 3][:pixels.shape[2]]]  # BGR(A)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1 if fast else 3])
    if not ok:
        raise OSError("OpenCV could not encode a 16-bit PNG image")
    return buffer.tobytes()


def encode_image(rgb: np.ndarray, alpha: np.ndarray | None = None, grayscale: bool = False, *, format: str = "png",
                 quality: int | None = None, metadata: ImageMetadata | None = None, fast: bool = False) -> bytes:
    """Pixels as the bytes of an image file, with the metadata the format can hold (`FORMAT_METADATA`).

    Args:
        rgb: H×W×3 uint8, or uint16 for a 16-bit PNG or TIFF (other formats get it scaled to 8 bits).
        alpha: H×W uint8 or uint16 alpha to attach (JPEG has no alpha: it is left out there).
        grayscale: write a grayscale image (L / LA; 16-bit gray for 16-bit pixels without alpha).
        format: png, jpg, webp or tiff.
        quality: JPEG / WebP quality 1-100 (default 95); PNG and TIFF are lossless and ignore it.
        metadata: EXIF, ICC profile, DPI and PNG colour chunks to carry, or None for none. An ICC profile for
            another colour space than the output's (a CMYK profile on RGB pixels) is left out.
        fast: compress less (PNG, TIFF), for a result sent at once.

    Returns:
        The file's bytes.
    """
    name = format_for("", format)
    pil_format, _, deep_ok, alpha_ok = FORMATS[name]
    if quality is not None and not 1 <= quality <= 100:
        raise flag_error("{quality=}{value}: must be between 1 and 100", "quality", value=quality)
    if not alpha_ok:
        alpha = None
    if rgb.dtype == np.uint16 and deep_ok:
        pixels = _deep_pixels(rgb, alpha, grayscale)
    else:
        pixels = np.asarray(to_pil(_to8(rgb), None if alpha is None else _to8(alpha), grayscale))
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    meta = None if metadata is None else metadata.for_colour(grayscale=pixels.shape[2] < 3)
    if name == "tiff":
        return _encode_tiff(pixels, meta, fast)
    if name == "png" and pixels.dtype == np.uint16:
        data = _encode_png16(pixels, fast)
        return data if meta is None else _png_with_metadata(data, meta)
    from PIL import Image

    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels,
                          {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]])
    buffer = io.BytesIO()
    if name == "png":
        img.save(buffer, format="PNG", compress_level=1 if fast else 6)
        return buffer.getvalue() if meta is None else _png_with_metadata(buffer.getvalue(), meta)
    options: dict[str, Any] = {"quality": DEFAULT_QUALITY if quality is None else quality}
    if meta is not None:
        if meta.icc_profile:
            options["icc_profile"] = meta.icc_profile
        if meta.exif and (name != "jpg" or len(meta.exif) <= _JPEG_EXIF_MAX):
            options["exif"] = meta.exif
        if meta.dpi and name == "jpg":
            options["dpi"] = tuple(round(d) for d in meta.dpi)
    img.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


_JPEG_EXIF_MAX = 65_533  # one APP1 segment; a larger EXIF block (a big maker note) does not fit in a JPEG


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


def write_mask(mask: np.ndarray, path: str | os.PathLike, *, exclusive: bool = False) -> None:
    """Write an H×W bool mask as an 8-bit grayscale PNG, 255 = hole, atomically (`exclusive`: see `atomic_write`)."""
    from PIL import Image

    img = Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8), "L")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), exclusive=exclusive)


def write_image(rgb: np.ndarray, path: str | os.PathLike, alpha: np.ndarray | None = None,
                grayscale: bool = False, *, format: str | None = None, quality: int | None = None,
                metadata: ImageMetadata | None = None, exclusive: bool = False) -> None:
    """Write pixels to an image file, atomically (see `encode_image` for the arguments).

    Args:
        rgb, alpha, grayscale, quality, metadata: as for `encode_image`.
        path: the output file.
        format: png, jpg, webp or tiff; None: from the suffix of `path` (PNG for an unknown suffix).
        exclusive: write only if no file is there (`atomic_write`): an output of this run is never put over a
            file that another run wrote after this one checked its outputs.

    Returns:
        None.
    """
    data = encode_image(rgb, alpha, grayscale, format=format_for(path, format), quality=quality, metadata=metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), exclusive=exclusive)
