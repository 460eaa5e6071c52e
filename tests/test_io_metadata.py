"""Photo metadata is data: EXIF, the ICC profile, DPI and PNG's colour chunks go from each input to its output.

In `pyramidal restore` (JPEG→PNG, JPEG→JPEG, PNG→PNG, 16-bit TIFF→TIFF), `degrade`, `pyramidal.restore` on
PIL images and paths, and the web page's download; `--strip-metadata` leaves them out.
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from pyramidal.cli import main
from pyramidal.io import FORMAT_METADATA, ImageMetadata, read_image, write_image

from helpers import FAST as CPU

MAKE, MODEL, TAKEN = 0x010F, 0x0110, 0x9003  # EXIF: camera make and model, DateTimeOriginal (Exif directory)
ORIENTATION, EXIF_IFD = 0x0112, 0x8769


def adobe_rgb_profile(name: str = "Adobe RGB (1998) compatible", space: bytes = b"RGB ") -> bytes:
    """A real ICC v2 matrix/TRC display profile with Adobe RGB's primaries and gamma 2.2: not sRGB."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc = name.encode("ascii") + b"\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * 12 + b"\0" * 67),
        (b"cprt", b"text\0\0\0\0" + b"no copyright, test profile\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"),
    ]
    tags += [(b"gTRC", tags[-1][1]), (b"bTRC", tags[-1][1])]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr" + space + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


ADOBE = adobe_rgb_profile()


def test_the_test_profile_is_a_valid_profile_other_than_srgb():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE))
    assert "Adobe RGB" in ImageCms.getProfileDescription(profile)
    assert ADOBE != ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Canon", "EOS R5", orientation
    exif[EXIF_IFD] = {TAKEN: "2021:05:06 07:08:09"}
    return exif


def photo(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.fixture
def camera_jpeg(tmp_path):
    """A camera-style JPEG: EXIF (make, model, date; stored sideways, orientation 6), an Adobe RGB profile, 300 dpi."""
    path = tmp_path / "in" / "IMG_0001.jpg"
    path.parent.mkdir()
    Image.fromarray(photo()).save(path, exif=camera_exif(6), icc_profile=ADOBE, dpi=(300, 300), quality=95)
    return path


def assert_camera_metadata(img: Image.Image, dpi_exact: bool = True) -> None:
    exif = img.getexif()
    assert (exif.get(MAKE), exif.get(MODEL)) == ("Canon", "EOS R5")
    assert exif.get_ifd(EXIF_IFD).get(TAKEN) == "2021:05:06 07:08:09"
    assert exif.get(ORIENTATION) == 1  # turned upright, so nothing turns it again
    assert img.info.get("icc_profile") == ADOBE  # the model's pixels stay in the input's colour space
    assert img.info.get("dpi") == pytest.approx((300, 300), abs=0 if dpi_exact else 0.01)


def restore(weights, inputs, out, *extra) -> int:
    return main(["restore", "--weights", str(weights), "--task", "noise", *map(str, inputs), "-o", str(out),
                 "--tile", "0", *CPU, *extra])


def test_restore_jpeg_to_png_keeps_exif_icc_and_dpi(tmp_path, weights, camera_jpeg, capsys):
    assert restore(weights, [camera_jpeg], tmp_path / "out") == 0
    assert restore(weights, [camera_jpeg], tmp_path / "stripped", "--strip-metadata") == 0
    with Image.open(tmp_path / "out" / "IMG_0001.png") as img:
        assert img.size == (24, 32)  # upright: the sideways 32×24 turned by orientation 6
        assert_camera_metadata(img, dpi_exact=False)  # PNG stores pixels per metre
        kept = np.asarray(img)
    with Image.open(tmp_path / "stripped" / "IMG_0001.png") as img:
        assert not set(img.info) & {"exif", "icc_profile", "dpi"} and not len(img.getexif())
        assert np.array_equal(np.asarray(img), kept)  # metadata only: no colour conversion either way


def test_restore_jpeg_to_jpeg_keeps_exif_icc_and_dpi(tmp_path, weights, camera_jpeg):
    assert restore(weights, [camera_jpeg], tmp_path / "out", "--format", "jpg") == 0
    with Image.open(tmp_path / "out" / "IMG_0001.jpg") as img:
        assert img.size == (24, 32)
        assert_camera_metadata(img)


def test_restore_png_to_png_keeps_colour_chunks_and_exif(tmp_path, weights):
    chunks = PngImagePlugin.PngInfo()
    chunks.add(b"gAMA", struct.pack(">I", 45455))
    chromaticity = (0.3127, 0.329, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06)
    chunks.add(b"cHRM", struct.pack(">8I", *(round(v * 100_000) for v in chromaticity)))
    source = tmp_path / "in" / "scan.png"
    source.parent.mkdir()
    Image.fromarray(photo()).save(source, pnginfo=chunks, dpi=(600, 600), exif=camera_exif(1))
    srgb = tmp_path / "in" / "web.png"
    chunks = PngImagePlugin.PngInfo()
    chunks.add(b"sRGB", b"\x01")
    Image.fromarray(photo(seed=1)).save(srgb, pnginfo=chunks)
    assert restore(weights, [source, srgb], tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "scan.png") as img:
        assert img.info["gamma"] == pytest.approx(0.45455)
        assert img.info["chromaticity"] == pytest.approx(chromaticity)
        assert img.info["dpi"] == pytest.approx((600, 600), abs=0.01)
        assert img.getexif().get(MAKE) == "Canon"
    with Image.open(tmp_path / "out" / "web.png") as img:
        assert img.info.get("srgb") == 1


def test_restore_16_bit_tiff_keeps_its_depth_and_metadata(tmp_path, weights):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(3)
    pixels = (photo(24, 32).astype(np.uint16) * 257 + rng.integers(0, 200, (24, 32, 3))).astype(np.uint16)
    source = tmp_path / "in" / "raw-export.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, pixels, photometric="rgb", iccprofile=ADOBE, resolution=(300, 300),
                     resolutionunit="INCH", metadata=None,
                     extratags=[(MAKE, "s", 0, "Canon", True), (MODEL, "s", 0, "EOS R5", True)])
    assert restore(weights, [source], tmp_path / "out", "--format", "tiff") == 0
    out = tmp_path / "out" / "raw-export.tiff"
    assert tifffile.imread(out).dtype == np.uint16  # still 16 bits
    with Image.open(out) as img:
        exif = img.getexif()
        assert (exif.get(MAKE), exif.get(MODEL)) == ("Canon", "EOS R5")
        assert img.info.get("icc_profile") == ADOBE
        assert img.info.get("dpi") == pytest.approx((300, 300))
    # And a camera JPEG's Exif directory (the date) reaches a 16-bit TIFF written from 16-bit pixels too.
    jpeg = read_image(_save_camera_jpeg(tmp_path / "c.jpg"))
    write_image(pixels, tmp_path / "deep.tiff", metadata=jpeg.metadata)
    with Image.open(tmp_path / "deep.tiff") as img:
        assert_camera_metadata(img)
    assert np.array_equal(read_image(tmp_path / "deep.tiff").rgb16, pixels)


def _save_camera_jpeg(path):
    Image.fromarray(photo()).save(path, exif=camera_exif(6), icc_profile=ADOBE, dpi=(300, 300))
    return path


@pytest.mark.parametrize("fmt", sorted(FORMAT_METADATA))
def test_each_format_holds_what_the_table_says(tmp_path, fmt):
    """FORMAT_METADATA (what docs/restore-and-evaluate.md lists) against what the written files hold."""
    meta = ImageMetadata(exif=camera_exif(1).tobytes(), icc_profile=ADOBE, dpi=(300.0, 300.0), gamma=0.45455,
                         chromaticity=(0.3127, 0.329, 0.64, 0.33, 0.3, 0.6, 0.15, 0.06), srgb=0)
    path = tmp_path / f"x.{fmt}"
    write_image(photo(), path, metadata=meta)
    held = read_image(path).metadata
    found = {"exif": held.exif is not None and Image.open(path).getexif().get(MAKE) == "Canon",
             "icc_profile": held.icc_profile == ADOBE,
             "dpi": held.dpi is not None and held.dpi == pytest.approx((300, 300), abs=0.01),
             "png_colour": (held.gamma, held.srgb) == (0.45455, 0)}
    assert {k for k, v in found.items() if v} == set(FORMAT_METADATA[fmt])
    stripped = tmp_path / f"none.{fmt}"
    write_image(photo(), stripped)
    assert read_image(stripped).metadata == ImageMetadata()


def test_a_profile_for_other_pixels_is_not_carried(tmp_path, weights):
    """A CMYK JPEG's profile describes CMYK: on the RGB output it would be wrong, so it is left out; a gray
    image keeps its gray profile."""
    cmyk = tmp_path / "in" / "print.jpg"
    cmyk.parent.mkdir()
    Image.fromarray(photo()).convert("CMYK").save(cmyk, icc_profile=adobe_rgb_profile(space=b"CMYK"), dpi=(300, 300))
    gray_profile = adobe_rgb_profile("gray test", space=b"GRAY")
    gray = tmp_path / "in" / "gray.png"
    Image.fromarray(photo()).convert("L").save(gray, icc_profile=gray_profile)
    assert restore(weights, [cmyk, gray], tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "print.png") as img:
        assert img.mode == "RGB" and "icc_profile" not in img.info and img.info["dpi"] == pytest.approx((300, 300), 0.01)
    with Image.open(tmp_path / "out" / "gray.png") as img:
        assert img.mode == "L" and img.info.get("icc_profile") == gray_profile


def test_degrade_keeps_metadata_unless_stripped(tmp_path, camera_jpeg):
    assert main(["degrade", "--task", "noise", str(camera_jpeg), "-o", str(tmp_path / "d")]) == 0
    with Image.open(tmp_path / "d" / "IMG_0001.png") as img:
        assert_camera_metadata(img, dpi_exact=False)
    assert main(["degrade", "--task", "noise", str(camera_jpeg), "-o", str(tmp_path / "s"), "--strip-metadata"]) == 0
    with Image.open(tmp_path / "s" / "IMG_0001.png") as img:
        assert not set(img.info) & {"exif", "icc_profile", "dpi"}


def test_api_restore_carries_metadata_on_pil_images_and_paths(weights, camera_jpeg):
    import pyramidal

    with Image.open(camera_jpeg) as opened:
        out = pyramidal.restore(opened, task="noise", weights=weights, device="cpu", precision="fp32")
        assert out.size == opened.size  # a PIL image is taken as it is: not turned upright
    assert out.info["icc_profile"] == ADOBE and out.info["dpi"] == (300, 300)
    exif = Image.Exif()
    exif.load(out.info["exif"])
    assert exif[MAKE] == "Canon" and exif[ORIENTATION] == 6  # not applied, so not reset
    from_path = pyramidal.restore(camera_jpeg, task="noise", weights=weights, device="cpu", precision="fp32")
    assert from_path.size == (24, 32)
    exif.load(from_path.info["exif"])
    assert exif[ORIENTATION] == 1 and from_path.info["icc_profile"] == ADOBE
    buffer = io.BytesIO()  # what Pillow's writers take from `info`, or are given from it
    from_path.save(buffer, format="PNG", exif=from_path.info["exif"], dpi=from_path.info["dpi"])
    with Image.open(buffer) as saved:
        assert_camera_metadata(saved, dpi_exact=False)


def test_web_download_keeps_metadata(camera_jpeg):
    """The page's download as plain HTTP: upload a camera JPEG, fetch the result PNG."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from pyramidal.options import RestoreOptions
    from pyramidal.web.app import create_app
    from pyramidal.web.settings import ServeConfig

    with TestClient(create_app(ServeConfig(options=RestoreOptions(tile=64, device="cpu", precision="fp32"))),
                    base_url="http://127.0.0.1:7860") as client:
        answer = client.post("/api/restore", data={"task": "noise"},
                             files={"image": ("IMG_0001.jpg", camera_jpeg.read_bytes(), "image/jpeg")})
        assert answer.status_code == 202, answer.text
        job = answer.json()["id"]
        deadline = time.monotonic() + 120
        while (status := client.get(f"/api/jobs/{job}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["state"] == "done", status
        result = client.get(f"/api/jobs/{job}/result.png")
    with Image.open(io.BytesIO(result.content)) as img:
        assert img.size == (24, 32)
        assert_camera_metadata(img, dpi_exact=False)
