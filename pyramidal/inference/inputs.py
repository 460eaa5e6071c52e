"""What a model takes beside the image: the holes to fill (masks, the magenta key) and the noise σ."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pyramidal.damage import TASKS
from pyramidal.errors import PyramidalError, option_error
from pyramidal.inference.model import unwrapped
from pyramidal.models.blocks import MAGENTA_TOLERANCE, magenta_holes
from pyramidal.models.conditions import Conditions, conditions_of, model_input
from pyramidal.pixels import eight_bit_to_model

# `mask="auto"` finds the holes by the research's colour key, as a model built with find_holes=magenta does
# (`models.blocks.magenta_holes`: exact magenta, or near it and smeared by a lossy file).
# What a model that must be given its holes or σ says without them: for Python callers, and as the command
# line words it (an error's `flags`).
_MASK_CONDITIONED = ("is mask-conditioned (built with mask_input=true): it fills the holes it is shown and cannot "
                     "find them itself; give them with ")
NEEDS_MASK = _MASK_CONDITIONED + "mask= (arrays or files) or mask='auto' (holes painted magenta)"
NEEDS_MASK_FLAGS = _MASK_CONDITIONED + "--mask FILE, --mask FOLDER or --mask auto (mask= in Python)"


def magenta_mask(rgb: np.ndarray, tolerance: int | None = None) -> np.ndarray:
    """H×W bool: the holes of an H×W×3 uint8 image painted in the colour key, magenta (255, 0, 255)."""
    px = eight_bit_to_model(torch.tensor(np.asarray(rgb)[..., :3]).permute(2, 0, 1)[None])
    return magenta_holes(px, MAGENTA_TOLERANCE if tolerance is None else tolerance)[0, 0].numpy()


def auto_mask(rgb: np.ndarray, source: str = "mask auto") -> np.ndarray:
    """`mask="auto"`: the magenta holes of H×W×3 uint8 pixels; PyramidalError naming `source` when there are none."""
    found = magenta_mask(rgb)
    if not found.any():
        raise PyramidalError(f"{source}: no magenta (255, 0, 255) pixels found; paint the holes magenta or give "
                             "a mask image")
    return found


def check_mask(mask: np.ndarray | torch.Tensor, size: tuple[int, int], source: str = "mask") -> torch.Tensor:
    """A mask of holes as a bool H×W tensor (non-zero = hole), checked against the image's (H, W).

    Raises PyramidalError, one line starting with `source`: not H×W, another size, no hole, nothing known.
    """
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.array(mask))
    while m.ndim > 2 and (m.shape[0] == 1 or m.shape[-1] == 1):  # 1×H×W, H×W×1, 1×1×H×W
        m = m[0] if m.shape[0] == 1 else m[..., 0]
    if m.ndim != 2:
        raise PyramidalError(f"{source}: expected an H×W mask, got shape {tuple(m.shape)}")
    h, w = size
    if tuple(m.shape) != (h, w):
        raise PyramidalError(f"{source} is {m.shape[1]}×{m.shape[0]} px but the image is {w}×{h} px; "
                             "a mask must have its image's size")
    m = m != 0
    if not m.any():
        raise PyramidalError(f"{source} marks no hole (every pixel is zero): nothing to fill")
    if m.all():
        raise PyramidalError(f"{source} marks every pixel as a hole: nothing known to fill them from")
    return m


def model_conditions(model: Callable) -> Conditions:
    """What `model` (a model, a prepared one, or an ONNX runner, which takes the image alone) takes besides the
    image (`models.conditions.Conditions`)."""
    return conditions_of(unwrapped(model))


def needs_mask(model: Callable) -> bool:
    """True for a mask-conditioned model (built with `mask_input=True`): it must be given the holes."""
    return model_conditions(model).mask_input


_NOISE_MAP = ("takes the noise level as an input (built with noise_map=true): give the images' noise σ on the "
              "0-255 scale with ")
NEEDS_SIGMA = _NOISE_MAP + "sigma=S"
NEEDS_SIGMA_FLAGS = _NOISE_MAP + "--sigma S (sigma= in Python)"


def needs_noise_level(model: Callable) -> bool:
    """True for a noise-map model (built with `noise_map=True`): it must be given the noise σ."""
    return model_conditions(model).noise_map


def check_sigma(model: Callable, sigma: float | None) -> None:
    """PyramidalError naming sigma unless `sigma` (a RestoreOptions' σ, validated there) suits `model`: needed by
    a noise-map model, refused by others."""
    if needs_noise_level(model):
        if sigma is None:
            raise PyramidalError("this model " + NEEDS_SIGMA, "this model " + NEEDS_SIGMA_FLAGS)
    elif sigma is not None:
        raise option_error("{sigma}: this model has no noise-level input (it was not built with noise_map=true); "
                           "leave it out, or apply less or more of the model's change with strength", sigma=sigma)


def hole_colour(model: Callable) -> tuple[int, int, int] | None:
    """The colour the task in the model's weights record painted holes with (magenta for the hole tasks);
    None when the task keeps its own pixels there (text) or the model has no record."""
    task = (getattr(unwrapped(model), "info", None) or {}).get("task")
    return getattr(TASKS.get(task), "hole_colour", None) if task in TASKS.names() else None


def restore_input(model: Callable, image: torch.Tensor, mask: torch.Tensor | None,
                  sigma: float | None = None) -> torch.Tensor:
    """What `model` is run on for a C×H×W image in [-1, 1], its H×W hole mask (or None) and its noise σ (or None):
    `models.conditions.model_input` for the model's conditions, once `sigma` and `mask` are checked.

    A mask-conditioned model gets the mask as a fourth channel with the holes made neutral; a blind model
    sees the holes painted as its training task painted them (magenta), since that is how it finds them. A
    noise-map model gets σ/255 as a fourth channel (`check_sigma`).
    """
    check_sigma(model, sigma)
    if mask is None and needs_mask(model):
        raise PyramidalError("this model " + NEEDS_MASK, "this model " + NEEDS_MASK_FLAGS)
    return model_input(model_conditions(model), image[None], None if mask is None else mask[None, None],
                       None if sigma is None else float(sigma), hole_colour=hole_colour(model))[0]
