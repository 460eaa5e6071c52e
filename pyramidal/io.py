"""Files in and out: the one image reader and writer, atomic writes, JSON and text reports, input folders.

Every command reads images through `read_image` (or `read_rgb`, its RGB view for the data pipeline), so
a photograph looks the same to `degrade`, `restore`, training and evaluation: EXIF orientation applied,
16-bit scaled to 8-bit, palette and grayscale expanded, alpha kept aside. A file that cannot be read
gives one PyramidalError line, "<file>: <reason>".
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import resource
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyramidal.errors import PyramidalError

if TYPE_CHECKING:
    from PIL import Image

# The suffixes of image files, where a name has to be enough (e.g. a folder of masks matched by stem).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, exclusive: bool = False) -> None:
    """Write a file so that a crash never leaves it half-written: `write(tmp)`, fsync, then move it to `path`.

    A device, pipe or folder at `path` is refused: renaming over it would replace it, not write into it.
    On failure nothing is left: not the temporary file, nor the folders made for it. Any failure to write
    (a full disk, a file-size limit, an I/O error) is an OSError naming `path`, whatever the serializer
    raised (safetensors and torch.save have their own exception types for it).

    Args:
        path: the file to write.
        write: called with a temporary path in the same folder; it writes the whole content there.
        exclusive: claim `path` only if no file is there when the content is complete: a file that appeared
            after the command checked its outputs (another run writing into the same folder) is left as it
            is and `OutputExists` is raised. Else the content replaces whatever file is at `path`.

    Returns:
        None.

    Raises:
        OutputExists: with `exclusive`, a file is already at `path`.
        OSError: the file could not be written (its `filename` is `path`).
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
        _publish(tmp, path, exclusive)
    except BaseException as exc:
        size = _size(tmp)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        remove_empty_folders(created)
        if isinstance(exc, Exception) and not isinstance(exc, PyramidalError):
            failure = _write_failure(exc, path, size)
            if failure is not None:
                raise failure from None
        raise


class OutputExists(PyramidalError):
    """A file appeared at an output path after the command checked it: another process wrote it first."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(f"{path}: a file appeared here after this run checked its outputs (another run writing "
                         "into the same folder?); left it as it is (--overwrite replaces it)")
        self.path = Path(path)


# A file system without hard links (FAT, some network shares) answers link() with one of these.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _publish(tmp: str, path: Path, exclusive: bool) -> None:
    """Move the finished temporary file to `path`: replacing what is there, or (`exclusive`) only if nothing is."""
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if `path` exists: the claim and the content arrive together
    except FileExistsError:
        raise OutputExists(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # Without hard links: claim the name with O_EXCL, then rename the content over the empty claim.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExists(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path is not None else 0
    except OSError:
        return 0


# How serializers that raise their own exception types report a failed write (full disk, I/O error).
_WRITE_FAILURES = {"no space left": errno.ENOSPC, "disk quota": errno.EDQUOT, "file too large": errno.EFBIG,
                   "i/o error": errno.EIO, "file write failed": errno.EIO}


def _write_failure(exc: Exception, path: Path, written: int) -> OSError | None:
    """The OSError naming `path` that a failed write amounts to, or None for an error that is not a write failure.

    Libraries wrap the operating system's error in their own types (torch.save: a RuntimeError about an
    "iostream error", safetensors: a SafetensorError), or lose it. It is found, in order: an OSError among
    the exception's causes; the exception's text; the file-size limit reached by the temporary file; a
    folder with no space left.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return OSError(seen.errno, seen.strerror or os.strerror(seen.errno), str(path))
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    for words, code in _WRITE_FAILURES.items():
        if words in text:
            return OSError(code, os.strerror(code), str(path))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and written >= limit:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(path))
    try:
        room = os.statvfs(path.parent)
    except OSError:  # the folder is gone
        return None
    if room.f_bavail == 0:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def write_text(text: str, path: str | os.PathLike, *, exclusive: bool = False) -> None:
    """Write UTF-8 text atomically.

    Args:
        text: the content.
        path: the file to write.
        exclusive: only if no file is there (see `atomic_write`).

    Returns:
        None.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), exclusive=exclusive)


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


def write_json(value: Any, path: str | os.PathLike, *, exclusive: bool = False) -> None:
    """Write a value as indented UTF-8 JSON, atomically (see `jsonable` for inf and NaN).

    Args:
        value: what to write.
        path: the file to write.
        exclusive: only if no file is there (see `atomic_write`).

    Returns:
        None.
    """
    write_text(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n", path, exclusive=exclusive)


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Serialise a flat dict with optional one-level sub-tables; None values are left out (TOML has no null)."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


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
    created or written. Nothing is written by the plan itself. The writers then claim each target when they
    write it (`exclusive`): a check made before the work cannot see a file another run writes meanwhile.
    """

    def __init__(self, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 inputs_replaceable: bool = False):
        self.overwrite = overwrite
        self.inputs = {os.path.realpath(p) for p in inputs}
        # restore --overwrite may replace its own inputs; degrade never replaces an original with damage.
        self.inputs_replaceable = inputs_replaceable
        self.targets: dict[str, tuple[Path, str, bool]] = {}
        self.replaceable: set[str] = set()  # targets that may replace a file, decided by `check`

    def add(self, path: str | os.PathLike, source: str | os.PathLike = "", *, replace_ok: bool = False) -> Path:
        """Claim `path` for `source`; two sources claiming one file are refused at once."""
        path = Path(path)
        key = os.path.realpath(path)
        if key in self.targets:
            raise PyramidalError(f"{self.targets[key][1]} and {source} would both be written to {path}; "
                                 "rename one of them")
        self.targets[key] = (path, str(source), replace_ok)
        return path

    def exclusive(self, path: str | os.PathLike) -> bool:
        """Whether `path` must be written with `atomic_write(..., exclusive=True)`: True unless `overwrite`, or
        a report named exactly (`replace_ok`) that existed when the plan was checked. A file that appears
        after the check was written by someone else and is never replaced without `overwrite`."""
        return os.path.realpath(path) not in self.replaceable

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
            if self.overwrite or (replace_ok and path.exists()):
                self.replaceable.add(key)
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


# --------------------------------------------------------------------------- photo metadata

EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION = 0x0112
_SUB_IFDS = (0x8769, 0x8825)  # the Exif and GPS sub-directories
# TIFF tags that describe how a file stores its pixels (size, layout, compression, strips, resolution, the
# colour profile, XMP/IPTC/Photoshop blocks that may hold their own copy of these): never carried as EXIF.
_TIFF_STRUCTURE = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 269, 273, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    290, 291, 292, 293, 296, 297, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347,
    512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531, 532, 700, 33723, 34377, 34675, 37724, 42112,
    42113, 50838, 50839,
})


@dataclass(frozen=True)
class ImageMetadata:
    """What a photo file says besides its pixels, carried from an input to its output.

    EXIF (camera, lens, date, GPS, ...; the orientation tag set to 1 once the pixels are turned upright),
    the ICC colour profile (the pixels stay in the input's colour space: the models do not convert them),
    the resolution, and PNG's colour chunks. Which output formats hold which: `FORMAT_METADATA`.
    """

    exif: bytes | None = None  # "Exif\0\0" + the TIFF-structured EXIF block
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    gamma: float | None = None  # PNG gAMA
    chromaticity: tuple[float, ...] | None = None  # PNG cHRM: white point and primaries, x and y each
    srgb: int | None = None  # PNG sRGB: the rendering intent, 0-3

    def for_colour(self, grayscale: bool) -> ImageMetadata:
        """The metadata for an output in gray or colour: an ICC profile of the other kind (or CMYK, Lab) is left
        out, since it would describe pixels that are not there."""
        if self.icc_profile is None or icc_colour_space(self.icc_profile) == ("GRAY" if grayscale else "RGB"):
            return self
        return dataclasses.replace(self, icc_profile=None)

    def pil_info(self) -> dict[str, Any]:
        """The `PIL.Image.info` entries Pillow's readers would give a file with this metadata."""
        info = {"exif": self.exif, "icc_profile": self.icc_profile, "dpi": self.dpi, "gamma": self.gamma,
                "chromaticity": self.chromaticity, "srgb": self.srgb}
        return {k: v for k, v in info.items() if v is not None}


# What each output format can hold ("exif", "icc_profile", "dpi", "png_colour" = gAMA, cHRM and sRGB).
FORMAT_METADATA: dict[str, tuple[str, ...]] = {
    "png": ("exif", "icc_profile", "dpi", "png_colour"),
    "jpg": ("exif", "icc_profile", "dpi"),
    "webp": ("exif", "icc_profile"),
    "tiff": ("exif", "icc_profile", "dpi"),
}


def icc_colour_space(profile: bytes) -> str:
    """The colour space an ICC profile describes, from its header: "RGB", "GRAY", "CMYK", "Lab", ... ("" if none)."""
    return profile[16:20].decode("latin-1").strip() if len(profile) >= 128 else ""


def image_metadata(img: Image.Image, upright: bool = False) -> ImageMetadata:
    """The metadata of an opened image (a file read by Pillow, or a PIL image with its `info`).

    Args:
        img: the image; for a file, opened and loaded but not yet turned upright by `exif_transpose` (which
            rewrites the EXIF).
        upright: the pixels are (or will be) turned upright per the EXIF orientation: the orientation tag is
            set to 1, so that nothing turns them again.

    Returns:
        The metadata; what is missing or malformed is None (a bad EXIF block is left out, never fatal).
    """
    info = img.info
    icc = info.get("icc_profile")
    srgb = info.get("srgb")
    dpi = info.get("dpi")
    tiff_tags = getattr(img, "tag_v2", None)
    if tiff_tags is not None and 282 not in tiff_tags:  # Pillow says (1, 1) for a TIFF that gives no resolution
        dpi = None
    return ImageMetadata(
        exif=_exif_of(img, upright),
        icc_profile=icc if isinstance(icc, bytes) and icc_colour_space(icc) else None,
        dpi=_numbers(dpi, 2, low=1e-3, high=1e6),
        gamma=(_numbers((info.get("gamma"),), 1, low=1e-5, high=4e4) or (None,))[0],
        chromaticity=_numbers(info.get("chromaticity"), 8, low=0, high=4e4),
        srgb=srgb if srgb in (0, 1, 2, 3) and not isinstance(srgb, bool) else None,
    )


def _numbers(value: Any, count: int, low: float, high: float) -> tuple[float, ...] | None:
    """`value` as `count` finite floats within [low, high], or None."""
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    ok = len(numbers) == count and all(math.isfinite(v) and low <= v <= high for v in numbers)
    return numbers if ok else None


def _exif_of(img: Image.Image, upright: bool) -> bytes | None:
    """The image's EXIF block: the file's own bytes where it has one (JPEG, PNG, WebP: kept byte for byte, maker
    notes included), else rebuilt from the tags (TIFF, whose tags are the file's own structure too)."""
    raw = img.info.get("exif")
    if isinstance(raw, (bytes, bytearray)) and raw:
        body = bytes(raw[len(EXIF_HEADER):] if raw.startswith(EXIF_HEADER) else raw)
        body = _with_upright_orientation(body) if upright else body
        return None if body is None else EXIF_HEADER + body
    from PIL import Image

    try:
        tags = img.getexif()
        kept = Image.Exif()
        for tag, value in tags.items():
            if tag not in _TIFF_STRUCTURE:
                kept[tag] = tags.get_ifd(tag) if tag in _SUB_IFDS else value
        if not len(kept):
            return None
        if upright and _ORIENTATION in kept:
            kept[_ORIENTATION] = 1
        return kept.tobytes()
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):  # a malformed block is left out
        return None


def _with_upright_orientation(body: bytes) -> bytes | None:
    """TIFF-structured EXIF with its orientation set to 1, patched in place; None if it cannot be read."""
    order = {b"II": "<", b"MM": ">"}.get(body[:2])
    if order is None:
        return None
    try:
        (first,) = struct.unpack_from(order + "I", body, 4)
        (count,) = struct.unpack_from(order + "H", body, first)
        for i in range(count):
            entry = first + 2 + 12 * i
            tag, kind, n = struct.unpack_from(order + "HHI", body, entry)
            if tag == _ORIENTATION:
                if (kind, n) != (3, 1):  # an orientation is one SHORT; anything else cannot be trusted
                    return None
                return body[:entry + 8] + struct.pack(order + "H", 1) + body[entry + 10:]
    except struct.error:
        return None
    return body


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_metadata(data: bytes, metadata: ImageMetadata) -> bytes:
    """PNG bytes with the metadata's chunks (iCCP, sRGB, gAMA, cHRM, pHYs, eXIf) put right after IHDR."""
    m = metadata
    chunks = []
    if m.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(m.icc_profile)))
    if m.srgb is not None:
        chunks.append(_png_chunk(b"sRGB", bytes([m.srgb])))
    if m.gamma is not None:
        chunks.append(_png_chunk(b"gAMA", struct.pack(">I", round(m.gamma * 100_000))))
    if m.chromaticity is not None:
        chunks.append(_png_chunk(b"cHRM", struct.pack(">8I", *(round(v * 100_000) for v in m.chromaticity))))
    if m.dpi is not None:  # pixels per metre
        chunks.append(_png_chunk(b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in m.dpi), 1)))
    if m.exif:
        chunks.append(_png_chunk(b"eXIf", m.exif[len(EXIF_HEADER):] if m.exif.startswith(EXIF_HEADER) else m.exif))
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR: length and type, 13 bytes, CRC
    return data[:ihdr_end] + b"".join(chunks) + data[ihdr_end:]


def _tiff_exif_tags(exif: bytes | None) -> dict[int, Any]:
    """The EXIF block's tags for a TIFF file's first directory (sub-directories as dicts), without the tags
    that describe pixel storage; {} if there is none or it cannot be written back."""
    if not exif:
        return {}
    from PIL import Image, TiffImagePlugin

    try:
        parsed = Image.Exif()
        parsed.load(exif)
        tags = {tag: parsed.get_ifd(tag) if tag in _SUB_IFDS else value
                for tag, value in parsed.items() if tag not in _TIFF_STRUCTURE}
        trial = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        for tag, value in tags.items():
            trial[tag] = value
        trial.tobytes(8)  # what Pillow cannot serialise is left out here, not in the middle of a write
        return tags
    except (OSError, ValueError, TypeError, KeyError, SyntaxError, struct.error):
        return {}


def _encode_tiff(pixels: np.ndarray, metadata: ImageMetadata | None, fast: bool = False) -> bytes:
    """H×W×C uint8 or uint16 pixels (C: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as TIFF bytes, deflated with
    horizontal prediction, with the metadata's EXIF (and its Exif and GPS directories), ICC profile and DPI.

    Pillow writes 16 bits per sample only for single-channel images, so the file is put together here from
    Pillow's tag directory and the strips.
    """
    from PIL import TiffImagePlugin, TiffTags

    height, width, channels = pixels.shape
    little = pixels.astype(pixels.dtype.newbyteorder("<"), copy=True)
    little[:, 1:] -= pixels[:, :-1]  # horizontal differencing (TIFF predictor 2), modulo the sample range
    rows = max(1, min(height, (1 << 20) // max(1, width * channels * pixels.itemsize)))  # strips of ~1 MB
    level = 1 if fast else 6
    strips = [zlib.compress(little[y:y + rows].tobytes(), level) for y in range(0, height, rows)]
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if metadata is not None:
        for tag, value in _tiff_exif_tags(metadata.exif).items():
            ifd[tag] = value
        if metadata.icc_profile:
            ifd[34675] = metadata.icc_profile
        if metadata.dpi:
            ifd[282], ifd[283], ifd[296] = metadata.dpi[0], metadata.dpi[1], 2  # per inch
    for tag in (273, 279):  # strip offsets and sizes: LONG whatever their values
        ifd.tagtype[tag] = TiffTags.LONG
    ifd[256], ifd[257] = width, height
    ifd[258] = (pixels.itemsize * 8,) * channels
    ifd[259] = 8  # Adobe deflate
    ifd[262] = 2 if channels >= 3 else 1  # RGB, or black is zero
    ifd[273] = tuple(int(v) for v in np.cumsum([0, *map(len, strips[:-1])]))  # made absolute by `save`
    ifd[277] = channels
    ifd[278] = rows
    ifd[279] = tuple(len(s) for s in strips)
    ifd[284] = 1  # samples interleaved
    ifd[317] = 2  # horizontal differencing
    if channels in (2, 4):
        ifd[338] = (2,)  # unassociated alpha
    buffer = io.BytesIO()
    ifd.save(buffer)
    for strip in strips:
        buffer.write(strip)
    return buffer.getvalue()


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
        raise PyramidalError(f"--quality {quality}: must be between 1 and 100")
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
