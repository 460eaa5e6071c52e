"""`pyramidal bench`: training and inference speed, FLOPs, peak memory, matmul peak and data-pipeline rate.

Timings are medians over steps after warm-up. With a plain reference, its steps alternate with the fast
path's (A, B, A, B, ...), so that a busy machine slows both alike; the speed-up is the ratio of the median
step times, and the median of the per-pair ratios is reported next to it. A short matmul burst runs after
every step too, so the fraction of the matmul peak compares rates measured under the same load.

`--mode restore` times `pyramidal restore` itself (`inference.files.restore_files` on a photo of `--megapixels`,
through `prepare_for_inference`, with restore's tiling defaults): MP/s, peak RSS and fraction of peak.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyramidal.config import MAX_BATCH, MAX_SIDE, MAX_STEPS
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.fastpath import memory_format, tune_cpu_allocator
from pyramidal.inference.model import prepare_for_inference
from pyramidal.models.conditions import example_input

__all__ = ["BenchConfig", "run_bench", "run_sweep", "count_flops", "matmul_peak", "machine_kind", "format_report",
           "format_sweep"]

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "plain_fc_densenet.py"
MODES = ("train", "infer", "both", "restore")


@dataclass
class BenchConfig:
    model: str = "pyramidal457101215"
    size: int = 64
    batch_size: int = 8
    mode: str = "both"  # train | infer | both
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    memory_efficient: bool = False
    device: str = "auto"
    steps: int = 10
    warmup: int = 2
    reference: bool = False  # also time the plain fp32 NCHW implementation, interleaved
    reference_file: str | None = None
    data: bool = True  # also time the data pipeline (damaged pairs/s per task)
    data_seconds: float = 1.0
    tasks: tuple[str, ...] | None = None  # default: every registered task
    matmul_seconds: float = 0.5
    tune_allocator: bool | None = None  # None: on, except with memory_efficient (as `pyramidal train`)
    threads: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra create_model options
    # --mode restore: weights ("builtin" or a file; else `model` with random weights), the photo's size,
    # and restore's own options (tile, overlap, batch_size); absent ones keep `pyramidal restore`'s defaults.
    weights: str | None = None
    task: str | None = None
    megapixels: float = 12.0
    restore_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke(cls, **overrides: Any) -> BenchConfig:
        """A seconds-long run that exercises every code path (for CI)."""
        base = dict(model="pyramidal44", size=32, batch_size=2, steps=2, warmup=1, data_seconds=0.05,
                    matmul_seconds=0.05, tasks=None, megapixels=0.05)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        if self.mode not in MODES:
            raise PyramidalError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.size < 1 or self.batch_size < 1:
            raise PyramidalError("--size and --batch-size must be at least 1")
        if self.steps < 1 or self.warmup < 1:
            raise PyramidalError("--steps and --warmup must be at least 1 (the first warm-up step measures memory)")
        if self.threads is not None and self.threads < 1:
            raise PyramidalError("--threads must be at least 1")
        if not (0 < self.megapixels <= 1000):
            raise PyramidalError(f"--megapixels {self.megapixels}: must be above 0 and at most 1000")
        if self.weights == "builtin" and not self.task:
            raise PyramidalError("--weights builtin needs --task to know which weights to use")
        for flag, value, high in (("--size", self.size, MAX_SIDE), ("--batch-size", self.batch_size, MAX_BATCH),
                                  ("--steps", self.steps, MAX_STEPS), ("--warmup", self.warmup, MAX_STEPS)):
            if value > high:
                raise PyramidalError(f"{flag} {value}: at most {high:,}")
        if self.mode != "restore":  # before anything is allocated: a step that cannot fit is one line
            from pyramidal.models import check_model
            from pyramidal.models.summary import check_memory

            options = {**self.options, **({"memory_efficient": True} if self.memory_efficient else {})}
            try:
                check_model(self.model, **options)
            except ValueError as exc:
                if self.memory_efficient and "memory_efficient" in str(exc):
                    raise PyramidalError(f"--memory-efficient: model {self.model} has no dense blocks") from None
                raise
            check_memory(self.model, options, batch=self.batch_size, size=self.size,
                         device=resolve_device(self.device), training=self.mode != "infer")


# ----------------------------------------------------------------------------------------------------------
# Measuring tools


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of a code section: CUDA max allocated, or on Linux the process's peak RSS (VmHWM).

    Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS, so the peak belongs to the section.
    `peak_mb` is the process's peak RSS during the section (what the machine must have); `delta_mb` the
    part above the RSS at its start.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None
        self.delta_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self._start = _status_kb("VmRSS")
            except OSError:
                self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_mb, self.delta_mb = peak / 2**20, (peak - self._start) / 2**20
        elif self._start is not None:
            peak = _status_kb("VmHWM")
            if peak is not None:
                self.peak_mb, self.delta_mb = peak / 1024, (peak - self._start) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(model: nn.Module, size: int | tuple[int, int], train: bool) -> float:
    """FLOPs per image of one forward pass (eval) or one training step (forward + backward), by FlopCounterMode.

    `size` is the image side, or (height, width).

    Counted on a copy on the meta device: shapes only, no arithmetic. Matmuls and convolutions count
    (a multiply-add = 2 FLOPs). In memory-efficient mode the counter also sees what checkpointing really
    recomputes in backward: the transitions' and output's convs. A dense layer's conv is not run again:
    recomputation stops as soon as the tensors backward needs are back, and its conv needs only its input.
    """
    meta = copy.deepcopy(model).to("meta")
    meta.train(train)
    h, w = (size, size) if isinstance(size, int) else size
    # Two images in training: batch norm refuses one value per channel, as a 1×1 bottleneck would give it.
    batch = 2 if train else 1
    x = example_input(model, batch, h, w).to("meta")
    with FlopCounterMode(display=False) as counter:
        if train:
            meta(x).float().square().mean().backward()
        else:
            with torch.no_grad():
                meta(x)
    return float(counter.get_total_flops()) / batch


def _matmul_operands(device: torch.device, precision: str, seconds: float) -> tuple[torch.Tensor, ...]:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    n = (8192 if device.type == "cuda" else 2048) if seconds >= 0.2 else 512
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return a, b, torch.empty(n, n, device=device, dtype=dtype)


def matmul_peak(device: torch.device, precision: str, seconds: float = 0.5) -> float:
    """The machine's own square-matmul rate in GFLOP/s in `precision` (best of three rounds)."""
    a, b, out = _matmul_operands(device, precision, seconds)
    n = a.shape[0]
    torch.mm(a, b, out=out)
    _sync(device)
    best = 0.0
    for _ in range(3):
        k, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            k += 1
            if k % 4 == 0 or device.type == "cpu":
                _sync(device)
                elapsed = time.perf_counter() - start
                if elapsed >= seconds / 3:
                    break
        best = max(best, 2 * n**3 * k / elapsed / 1e9)
    return best


class MatmulProbe:
    """A matmul burst of about `seconds`, timed between the steps: the peak each step is compared with ran
    under the same load as the step itself (on a shared machine an up-front peak can be off by 2×)."""

    def __init__(self, device: torch.device, precision: str, seconds: float, peak_gflop_per_s: float,
                 size_from: float):
        self.device = device
        self.a, self.b, self.out = _matmul_operands(device, precision, size_from)
        self.flop = 2 * self.a.shape[0] ** 3
        self.reps = max(1, round(seconds * peak_gflop_per_s * 1e9 / self.flop))
        self.rates: list[float] = []

    def __call__(self) -> None:
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(self.reps):
            torch.mm(self.a, self.b, out=self.out)
        _sync(self.device)
        self.rates.append(self.reps * self.flop / (time.perf_counter() - start) / 1e9)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def machine_kind(device: torch.device | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, its bf16 and AMX support (from /proc/cpuinfo, None where
    that is unreadable), cores and torch's threads; the GPU's name on CUDA."""
    import platform

    cpu, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu is None:
                cpu = value.strip()
            elif key == "flags" and flags is None:
                flags = set(value.split())
    except OSError:
        pass
    kind: dict[str, Any] = {
        "cpu": cpu or platform.processor() or platform.machine() or "unknown",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "avx512_bf16": None if flags is None else "avx512_bf16" in flags,
        "amx": None if flags is None else bool({"amx_bf16", "amx_tile"} & flags),
    }
    if device is not None and device.type == "cuda":
        kind["gpu"] = torch.cuda.get_device_name(device)
    return kind


def describe_machine(kind: dict[str, Any]) -> str:
    """One line: `AMD EPYC, 2 cores, AVX512-BF16 yes, AMX no, 2 torch threads`."""

    def yes_no(value: bool | None) -> str:
        return "unknown" if value is None else ("yes" if value else "no")

    gpu = f", GPU {kind['gpu']}" if kind.get("gpu") else ""
    return (f"{kind['cpu']}, {kind['cores']} cores, AVX512-BF16 {yes_no(kind['avx512_bf16'])}, "
            f"AMX {yes_no(kind['amx'])}, {kind['threads']} torch threads{gpu}")


def load_reference_module(path: str | Path | None = None) -> ModuleType:
    """Import benchmarks/plain_fc_densenet.py by file path (it is not part of the installed package)."""
    path = Path(path) if path else REFERENCE_FILE
    if not path.is_file():
        raise PyramidalError(
            f"{path}: plain reference not found (it lives in the source tree's benchmarks/, which an installed "
            "package does not have; pass --reference-file PATH)")
    spec = importlib.util.spec_from_file_location("pyramidal_plain_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# Steps


def _train_step_fn(model: nn.Module, device: torch.device, precision: str, channels_last: bool, x: torch.Tensor,
                   y: torch.Tensor) -> Callable[[], None]:
    """One training step of `pyramidal train`: its `train_step`, optimizer and loss scaling, default settings."""
    from pyramidal.config import TrainConfig
    from pyramidal.step import grad_scaler, make_optimizer, train_step

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


def _time_interleaved(fns: list[Callable[[], None]], steps: int, device: torch.device) -> list[list[float]]:
    """Seconds per call of each function, called in turn A, B, A, B, ... `steps` times each."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for i, fn in enumerate(fns):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - start)
    return times


def _paired_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(slow, fast))


# ----------------------------------------------------------------------------------------------------------
# The benchmark


def _peak_fields(kind: str, gflop_per_s: float, probe: MatmulProbe) -> dict[str, float]:
    """The achieved rate as a fraction of the matmul rate measured between the same steps."""
    return {f"{kind}_matmul_gflop_per_s": probe.median, f"{kind}_peak_fraction": gflop_per_s / probe.median}


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
    times = _time_interleaved([*fns, probe], c.steps, device)
    median = statistics.median(times[0])
    r = {f"{kind}_times_s": times[0], f"{kind}_{unit}_s": median,
         f"{kind}_images_per_s": c.batch_size / median, f"{kind}_images_per_s_best": c.batch_size / min(times[0])}
    r[f"{kind}_gflop_per_s"] = gflop_per_image * r[f"{kind}_images_per_s"]
    r.update(_peak_fields(kind, r[f"{kind}_gflop_per_s"], probe))
    if reference is not None:
        ref_median = statistics.median(times[1])
        r[f"reference_{kind}_times_s"] = times[1]
        r[f"reference_{kind}_images_per_s"] = c.batch_size / ref_median
        r[f"{kind}_speedup"] = ref_median / median
        r[f"{kind}_speedup_paired"] = _paired_ratio(times[1], times[0])
    return r


def run_bench(config: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark described by `config`; returns a JSON-able dict (see the README, Performance)."""
    from pyramidal.models import create_model

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
        return _bench_restore(c, device, precision, say)
    notes: list[str] = []
    tune = (not c.memory_efficient) if c.tune_allocator is None else c.tune_allocator
    tuned = tune_cpu_allocator() if (tune and device.type == "cpu") else False
    torch.manual_seed(c.seed)

    options = dict(c.options)
    if c.memory_efficient:
        options["memory_efficient"] = True
    try:
        model = create_model(c.model, **options)
    except ValueError as exc:
        if c.memory_efficient and "memory_efficient" in str(exc):
            raise PyramidalError(f"--memory-efficient: model {c.model} has no dense blocks") from None
        raise
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
            _sync(device)
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
            _sync(device)
        if not do_train or device.type == "cuda":
            # After training on the CPU the heap already holds the training peak, so RSS can't show this one.
            result["infer_peak_memory_mb"] = mem.peak_mb
            result.setdefault("peak_memory_mb", mem.peak_mb)
        ref_infer = None if reference is None else _plain_infer_fn(
            copy.deepcopy(reference).to(device), x_cpu.to(device))
        result.update(_timed("infer", "batch", infer, ref_infer, c, device, result["gflop_per_image"], probe))

    if c.data:
        result.update(_bench_data(c, result.get("train_images_per_s"), notes, say))
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


def format_sweep(r: dict[str, Any]) -> str:
    """The sweep as a table: one line per batch size."""
    lines = []
    if "machine" in r:
        lines.append(f"machine: {describe_machine(r['machine'])}")
        lines.append(f"model {r['model']} ({r['parameters']:,} parameters), {r['size']}×{r['size']}, {r['device']}, "
                     f"{r['precision']}, training step {_fmt(r['train_gflop_per_image'], ' GFLOP', 3)} per image")
    lines.append(f"{'batch':>6} {'images/s':>10} {'GFLOP/s':>10} {'of peak':>8} {'peak memory':>12}")
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"{row['batch_size']:>6} {row['error']}")
            continue
        lines.append(f"{row['batch_size']:>6} {_fmt(row['train_images_per_s'], '', 0):>10} "
                     f"{_fmt(row['train_gflop_per_s'], '', 0):>10} {_fmt(100 * row['train_peak_fraction'], '%', 1):>8} "
                     f"{_fmt(row.get('train_peak_memory_mb'), ' MB', 0):>12}")
    return "\n".join(lines)


def _bench_photo(height: int, width: int) -> np.ndarray:
    """A photograph of the given size (scikit-image's coffee, resized), or smooth random colour without it."""
    from PIL import Image

    from pyramidal.data import _skimage_data_dir
    from pyramidal.io import read_rgb

    folder = _skimage_data_dir()
    try:
        im = read_rgb(folder / "coffee.png") if folder is not None else None
    except PyramidalError:
        im = None
    if im is None:
        small = np.random.default_rng(0).integers(0, 256, (max(1, height // 64), max(1, width // 64), 3), np.uint8)
        im = Image.fromarray(small)
    return np.asarray(im.resize((width, height), Image.BICUBIC))


def _restore_model(c: BenchConfig) -> tuple[nn.Module, str]:
    """The model `--mode restore` runs and its name: from `weights` as `pyramidal restore` loads it, else
    `model` with random weights (the speed is the same)."""
    if c.weights:
        from pyramidal.inference.model import load_restorer

        model = load_restorer(c.weights, c.task)
        return model, model.info.get("model", "?")
    from pyramidal.models import create_model

    torch.manual_seed(c.seed)
    return create_model(c.model, **c.options), c.model


def _bench_restore(c: BenchConfig, device: torch.device, precision: str,
                   say: Callable[[str], None]) -> dict[str, Any]:
    """`pyramidal restore` of one photo of `c.megapixels`, timed end to end (read, tiled restore, write)."""
    from pyramidal.inference.files import restore_files
    from pyramidal.inference.model import prepare_for_inference
    from pyramidal.inference.tiling import tile_layout
    from pyramidal.io import read_image, write_image
    from pyramidal.options import DEFAULT_BATCH_SIZE, DEFAULT_TILE, check_tiling

    opts = {k: v for k, v in c.restore_options.items() if v is not None}
    per_pass = opts.get("batch_size", DEFAULT_BATCH_SIZE)
    tile, overlap = check_tiling(opts.get("tile", DEFAULT_TILE), opts.get("overlap"), per_pass)
    width = max(16, round(math.sqrt(c.megapixels * 1e6 * 4 / 3)))
    height = max(16, round(width * 3 / 4))
    model, name = _restore_model(c)
    multiple = 2 ** getattr(model, "levels", 0)
    (tile_h, ys), (tile_w, xs) = (tile_layout(height, tile, overlap, multiple),
                                  tile_layout(width, tile, overlap, multiple)) if tile else ((height, [0]), (width, [0]))
    tiles = len(ys) * len(xs)
    say("counting FLOPs")
    gflop = tiles * count_flops(model, (tile_h, tile_w), train=False) / 1e9
    say(f"measuring the {precision} matmul peak")
    peak = matmul_peak(device, precision, c.matmul_seconds)
    probe = MatmulProbe(device, precision, 0.4 * c.matmul_seconds, peak, c.matmul_seconds)
    result: dict[str, Any] = {
        "mode": "restore", "model": name, "weights": c.weights, "task": c.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device), "precision": precision, "threads": torch.get_num_threads(),
        "machine": machine_kind(device), "steps": c.steps, "warmup": c.warmup,
        "restore_width": width, "restore_height": height, "restore_megapixels": width * height / 1e6,
        "restore_tile": tile, "restore_overlap": overlap, "restore_tiles_per_pass": per_pass,
        "restore_tiles": tiles, "restore_tile_size": [tile_h, tile_w], "restore_gflop": gflop,
        "matmul_peak_gflop_per_s": peak,
    }
    # The allocator is the restore path's own business (prepare_for_inference tunes it on the CPU);
    # --no-tune-allocator turns that off for this run.
    saved = os.environ.get("PYRAMIDAL_NO_ALLOCATOR_TUNING")
    if c.tune_allocator is False:
        os.environ["PYRAMIDAL_NO_ALLOCATOR_TUNING"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="pyramidal-bench-") as tmp:
            photo = Path(tmp) / "photo.png"
            write_image(_bench_photo(height, width), photo)
            outdir = Path(tmp) / "restored"
            prepared = prepare_for_inference(model, device, precision)

            def restore() -> None:
                (done,) = restore_files(prepared, [photo], outdir, overwrite=True, **opts)
                if done.error:
                    raise PyramidalError(done.error)

            say(f"restoring a {width}×{height} photo ({c.warmup} warm-up + {c.steps})")
            with PeakMemory(device) as mem:
                for _ in range(c.warmup):
                    restore()
            times = _time_interleaved([restore, probe], c.steps, device)[0]
            start = time.perf_counter()
            write_image(read_image(photo).rgb, outdir / "again.png")
            result["restore_io_s"] = time.perf_counter() - start
    finally:
        if c.tune_allocator is False:
            if saved is None:
                os.environ.pop("PYRAMIDAL_NO_ALLOCATOR_TUNING", None)
            else:
                os.environ["PYRAMIDAL_NO_ALLOCATOR_TUNING"] = saved
    from pyramidal.fastpath import allocator_tuned

    median = statistics.median(times)
    result.update({
        "allocator_tuned": allocator_tuned(),
        "restore_times_s": times, "restore_s": median,
        "restore_mp_per_s": result["restore_megapixels"] / median,
        "restore_mp_per_s_best": result["restore_megapixels"] / min(times),
        "restore_gflop_per_s": gflop / median,
        "restore_peak_memory_mb": mem.peak_mb, "peak_memory_mb": mem.peak_mb, "notes": [],
    })
    result.update(_peak_fields("restore", result["restore_gflop_per_s"], probe))
    return result


def _bench_data(c: BenchConfig, train_rate: float | None, notes: list[str],
                say: Callable[[str], None]) -> dict[str, Any]:
    """Damaged training pairs per second for each task, through the data module's own benchmark."""
    try:
        from pyramidal.damage import TASKS
        from pyramidal.data import bench_pairs_per_second
    except ImportError as exc:
        notes.append(f"data pipeline not benched: {exc}")
        return {}
    tasks = list(c.tasks) if c.tasks else TASKS.names()
    rates: dict[str, float] = {}
    threads = torch.get_num_threads()
    for name in tasks:
        say(f"data pipeline: {name}")
        try:
            rates[name] = bench_pairs_per_second(name, size=c.size, batch_size=32, seconds=c.data_seconds)
        except (ValueError, PyramidalError) as exc:
            notes.append(f"data pipeline task {name} failed: {exc}")
        finally:
            torch.set_num_threads(threads)  # the data code may drop to one thread
    out: dict[str, Any] = {"data_pairs_per_s": rates}
    if rates:
        slowest = min(rates, key=rates.get)
        out["data_slowest_task"] = slowest
        out["data_min_pairs_per_s"] = rates[slowest]
        if train_rate:
            out["data_to_train_ratio"] = rates[slowest] / train_rate
    return out


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """`format_number` with the report's unit after the value and "n/a" for a missing one."""
    from pyramidal.io import format_number

    return format_number(value, digits, unit, missing="n/a")


def _format_restore(r: dict[str, Any]) -> str:
    source = f"weights {r['weights']}" + (f" ({r['task']})" if r.get("task") else "") if r.get("weights") else \
        "random weights"
    tile_h, tile_w = r["restore_tile_size"]
    tiling = (f"tiles {r['restore_tile']} px, overlap {r['restore_overlap']}, {r['restore_tiles_per_pass']} per pass: "
              f"{r['restore_tiles']} tiles of {tile_w}×{tile_h}" if r["restore_tile"] else "the whole image at once")
    return "\n".join([
        f"machine: {describe_machine(r['machine'])}",
        f"restore: model {r['model']} ({r['parameters']:,} parameters, {source}), {r['device']}, {r['precision']}"
        + (", allocator tuned" if r.get("allocator_tuned") else ""),
        f"photo {r['restore_width']}×{r['restore_height']} ({_fmt(r['restore_megapixels'], ' MP', 1)}), {tiling}, "
        f"{_fmt(r['restore_gflop'], ' GFLOP', 0)}",
        f"restore:   {_fmt(r['restore_s'], ' s')} median (read, restore, write PNG; best "
        f"{_fmt(min(r['restore_times_s']), ' s')}) = {_fmt(r['restore_mp_per_s'], ' MP/s', 3)}, "
        f"of which reading and writing the files {_fmt(r['restore_io_s'], ' s')}",
        f"           {_fmt(r['restore_gflop_per_s'], ' GFLOP/s', 1)} = {_fmt(100 * r['restore_peak_fraction'], '%', 1)} "
        f"of the {r['precision']} matmul peak measured between the runs "
        f"({_fmt(r['restore_matmul_gflop_per_s'], ' GFLOP/s', 1)}; "
        f"{_fmt(r['matmul_peak_gflop_per_s'], ' GFLOP/s', 1)} up front), "
        f"peak memory {_fmt(r['restore_peak_memory_mb'], ' MB', 0)}",
    ])


def format_report(r: dict[str, Any]) -> str:
    """A human-readable summary of a `run_bench` result."""
    if r["mode"] == "restore":
        return _format_restore(r)
    lines = [
        f"machine: {describe_machine(r['machine'])}",
        f"model {r['model']} ({r['parameters']:,} parameters), {r['size']}×{r['size']}, batch {r['batch_size']}, "
        f"{r['device']} ({r['threads']} threads), {r['precision']}, "
        f"{'channels_last' if r['channels_last'] else 'NCHW'}"
        + (", compiled" if r["compile"] else "") + (", memory-efficient" if r["memory_efficient"] else "")
        + (", allocator tuned" if r.get("allocator_tuned") else ""),
        f"FLOPs per image: forward {_fmt(r['gflop_per_image'], ' GFLOP', 3)}"
        + (f", training step {_fmt(r['train_gflop_per_image'], ' GFLOP', 3)}" if "train_gflop_per_image" in r else ""),
        f"matmul peak ({r['precision']}): {_fmt(r['matmul_peak_gflop_per_s'], ' GFLOP/s', 1)} up front"
        + "".join(f", {_fmt(r[f'{k}_matmul_gflop_per_s'], ' GFLOP/s', 1)} between the {k} steps"
                  for k in ("train", "infer") if f"{k}_matmul_gflop_per_s" in r)
        + " (the fractions of peak below use the latter)",
    ]
    if "train_images_per_s" in r:
        lines.append(
            f"training:  {_fmt(r['train_images_per_s'])} images/s median (best {_fmt(r['train_images_per_s_best'])}), "
            f"{_fmt(r['train_gflop_per_s'], ' GFLOP/s', 1)} = {_fmt(100 * r['train_peak_fraction'], '%', 1)} of peak, "
            f"peak memory {_fmt(r['train_peak_memory_mb'], ' MB', 0)} (+{_fmt(r['train_step_memory_mb'], ' MB', 0)})")
        if "train_speedup" in r:
            lines.append(f"  plain fp32 NCHW reference: {_fmt(r['reference_train_images_per_s'])} images/s → "
                         f"speed-up ×{_fmt(r['train_speedup'])} (ratio of medians; median of paired "
                         f"ratios ×{_fmt(r['train_speedup_paired'])})")
    if "infer_images_per_s" in r:
        mem = f", peak memory {_fmt(r['infer_peak_memory_mb'], ' MB', 0)}" if "infer_peak_memory_mb" in r else ""
        lines.append(
            f"inference: {_fmt(r['infer_images_per_s'])} images/s median (best {_fmt(r['infer_images_per_s_best'])}), "
            f"{_fmt(r['infer_gflop_per_s'], ' GFLOP/s', 1)} = {_fmt(100 * r['infer_peak_fraction'], '%', 1)} of peak"
            + mem)
        if "infer_speedup" in r:
            lines.append(f"  plain fp32 NCHW reference: {_fmt(r['reference_infer_images_per_s'])} images/s → "
                         f"speed-up ×{_fmt(r['infer_speedup'])} (ratio of medians; median of paired "
                         f"ratios ×{_fmt(r['infer_speedup_paired'])})")
    if r.get("data_pairs_per_s"):
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["data_pairs_per_s"].items())
        lines.append(f"data pipeline (damaged pairs/s): {rates}")
        if "data_to_train_ratio" in r:
            lines.append(f"  slowest task {r['data_slowest_task']}: ×{_fmt(r['data_to_train_ratio'], '', 1)} "
                         "the training images/s")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
