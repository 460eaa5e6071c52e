"""pyramidal.io: the one image reader and writer, atomic writes, reports, input folders; EXIF read alike everywhere."""

import errno
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pyramidal.checkpoint import save_weights
from pyramidal.cli import main
from pyramidal.damage import create_task, eval_seed
from pyramidal.errors import PyramidalError
from pyramidal.io import (
    atomic_write,
    expand_inputs,
    format_number,
    image_problem,
    read_image,
    read_rgb,
    scan_images,
    write_image,
    write_json,
    write_text,
)
from pyramidal.models import create_model

from helpers import FAST, cli, env, files_under, in_thread, one_error, picture
from helpers import FAST as CPU


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def plain_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# --------------------------------------------------------------------------- EXIF orientation, every reader


@pytest.fixture
def rotated_jpeg(tmp_path):
    """A 96×64 JPEG whose EXIF says: rotate 90° for display (so it shows 64 wide, 96 high)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / "camera.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_image(64, 96)).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:
        assert im.size == (96, 64)  # stored sideways
        oriented = np.array(ImageOps.exif_transpose(im).convert("RGB"))
    assert oriented.shape == (96, 64, 3)
    return path, oriented


@pytest.fixture
def identity_weights(tmp_path):
    """A residual model whose correction is zero: restore returns its input pixels."""
    model = create_model("basic21", channels=(4, 8, 8), residual=True).eval()
    with torch.no_grad():
        model.output.conv.weight.zero_()
        model.output.conv.bias.zero_()
    path = tmp_path / "identity.safetensors"
    save_weights(model, path, {"task": "noise"})
    return path


def test_degrade_reads_exif_orientation(tmp_path, rotated_jpeg):
    path, oriented = rotated_jpeg
    assert main(["degrade", "--task", "gray", str(path), "-o", str(tmp_path / "degraded")]) == 0
    degraded = np.asarray(Image.open(tmp_path / "degraded" / "camera.png"))
    upright = torch.from_numpy(oriented).permute(2, 0, 1)
    expected = create_task("gray")(upright[None], seeds=[eval_seed(0)])[0].permute(1, 2, 0).numpy()
    assert degraded.shape == (96, 64, 3)
    assert np.array_equal(degraded, expected)  # the damage was applied to the upright photo


def test_restore_reads_exif_orientation(tmp_path, rotated_jpeg, identity_weights):
    path, oriented = rotated_jpeg
    assert main(["restore", "--weights", str(identity_weights), str(path), "-o", str(tmp_path / "restored"),
                 *CPU]) == 0
    restored = np.asarray(Image.open(tmp_path / "restored" / "camera.png"))
    assert restored.shape == (96, 64, 3)
    assert np.array_equal(restored, oriented)


def test_training_data_reads_exif_orientation(tmp_path, rotated_jpeg):
    from pyramidal.data.datasets import ImageFiles
    from pyramidal.data.sources import load_source

    path, oriented = rotated_jpeg
    upright = tmp_path / "upright" / "camera.png"  # the same pixels, stored upright without EXIF
    upright.parent.mkdir()
    Image.fromarray(oriented).save(upright)
    crop = ImageFiles([path], size=64, train=False)[0]  # validation: the centre 64×64 crop
    assert torch.equal(crop, torch.from_numpy(oriented[16:80]).permute(2, 0, 1))
    for index in range(3):  # training: random crop, flip and jitter, drawn from the upright photo
        got = ImageFiles([path], size=48, train=True, seed=5).get(index, epoch=1)
        assert torch.equal(got, ImageFiles([upright], size=48, train=True, seed=5).get(index, epoch=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one image: "too few images for a validation split"
        source = load_source(f"folder:{path.parent}", size=64)
        reference = load_source(f"folder:{upright.parent}", size=64)
    assert torch.equal(source.split("val")[0], crop)
    assert torch.equal(source.split("train").get(2, 1), reference.split("train").get(2, 1))


def test_evaluation_reads_exif_orientation(rotated_jpeg):
    from pyramidal.evaluate import eval_images

    path, oriented = rotated_jpeg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one image: "too few images for a validation split"
        (name, image), = eval_images(f"folder:{path.parent}", "val", crop=None)[0]
    assert name == "camera.jpg"
    assert torch.equal(image, torch.from_numpy(oriented).permute(2, 0, 1))


# --------------------------------------------------------------------------- reading


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    deep = np.full((8, 9), 65535, dtype=np.uint16)
    deep[:, :3] = 257 * 100
    Image.fromarray(deep).save(tmp_path / "d.png")
    loaded = read_image(tmp_path / "d.png")
    assert loaded.bit_depth == 16 and loaded.grayscale
    assert loaded.rgb.shape == (8, 9, 3)
    assert loaded.rgb[0, 0, 0] == 100 and loaded.rgb[0, -1, 2] == 255


def test_modes_become_rgb_with_alpha_kept(tmp_path):
    rgb = smooth_image(12, 17)
    alpha = np.tile(np.arange(17, dtype=np.uint8)[None] * 15, (12, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "ptrans.png", transparency=0)
    Image.fromarray(rgb[..., 1].astype(np.float32) / 255.0, "F").save(tmp_path / "float.tif")

    rgba = read_image(tmp_path / "rgba.png")
    assert np.array_equal(rgba.rgb, rgb) and np.array_equal(rgba.alpha, alpha) and not rgba.grayscale
    assert rgba.rgb.flags.writeable  # torch.from_numpy needs no copy
    gray = read_image(tmp_path / "gray.png")
    assert gray.grayscale and gray.alpha is None and np.array_equal(gray.rgb[..., 2], rgb[..., 0])
    assert np.array_equal(gray.rgb[..., 0], gray.rgb[..., 1])
    la = read_image(tmp_path / "la.png")
    assert la.grayscale and np.array_equal(la.alpha, alpha)
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.rgb.shape == (12, 17, 3) and np.abs(cmyk.rgb.astype(int) - rgb).mean() < 12
    p = read_image(tmp_path / "p.png")
    assert p.alpha is None and np.array_equal(p.rgb, np.asarray(palette.convert("RGB")))
    ptrans = read_image(tmp_path / "ptrans.png")
    assert ptrans.alpha is not None and set(np.unique(ptrans.alpha)) <= {0, 255} and (ptrans.alpha == 0).any()
    f = read_image(tmp_path / "float.tif")  # floats in [0, 1] are scaled to 0-255
    assert f.grayscale and np.abs(f.rgb[..., 0].astype(int) - rgb[..., 1]).max() <= 1


def test_first_frame_of_an_animation(tmp_path):
    frames = [Image.fromarray(np.full((6, 7, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "anim.gif").rgb[0, 0, 0] == 10


def test_read_rgb_is_the_same_reader(tmp_path, rotated_jpeg):
    path, oriented = rotated_jpeg
    im = read_rgb(path)
    assert im.mode == "RGB" and im.size == (64, 96)
    assert np.array_equal(np.asarray(im), oriented)
    Image.fromarray(np.dstack([oriented, np.zeros(oriented.shape[:2], np.uint8)]), "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "a.png")), oriented)  # alpha dropped, colour kept


@pytest.mark.parametrize("case", ["missing", "folder", "empty", "text", "truncated", "bomb"])
def test_bad_files_give_one_line_naming_the_file(tmp_path, monkeypatch, case):
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth_image(40, 40)).save(path, quality=90)
    reason = {"missing": "no such file", "folder": "is a directory", "empty": "not a readable image",
              "text": "not a readable image", "truncated": "corrupt or unsupported image",
              "bomb": "too large to decode safely"}[case]
    if case == "missing":
        path = tmp_path / "nothing.jpg"
    elif case == "folder":
        path = tmp_path / "folder.jpg"
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not an image")
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40×40 is over twice the limit
    with pytest.raises(PyramidalError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message
    if case not in ("missing", "folder", "truncated"):  # those headers read fine or are not files at all
        assert image_problem(path).startswith(reason)


def test_header_check_and_scan(tmp_path):
    Image.fromarray(smooth_image(8, 8)).save(tmp_path / "b.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(smooth_image(8, 8)).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert image_problem(tmp_path / "b.png") is None
    good, bad = scan_images(tmp_path)
    assert good == [tmp_path / "b.png", tmp_path / "sub" / "a.jpg"]
    assert bad == [(tmp_path / "notes.txt", "not a readable image")]
    with pytest.raises(PyramidalError, match="no such file or folder"):
        scan_images(tmp_path / "nope")


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("grayscale", [False, True])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_write_image_round_trip(tmp_path, grayscale, with_alpha):
    rgb = smooth_image(10, 13)
    if grayscale:
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    alpha = np.arange(130, dtype=np.uint8).reshape(10, 13) if with_alpha else None
    path = tmp_path / "out" / "x.png"
    write_image(rgb, path, alpha, grayscale)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.mode == {(False, False): "RGB", (False, True): "RGBA", (True, False): "L", (True, True): "LA"}[
            (grayscale, with_alpha)]
    back = read_image(path)
    assert np.array_equal(back.rgb, rgb) and back.grayscale == grayscale
    assert (back.alpha is None) == (alpha is None) and (alpha is None or np.array_equal(back.alpha, alpha))
    assert stat.S_IMODE(path.stat().st_mode) == plain_file_mode()  # not private like a temporary file
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary file left


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a.txt"
    write_text("first\n", path)

    def fail(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert stat.S_IMODE(path.stat().st_mode) == plain_file_mode()


def test_write_json_and_text(tmp_path):
    write_json({"psnr": float("inf"), "low": float("-inf"), "ssim": float("nan"), "name": "σ", "rows": (1, 2.5)},
               tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"psnr": "inf", "low": "-inf", "ssim": None, "name": "σ", "rows": [1, 2.5]}
    assert "σ" in text and text.endswith("}\n")
    write_text("ü\n", tmp_path / "sub" / "t.md")
    assert (tmp_path / "sub" / "t.md").read_text(encoding="utf-8") == "ü\n"


def test_format_number():
    assert format_number(None) == "–" and format_number(float("nan"), missing="n/a") == "n/a"
    assert format_number(31.4159, 2) == "31.42" and format_number(0.91234, 4) == "0.9123"
    assert format_number(float("inf"), 2) == "inf"
    assert format_number(12345.678, 1, " MB") == "12,345.7 MB" and format_number(7, unit=" MB") == "7 MB"


# --------------------------------------------------------------------------- folders


def test_expand_inputs_flat_and_recursive(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "sub/c.png"):
        Image.fromarray(smooth_image(8, 8)).save(src / name, format="PNG")
    (src / "notes.txt").write_text("hello")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = src / "out"
    out.mkdir()
    Image.fromarray(smooth_image(8, 8)).save(out / "old.png")
    single = tmp_path / "single.tif"

    # A folder: the readable images directly inside, the rest reported; files named as inputs kept as they are.
    skipped = []
    assert expand_inputs([src, single], on_skip=lambda f, r: skipped.append((f.name, r))) == [
        (src / "a.png", Path("a.png")), (src / "b.JPG", Path("b.png")), (single, Path("single.png"))]
    assert sorted(skipped) == [("broken.png", "not a readable image"), ("notes.txt", "not a readable image")]
    # --recursive: every readable image below, sub-folders kept, outputs of an earlier run left out.
    skipped = []
    pairs = expand_inputs([src], recursive=True, exclude=out, on_skip=lambda f, r: skipped.append((f.name, r)))
    assert pairs == [(src / "a.png", Path("a.png")), (src / "b.JPG", Path("b.png")),
                     (src / "sub" / "c.png", Path("sub/c.png"))]
    assert sorted(skipped) == [("broken.png", "not a readable image"), ("notes.txt", "not a readable image")]


def test_full_disk_in_any_serializer_is_an_os_error_and_leaves_nothing(tmp_path):
    """safetensors and torch.save report a full disk in their own exception types; the writer says it plainly."""
    from safetensors import SafetensorError

    from pyramidal.io import atomic_write

    def full(tmp):
        Path(tmp).write_bytes(b"part")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    target = tmp_path / "new" / "deeper" / "w.safetensors"
    with pytest.raises(OSError) as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert files_under(tmp_path) == set()  # neither the temporary file nor the folders made for it


def test_existing_outputs_need_overwrite(tmp_path, weights, capsys):
    src = tmp_path / "in" / "exif.jpg"
    picture(src.with_suffix(".png"), 24, 24).rename(src)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "exif.png").write_bytes(b"someone else's file")
    for command in (["restore", "--weights", str(weights), *FAST], ["degrade", "--task", "noise"]):
        code, _, err = cli([*command, str(src), "-o", str(keep)], capsys)
        assert code == 2
        one_error(err, str(keep / "exif.png"), "--overwrite")
        assert (keep / "exif.png").read_bytes() == b"someone else's file"
        code, _, err = cli([*command, str(src), "-o", str(keep), "--overwrite"], capsys)
        assert code == 0, err
        assert Image.open(keep / "exif.png").size == (24, 24)
        (keep / "exif.png").write_bytes(b"someone else's file")


def test_a_full_disk_is_named_whatever_the_serializer_raised(tmp_path, monkeypatch):
    """A serializer that loses the operating system's error: the folder with no space left explains it."""

    class NoRoom:
        f_bavail = 0

    monkeypatch.setattr(os, "statvfs", lambda path: NoRoom())

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "w.ckpt", write)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "w.ckpt")
    assert not list(tmp_path.iterdir())


def test_a_bug_in_a_serializer_is_not_dressed_as_a_write_failure(tmp_path):
    def write(tmp: str) -> None:
        raise TypeError("cannot serialize a lambda")

    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", write)


def test_io_never_opens_a_fifo(fifo_folder):
    with pytest.raises(PyramidalError, match="pipe.png: not a regular file \\(a FIFO"):
        in_thread(lambda: read_image(fifo_folder / "pipe.png"))
    good, bad = in_thread(lambda: scan_images(fifo_folder))
    assert good == [fifo_folder / "good.png"] and bad == [(fifo_folder / "pipe.png", "not a regular file (a FIFO (named pipe))")]
    skipped = []
    pairs = in_thread(lambda: expand_inputs([fifo_folder / "pipe.png", "/dev/null", fifo_folder / "good.png"],
                                            on_skip=lambda f, why: skipped.append(f)))
    assert [p for p, _ in pairs] == [fifo_folder / "good.png"]
    assert skipped == [fifo_folder / "pipe.png", Path("/dev/null")]


@pytest.mark.parametrize("command", ["restore", "degrade"])
def test_restore_and_degrade_skip_fifos_and_devices_with_a_warning(command, fifo_folder, tmp_path, weights):
    argv = {"restore": ["restore", "--weights", str(weights), "--task", "noise", *CPU],
            "degrade": ["degrade", "--task", "noise"]}[command]
    done = subprocess.run([sys.executable, "-m", "pyramidal", *argv, str(fifo_folder), str(fifo_folder / "pipe.png"),
                           "/dev/zero", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 3 and all(" warning: " in w and "not a regular file" in w for w in warnings), warnings
    assert sum("pipe.png" in w for w in warnings) == 2 and any("/dev/zero" in w for w in warnings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
