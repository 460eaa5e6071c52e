#!/usr/bin/env python
"""Print the results page's table of built-in weight scores against the quality targets (from the sidecars)."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "pyramidal" / "weights"
# (weights, setting label, the classical row the target is measured against, margin in dB; None: reported only).
# The quality issue's targets, and the inpainting issue's for the hole tasks and the mask-given `inpaint` model.
TARGETS = [
    ("noise", "sigma=15", "BM3D", None), ("noise", "sigma=25", "BM3D", 0.3), ("noise", "sigma=50", "BM3D", 0.3),
    ("noise", "sigma=125", "BM3D", 2.0), ("pixelate", "", "Lanczos", 1.5), ("blur", "", "Wiener", 0.5),
    ("jpeg", "quality=10", "damaged input", 1.5), ("squares", "", "Navier", 0.0), ("block", "", "Navier", 0.0),
    ("grid", "", "Navier", 0.0), ("inpaint", "task=squares", "Navier", 1.0), ("inpaint", "task=block", "Navier", 1.0),
    ("inpaint", "task=grid", "Navier", 1.0), ("inpaint", "task=strokes", "best classical", 1.0),
]


def reference(against: str, scores: dict) -> tuple[str, float]:
    """The row a target is measured against: the named one, or the best classical row."""
    rows = {k: v for k, v in scores["all"].items() if v is not None}
    if against == "best classical":
        rows = {k: v for k, v in rows.items() if k != "damaged input" and not k.startswith("model ")}
        best = max(rows, key=rows.get)
        return best, rows[best]
    name = next(k for k in rows if against in k)
    return name, rows[name]


def main() -> None:
    print("| task | setting | damaged | target | ours (PSNR dB) | ours SSIM | reached? |")
    print("|---|---|---:|---|---:|---:|---|")
    for task, label, against, margin in TARGETS:
        side = WEIGHTS / f"{task}.json"
        score = next((s for s in json.loads(side.read_text())["scores"] if s["setting"] == label), None) \
            if side.exists() else None
        if score is None:
            print(f"| {task} | {label or '–'} | | | not scored | | |")
            continue
        name, ref = reference(against, score)
        ours = score["ours_psnr"]
        if margin is None:
            target, verdict = f"(reported only; {name} {ref:.2f})", "–"
        else:
            goal = ref + margin
            target = f"{name} {ref:.2f} + {margin:g} = {goal:.2f}"
            verdict = f"yes (+{ours - goal:.2f})" if ours >= goal else f"no ({ours - goal:+.2f})"
        print(f"| {task} | {label or '–'} | {score['damaged_psnr']:.2f} | {target} | **{ours:.2f}** | "
              f"{score['ours_ssim']:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
