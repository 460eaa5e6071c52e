#!/usr/bin/env python
"""Print the README's table of built-in weight scores against the quality targets (from the sidecars)."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "pyramidal" / "weights"
# (task, setting label, margin over the best classical baseline that the target asks for)
TARGETS = [
    ("noise", "sigma=50", 0.3), ("noise", "sigma=125", 0.5), ("pixelate", "", 1.0), ("blur", "", 3.0),
    ("jpeg", "quality=10", 1.0), ("squares", "", 0.0), ("block", "", 0.5), ("grid", "", 0.5),
]
# Which classical row each target is measured against (issue 6).
AGAINST = {"noise": "BM3D", "pixelate": "bicubic|Lanczos", "blur": "damaged input", "jpeg": "damaged input",
           "squares": "Navier", "block": "Navier", "grid": "Navier"}


def reference(task: str, scores: dict) -> tuple[str, float]:
    rows = scores["all"]
    if task in ("blur", "jpeg"):
        return "damaged input", rows["damaged input"]
    keys = [k for k in rows if any(part in k for part in AGAINST[task].split("|")) and rows[k] is not None]
    best = max(keys, key=lambda k: rows[k])
    return best, rows[best]


def main() -> None:
    print("| task | setting | damaged | target | ours (PSNR dB) | ours SSIM | reached? |")
    print("|---|---|---:|---|---:|---:|---|")
    for task, label, margin in TARGETS:
        side = WEIGHTS / f"{task}.json"
        if not side.exists():
            print(f"| {task} | {label} | | | not trained | | |")
            continue
        info = json.loads(side.read_text())
        score = next(s for s in info["scores"] if s["setting"] == label)
        name, ref = reference(task, score)
        goal = ref + margin
        ours = score["ours_psnr"]
        verdict = f"yes (+{ours - goal:.2f})" if ours >= goal else f"no ({ours - goal:+.2f})"
        print(f"| {task} | {label or '–'} | {score['damaged_psnr']:.2f} | {name} {ref:.2f} + {margin:g} = "
              f"{goal:.2f} | **{ours:.2f}** | {score['ours_ssim']:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
