"""Nothing non-finite passes silently: NaN or infinity in the input pixels, in the weights, or in the restored
pixels is one clear error, never a written file or a score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pyramidal
from pyramidal.checkpoint import load_weights, save_checkpoint, save_weights
from pyramidal.cli import main
from pyramidal.errors import PyramidalError
from pyramidal.inference import restore_array, restore_image
from pyramidal.io import read_image
from pyramidal.models import create_model
from pyramidal.options import RestoreOptions

from helpers import FAST as CPU


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_api_refuses_float_pixels_that_are_not_finite(weights, bad, dtype):
    pixels = np.full((12, 10, 3), 0.5, dtype=dtype)
    pixels[3, 4, 1] = bad  # one value: the range check used to skip NaN, and the output came back all NaN
    with pytest.raises(PyramidalError, match="1 of the image's 360 pixel values are not finite"):
        pyramidal.restore(pixels, task="noise", weights=weights, device="cpu", precision="fp32")


def test_api_refuses_a_float_pil_image_with_nan(weights):
    pixels = np.full((8, 8), 0.5, dtype=np.float32)
    pixels[0, 0] = np.nan
    with pytest.raises(PyramidalError, match="not finite"):
        pyramidal.restore(Image.fromarray(pixels, "F"), task="noise", weights=weights, device="cpu", precision="fp32")


def test_restore_array_refuses_a_tensor_with_nan(weights):
    image = torch.zeros(3, 8, 8)
    image[0, 1, 1] = float("nan")
    with pytest.raises(PyramidalError, match="not finite"):
        restore_array(load_weights(weights), image, options=RestoreOptions(device="cpu", precision="fp32"))


def test_a_float_image_file_with_nan_is_one_line_naming_it(tmp_path, weights, capsys):
    pixels = np.full((8, 8), 0.5, dtype=np.float32)
    pixels[2, 2] = np.nan
    bad = tmp_path / "in" / "depth.tif"
    bad.parent.mkdir()
    Image.fromarray(pixels, "F").save(bad)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "good.png")
    with pytest.raises(PyramidalError, match="depth.tif: 1 of its 64 pixel values are not finite"):
        read_image(bad)
    code = main(["restore", "--weights", str(weights), "--task", "noise", str(bad), str(tmp_path / "in" / "good.png"),
                 "-o", str(tmp_path / "out"), *CPU])
    _, err = capsys.readouterr()
    assert code == 1 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    assert len(lines(err)) == 1 and "depth.tif" in err and "not finite" in err


# --------------------------------------------------------------------------- weights


@pytest.fixture
def nan_weights(tmp_path) -> Path:
    """basic21 weights with one tensor all NaN, as a diverged run leaves them."""
    model = create_model("basic21", channels=(4, 8, 8)).eval()
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    path = tmp_path / "w" / "diverged.safetensors"
    save_weights(model, path, {"task": "noise"})
    return path


def test_weights_with_nan_are_refused_when_they_load(tmp_path, nan_weights):
    with pytest.raises(PyramidalError, match="diverged.safetensors: 1 tensor.* hold NaN or infinity"):
        load_weights(nan_weights)
    model = create_model("basic21", channels=(4, 8, 8))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[next(iter(state))].fill_(float("inf"))
    save_checkpoint(tmp_path / "last.ckpt", {"spec": model.spec, "model": state, "config": {"task": "noise"}})
    with pytest.raises(PyramidalError, match="last.ckpt: .* hold NaN or infinity"):
        load_weights(tmp_path / "last.ckpt")


def test_restore_with_nan_weights_writes_nothing(tmp_path, nan_weights, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["restore", "--weights", str(nan_weights), "--task", "noise", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "out"), *CPU])
    _, err = capsys.readouterr()
    assert code == 2 and not (tmp_path / "out").exists()
    assert len(lines(err)) == 1 and "diverged.safetensors" in err and "NaN" in err


def test_evaluate_with_nan_weights_reports_no_score(tmp_path, nan_weights, capsys):
    code = main(["evaluate", "--task", "noise", "--weights", str(nan_weights), "--baselines", "none", "--crop", "32",
                 "--limit", "2", "--sigma", "25", *CPU])
    out, err = capsys.readouterr()
    assert code == 2 and " dB" not in out and "damaged input" not in out
    errors = [line for line in lines(err) if line.startswith("pyramidal ")]
    assert len(errors) == 1 and "diverged.safetensors" in errors[0]


# --------------------------------------------------------------------------- outputs


@pytest.fixture
def overflowing_weights(tmp_path) -> Path:
    """Finite weights so large that the restored pixels overflow float32 (NaN and infinity)."""
    torch.manual_seed(0)
    model = create_model("basic21", channels=(4, 8, 8)).eval()
    with torch.no_grad():
        for p in model.parameters():  # ±1e30: sums overflow to ±infinity, and infinity - infinity is NaN
            p.copy_(torch.sign(torch.randn_like(p)) * 1e30)
    path = tmp_path / "w" / "huge.safetensors"
    save_weights(model, path, {"task": "noise"})
    return path


def test_a_non_finite_restored_tile_is_an_error_naming_the_weights(tmp_path, overflowing_weights, capsys):
    model = load_weights(overflowing_weights)  # finite: it loads
    model.weights_path = str(overflowing_weights)
    with pytest.raises(PyramidalError, match="huge.safetensors: the restored pixels hold NaN or infinity"):
        restore_image(model, np.zeros((16, 16, 3), np.uint8),
                      options=RestoreOptions(device="cpu", precision="fp32"))
    with pytest.raises(PyramidalError, match="the model: the restored pixels hold NaN"):  # a callable: no file
        restore_array(lambda x: x * float("nan"), torch.zeros(3, 8, 8),
                      options=RestoreOptions(device="cpu", precision="fp32"))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    code = main(["restore", "--weights", str(overflowing_weights), "--task", "noise", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "out"), "--tile", "32", "--overlap", "8", *CPU])
    out, err = capsys.readouterr()
    assert code == 1 and "wrote" not in out
    assert not list(tmp_path.glob("out/*.png"))
    assert len(lines(err)) == 1 and "huge.safetensors" in err
