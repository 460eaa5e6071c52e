"""`pyramidal demo`: the whole system on a CPU in minutes — restore with built-in weights, then train."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pyramidal.config import TrainConfig
from pyramidal.damage import TASKS
from pyramidal.errors import PyramidalError
from pyramidal.evaluate import evaluate, per_image_psnr
from pyramidal.figures import comparison_figure
from pyramidal.hub import available_builtin_weights
from pyramidal.io import write_text
from pyramidal.train import train


@dataclass
class DemoRow:
    task: str
    setting: str
    images: int
    damaged: float
    classical: float | None
    classical_name: str
    ours: float
    figure: Path


def restore_section(out: Path, tasks: list[str], limit: int, baselines: str, say=print) -> list[DemoRow]:
    """Restore built-in validation photos for each task; one figure per task: truth / damaged / classical / ours."""
    rows = []
    for task in tasks:
        # One evaluation setting per task keeps the demo short; `pyramidal evaluate` reports all of them.
        options = dict(TASKS.get(task).headline_setting)
        start = time.perf_counter()
        # One centre crop per validation photograph: a portrait, fur and a still life, not three
        # neighbouring crops of one photo.
        result = evaluate("builtin", task, "builtin", crops=1, limit=limit, settings=[options],
                          baselines=baselines, device="cpu", keep_images=True)
        setting, images = result["settings"][0], result["images"][0]
        by_kind = {r["kind"]: r for r in setting["rows"]}
        classical = [r for r in setting["rows"] if r["kind"] == "baseline" and r["psnr"] is not None]
        best = max(classical, key=lambda r: r["psnr"], default=None)
        ours = by_kind["model"]
        columns = [("damaged", images["damaged"], per_image_psnr(by_kind["input"]))]
        if best is not None:
            columns.append(("classical", images[best["method"]], per_image_psnr(best)))
        columns.append(("ours", images[ours["method"]], per_image_psnr(ours)))
        label = f"{task} {setting['label']}".strip()
        classical_note = f"\nclassical = {best['method']}" if best else ""
        figure = comparison_figure(out / f"{task}.png", images["clean"], columns, rows=3,
                                   title=f"{label}: built-in validation photos, PSNR under each tile{classical_note}")
        row = DemoRow(task, setting["label"], len(images["clean"]), by_kind["input"]["psnr"],
                      best["psnr"] if best else None, best["method"] if best else "-", ours["psnr"], figure)
        rows.append(row)
        classical_text = f"{row.classical:6.2f} ({row.classical_name})" if best else "     - "
        say(f"  {label:<16} damaged {row.damaged:6.2f}   classical {classical_text}   ours {row.ours:6.2f} dB"
            f"   [{time.perf_counter() - start:4.1f} s]")
    return rows


def format_table(rows: list[DemoRow]) -> str:
    lines = ["| task | images | damaged | best classical | ours |", "|---|---|---|---|---|"]
    for r in rows:
        classical = f"{r.classical:.2f} ({r.classical_name})" if r.classical is not None else "–"
        lines.append(f"| {r.task} {r.setting} | {r.images} | {r.damaged:.2f} | {classical} | **{r.ours:.2f}** |")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", quick: bool = False, train_minutes: float = 2.0,
             tasks: list[str] | None = None, say=print) -> dict:
    """Restore with every built-in weight file, print a PSNR table and figures, then train a small model."""
    out = Path(out)
    available = available_builtin_weights()
    if not available:
        raise PyramidalError("no built-in weights are installed in this copy of pyramidal")
    tasks = tasks or available
    missing = sorted(set(tasks) - set(available))
    if missing:
        raise PyramidalError(f"no built-in weights for {', '.join(missing)}; available: {', '.join(available)}")

    say(f"1/2  Restoring built-in validation photographs with the built-in weights ({len(tasks)} tasks)")
    say("     PSNR in dB on 8-bit RGB (scikit-image), mean over the images shown in each figure")
    rows = restore_section(out, tasks, limit=1 if quick else 3, baselines="fast" if quick else "all", say=say)
    table = format_table(rows)
    write_text(table + "\n", out / "restore.md")
    say(f"     figures: {', '.join(str(r.figure) for r in rows)}")
    say(f"     table:   {out / 'restore.md'}")

    say("")
    say(f"2/2  Training a small pyramidal model (pyramidal51, squares) for about {train_minutes:g} minutes on the CPU")
    config = TrainConfig(
        task="squares", model="pyramidal51", data="builtin", size=32 if quick else 64,
        batch_size=4 if quick else 16, patches_per_epoch=16 if quick else 800, val_images=8 if quick else 48,
        lr=1e-3, schedule="cosine", warmup_steps=2 if quick else 30,
        steps=4 if quick else 900, max_minutes=None if quick else train_minutes,
        threads=1, out=str(out / "train"), log_every=2 if quick else 25, progress=None, seed=0,
    )
    run_dir = train(config)
    psnr_curve = _val_curve(run_dir / "metrics.csv")
    if psnr_curve:
        say("     PSNR/val (dB) by step: " + "  ".join(f"{s}: {p:.2f}" for s, p in psnr_curve))
    say(f"     run folder: {run_dir}")
    say(f"     watch it:   tensorboard --logdir {out / 'train'}   (then open http://localhost:6006)")
    return {"rows": rows, "table": table, "run_dir": run_dir, "val_curve": psnr_curve}


def _val_curve(metrics: Path) -> list[tuple[int, float]]:
    import csv

    if not metrics.exists():
        return []
    with open(metrics, newline="") as fh:
        return [(int(r["step"]), float(r["PSNR/val"])) for r in csv.DictReader(fh) if r.get("PSNR/val")]
