"""ONNX export with dynamic batch, height and width (needs the optional `onnx` extra to write the file)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.errors import PyramidalError, option_wording
from pyramidal.inference.model import prepare_for_inference
from pyramidal.io import atomic_write
from pyramidal.models.conditions import conditions_of
from pyramidal.onnx_backend import onnx_restore_fn

DEFAULT_OPSET = 18


class ExportableModel(nn.Module):
    """The model's forward with shape-generic padding, so that the exported graph pads any H×W.

    `PaddedModel.forward` branches in Python on the pad amounts (skip when zero, reflect or replicate),
    which an exporter would freeze to the example size. Here the pad is always applied (a zero pad is a
    no-op) with reflection, the mode the model uses whenever the image side is at least 2**levels.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.multiple = 2 ** int(getattr(model, "levels", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiple == 1 or not hasattr(self.model, "body"):
            return self.model(x)
        h, w = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (self.multiple - h % self.multiple) % self.multiple, (self.multiple - w % self.multiple) % self.multiple
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.model.body(padded)[..., :h, :w]


def min_side(model: nn.Module) -> int:
    """The smallest H or W the exported model accepts (reflection needs the pad smaller than the side)."""
    return 2 ** int(getattr(model, "levels", 0))


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PyramidalError(f"ONNX export needs the '{module}' package: pip install 'pyramidal[onnx]'")


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET, example_size: int = 64,
                metadata: dict | None = None, exclusive: bool = False) -> Path:
    """Write `model` (fp32, eval) as ONNX with dynamic batch, H and W; returns the path. `exclusive`: only if
    no file is at `path` when the export is done (`io.atomic_write`).

    Input `image` and output `restored` are float32 B×3×H×W in [-1, 1]; H and W must be at least
    `min_side(model)` (32 for five-level pyramids). The file's metadata holds `pyramidal` (JSON: the model
    spec, `min_side` and `metadata`).
    """
    conditions = conditions_of(model)
    if conditions.mask_input:
        # The ONNX runner feeds 3-channel images: a mask-conditioned model needs its mask channel built first.
        raise PyramidalError(*option_wording("ONNX export takes blind models only; this one is mask-conditioned "
                                             "(mask_input), run it with the torch backend and {mask}", "mask"))
    if conditions.find_holes != "none" or conditions.hole_fill != "grey":
        # Finding and filling holes takes steps that depend on the pixels and on the image size (the fill's
        # pyramid depth), which a traced graph would freeze at the example's.
        raise PyramidalError("ONNX export takes models without hole finding or filling; this one has "
                             f"find_holes={conditions.find_holes}, hole_fill={conditions.hole_fill}: run it with "
                             "the torch backend")
    if conditions.noise_map:
        raise PyramidalError(*option_wording("ONNX export takes blind models only; this one takes the noise level "
                                             "(noise_map), run it with the torch backend and {sigma}", "sigma"))
    _require("onnx")
    _require("onnxscript")
    path = Path(path)
    model = model.float().eval().to("cpu", memory_format=torch.contiguous_format)
    wrapper = ExportableModel(model).eval()
    side = max(example_size, 2 * min_side(model))
    example = torch.rand(1, 3, side, side + min_side(model) // 2 + 1) * 2 - 1  # unaligned W: padding traced
    dim = torch.export.Dim
    lo = min_side(model)
    dynamic = {"x": {0: dim("batch", min=1, max=4096), 2: dim("height", min=lo, max=65536),
                     3: dim("width", min=lo, max=65536)}}

    info = {**getattr(model, "spec", {}), "min_side": lo, **(metadata or {})}

    def write(tmp: str) -> None:
        import onnx

        onnx_log = logging.getLogger("torch.onnx")
        level = onnx_log.level
        onnx_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" is noise here
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    wrapper, (example,), None, input_names=["image"], output_names=["restored"],
                    opset_version=opset, dynamic_shapes=dynamic, dynamo=True, verbose=False)
        finally:
            onnx_log.setLevel(level)
        if program is None:  # pragma: no cover - older exporters write directly
            raise PyramidalError("this torch's ONNX exporter returned no program")
        proto = program.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = "pyramidal", json.dumps(info)
        onnx.save_model(proto, tmp)

    try:
        atomic_write(path, write, exclusive=exclusive)
    except (PyramidalError, OSError):
        raise
    except Exception as exc:  # the exporter raises many types; say which model and why in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PyramidalError(f"{path}: ONNX export failed ({type(exc).__name__}: {first})") from exc
    return path


def check_onnx(model: nn.Module, path: str | os.PathLike, sizes: tuple[tuple[int, int], ...] | None = None,
               tolerance: float = 1e-3, seed: int = 0) -> dict[tuple[int, int], float]:
    """Max |onnxruntime − torch| at two image sizes (one needing padding); PyramidalError above `tolerance`.

    The torch side is what `restore` runs: the model through `prepare_for_inference` on the CPU in fp32.
    """
    lo = min_side(model)
    sizes = sizes or ((max(64, 2 * lo), max(64, 2 * lo)), (max(48, lo) + 3, max(80, 2 * lo) + 7))
    run = onnx_restore_fn(path)
    gen = torch.Generator().manual_seed(seed)
    model = prepare_for_inference(model.float(), "cpu", "fp32")
    diffs = {}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen) * 2 - 1
        expected = model(x)
        diffs[(h, w)] = float((run(x) - expected).abs().max())
        if diffs[(h, w)] > tolerance:
            raise PyramidalError(f"{path}: onnxruntime output differs from torch by {diffs[(h, w)]:.2e} at {h}×{w} "
                                 f"(tolerance {tolerance})")
    return diffs
