"""The Python API: `pyramidal.restore` in one call, timm-style `create_model(pretrained=...)`, documented names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pyramidal
from pyramidal.checkpoint import save_pretrained, save_weights
from pyramidal.errors import PyramidalError
from pyramidal.hub import WEIGHTS_DIR
from pyramidal.inference import restore_image
from pyramidal.inference.model import load_restorer
from pyramidal.models import create_model
from pyramidal.options import RestoreOptions

FAST = {"device": "cpu", "precision": "fp32"}


def photo(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def reference(weights, rgb: np.ndarray) -> np.ndarray:
    """What `pyramidal restore` computes for 8-bit RGB pixels."""
    return restore_image(load_restorer(weights), rgb, options=RestoreOptions(**FAST))


def test_restore_is_the_top_level_function_even_after_every_submodule_is_imported():
    for info in pkgutil.walk_packages(pyramidal.__path__, "pyramidal."):
        if info.name.startswith("pyramidal.web") or info.name.endswith("__main__"):
            continue  # the optional [web] extra; __main__ runs the command line
        importlib.import_module(info.name)
    assert inspect.isfunction(pyramidal.restore) and pyramidal.restore.__module__ == "pyramidal.api"
    for name in pyramidal.__all__:
        assert not inspect.ismodule(getattr(pyramidal, name)), f"pyramidal.{name} is a module"
    assert importlib.util.find_spec("pyramidal.restore") is None  # the name stays free for the function


def test_importing_pyramidal_and_naming_restore_loads_no_torch():
    code = "import sys, pyramidal; f = pyramidal.__getattr__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_array_in_array_out_matches_the_command(weights):
    rgb = photo()
    out = pyramidal.restore(rgb, weights=weights, **FAST)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.array_equal(out, reference(weights, rgb))


@pytest.mark.parametrize("layout", ["flipped", "strided", "fortran", "readonly"])
def test_any_memory_layout(weights, layout):
    base = photo(60, 80)
    view = {"flipped": base[::-1, ::-1], "strided": base[::2, ::2], "fortran": np.asfortranarray(base),
            "readonly": base.copy()}[layout]
    if layout == "readonly":
        view.flags.writeable = False
    out = pyramidal.restore(view, weights=weights, **FAST)
    assert np.array_equal(out, reference(weights, np.ascontiguousarray(view)))


def test_alpha_and_channel_counts_are_kept(weights):
    rgb = photo()
    alpha = np.tile(np.arange(rgb.shape[1], dtype=np.uint8)[None] * 3, (rgb.shape[0], 1))
    rgba = np.dstack([rgb, alpha])
    out = pyramidal.restore(rgba, weights=weights, **FAST)
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], alpha)
    assert np.array_equal(out[..., :3], reference(weights, rgb))
    gray = rgb[..., 1]
    for arr, shape in ((gray, gray.shape), (gray[..., None], gray.shape + (1,)),
                       (np.dstack([gray, alpha]), gray.shape + (2,))):
        result = pyramidal.restore(arr, weights=weights, **FAST)
        assert result.shape == shape and result.dtype == np.uint8
    # Grayscale comes back as the command writes it: the luma of the restored colour image.
    expected = np.asarray(Image.fromarray(reference(weights, np.dstack([gray] * 3))).convert("L"))
    assert np.array_equal(pyramidal.restore(gray, weights=weights, **FAST), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_in_float_out(weights, dtype):
    rgb = photo()
    out = pyramidal.restore((rgb / 255.0).astype(dtype), weights=weights, **FAST)
    assert out.dtype == dtype and out.shape == rgb.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.abs(out.astype(np.float64) * 255 - reference(weights, rgb)).max() <= 1.0  # the same up to 8-bit rounding


def test_uint16_in_uint16_out(weights):
    rgb = photo()
    out = pyramidal.restore(rgb.astype(np.uint16) * 257, weights=weights, **FAST)
    assert out.dtype == np.uint16
    assert np.abs(out / 257.0 - reference(weights, rgb)).max() <= 1.0
    assert len(np.unique(out % 257)) > 1  # not 8-bit values scaled up: the 16-bit precision is used


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16", "F", "P", "CMYK", "1"])
def test_pil_in_pil_out(weights, mode):
    rgb = photo()
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(rgb[..., 0].astype(np.float32) / 255, "F")
    else:
        img = Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").convert(mode)
    out = pyramidal.restore(img, weights=weights, **FAST)
    assert isinstance(out, Image.Image) and out.size == img.size
    expected = {"P": "RGB", "CMYK": "RGB", "1": "L"}.get(mode, mode)
    assert out.mode == expected
    if mode == "RGBA":
        assert np.array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 3])
    if mode == "F":
        assert 0.0 <= np.asarray(out).min() and np.asarray(out).max() <= 1.0


def test_path_in_pil_out(weights, tmp_path):
    rgb = photo()
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    out = pyramidal.restore(tmp_path / "photo.png", weights=weights, **FAST)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), reference(weights, rgb))
    out = pyramidal.restore(str(tmp_path / "photo.png"), weights=weights, **FAST)  # str paths too
    assert out.size == (rgb.shape[1], rgb.shape[0])
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert pyramidal.restore(tmp_path / "deep.png", weights=weights, **FAST).mode == "I;16"


def test_weights_load_once_and_stay_cached(weights, monkeypatch):
    import pyramidal.inference.model

    loads = []
    real = pyramidal.inference.model.load_weights  # what load_restorer reads a file with
    monkeypatch.setattr(pyramidal.inference.model, "load_weights", lambda *a, **k: loads.append(a) or real(*a, **k))
    rgb = photo()
    first = pyramidal.restore(rgb, weights=weights, **FAST)
    second = pyramidal.restore(rgb, weights=weights, tile=16, overlap=4, **FAST)
    pyramidal.restore(Image.fromarray(rgb), weights=str(weights), **FAST)
    assert len(loads) == 1
    assert first.shape == second.shape
    pyramidal.restore(rgb, weights=weights, device="cpu", precision="bf16")  # another precision: another entry
    assert len(loads) == 2
    save_weights(create_model("basic21", channels=(4, 8, 8)).eval(), weights, {"task": "noise"})  # file changed
    pyramidal.restore(rgb, weights=weights, **FAST)
    assert len(loads) == 3


def test_builtin_weights_by_task():
    from pathlib import Path

    skimage_data = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
    rgb = np.asarray(Image.open(skimage_data / "astronaut.png").convert("RGB"))[100:196, 150:246]
    noisy = np.clip(rgb + np.random.default_rng(1).normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
    out = pyramidal.restore(noisy, task="noise", device="cpu")
    error = lambda a: np.abs(a.astype(float) - rgb).mean()  # noqa: E731
    assert error(out) < error(noisy)


def test_options_pass_through(weights):
    rgb = photo(70, 90)
    kept = pyramidal.restore(rgb, weights=weights, strength=0.0, **FAST)
    assert np.abs(kept.astype(int) - rgb).max() <= 1  # strength 0 keeps the input
    ensemble = pyramidal.restore(rgb, weights=weights, ensemble=True, tile=32, overlap=8, **FAST)
    assert ensemble.shape == rgb.shape
    with pytest.raises(PyramidalError, match="strength"):
        pyramidal.restore(rgb, weights=weights, strength=3.0, **FAST)
    with pytest.raises(TypeError, match="unexpected keyword"):
        pyramidal.restore(rgb, weights=weights, no_such_option=1, **FAST)


def test_bad_inputs_fail_clearly(weights, tmp_path):
    with pytest.raises(PyramidalError, match=r"\[0, 1\]"):
        pyramidal.restore(photo().astype(np.float32), weights=weights, **FAST)  # 0-255 floats
    with pytest.raises(PyramidalError, match="int32"):
        pyramidal.restore(photo().astype(np.int32), weights=weights, **FAST)
    with pytest.raises(PyramidalError, match="shape"):
        pyramidal.restore(np.zeros((4, 5, 6), np.uint8), weights=weights, **FAST)
    with pytest.raises(PyramidalError, match="missing.png"):
        pyramidal.restore(tmp_path / "missing.png", weights=weights, **FAST)
    with pytest.raises(TypeError, match="list"):
        pyramidal.restore([[1, 2]], weights=weights, **FAST)
    with pytest.raises(PyramidalError, match="no built-in weights for task 'gray'"):
        pyramidal.restore(photo(), task="gray", **FAST)


# --------------------------------------------------------------------------- timm-style models


def test_list_models_filters_with_a_pattern():
    names = pyramidal.list_models("pyramidal4*")
    assert names and all(n.startswith("pyramidal4") for n in names)
    assert set(pyramidal.list_models(["pyramidal4*", "basic*"])) >= set(names) | {"basic21"}
    assert pyramidal.list_models("nothing*") == []
    assert pyramidal.list_models() == sorted(pyramidal.MODELS.names())
    assert pyramidal.list_models(pretrained=True) == ["pyramidal23456"]


def test_list_pretrained_names_what_ships():
    shipped = pyramidal.list_pretrained()
    weight_files = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert "pyramidal23456.noise" in shipped and len(shipped) == len(weight_files) >= 8
    assert sorted(name.split(".", 1)[1] for name in shipped) == weight_files
    assert pyramidal.list_pretrained("*noise") == ["pyramidal23456.noise"]


@pytest.mark.parametrize("how", ["tagged", "task"])
def test_create_model_pretrained_builtin(how):
    model = (pyramidal.create_model("pyramidal23456.jpeg", pretrained=True) if how == "tagged"
             else pyramidal.create_model("pyramidal23456", pretrained="jpeg"))
    assert model.info["task"] == "jpeg" and not model.training
    reference_model = load_restorer("builtin", "jpeg")
    for a, b in zip(model.state_dict().values(), reference_model.state_dict().values()):
        assert torch.equal(a, b)


def test_create_model_pretrained_from_a_file_and_a_folder(tmp_path, weights):
    model = pyramidal.create_model("basic21", pretrained=weights)
    assert model.info["task"] == "noise"
    folder = save_pretrained(model, tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    again = pyramidal.create_model("basic21", pretrained=folder)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_create_model_pretrained_errors(weights):
    with pytest.raises(PyramidalError, match="several tasks"):
        pyramidal.create_model("pyramidal23456", pretrained=True)
    with pytest.raises(PyramidalError, match="no built-in weights for basic21"):
        pyramidal.create_model("basic21", pretrained=True)
    with pytest.raises(PyramidalError, match="for basic21, not pyramidal51"):
        pyramidal.create_model("pyramidal51", pretrained=weights)
    with pytest.raises(PyramidalError, match="neither a built-in task"):
        pyramidal.create_model("pyramidal51", pretrained="nothing")
    with pytest.raises(ValueError, match="unknown model 'pyramidl51'; choose one of"):
        pyramidal.create_model("pyramidl51", pretrained=True)
    fresh = pyramidal.create_model("pyramidal23456.noise")  # a tag without pretrained: the architecture only
    assert fresh.training and fresh.spec["model"] == "pyramidal23456"


# --------------------------------------------------------------------------- documentation


def test_every_public_name_is_documented_with_args_and_returns():
    for name in pyramidal.__all__:
        obj = getattr(pyramidal, name)
        if not callable(obj) or inspect.isclass(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        params = [p for p in inspect.signature(obj).parameters.values()]
        assert doc, f"pyramidal.{name} has no docstring"
        if params:
            assert "Args:" in doc and "Returns:" in doc, f"pyramidal.{name}: docstring lacks Args:/Returns:"
            for p in params:
                label = ("**" if p.kind is p.VAR_KEYWORD else "") + p.name
                assert label in doc, f"pyramidal.{name}: argument {label} is not described"
        hints = inspect.get_annotations(obj, eval_str=False)
        assert "return" in hints, f"pyramidal.{name} has no return type hint"


def test_the_package_ships_a_typing_marker():
    from pathlib import Path

    assert Path(pyramidal.__path__[0], "py.typed").is_file()


def _layouts() -> dict[str, np.ndarray]:
    base = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    read_only = base.copy()
    read_only.flags.writeable = False
    return {
        "negative strides": base[::-1, ::-1], "bgr view": base[..., ::-1], "fortran": np.asfortranarray(base),
        "slice": base[2:15:2, 1::3], "read-only": read_only, "broadcast": np.broadcast_to(base[:1], (20, 24, 3)),
        "gray view": base[..., 1], "gray column view": base[:, ::-2, 0], "rgba": np.dstack([base, base[..., 0]]),
        "uint16 big-endian": (base.astype(">u2") * 257), "float32": base.astype(np.float32) / 255,
        "float64 transposed": (base / 255.0).transpose(1, 0, 2), "float16": (base / 255).astype(np.float16),
        "float big-endian": (base / 255.0).astype(">f8"), "1x1": base[:1, :1], "one row": base[:1],
        "memmap-like": np.lib.stride_tricks.as_strided(base, (10, 12, 3), (base.strides[0] * 2,
                                                                          base.strides[1] * 2, 1)),
    }


@pytest.mark.parametrize("name", sorted(_layouts()))
def test_the_api_takes_any_array_layout(name, weights):
    arr = _layouts()[name]
    out = pyramidal.restore(arr, task="noise", weights=weights, device="cpu", precision="fp32", tile=16)
    assert out.shape == arr.shape and out.dtype == arr.dtype


@pytest.mark.parametrize("arr", [
    np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8), np.zeros((0, 0, 3), np.float32),
    np.zeros((3, 20, 24), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), np.zeros((8, 8, 5), np.uint8),
    np.zeros((8, 8, 3), bool), np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.complex64),
    np.zeros((8, 8, 3), object), np.zeros((8, 8), dtype=[("a", "u1")]), np.zeros((), np.uint8),
], ids=["empty rows", "empty columns", "empty float", "channels first", "batch", "five channels", "bool", "int32",
        "complex", "object", "structured", "scalar"])
def test_the_api_refuses_other_arrays_with_a_pyramidal_error(arr, weights):
    with pytest.raises(PyramidalError):
        pyramidal.restore(arr, task="noise", weights=weights, device="cpu", precision="fp32")
