"""`run_bench` and `run_sweep`: training and inference steps timed against the matmul peak measured between them."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.bench.config import BenchConfig
from pyramidal.bench.measure import (
    MatmulProbe,
    PeakMemory,
    count_flops,
    machine_kind,
    matmul_peak,
    paired_ratio,
    peak_fields,
    sync,
    time_interleaved,
)
from pyramidal.bench.pipeline import bench_data_pipeline
from pyramidal.bench.restore import bench_restore
from pyramidal.config import TrainConfig
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError, flag_error
from pyramidal.fastpath import memory_format, tune_cpu_allocator
from pyramidal.inference.model import prepare_for_inference
from pyramidal.models import create_model
from pyramidal.models.conditions import example_input
from pyramidal.step import grad_scaler, make_optimizer, train_step

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "plain_fc_densenet.py"


def load_reference_module(path: str | Path | None = None) -> ModuleType:
    """Import benchmarks/plain_fc_densenet.py by file path (it is not part of the installed package)."""
    path = Path(path) if path else REFERENCE_FILE
    if not path.is_file():
        raise flag_error("{path}: plain reference not found (it lives in the source tree's benchmarks/, which an "
                         "installed package does not have; pass {reference_file=}PATH)", "reference_file", path=path)
    spec = importlib.util.spec_from_file_location("pyramidal_plain_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# Steps


def _train_step_fn(model: nn.Module, device: torch.device, precision: str, channels_last: bool, x: torch.Tensor,
                   y: torch.Tensor) -> Callable[[], None]:
    """One training step of `pyramidal train`: its `train_step`, optimizer and loss scaling, default settings."""
    model.train()
    c = TrainConfig()
    opt = make_optimizer(model.parameters(), c.optimizer, c.lr, c.weight_decay, device)
    scaler = grad_scaler(device, precision)

    def step() -> None:
        train_step(model, opt, x, y, device=device, precision=precision, channels_last=channels_last, scaler=scaler)

    return step


def _plain_train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The plain reference's training step: fp32, NCHW, nothing special."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _plain_infer_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


# ----------------------------------------------------------------------------------------------------------
# The benchmark


def _timed(kind: str, unit: str, fn: Callable[[], None], reference: Callable[[], None] | None, c: BenchConfig,
           device: torch.device, gflop_per_image: float, probe: MatmulProbe) -> dict:
    """Median rate of `fn` (already warm), interleaved with the warmed-up plain `reference` when given and
    with the matmul `probe`."""
    fns = [fn]
    if reference is not None:
        for _ in range(c.warmup):
            reference()
        fns.append(reference)
    probe.rates.clear()
    times = time_interleaved([*fns, probe], c.steps, device)
    median = statistics.median(times[0])
    r = {f"{kind}_times_s": times[0], f"{kind}_{unit}_s": median,
         f"{kind}_images_per_s": c.batch_size / median, f"{kind}_images_per_s_best": c.batch_size / min(times[0])}
    r[f"{kind}_gflop_per_s"] = gflop_per_image * r[f"{kind}_images_per_s"]
    r.update(peak_fields(kind, r[f"{kind}_gflop_per_s"], probe))
    if reference is not None:
        ref_median = statistics.median(times[1])
        r[f"reference_{kind}_times_s"] = times[1]
        r[f"reference_{kind}_images_per_s"] = c.batch_size / ref_median
        r[f"{kind}_speedup"] = ref_median / median
        r[f"{kind}_speedup_paired"] = paired_ratio(times[1], times[0])
    return r


def run_bench(config: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by `config`; returns a JSON-able dict (see the README, Performance)."""
    c = config
    c.validate()
    say = log or (lambda _msg: None)
    # oneDNN caches 1024 kernels by default; the fast model and the plain reference together need more
    # (≈3 per conv each), and alternating them would then rebuild kernels every step (measured: −20 %).
    # Read when oneDNN first runs, so this only helps if nothing has used it yet in this process.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")
    device = resolve_device(c.device)
    precision = resolve_precision(c.precision, device)
    if c.threads:
        torch.set_num_threads(c.threads)
    if c.mode == "restore":
        return bench_restore(c, device, precision, say)
    notes: list[str] = []
    tune = (not c.memory_efficient) if c.tune_allocator is None else c.tune_allocator
    tuned = tune_cpu_allocator() if (tune and device.type == "cpu") else False
    torch.manual_seed(c.seed)

    model = c.build(create_model)
    result: dict[str, Any] = {
        "model": c.model, "size": c.size, "batch_size": c.batch_size, "mode": c.mode,
        "device": str(device), "precision": precision, "channels_last": c.channels_last, "compile": c.compile,
        "memory_efficient": c.memory_efficient, "threads": torch.get_num_threads(), "allocator_tuned": tuned,
        "steps": c.steps, "warmup": c.warmup, "machine": machine_kind(device),
        "parameters": sum(p.numel() for p in model.parameters()),
    }

    say("counting FLOPs")
    fwd = count_flops(model, c.size, train=False)
    result["gflop_per_image"] = fwd / 1e9
    do_train, do_infer = c.mode in ("train", "both"), c.mode in ("infer", "both")
    if do_train:
        result["train_gflop_per_image"] = count_flops(model, c.size, train=True) / 1e9
    say(f"measuring the {precision} matmul peak")
    peak = matmul_peak(device, precision, c.matmul_seconds)
    result["matmul_peak_gflop_per_s"] = peak
    probe = MatmulProbe(device, precision, 0.4 * c.matmul_seconds, peak, c.matmul_seconds)

    reference = None
    if c.reference:
        try:
            ref_module = load_reference_module(c.reference_file)
            config_obj = getattr(model, "config", None)
            if config_obj is None or not hasattr(ref_module, "from_config"):
                raise ValueError(f"no plain reference for model {c.model}")
            if type(config_obj).__name__ != "DensePyramidConfig":  # the reference implements dense pyramids only
                raise ValueError(f"no plain reference for model {c.model}")
            ref_options = {**asdict(config_obj), "memory_efficient": False}
            reference = ref_module.from_config(type(config_obj)(**ref_options))
            reference.load_state_dict(model.state_dict())
        except (PyramidalError, ValueError) as exc:
            notes.append(f"reference skipped: {exc}")
            reference = None

    fmt = memory_format(c.channels_last)
    model.to(device=device, memory_format=fmt)
    gen = torch.Generator().manual_seed(c.seed)
    x_cpu = example_input(model, c.batch_size, c.size, c.size, generator=gen)  # + mask / σ channel if it takes one
    y_cpu = torch.rand(c.batch_size, 3, c.size, c.size, generator=gen) * 2 - 1
    x = x_cpu.to(device).contiguous(memory_format=fmt)
    y = y_cpu.to(device)
    run_model = torch.compile(model) if c.compile else model

    if do_train:
        say(f"training steps ({c.warmup} warm-up + {c.steps})")
        step = _train_step_fn(run_model, device, precision, c.channels_last, x, y)
        with PeakMemory(device) as mem:
            for _ in range(c.warmup):
                step()
            sync(device)
        result["peak_memory_mb"] = mem.peak_mb
        result["train_peak_memory_mb"] = mem.peak_mb
        result["train_step_memory_mb"] = mem.delta_mb
        ref_step = None if reference is None else _plain_train_step_fn(
            copy.deepcopy(reference).to(device), x_cpu.to(device), y)
        result.update(_timed("train", "step", step, ref_step, c, device, result["train_gflop_per_image"], probe))
        del step, ref_step

    if do_infer:
        say(f"inference passes ({c.warmup} warm-up + {c.steps})")
        fast = prepare_for_inference(model, device, precision, channels_last=c.channels_last, compile=c.compile)

        def infer() -> None:
            fast(x)

        with PeakMemory(device) as mem:
            for _ in range(c.warmup):
                infer()
            sync(device)
        if not do_train or device.type == "cuda":
            # After training on the CPU the heap already holds the training peak, so RSS can't show this one.
            result["infer_peak_memory_mb"] = mem.peak_mb
            result.setdefault("peak_memory_mb", mem.peak_mb)
        ref_infer = None if reference is None else _plain_infer_fn(
            copy.deepcopy(reference).to(device), x_cpu.to(device))
        result.update(_timed("infer", "batch", infer, ref_infer, c, device, result["gflop_per_image"], probe))

    if c.data:
        result.update(bench_data_pipeline(c, result.get("train_images_per_s"), notes, say))
    result["notes"] = notes
    return result


SWEEP_KEYS = ("batch_size", "train_images_per_s", "train_gflop_per_s", "train_peak_fraction",
              "train_matmul_gflop_per_s", "train_peak_memory_mb")


def run_sweep(config: BenchConfig, batch_sizes: list[int], log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Training speed of one model at each batch size: images/s, GFLOP/s and the fraction of the matmul peak
    measured between the same steps (`run_bench` in train mode, without the data pipeline, once per batch).

    A batch that does not fit in memory gives a row with its error, and the larger ones are not tried.
    """
    say = log or (lambda _msg: None)
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for batch in batch_sizes:
        say(f"batch {batch}")
        try:
            result = run_bench(dataclasses.replace(config, batch_size=int(batch), mode="train", data=False), say)
        except torch.OutOfMemoryError as exc:
            rows.append({"batch_size": int(batch), "error": f"out of memory: {str(exc).splitlines()[0]}"})
            torch.cuda.empty_cache()
            break
        first = first or result
        rows.append({k: result[k] for k in SWEEP_KEYS if k in result})
    keep = ("model", "parameters", "size", "device", "precision", "channels_last", "compile", "machine",
            "train_gflop_per_image", "matmul_peak_gflop_per_s")
    return {"mode": "sweep", **{k: first[k] for k in keep if k in first}, "rows": rows}
