"""How to restore: one frozen `RestoreOptions`, its one set of defaults and its one check, free of torch so
that `--help` can show them.

Every face that restores (the `restore`, `evaluate`, `bench` and `serve` commands, `pyramidal.restore`, the
web page, `compare`) builds one RestoreOptions and passes it on; the library's restore functions take it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from pyramidal.device import check_precision
from pyramidal.errors import option_error

MASK_POLICIES = (None, "auto")
STRENGTH_RANGE = (0.0, 2.0)  # none of the model's change .. twice it


@dataclass(frozen=True)
class RestoreOptions:
    """How an image is restored; checked when built (`validate`), so that a RestoreOptions is always valid.

    Each field is written as a parameter (`tile=0`) in a Python error and as its flag (`--tile 0`) on the
    command line (`errors.option_error`).

    Attributes:
        tile: largest tile side in px; None or 0 runs the whole image at once. Tiles are spread evenly and
            made only as large as their count needs (`inference.tiling.tile_layout`). Measured on 2 cores,
            12 MP (docs/performance.md): 512-px tiles do 15 % less work than 256-px ones (less overlap), run as
            fast per pixel and score as well (closer to the whole image at once).
        overlap: px shared by neighbouring tiles, blended with raised-cosine weights; smaller than `tile`.
            None: 32, or half the tile for tiles under 64 px. Ignored for the whole image.
        batch_size: tiles per forward pass. On the CPU one pass per torch thread runs at once; one tile per
            pass keeps the peak RSS of a 12 MP restore near 1.2 GB.
        device: "auto" (CUDA, else MPS, else the CPU), "cpu", "cuda", "cuda:N", ..., a torch.device, or None
            for the model's own device.
        precision: "auto", "fp32", "bf16" or "fp16".
        ensemble: average the 8 flips and rotations (8× the time).
        strength: how much of the model's change to apply, output = input + strength · (model(input) − input),
            0 to 2; 1 is the model as trained, below 1 keeps more of the input (detail and noise), above 1
            smooths more.
        sigma: the images' noise σ on the 0-255 scale, for a noise-map model (built with `noise_map=True`),
            which needs it; refused for other models.
        mask: the mask policy: None (only the holes given with each image), or "auto": the holes are the
            pixels painted magenta (255, 0, 255) in each image (`inference.inputs.magenta_mask`).
    """

    tile: int | None = 512
    overlap: int | None = None
    batch_size: int = 1
    device: Any = "auto"
    precision: str = "auto"
    ensemble: bool = False
    strength: float = 1.0
    sigma: float | None = None
    mask: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RestoreOptions:
        """The one check of the restore options, before any model runs; returns the options.

        Raises:
            OptionError: naming the parameter (the CLI words it as the flag): a tile, overlap or batch size that
            is not a whole number, a negative tile or overlap, an overlap not smaller than the tile, a batch
            size under 1, a strength outside 0-2, a σ outside 0-255, an unknown precision or mask policy.
        """
        for name in ("tile", "overlap", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise option_error(f"{{{name}}}: must be a whole number", **{name: value})
        if self.batch_size < 1:
            raise option_error("{batch_size}: must be at least 1", batch_size=self.batch_size)
        if self.tile is not None and self.tile < 0:
            raise option_error("{tile}: must be 0 (the whole image at once) or a positive size in px", tile=self.tile)
        if self.overlap is not None and self.overlap < 0:
            raise option_error("{overlap}: must be 0 or more", overlap=self.overlap)
        if self.tile and self.overlap is not None and self.overlap >= self.tile:
            raise option_error("{overlap}: must be smaller than {tile}", overlap=self.overlap, tile=self.tile)
        if not isinstance(self.ensemble, bool):
            raise option_error("{ensemble}: must be True or False", ensemble=self.ensemble)
        if not _number(self.strength) or not STRENGTH_RANGE[0] <= self.strength <= STRENGTH_RANGE[1]:
            raise option_error("{strength}: must be between 0 and 2 (1 = the model as trained)",
                               strength=self.strength)
        if self.sigma is not None and (not _number(self.sigma) or not 0 <= self.sigma <= 255):
            raise option_error("{sigma}: must be a number from 0 to 255 (the noise σ on the 0-255 scale)",
                               sigma=self.sigma)
        if self.mask not in MASK_POLICIES:
            raise option_error("{mask}: the mask policy is None or 'auto' (holes painted magenta); give mask "
                               "arrays or files with each image", mask=self.mask)
        check_precision(self.precision)
        return self

    def tiling(self) -> tuple[int | None, int]:
        """(tile side or None for the whole image at once, overlap in px), the overlap's default filled in."""
        if not self.tile:
            return None, 0
        if self.overlap is None:
            return int(self.tile), min(DEFAULT_OVERLAP, int(self.tile) // 2)
        return int(self.tile), int(self.overlap)

    def replace(self, **changes: Any) -> RestoreOptions:
        """A copy with `changes` (checked again)."""
        return dataclasses.replace(self, **changes)


def _number(value: object) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# The overlap when none is given (at most half a tile).
DEFAULT_OVERLAP = 32
# Many images of one size (evaluate, `inference.restore_images`, the real-pairs and the web page's scores):
# crops up to 256 px go through whole, four to a forward pass; the published scores were measured so.
EVALUATION = RestoreOptions(tile=256, batch_size=4)
