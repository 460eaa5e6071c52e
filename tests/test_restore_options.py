"""`restore` and `degrade` options users reach for: --recursive folders, --format/--quality, 16-bit output,
--strength, and progress that stays plain lines in a log."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyramidal.cli import main
from pyramidal.inference import restore_image
from pyramidal.inference.model import load_restorer
from pyramidal.io import read_image, write_image
from pyramidal.options import RestoreOptions

from helpers import FAST


def photo(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_restore_and_degrade_read_folders_the_same_way(tmp_path, weights, capsys):
    src = tmp_path / "in"
    (src / "trip" / "day1").mkdir(parents=True)
    (src / ".hidden").mkdir()
    for name in ("a.png", "trip/b.jpg", "trip/day1/c.png", ".hidden/d.png"):
        Image.fromarray(photo()).save(src / name)
    (src / "notes.txt").write_text("not an image")
    for command, extra in (("restore", ["--weights", str(weights), *FAST]), ("degrade", ["--task", "noise"])):
        flat, deep = tmp_path / f"{command}-flat", tmp_path / f"{command}-deep"
        assert main([command, str(src), "-o", str(flat), *extra]) == 0
        assert "notes.txt" in capsys.readouterr().err  # reported, not an error
        assert tree(flat) == ["a.png"]
        assert main([command, str(src), "-o", str(deep), "--recursive", *extra]) == 0
        assert tree(deep) == ["a.png", "trip/b.png", "trip/day1/c.png"]  # sub-folders mirrored


@pytest.mark.parametrize("fmt,suffix,pil", [("png", ".png", "PNG"), ("jpg", ".jpg", "JPEG"),
                                            ("webp", ".webp", "WEBP"), ("tiff", ".tiff", "TIFF")])
def test_output_formats(tmp_path, weights, fmt, suffix, pil):
    rgba = np.dstack([photo(), np.full((40, 56), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    out = tmp_path / "out"
    assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(out),
                 "--format", fmt, *FAST]) == 0
    written = out / f"in{suffix}"
    with Image.open(written) as im:
        assert im.format == pil and im.size == (56, 40)
        assert im.mode == ("RGB" if fmt == "jpg" else "RGBA")  # JPEG has no alpha channel
    restored = restore_image(load_restorer(weights), rgba[..., :3],
                             options=RestoreOptions(device="cpu", precision="fp32"))
    error = np.abs(read_image(written).rgb.astype(int) - restored).mean()
    assert error == 0 if fmt in ("png", "tiff") else error < 8  # lossless, or close


def test_quality_trades_size(tmp_path, weights):
    Image.fromarray(photo(96, 96)).save(tmp_path / "in.png")
    sizes = {}
    for q in (20, 95):
        out = tmp_path / f"q{q}"
        assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(out),
                     "--format", "jpg", "--quality", str(q), *FAST]) == 0
        sizes[q] = (out / "in.jpg").stat().st_size
    assert sizes[20] < sizes[95]
    assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(tmp_path / "x"),
                 "--format", "jpg", "--quality", "0", *FAST]) == 2


@pytest.mark.parametrize("kind", ["gray", "rgb", "rgba"])
def test_16_bit_in_gives_16_bit_out(tmp_path, weights, kind):
    rng = np.random.default_rng(3)
    base = np.array(Image.fromarray(photo()).resize((56, 40))).astype(np.uint16) * 257
    base += rng.integers(0, 200, base.shape).astype(np.uint16)  # below one 8-bit step: only 16 bits see it
    if kind == "gray":
        Image.fromarray(base[..., 0]).save(tmp_path / "in.png")
    else:
        pixels = base if kind == "rgb" else np.dstack([base, np.full((40, 56), 40000, np.uint16)])
        write_image(pixels[..., :3], tmp_path / "in.png", pixels[..., 3] if kind == "rgba" else None)
    loaded = read_image(tmp_path / "in.png")
    assert loaded.bit_depth == 16 and loaded.rgb16 is not None
    assert np.array_equal(loaded.rgb16[..., 0], base[..., 0])
    out = tmp_path / "out"
    assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(out), *FAST]) == 0
    result = read_image(out / "in.png")
    assert result.bit_depth == 16 and result.grayscale == (kind == "gray")
    assert len(np.unique(result.rgb16 % 257)) > 1  # real 16-bit values, not 8-bit ones scaled up
    if kind == "rgba":
        assert np.array_equal(result.alpha16, np.full((40, 56), 40000, np.uint16))
    # The same restoration as the 8-bit path, up to the 8-bit rounding of the input.
    eight = restore_image(load_restorer(weights), loaded.rgb,
                          options=RestoreOptions(device="cpu", precision="fp32"))
    if kind == "gray":  # written as the luma of the restored colour image
        eight = np.repeat(np.asarray(Image.fromarray(eight).convert("L"))[..., None], 3, axis=2)
    assert np.abs(result.rgb16 / 257.0 - eight).mean() < 1.0
    jpg = tmp_path / "jpg"
    assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(jpg),
                 "--format", "jpg", *FAST]) == 0
    assert read_image(jpg / "in.jpg").bit_depth == 8  # JPEG is 8-bit


def test_16_bit_exif_orientation_matches_pillow():
    from pyramidal.io.images import _ORIENT

    rgb = photo(6, 9)
    methods = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}
    for orientation, method in methods.items():
        assert np.array_equal(_ORIENT[orientation](rgb), np.asarray(Image.fromarray(rgb).transpose(method)))


def test_strength_scales_the_change(tmp_path, weights):
    rgb = photo()
    Image.fromarray(rgb).save(tmp_path / "in.png")
    outs = {}
    for s in ("0", "0.5", "1", "2"):
        out = tmp_path / f"s{s}"
        assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(out),
                     "--strength", s, *FAST]) == 0
        outs[s] = np.asarray(Image.open(out / "in.png")).astype(float)
    assert np.abs(outs["0"] - rgb).max() <= 1  # nothing of the model's change
    default = restore_image(load_restorer(weights), rgb,
                            options=RestoreOptions(device="cpu", precision="fp32"))
    assert np.array_equal(outs["1"], default)
    half = (rgb + outs["1"]) / 2
    assert np.abs(outs["0.5"] - half).max() <= 1.0
    change = lambda s: np.abs(outs[s] - rgb).mean()  # noqa: E731
    assert change("0.5") < change("1") < change("2")
    for bad in ("-0.1", "2.5"):
        assert main(["restore", "--weights", str(weights), str(tmp_path / "in.png"), "-o", str(tmp_path / "b"),
                     "--strength", bad, *FAST]) == 2


def test_progress_in_a_log_is_plain_lines(tmp_path, weights, capsys, monkeypatch):
    import pyramidal.progress

    monkeypatch.setattr(pyramidal.progress, "PLAIN_INTERVAL", 0.0)  # every update writes a line
    for i in range(3):
        Image.fromarray(photo(100, 130, seed=i)).save(tmp_path / f"p{i}.png")
    assert main(["restore", "--weights", str(weights), str(tmp_path), "-o", str(tmp_path / "out"),
                 "--tile", "32", "--overlap", "8", "--batch-size", "2", *FAST]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err  # stderr is not a terminal here: no refreshing bar
    assert "restore: 3/3 images" in err
    assert "tiles" in err  # the tiles of each large image

