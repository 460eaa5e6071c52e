"""The one conversion between stored pixels and the models' range, for the whole package.

Images are stored as 8-bit (0-255), 16-bit (0-65535) or floats in [0, 1]; the models take and give floats in
[-1, 1], 3×H×W. `to_model_range` takes pixels in any of those types and the layouts H×W×3 (PIL, numpy),
3×H×W (torch) or H×W (gray); `from_model_range` gives a model's output back in the type and layout of the
pixels it came from. For batches already in torch's layout (training, damage, colour keys):
`eight_bit_to_model` and `model_to_eight_bit` convert 8-bit tensors of any shape, and `model_to_eight_bit_grid`
gives the rounded 8-bit values unclipped, as floats.
"""

from __future__ import annotations

import numpy as np
import torch

from pyramidal.errors import PyramidalError

# Half the value range of each integer pixel type: v / half - 1 maps [0, max] onto the models' [-1, 1].
_EIGHT_BIT_HALF = 127.5
_HALF_RANGE = {np.dtype(np.uint8): _EIGHT_BIT_HALF, np.dtype(np.uint16): 32767.5}
_FLOAT_HALF = 0.5  # floats in [0, 1]


def _to_model(x: torch.Tensor, half: float) -> torch.Tensor:
    """In place: [0, 2·half] -> [-1, 1]."""
    return x.div_(half).sub_(1.0)


def _from_model(y: torch.Tensor, half: float) -> torch.Tensor:
    """A float32 copy of `y` in [-1, 1] scaled to [0, 2·half], neither rounded nor clipped."""
    return y.detach().float().add(1.0).mul_(half)


def eight_bit_to_model(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """8-bit values (0-255) -> the models' [-1, 1] as `dtype`, for a tensor of any shape on any device.

    `images`: uint8, or floats holding 8-bit values. A tensor that already has `dtype` is converted in place
    and returned (the batches of `gpudata` and `data.loader` rely on it: no second copy); any other is copied.
    """
    return _to_model(images.to(dtype), _EIGHT_BIT_HALF)


def model_to_eight_bit_grid(images: torch.Tensor) -> torch.Tensor:
    """The models' [-1, 1] -> float32 8-bit values, rounded but not clipped (a value out of range stays out)."""
    return _from_model(images, _EIGHT_BIT_HALF).round_()


def model_to_eight_bit(images: torch.Tensor) -> torch.Tensor:
    """The models' [-1, 1] -> uint8 0-255, rounded and clipped, for a tensor of any shape; `images` is unchanged."""
    return model_to_eight_bit_grid(images).clamp_(0, 255).to(torch.uint8)


def _half_range(dtype: np.dtype) -> float:
    if dtype in _HALF_RANGE:
        return _HALF_RANGE[dtype]
    if np.issubdtype(dtype, np.floating):
        return _FLOAT_HALF
    raise PyramidalError(f"pixels of type {dtype}: expected uint8, uint16 or floats in [0, 1]")


def _numpy_dtype(pixels: np.ndarray | torch.Tensor) -> np.dtype:
    if isinstance(pixels, torch.Tensor):
        if pixels.dtype == torch.uint8:
            return np.dtype(np.uint8)
        if pixels.is_floating_point():
            return np.dtype(np.float32)
        raise PyramidalError(f"pixels of type {pixels.dtype}: expected uint8 or floats in [0, 1]")
    return np.asarray(pixels).dtype


def _is_hwc(pixels: np.ndarray | torch.Tensor) -> bool:
    """H×W×3 or H×W (a numpy array as PIL lays it out); a torch tensor is 3×H×W or H×W, and comes back so."""
    return not isinstance(pixels, torch.Tensor) and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3))


def to_model_range(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pixels as the models take them.

    Args:
        pixels: uint8 (0-255), uint16 (0-65535) or floats in [0, 1]; a numpy H×W×3, 3×H×W or H×W array (any
            memory layout: views, negative strides, read-only), or a torch 3×H×W or H×W tensor (uint8 or
            floats). Never changed.

    Returns:
        float32 3×H×W tensor in [-1, 1] on the CPU; gray pixels are repeated into three channels.

    Raises:
        PyramidalError: another pixel type, another shape, or an empty image.
    """
    arr = pixels.detach().cpu() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    half = _half_range(_numpy_dtype(arr))
    hwc = _is_hwc(arr)
    if not (arr.ndim == 2 or hwc or (arr.ndim == 3 and arr.shape[0] == 3)):
        raise PyramidalError(f"expected H×W×3, 3×H×W or H×W pixels, got shape {tuple(arr.shape)}")
    h, w = (arr.shape[:2] if hwc else arr.shape[-2:])
    if h == 0 or w == 0:
        raise PyramidalError(f"an empty image ({w}×{h} px): nothing to restore")
    if isinstance(arr, torch.Tensor):
        x = arr.to(torch.float32, copy=True)
    elif arr.dtype == np.uint8:  # one float copy of a large photo, not two
        x = torch.from_numpy(arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr, order="C"))
        x = x.float()
    else:
        x = torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))
    x = _to_model(x, half).clamp_(-1, 1)  # in place: the copy above is the only one
    if x.ndim == 2:
        return x[None].expand(3, -1, -1).contiguous()
    return x.permute(2, 0, 1) if hwc else x


def from_model_range(y: torch.Tensor, like: np.ndarray | torch.Tensor | np.dtype | type) -> np.ndarray | torch.Tensor:
    """A model's output as pixels of the type and layout of `like`.

    Args:
        y: 3×H×W float tensor in [-1, 1] (any device).
        like: the pixels `y` came from (`to_model_range`'s input): a numpy array comes back as a numpy array
            of its dtype, H×W×3 when it was H×W×3 or H×W, else 3×H×W; a torch tensor as a 3×H×W tensor of
            its dtype. A dtype (uint8, uint16, a float type) stands for an H×W×3 array of that type.

    Returns:
        The pixels, C-contiguous; integers rounded and clipped to their type's range, floats clipped to [0, 1].
    """
    tensor = isinstance(like, torch.Tensor)
    if tensor or isinstance(like, np.ndarray):
        dtype, hwc = _numpy_dtype(like), _is_hwc(like)
    else:
        dtype, hwc = np.dtype(like), True
    half = _half_range(dtype)
    out = _from_model(y.detach().cpu(), half)
    out = out.round_().clamp_(0, 2 * half) if dtype in _HALF_RANGE else out.clamp_(0, 1)
    if hwc:
        out = out.permute(1, 2, 0)
    if tensor:
        return out.to(like.dtype).contiguous()
    if dtype == np.uint8:
        return out.to(torch.uint8).contiguous().numpy()
    return out.contiguous().numpy().astype(dtype)
