"""Photo metadata carried from an input to its output: EXIF, ICC profile, resolution, PNG colour chunks.

Read from a file opened by Pillow (`image_metadata`), written into PNG chunks and TIFF tag directories here
(`_png_with_metadata`, `_encode_tiff`), and into JPEG and WebP by Pillow's own writers.
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

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
