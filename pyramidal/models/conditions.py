"""What a model takes besides the image, declared once.

`Conditions` describes it: the holes given as a mask channel, the holes found by the colour key, the noise σ as
a channel, and how the holes are filled before the first layer. Every model has its `conditions`, built from
its options by `Conditions.from_options`, which also gives a model's conditions from an options dict before the
model exists (the trainer) or from a weights record. `model_input` is the one place that builds the tensor a
model is run on from (image, mask, σ), for training and inference alike; `check_task` is the one check that a
damage task supplies what a model needs, for training and evaluation alike; `example_input` draws a random
input of the kind a model takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pyramidal.damage import MAGENTA, TASKS, Task
from pyramidal.errors import OptionError
from pyramidal.models.blocks import HOLE_FILLS, HOLE_FINDERS, mask_conditioned_input, noise_map_input
from pyramidal.pixels import eight_bit_to_model


@dataclass(frozen=True)
class Conditions:
    """What a model takes besides its B×3×H×W image; each field is a model option of the same name, stored with
    the weights. A blind model has the defaults (`BLIND`)."""

    # The holes are given: a mask channel after the colours (`blocks.mask_conditioned_input`, holes made grey).
    mask_input: bool = False
    # Blind, but it finds its holes by the colour key (HOLE_FINDERS: none, magenta; `blocks.magenta_holes`, in
    # the model's forward) and then runs as a mask-conditioned model on them, keeping every other pixel.
    find_holes: str = "none"
    # The noise σ is given: a σ/255 channel after the colours (`blocks.noise_map_input`), FFDNet-style.
    noise_map: bool = False
    # How a model that knows its holes (given or found) sees them (HOLE_FILLS): grey, as the mask input leaves
    # them, or smooth (`blocks.smooth_fill` before the first layer, in the model's forward).
    hole_fill: str = "grey"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_input", bool(self.mask_input))
        object.__setattr__(self, "noise_map", bool(self.noise_map))
        if self.find_holes not in HOLE_FINDERS:
            raise OptionError(f"find_holes {self.find_holes!r}: choose one of {', '.join(HOLE_FINDERS)}")
        if self.find_holes != "none" and self.mask_input:
            raise OptionError(f"find_holes={self.find_holes} finds the holes itself; mask_input=true is given "
                              "them: choose one")
        if self.hole_fill not in HOLE_FILLS:
            raise OptionError(f"hole_fill {self.hole_fill!r}: choose one of {', '.join(HOLE_FILLS)}")
        if self.hole_fill != "grey" and not self.mask_channel:
            raise OptionError(f"hole_fill={self.hole_fill} fills holes the model knows of; it needs mask_input=true "
                              "(given) or find_holes=magenta (found)")
        if self.mask_channel and self.noise_map:
            raise OptionError("noise_map and a mask channel (mask_input or find_holes): choose one extra input "
                              "channel, not both")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Conditions:
        """The conditions of a model built with `options` (its options dict, or its config's fields); the other
        options are left out, and a missing one is the blind default. OptionError for an impossible mix."""
        return cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})

    @property
    def mask_channel(self) -> bool:
        """True when the first layer sees a mask of holes after the colours: given (mask_input) or found."""
        return self.mask_input or self.find_holes != "none"

    @property
    def extra_channels(self) -> int:
        """How many channels the first layer sees after the image's own: the mask's and σ's."""
        return int(self.mask_channel) + int(self.noise_map)


BLIND = Conditions()


def conditions_of(model: Any) -> Conditions:
    """The conditions `model` declares; BLIND for a callable that declares none (an ONNX runner, a plain module)."""
    return getattr(model, "conditions", BLIND)


def model_input(conditions: Conditions, images: torch.Tensor, mask: torch.Tensor | None = None,
                sigma: torch.Tensor | float | None = None, *,
                hole_colour: tuple[int, int, int] | None = None) -> torch.Tensor:
    """What a model with `conditions` is run on, in training and inference alike.

    `images`: B×3×H×W in [-1, 1]; `mask`: B×1×H×W, true or 1 = hole, or None; `sigma`: each image's noise σ on
    the 0-255 scale (a B tensor, or one number for all), or None. A noise-map model gets σ/255 as a fourth
    channel; a mask-conditioned model gets the mask as a fourth channel with the holes made grey; any other
    model takes the image alone, with the holes of `mask` painted in `hole_colour` when one is given (as its
    task painted them in training, and as a find_holes model looks for them). OptionError when the model needs
    a mask or σ and none is given.
    """
    if conditions.noise_map:
        if sigma is None:
            raise OptionError("this model takes the noise level as an input (noise_map): give each image's σ")
        images = noise_map_input(images, sigma)
    if conditions.mask_input:
        if mask is None:
            raise OptionError("this model is mask-conditioned (mask_input): give the mask of its holes")
        return mask_conditioned_input(images, mask)
    if mask is None or hole_colour is None:
        return images
    fill = eight_bit_to_model(torch.tensor(hole_colour, dtype=images.dtype).view(1, 3, 1, 1), images.dtype)
    return torch.where(mask.to(images.device, torch.bool), fill.to(images.device), images)


def check_task(conditions: Conditions, task: Task, model: str | None = None) -> None:
    """OptionError, one line naming `model` when given, unless damage `task` supplies what a model with
    `conditions` needs: the mask of its holes (mask_input), holes painted in the colour key (find_holes),
    each image's σ (noise_map)."""
    who = f"{model}: " if model else ""

    def those(supplies) -> str:
        return ", ".join(n for n in TASKS.names() if supplies(TASKS.get(n)))

    if conditions.mask_input and not task.has_mask:
        raise OptionError(f"{who}mask_input: the model is mask-conditioned and task {task.name} makes no holes to "
                          f"give it; choose one that does ({those(lambda t: t.has_mask)})")
    if conditions.find_holes != "none" and task.hole_colour is None:
        raise OptionError(f"{who}find_holes={conditions.find_holes}: task {task.name} paints no holes in the colour "
                          f"key for the model to find; choose one that does "
                          f"({those(lambda t: t.hole_colour is not None)})")
    if conditions.noise_map and not task.has_noise_level:
        raise OptionError(f"{who}noise_map: task {task.name} has no noise level σ to give the model; choose one "
                          f"that does ({those(lambda t: t.has_noise_level)})")


def example_input(model: nn.Module, batch: int, height: int, width: int, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random input of the kind `model` takes, for timing and counting: images in [-1, 1], with a fifth of the
    pixels holes for a model that knows its holes (given as a mask channel, or painted magenta for find_holes),
    or σ = 25 for a noise-map model, through `model_input`."""
    conditions = conditions_of(model)
    images = torch.rand(batch, getattr(getattr(model, "config", None), "in_channels", 3), height, width,
                        generator=generator) * 2 - 1
    holes = torch.rand(batch, 1, height, width, generator=generator) < 0.2 if conditions.mask_channel else None
    return model_input(conditions, images, holes, 25.0 if conditions.noise_map else None, hole_colour=MAGENTA)
