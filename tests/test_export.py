"""ONNX export: dynamic H×W (padding traced, not frozen), round trip through onnxruntime, CLI errors."""

from __future__ import annotations

import pytest
import torch

from pyramidal.checkpoint import save_weights
from pyramidal.cli import main
from pyramidal.errors import PyramidalError
from pyramidal.models import create_model
from pyramidal.options import RestoreOptions

pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _trained_like(name: str, **options) -> torch.nn.Module:
    """A small model whose BN running stats are not the defaults, so that eval-mode export matters."""
    torch.manual_seed(0)
    model = create_model(name, **options)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, 32, 32) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pyramidal.export import export_onnx

    model = _trained_like("pyramidal457", m=8, growth=4)
    path = tmp_path_factory.mktemp("onnx") / "p457.onnx"
    export_onnx(model, path)
    return model, path


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 20, 45), (1, 3, 67, 40)])
def test_onnx_matches_torch_at_several_sizes(exported, shape):
    from pyramidal.onnx_backend import onnx_restore_fn

    model, path = exported
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        expected = model(x)
    got = onnx_restore_fn(path)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-3


def test_onnx_metadata_and_dynamic_axes(exported):
    from pyramidal.onnx_backend import OnnxRestorer

    _, path = exported
    restorer = OnnxRestorer(path)
    assert restorer.info["model"] == "pyramidal457"
    assert restorer.min_side == 4
    shape = restorer.session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and isinstance(shape[2], str) and isinstance(shape[3], str)


def test_onnx_backend_pads_images_smaller_than_the_model_multiple(exported):
    from pyramidal.onnx_backend import onnx_restore_fn

    model, path = exported
    x = torch.rand(1, 3, 3, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        expected = model(x)
    got = onnx_restore_fn(path)(x)
    assert got.shape == x.shape
    assert (got - expected).abs().max().item() < 1e-3


def test_restore_cli_onnx_backend_matches_torch(exported, tmp_path):
    import numpy as np
    from PIL import Image

    from pyramidal.inference import restore_image

    model, path = exported
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    assert main(["restore", "--backend", "onnx", "--weights", str(path), str(tmp_path / "in.png"),
                 "-o", str(tmp_path / "out")]) == 0
    got = np.asarray(Image.open(tmp_path / "out" / "in.png"), dtype=np.int16)
    expected = restore_image(model, image,
                             options=RestoreOptions(device="cpu", precision="fp32")).astype(np.int16)
    assert np.abs(got - expected).max() <= 1  # 8-bit rounding of outputs that agree within 1e-3
    assert main(["restore", "--backend", "onnx", "--weights", "builtin", "--task", "noise",
                 str(tmp_path / "in.png"), "-o", str(tmp_path / "out2")]) == 2


def test_onnx_backend_errors(tmp_path):
    from pyramidal.onnx_backend import onnx_restore_fn

    with pytest.raises(PyramidalError, match="no such ONNX file"):
        onnx_restore_fn(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(PyramidalError, match="not a loadable ONNX model"):
        onnx_restore_fn(bad)


def test_export_cli_round_trip(tmp_path, capsys):
    model = _trained_like("pyramidal44", m=8, growth=4)
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights, metadata={"task": "noise"})
    out = tmp_path / "out" / "model.onnx"
    assert main(["export", "--weights", str(weights), "--onnx", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "wrote" in text
    assert text.count("onnxruntime vs torch") == 2
    from pyramidal.onnx_backend import OnnxRestorer

    assert OnnxRestorer(out).info["task"] == "noise"


def test_export_cli_errors(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "none.safetensors"), "--onnx", str(tmp_path / "a.onnx")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert main(["export", "--weights", "x.safetensors", "--onnx", str(tmp_path / "a.txt")]) == 2
    assert "should end in .onnx" in capsys.readouterr().err
