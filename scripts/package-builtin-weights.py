#!/usr/bin/env python
"""Package one training run as built-in weights: pyramidal/weights/TASK.safetensors (fp16) + TASK.json.

The sidecar records the model, the training config and command, the data, the steps, and the scores that
`pyramidal evaluate` measures on the built-in validation photographs against the best classical baseline.

Usage: scripts/package-builtin-weights.py TASK RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(task: str, run_dir: str) -> None:
    from pyramidal.checkpoint import load_weights, save_weights
    from pyramidal.evaluate import best_baseline, evaluate
    from pyramidal.models.summary import count_parameters

    run = Path(run_dir)
    model = load_weights(run / "best.safetensors")
    info = model.info
    config = json.loads((run / "config.json").read_text())
    out = ROOT / "pyramidal" / "weights" / f"{task}.safetensors"
    steps = info.get("step", info.get("steps"))
    # Later phases start from the previous phase's best weights: follow init_weights back to phase 1, adding
    # up the steps each phase's best weights had, and chain the commands in order.
    commands = [f"pyramidal train --config {config['config']}"]
    previous = config.get("init_weights")
    while previous:
        earlier = Path(previous).parent
        steps += json.loads(Path(previous).with_suffix(".json").read_text())["steps"]
        earlier_config = json.loads((earlier / "config.json").read_text())
        commands[0] += f" --init-weights <{earlier_config['config']} run>/best.safetensors"
        commands.insert(0, f"pyramidal train --config {earlier_config['config']}")
        previous = earlier_config.get("init_weights")
    command = " && ".join(commands)
    metadata = {
        "task": task,
        "task_options": info.get("task_options", {}),
        "parameters": count_parameters(model),
        "data": config["data"],
        "steps": steps,
        "val_psnr_64px": info.get("val_psnr"),
        "command": command,
        "config": {k: v for k, v in config.items() if v is not None},
        "dtype": "float16",
    }
    save_weights(model, out, metadata, half=True)
    # Score the packaged (fp16) file itself, exactly as a user would load it.
    result = evaluate(str(out), task, "builtin", baselines="all")
    scores = []
    for setting in result["settings"]:
        rows = setting["rows"]
        ours = next(r for r in rows if r["kind"] == "model")
        damaged = next(r for r in rows if r["kind"] == "input")
        best = best_baseline(rows)
        scores.append({
            "setting": setting["label"],
            "ours_psnr": round(ours["psnr"], 3),
            "ours_ssim": round(ours["ssim"], 4),
            "damaged_psnr": round(damaged["psnr"], 3),
            "baseline": best["method"],
            "baseline_psnr": round(best["psnr"], 3),
            "baseline_ssim": round(best["ssim"], 4),
            "all": {r["method"]: r["psnr"] and round(r["psnr"], 3) for r in rows},
        })
    metadata["scores"] = scores
    metadata["evaluated_on"] = result["described"]
    save_weights(model, out, metadata, half=True)
    print(f"{task}: {out} ({out.stat().st_size / 1e6:.2f} MB)")
    for s in scores:
        print(f"  {s['setting'] or '-':>12}  ours {s['ours_psnr']:.2f} dB  {s['baseline']} {s['baseline_psnr']:.2f} dB"
              f"  damaged {s['damaged_psnr']:.2f} dB")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
