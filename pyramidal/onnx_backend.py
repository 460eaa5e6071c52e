"""Run an exported model with onnxruntime (optional extra: pip install 'pyramidal[onnx]')."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pyramidal.errors import PyramidalError


def onnx_available() -> bool:
    """True if onnxruntime can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def read_onnx_info(session) -> dict:
    """The `pyramidal` metadata written by `export_onnx` ({} for foreign files)."""
    try:
        raw = session.get_modelmeta().custom_metadata_map.get("pyramidal")
        return json.loads(raw) if raw else {}
    except (ValueError, AttributeError):
        return {}


class OnnxRestorer:
    """Callable B×3×H×W float tensor in [-1, 1] → float32 B×3×H×W on the CPU, through onnxruntime."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise PyramidalError(f"{path}: no such ONNX file")
        if not onnx_available():
            raise PyramidalError(f"{path}: the ONNX backend needs onnxruntime: pip install 'pyramidal[onnx]'")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for broken files
            raise PyramidalError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise PyramidalError(f"{path}: expected a model with one image input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.path = path
        self.info = read_onnx_info(self.session)
        self.min_side = int(self.info.get("min_side", 1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise PyramidalError(f"{self.path}: expected a B×3×H×W batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = x.detach().to("cpu", torch.float32)
        pad_h, pad_w = (-h) % self.min_side, (-w) % self.min_side
        if pad_h >= h or pad_w >= w:
            # The exported graph reflect-pads, which needs the pad smaller than the side; the torch model
            # replicates the edges instead for such tiny images, so do exactly that here, then crop back.
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(out)[..., :h, :w]


def onnx_restore_fn(path: str | os.PathLike, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load an ONNX file written by `pyramidal export`; returns `fn(batch) -> restored batch` (see OnnxRestorer)."""
    return OnnxRestorer(path, threads)
