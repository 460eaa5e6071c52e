"""Gradient-flow report: the gradient norm at every conv layer, in forward order, after a few training steps.

This makes the research's vanishing-gradient claim measurable: in a plain deep stack the gradient
reaching the first layers collapses, while dense connections and skips keep it alive.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyramidal.damage import create_task
from pyramidal.data.loader import make_loader
from pyramidal.data.sources import load_source
from pyramidal.device import resolve_device
from pyramidal.figures import line_plot
from pyramidal.io import atomic_write, write_json
from pyramidal.models import create_model
from pyramidal.models.conditions import example_input
from pyramidal.step import make_optimizer, train_step, training_conditions

CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def convs_in_forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Every conv layer of `model`, ordered by when it first runs in a forward pass of `example`."""
    names = {module: name for name, module in model.named_modules() if isinstance(module, CONV_TYPES)}
    order: list[nn.Module] = []
    seen: set[int] = set()

    def hook(module: nn.Module, *_: Any) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return [(names[m], m) for m in order]


def layer_gradients(layers: list[tuple[str, nn.Module]]) -> list[dict]:
    """Per conv layer: depth (1 = nearest the input), name, L2 norms of the weight gradient and the weight."""
    rows = []
    for depth, (name, module) in enumerate(layers, 1):
        grad = module.weight.grad
        g = float(grad.detach().float().norm()) if grad is not None else 0.0
        rows.append({
            "depth": depth,
            "layer": name,
            "kind": type(module).__name__,
            "grad_norm": g,
            "grad_rms": g / math.sqrt(module.weight.numel()),
            "weight_norm": float(module.weight.detach().float().norm()),
        })
    return rows


def measure_model(
    name: str,
    *,
    task: str = "squares",
    data: str = "builtin",
    steps: int = 3,
    size: int = 32,
    batch_size: int = 2,
    seed: int = 0,
    lr: float = 3e-4,
    weight_decay: float = 1e-4,
    options: dict | None = None,
    device: str | torch.device = "cpu",
    source: Any = None,
) -> dict:
    """Train `name` for `steps` steps of `train_step` (Adam, MSE, fp32), then one more backward: conv gradient norms."""
    dev = resolve_device(device) if isinstance(device, str) else device
    damage = create_task(task, train=True)
    # A mask-conditioned or noise-map model is given its holes or σ, as in training.
    conditions = training_conditions(options or {}, damage)
    torch.manual_seed(seed)
    model = create_model(name, **(options or {})).to(dev).train()
    source = source or load_source(data, size=size, seed=seed, patches_per_epoch=max(64, (steps + 1) * batch_size))
    loader = make_loader(source.split("train"), damage, batch_size=batch_size, train=True, seed=seed,
                         with_mask=conditions.mask_input, with_noise_level=conditions.noise_map)
    batches = iter(loader)
    optimizer = make_optimizer(model.parameters(), "adam", lr, weight_decay, dev)
    layers = convs_in_forward_order(model, example_input(model, 1, size, size).to(dev))
    losses = []
    for step in range(steps + 1):
        damaged, clean, *condition = next(batches)
        given = condition[0] if condition else None
        # fp32 and NCHW: the norms measure the architecture, not rounding. The last backward is only measured.
        loss, _ = train_step(model, optimizer, damaged, clean, device=dev, precision="fp32", channels_last=False,
                             update=step < steps, mask=given if conditions.mask_input else None,
                             noise_level=given if conditions.noise_map else None, conditions=conditions)
        losses.append(float(loss))
    rows = layer_gradients(layers)
    first, last = rows[0]["grad_norm"], rows[-1]["grad_norm"]
    norms = sorted(r["grad_norm"] for r in rows)
    return {
        "model": name,
        "options": options or {},
        "conv_layers": len(rows),
        "parameters": sum(p.numel() for p in model.parameters()),
        "losses": losses,
        "first_grad_norm": first,
        "last_grad_norm": last,
        "first_to_last": first / last if last > 0 else math.inf,
        "min_grad_norm": norms[0],
        "max_grad_norm": norms[-1],
        "median_grad_norm": norms[len(norms) // 2],
        "layers": rows,
    }


def measure(models: list[str], **kwargs: Any) -> dict:
    """`measure_model` for each name with the same task, data, seed and budget."""
    source = kwargs.pop("source", None) or load_source(
        kwargs.get("data", "builtin"), size=kwargs.get("size", 32), seed=kwargs.get("seed", 0),
        patches_per_epoch=max(64, (kwargs.get("steps", 3) + 1) * kwargs.get("batch_size", 2)))
    results = [measure_model(name, source=source, **kwargs) for name in models]
    settings = {k: v for k, v in kwargs.items() if k != "options"}
    return {"settings": {**settings, "options": kwargs.get("options") or {}}, "models": results}


def report_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where `write_reports` puts gradients.png, gradients.csv and gradients.json under `out`."""
    out = Path(out)
    return {"png": out / "gradients.png", "csv": out / "gradients.csv", "json": out / "gradients.json"}


def write_reports(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    """gradients.png (norm vs depth, log y), gradients.csv (one row per layer) and gradients.json."""
    paths = report_paths(out)
    for write in report_writes(report, out).values():
        write(exclusive=False)
    return paths


def report_writes(report: dict, out: str | os.PathLike) -> dict[Path, Callable[..., Any]]:
    """The reports as {path: write(exclusive=...)}, for a command that claims each file when it writes it."""
    paths = report_paths(out)
    curves = {}
    for m in report["models"]:
        # Zero gradients cannot be drawn on a log axis; they are in the CSV.
        pts = [(r["depth"], r["grad_norm"]) for r in m["layers"] if r["grad_norm"] > 0]
        label = f"{m['model']} ({m['conv_layers']} convs, first/last {m['first_to_last']:.2g})"
        curves[label] = ([p[0] for p in pts], [p[1] for p in pts])
    s = report["settings"]
    plot = functools.partial(
        line_plot, curves, paths["png"], xlabel="conv layer, in forward order (1 = input side)",
        ylabel="‖∂loss/∂W‖ (L2)", logy=True,
        title=f"Gradient norm per conv layer after {s.get('steps', 3)} steps on {s.get('task', 'squares')}, "
              f"{s.get('size', 32)} px, batch {s.get('batch_size', 2)}")

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["model", "depth", "layer", "kind", "grad_norm", "grad_rms", "weight_norm"])
            for m in report["models"]:
                for r in m["layers"]:
                    writer.writerow([m["model"], r["depth"], r["layer"], r["kind"], f"{r['grad_norm']:.6g}",
                                     f"{r['grad_rms']:.6g}", f"{r['weight_norm']:.6g}"])

    return {paths["png"]: plot,
            paths["csv"]: functools.partial(atomic_write, paths["csv"], write_csv),
            paths["json"]: functools.partial(write_json, report, paths["json"])}


def summary(report: dict) -> str:
    """One line per model: conv count, first/last-layer gradient norms and their ratio, smallest and largest."""
    lines = [f"{'model':<22} {'convs':>5} {'first':>10} {'last':>10} {'first/last':>11} {'min':>10} {'max':>10}"]
    for m in report["models"]:
        lines.append(f"{m['model']:<22} {m['conv_layers']:>5} {m['first_grad_norm']:>10.3g} "
                     f"{m['last_grad_norm']:>10.3g} {m['first_to_last']:>11.3g} {m['min_grad_norm']:>10.3g} "
                     f"{m['max_grad_norm']:>10.3g}")
    return "\n".join(lines)
