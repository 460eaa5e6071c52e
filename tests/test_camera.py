"""The `camera` damage task: the noise model's statistics, its seeds, its options, and built-in weights plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pyramidal import camera
from pyramidal.cli import main
from pyramidal.damage import create_task, jpeg_roundtrip
from pyramidal.errors import PyramidalError


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 236, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- the noise model


@pytest.mark.parametrize("shot, read", [(0.01, 1e-4), (1e-3, 1e-6)])
def test_raw_noise_variance_is_shot_times_signal_plus_read(shot, read):
    """Poisson–Gaussian: the variance grows linearly with the signal, with the model's slope and offset."""
    rng = np.random.default_rng(0)
    levels = [0.0, 0.02, 0.1, 0.4, 0.8]
    measured = [camera.poisson_gaussian(np.full(200_000, s), shot, read, rng).var() for s in levels]
    for s, var in zip(levels, measured):
        assert var == pytest.approx(shot * s + read, rel=0.03), s
    assert measured[-1] > 20 * measured[1]  # signal-dependent, not white noise of one σ


def _srgb_of_raw(raw: np.ndarray, p: camera.CameraParameters) -> np.ndarray:
    """The processing of docs/damage-and-data.md written out: gains, inverse CCM, clip, gamma 1/2.2, smoothstep."""
    linear = np.linalg.inv(np.array(p.rgb_to_camera)) @ (np.array(p.gains) * raw)
    g = np.clip(linear, 0, 1) ** (1 / 2.2)
    return 255 * (3 * g**2 - 2 * g**3)


@pytest.mark.parametrize("level", [50, 110, 170, 215])
def test_output_variance_follows_the_camera_model(level):
    """Flat grey through the task (no mosaic, no JPEG): each colour's variance is what the raw variance
    shot·signal + read becomes through the camera's processing (its Jacobian), to within 8 %."""
    shot, read = 4e-4, 2e-6
    task = create_task("camera", shot=shot, read=read, demosaic="none", quality=0)
    seed = 7
    p = task.parameters(seed)
    out = task(torch.full((1, 3, 320, 320), level, dtype=torch.uint8), seeds=[seed])[0].double().numpy()
    srgb = np.full(3, level / 255.0)
    linear = (0.5 - np.sin(np.arcsin(1 - 2 * srgb) / 3)) ** 2.2  # the documented inverse tone curve and gamma
    raw = np.array(p.rgb_to_camera) @ linear / np.array(p.gains)
    assert np.allclose(_srgb_of_raw(raw, p), level)  # the processing inverts the unprocessing
    eps = 1e-6
    jacobian = np.stack([(_srgb_of_raw(raw + eps * np.eye(3)[c], p) - _srgb_of_raw(raw - eps * np.eye(3)[c], p))
                         / (2 * eps) for c in range(3)], axis=1)
    predicted = np.diag(jacobian @ np.diag(shot * raw + read) @ jacobian.T) + 1 / 12  # + 8-bit rounding
    measured = out.reshape(3, -1).var(axis=1)
    assert measured == pytest.approx(predicted, rel=0.08)


def test_without_noise_the_photograph_comes_back_exactly():
    """Unprocessing and processing are exact inverses, and only the noise is demosaiced: with (almost) no noise
    and no JPEG, the photograph comes back (a rare rounding flip aside)."""
    x = batch(smooth_image(64, 80, 1), smooth_image(64, 80, 2))
    for demosaic in camera.DEMOSAICS:
        task = create_task("camera", shot=1e-12, read=0.0, demosaic=demosaic, quality=0)
        moved = (task(x, seeds=[1, 2]).int() - x.int()).abs()
        assert moved.max() <= 1 and (moved > 0).float().mean() < 1e-3, demosaic


@pytest.mark.parametrize("cfa", camera.CFA_PATTERNS)
@pytest.mark.parametrize("method", ["bilinear", "ea"])
def test_demosaic_reads_each_bayer_layout_right(cfa, method):
    """A smooth image through the mosaic and OpenCV's demosaicing comes back close: a wrong layout code would
    swap or shift colours."""
    image = smooth_image(96, 96, 3).astype(np.float64) / 255
    back = camera.demosaic(camera.mosaic_of(image, cfa), cfa, method)
    assert np.abs(back - image)[4:-4, 4:-4].mean() < 0.01


def test_demosaicing_correlates_the_noise_of_neighbours_and_colours():
    x = torch.full((1, 3, 256, 256), 128, dtype=torch.uint8)

    def correlations(demosaic):
        out = create_task("camera", shot=3e-3, demosaic=demosaic, quality=0)(x, seeds=[5])[0].double()
        n = out - out.mean(dim=(1, 2), keepdim=True)
        g = n[1]
        horizontal = float((g[:, 1:] * g[:, :-1]).mean() / g.var())
        across = float((n[0] * n[1]).mean() / (n[0].std() * n[1].std()))
        return horizontal, across

    independent = correlations("none")
    assert abs(independent[0]) < 0.05  # no mosaic: pixels independent (colours are mixed by the CCM alone)
    for method in ("bilinear", "ea"):
        horizontal, across = correlations(method)
        assert horizontal > independent[0] + 0.2, method


# --------------------------------------------------------------------------- seeds and options


def test_seeded_per_image_and_options_do_not_shift_other_draws():
    x = batch(smooth_image(64, 64, 4), smooth_image(64, 64, 5))
    task = create_task("camera", train=True)
    assert torch.equal(task(x, seeds=[8, 9]), task(x, seeds=[8, 9]))
    assert not torch.equal(task(x, seeds=[8, 9]), task(x, seeds=[10, 11]))
    assert task.parameters(8) == task.parameters(8) != task.parameters(9)
    # A fixed JPEG quality is the same noisy image, then JPEG: fixing one option changes no other draw.
    raw = create_task("camera", shot=2e-3, quality=0)(x, seeds=[8, 9])
    jpeg = create_task("camera", shot=2e-3, quality=90)(x, seeds=[8, 9])
    for a, b in zip(raw, jpeg):
        expected = jpeg_roundtrip(np.ascontiguousarray(a.permute(1, 2, 0).numpy()), 90)
        assert np.array_equal(b.permute(1, 2, 0).numpy(), expected)


def test_drawn_parameters_cover_the_documented_ranges():
    task = create_task("camera", train=True)
    params = [task.parameters(s) for s in range(3000)]
    shots = np.array([p.shot for p in params])
    assert shots.min() >= camera.SHOT_RANGE[0] and shots.max() <= camera.SHOT_RANGE[1]
    # Log-uniform: the median sits at the geometric mean of the range.
    assert math.log(np.median(shots)) == pytest.approx(0.5 * sum(map(math.log, camera.SHOT_RANGE)), abs=0.15)
    # Read noise on Brooks et al.'s line: log read = 2.18 log shot + 1.20 + N(0, 0.26²).
    residual = np.log([p.read for p in params]) - (2.18 * np.log(shots) + 1.20)
    assert abs(residual.mean()) < 0.03 and residual.std() == pytest.approx(0.26, rel=0.08)
    red = np.array([p.gains[0] / p.gains[1] for p in params])
    blue = np.array([p.gains[2] / p.gains[1] for p in params])
    assert red.min() >= 1.9 and red.max() <= 2.4 and blue.min() >= 1.5 and blue.max() <= 1.9
    assert np.allclose([np.sum(p.rgb_to_camera, axis=1) for p in params], 1.0)
    qualities = np.array([p.quality for p in params])
    assert (qualities == 0).mean() == pytest.approx(1 - camera.JPEG_SHARE, abs=0.03)
    assert qualities[qualities > 0].min() == 60 and qualities.max() == 95
    assert {p.demosaic for p in params} == set(camera.DRAWN_DEMOSAICS)
    assert {p.cfa for p in params} == set(camera.CFA_PATTERNS)


@pytest.mark.parametrize("bad", [dict(shot=0), dict(shot=-1e-3), dict(read=-1.0), dict(demosaic="ahd"),
                                 dict(quality=101), dict(quality=2.5)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match="camera"):
        create_task("camera", **bad)


def test_degrade_task_camera(tmp_path, capsys):
    src = tmp_path / "photo.png"
    Image.fromarray(smooth_image(48, 64, 6)).save(src)
    args = ["degrade", "--task", "camera", "--shot", "0.002", "--quality", "0", str(src)]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / d / "photo.png")) for d in "ab")
    assert np.array_equal(a, b) and not np.array_equal(a, np.asarray(Image.open(src)))
    assert main([*args, "-o", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert not np.array_equal(a, np.asarray(Image.open(tmp_path / "c" / "photo.png")))
    capsys.readouterr()
    assert main(["degrade", "--task", "camera", "--demosaic", "ahd", str(src), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "demosaic" in err[0] and not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- built-in weights plumbing


def test_camera_without_weights_says_how_to_train_them(monkeypatch, tmp_path):
    import pyramidal.hub as hub

    monkeypatch.setattr(hub, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(PyramidalError, match=r"no built-in weights for .*camera.*run_recipe"):
        hub.builtin_weights_path("camera")


def test_a_camera_weight_file_makes_the_task_available_everywhere(monkeypatch, tmp_path, capsys):
    """pyramidal/weights/camera.safetensors appearing is all it takes: the library, `restore --task camera` and
    the web page's task list offer it (a tiny model stands in for the trained one)."""
    import pyramidal
    import pyramidal.hub as hub
    from pyramidal.checkpoint import save_weights
    from pyramidal.models import create_model
    from pyramidal.web import engine

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(hub, "WEIGHTS_DIR", weights)
    assert "camera" not in hub.available_builtin_weights()
    assert not {t["name"]: t for t in engine.tasks()}["camera"]["builtin"]
    save_weights(create_model("basic21", channels=(4, 8, 8), residual=True).eval(), weights / "camera.safetensors",
                 {"task": "camera"})
    assert hub.available_builtin_weights() == ["camera"]
    assert {t["name"]: t for t in engine.tasks()}["camera"]["builtin"]
    noisy = create_task("camera", shot=2e-3)(batch(smooth_image(40, 56, 7)), seeds=[1])[0].permute(1, 2, 0).numpy()
    restored = pyramidal.restore(noisy, task="camera", strength=0.5, device="cpu")
    assert restored.shape == noisy.shape and restored.dtype == np.uint8
    src = tmp_path / "noisy.png"
    Image.fromarray(noisy).save(src)
    assert main(["restore", "--task", "camera", str(src), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "out" / "noisy.png").size == (56, 40)
