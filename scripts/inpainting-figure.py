#!/usr/bin/env python
"""Draw docs/images/inpainting-mask.png: a user's mask of black scratches on a photograph, filled by `restore --mask`.

The photograph is scikit-image's `chelsea` (a built-in validation photograph, never trained on); the mask is
free-form brush strokes from the `strokes` task (one 128-px tile at a time), drawn in black, not magenta, as a real scratch would be.
It uses the built-in `inpaint` weights when this copy of pyramidal has them, else the blind `squares` weights,
which `restore --mask` composites: the hole painted magenta (as that model was trained), its prediction kept
inside the mask, every other pixel kept exactly. The classical biharmonic fill is shown for comparison.

Usage: scripts/inpainting-figure.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    import torch
    from skimage import data

    from pyramidal.baselines import Context, biharmonic_inpaint
    from pyramidal.damage import create_task
    from pyramidal.figures import image_grid
    from pyramidal.hub import available_builtin_weights
    from pyramidal.inference import restore_image
    from pyramidal.inference.model import load_restorer
    from pyramidal.metrics import hole_scores
    from pyramidal.options import RestoreOptions

    torch.manual_seed(0)
    photo = np.ascontiguousarray(data.chelsea()[22:278, 40:424])  # 256×384
    h, w = photo.shape[:2]
    # Strokes drawn one 128-px tile at a time: scratches over the whole photograph, 4-20 px wide.
    strokes = create_task("strokes")
    mask = np.block([[strokes.stroke_mask(128, 128, seed=3 * r + c) for c in range(w // 128)]
                     for r in range(h // 128)])
    damaged = photo.copy()
    damaged[mask] = 0  # black scratches

    task = "inpaint" if "inpaint" in available_builtin_weights() else "squares"
    model = load_restorer("builtin", task)
    restored = restore_image(model, damaged, mask=mask,
                             options=RestoreOptions(device="cpu", precision="fp32"))
    classical = biharmonic_inpaint(damaged, Context(None, photo, mask))
    assert np.array_equal(restored[~mask], damaged[~mask])

    def hole_psnr(image: np.ndarray) -> str:
        return f"hole PSNR {hole_scores(photo, image, mask)[0]:.2f} dB"

    shown = np.where(mask, 255, 0).astype(np.uint8)
    how = "built-in inpaint, mask given" if task == "inpaint" else "blind squares weights + mask"
    image_grid(
        [[damaged, np.dstack([shown] * 3), restored, classical, photo]],
        out,
        column_titles=["damaged (black scratches)", "user mask (white = hole)", f"restore --mask ({how})",
                       "biharmonic (same mask)", "original"],
        captions=[[hole_psnr(damaged), f"{mask.mean():.1%} of the pixels", hole_psnr(restored),
                   hole_psnr(classical), ""]],
        tile_inches=2.6,
    )
    print(f"wrote {out} ({task} weights; restored {hole_psnr(restored)}, biharmonic {hole_psnr(classical)})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "inpainting-mask.png")
