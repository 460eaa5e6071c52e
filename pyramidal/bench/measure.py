"""The measuring tools of `pyramidal bench`: peak memory, FLOPs, the matmul peak, the machine, interleaved timing."""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pyramidal.models.conditions import example_input


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


def sync(device: torch.device) -> None:
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
    sync(device)
    best = 0.0
    for _ in range(3):
        k, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            k += 1
            if k % 4 == 0 or device.type == "cpu":
                sync(device)
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
        sync(self.device)
        start = time.perf_counter()
        for _ in range(self.reps):
            torch.mm(self.a, self.b, out=self.out)
        sync(self.device)
        self.rates.append(self.reps * self.flop / (time.perf_counter() - start) / 1e9)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def machine_kind(device: torch.device | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, its bf16 and AMX support (from /proc/cpuinfo, None where
    that is unreadable), cores and torch's threads; the GPU's name on CUDA."""
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


def time_interleaved(fns: list[Callable[[], None]], steps: int, device: torch.device) -> list[list[float]]:
    """Seconds per call of each function, called in turn A, B, A, B, ... `steps` times each."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - start)
    return times


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(slow, fast))


def peak_fields(kind: str, gflop_per_s: float, probe: MatmulProbe) -> dict[str, float]:
    """The achieved rate as a fraction of the matmul rate measured between the same steps."""
    return {f"{kind}_matmul_gflop_per_s": probe.median, f"{kind}_peak_fraction": gflop_per_s / probe.median}
