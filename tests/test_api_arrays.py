"""`pyramidal.restore` takes any NumPy array layout and refuses other arrays with a PyramidalError (to merge into
test_api.py)."""

from __future__ import annotations

import numpy as np
import pytest

import pyramidal
from pyramidal.errors import PyramidalError


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
