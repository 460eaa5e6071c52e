"""`pyramidal restore`: awkward inputs, tiling, self-ensemble, never overwriting inputs, built-in weights."""

import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pyramidal.checkpoint import save_weights
from pyramidal.cli import main
from pyramidal.errors import PyramidalError
from pyramidal.hub import builtin_weights_path
from pyramidal.inference import restore_image
from pyramidal.io import read_image
from pyramidal.models import create_model
from pyramidal.options import EVALUATION, RestoreOptions

from helpers import FAST, REPO, cli, one_error, picture


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def test_restore_mixed_inputs(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rgba = np.dstack([smooth_image(300, 517), np.tile(np.arange(517, dtype=np.uint8)[None] // 3, (300, 1))])
    Image.fromarray(rgba, "RGBA").save(src / "photo.png")
    Image.fromarray(smooth_image(40, 70)[..., 0], "L").save(src / "gray.jpg")
    deep = (np.arange(50 * 60, dtype=np.uint32).reshape(50, 60) * 21).astype(np.uint16)
    Image.fromarray(deep).save(src / "deep.png")  # mode I;16
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    out = tmp_path / "out"
    files = [src / n for n in ("photo.png", "gray.jpg", "deep.png", "broken.png")]
    code = main(["restore", "--weights", str(weights), "--task", "noise", *map(str, files), "-o", str(out),
                 "--tile", "128", *FAST])
    captured = capsys.readouterr()
    assert code != 0
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1, captured.err
    assert errors[0].startswith("pyramidal restore: error: ") and "broken.png" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["deep.png", "gray.png", "photo.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "photo.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not private like a temp file
    photo = Image.open(out / "photo.png")
    assert photo.mode == "RGBA" and photo.size == (517, 300)
    assert np.array_equal(np.asarray(photo)[..., 3], rgba[..., 3])  # alpha kept exactly
    gray = Image.open(out / "gray.png")
    assert gray.size == (70, 40) and gray.mode == "L"
    assert Image.open(out / "deep.png").size == (60, 50)


def test_exif_rotation_applied(tmp_path, weights):
    img = Image.fromarray(smooth_image(30, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    img.save(tmp_path / "cam.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "cam.jpg").rgb.shape == (50, 30, 3)
    out = tmp_path / "out"
    assert main(["restore", "--weights", str(weights), str(tmp_path / "cam.jpg"), "-o", str(out), *FAST]) == 0
    assert Image.open(out / "cam.png").size == (30, 50)


def test_tiled_matches_untiled(weights):
    from pyramidal.checkpoint import load_weights

    torch.manual_seed(1)
    path = weights.with_name("deep.safetensors")
    save_weights(create_model("pyramidal51", channels=(4, 8, 8, 8, 8, 8)).eval(), path, {"task": "noise"})
    model = load_weights(path)
    img = smooth_image(300, 300)
    whole = restore_image(model, img,
                          options=RestoreOptions(tile=0, device="cpu", precision="fp32")).astype(np.float64)
    tiled = restore_image(model, img, RestoreOptions(tile=128, overlap=32, batch_size=3, device="cpu", precision="fp32"))
    assert whole.shape == tiled.shape == (300, 300, 3)
    assert whole.std() > 2  # the model really changes the image, so the comparison means something
    assert np.abs(whole - tiled).mean() < 0.5


def test_tiles_in_threads_match_one_thread(weights):
    """On the CPU one pass per torch thread runs at once; the result is the one-thread result, bit for bit, and
    the caller's thread count is left as it was."""
    from pyramidal.checkpoint import load_weights

    model = load_weights(weights)
    img = smooth_image(150, 230)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = restore_image(model, img, RestoreOptions(tile=64, overlap=16, batch_size=2, device="cpu", precision="fp32"))
        torch.set_num_threads(3)
        three = restore_image(model, img,
                              RestoreOptions(tile=64, overlap=16, batch_size=2, device="cpu", precision="fp32"))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, three)


def test_cli_restore_defaults_are_the_library_defaults():
    import argparse

    from pyramidal.cli import restore as cli_restore
    parser = argparse.ArgumentParser()
    cli_restore.add_arguments(parser)
    args = parser.parse_args(["in.png", "-o", "out"])
    assert cli_restore.restore_options(args) == RestoreOptions()


@pytest.mark.parametrize("multiple", [1, 16])
def test_tile_layout_covers_everything_with_the_fewest_tiles(multiple):
    from pyramidal.inference.tiling import tile_layout

    for length in (1, 100, 256, 257, 300, 517, 1000, 3000, 4000):
        side, starts = tile_layout(length, 256, 32, multiple)
        assert len(starts) == len(tile_layout(length, 256, 32)[1])  # the count the web page's progress uses
        assert starts[0] == 0 and starts[-1] + side == length and side <= 256
        assert all(b - a <= side - 32 for a, b in zip(starts, starts[1:]))  # every overlap at least 32 px
        assert len(starts) == (1 if length <= 256 else math.ceil((length - 32) / (256 - 32)))
        if length > 256:
            assert side % multiple == 0
    # A photo just over one tile wide gets two narrow tiles, not two full ones that mostly repeat each other.
    assert tile_layout(258, 256, 32, 16) == (160, [0, 98])


def test_restore_image_layouts(weights):
    from pyramidal.checkpoint import load_weights

    model = load_weights(weights)
    img = smooth_image(20, 33)
    hwc = restore_image(model, img, options=RestoreOptions(device="cpu", precision="fp32"))
    chw = restore_image(model, torch.from_numpy(img).permute(2, 0, 1),
                        options=RestoreOptions(device="cpu", precision="fp32"))
    assert hwc.dtype == np.uint8 and hwc.shape == (20, 33, 3)
    assert isinstance(chw, torch.Tensor) and chw.dtype == torch.uint8 and chw.shape == (3, 20, 33)
    assert np.array_equal(hwc, chw.permute(1, 2, 0).numpy())
    assert restore_image(model, img[..., 0],
                         options=RestoreOptions(device="cpu", precision="fp32")).shape == (20, 33, 3)
    with pytest.raises(PyramidalError):
        restore_image(model, img.astype(np.float32))


def test_ensemble_averages_the_eight_symmetries():
    torch.manual_seed(0)
    kernel = torch.randn(3, 3, 5, 5)

    def model(x):  # deliberately not symmetric
        return F.conv2d(x, kernel, padding=2) * 0.05

    # Averaging f over the dihedral group equals convolving with the symmetrized kernel.
    sym = sum(torch.rot90(k, r, dims=(-2, -1)) for k in (kernel, kernel.flip(-1)) for r in range(4)) / 8
    img = smooth_image(24, 31)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1
    expected = (F.conv2d(x[None], sym, padding=2) * 0.05).clamp(-1, 1)[0]
    expected = ((expected + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    got = restore_image(model, img, options=RestoreOptions(ensemble=True, device="cpu", precision="fp32"))
    plain = restore_image(model, img, options=RestoreOptions(ensemble=False, device="cpu", precision="fp32"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(plain.astype(int) - expected.astype(int)).mean() > 1  # the test can tell them apart
    identity = restore_image(lambda t: t, img,
                             options=RestoreOptions(ensemble=True, device="cpu", precision="fp32"))
    assert np.array_equal(identity, img)


def test_input_never_overwritten(tmp_path, weights, capsys):
    original = smooth_image(24, 24)
    Image.fromarray(original).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code = main(["restore", "--weights", str(weights), str(tmp_path / "a.png"), "-o", str(tmp_path), *FAST])
    assert code != 0
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before
    code = main(["restore", "--weights", str(weights), str(tmp_path / "a.png"), "-o", str(tmp_path),
                 "--overwrite", *FAST])
    assert code == 0
    assert (tmp_path / "a.png").read_bytes() != before


def test_builtin_weights_missing_is_clear(monkeypatch, tmp_path, capsys):
    import pyramidal.hub as hub

    monkeypatch.setattr(hub, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(PyramidalError, match="none are installed"):
        builtin_weights_path("noise")
    save_weights(create_model("basic21", channels=(4, 8, 8)), tmp_path / "jpeg.safetensors", {"task": "jpeg"})
    with pytest.raises(PyramidalError, match="jpeg"):
        builtin_weights_path("noise")
    assert builtin_weights_path("jpeg") == tmp_path / "jpeg.safetensors"
    assert main(["restore", "--task", "noise", str(tmp_path / "x.png"), "-o", str(tmp_path / "o")]) == 2
    assert "pyramidal restore: error: --weights builtin" in capsys.readouterr().err


def test_restore_images_batches_like_single_images(weights):
    from pyramidal.checkpoint import load_weights
    from pyramidal.inference import restore_images

    model = load_weights(weights)
    images = [smooth_image(24, 24, seed) for seed in range(5)] + [smooth_image(40, 30, 9)]
    images.append(torch.from_numpy(smooth_image(20, 20, 7)).permute(2, 0, 1))
    many = restore_images(model, images,
                          EVALUATION.replace(batch_size=3, tile=32, overlap=8, device="cpu", precision="fp32"))
    assert len(many) == len(images)
    for image, got in zip(images, many):
        one = restore_image(model, image,
                            options=RestoreOptions(tile=32, overlap=8, device="cpu", precision="fp32"))
        assert type(got) is type(one) and got.shape == one.shape
        assert np.abs(np.asarray(got, dtype=int) - np.asarray(one, dtype=int)).max() <= 1




def test_whole_image_mode_restores_tiny_images_cli(tmp_path, weights, capsys):
    inputs = [picture(tmp_path / "in" / "tiny3x5.png", 5, 3), picture(tmp_path / "in" / "good.png", 40, 50),
              picture(tmp_path / "in" / "one1x1.png", 1, 1)]
    code, _, err = cli(["restore", "--weights", str(weights), "--tile", "0", *map(str, inputs),
                        "-o", str(tmp_path / "out"), *FAST], capsys)
    assert code == 0 and err == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png", "one1x1.png", "tiny3x5.png"]


def test_bad_overlap_refused_once_before_the_model_loads(tmp_path, capsys):
    inputs = [picture(tmp_path / f"{i}.png", 20, 20, i) for i in range(3)]
    # The weights file does not exist: the overlap error must come first, once, naming the flags.
    code, out, err = cli(["restore", "--weights", str(tmp_path / "missing.safetensors"), "--tile", "64",
                          "--overlap", "64", *map(str, inputs), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    one_error(err, "--overlap 64", "--tile 64")
    assert not (tmp_path / "out").exists()


def test_restore_to_a_file_fails_once_before_the_model_loads(tmp_path, capsys):
    inputs = [picture(tmp_path / f"{i}.png", 12, 12, i) for i in range(3)]
    target = tmp_path / "a_file.png"
    target.write_bytes(b"x")
    code, out, err = cli(["restore", "--weights", str(tmp_path / "missing.safetensors"), *map(str, inputs),
                          "-o", str(target)], capsys)
    assert code == 2 and out == ""
    one_error(err, str(target), "not a folder")


def test_task_is_a_registered_name_never_a_path(tmp_path, capsys):
    fake = tmp_path / "blur.safetensors"
    save_weights(create_model("basic21", channels=(4, 8, 8)), fake, {"task": "blur"})
    img = picture(tmp_path / "a.png", 8, 8)
    code, _, err = cli(["restore", "--task", str(tmp_path / "blur"), str(img), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    one_error(err, "--task", "unknown task")
    assert not (tmp_path / "o").exists()
    from pyramidal.hub import builtin_weights_path

    with pytest.raises(ValueError, match="unknown"):
        builtin_weights_path(str(tmp_path / "blur"))


def test_restore_cli_refuses_sigma_for_a_blind_model(tmp_path):
    import subprocess

    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "in.png")
    proc = subprocess.run([sys.executable, "-m", "pyramidal", "restore", str(tmp_path / "in.png"), "-o",
                           str(tmp_path / "out"), "--task", "noise", "--sigma", "25"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    assert "--sigma 25: this model has no noise-level input" in proc.stderr
    assert "Traceback" not in proc.stderr
