"""The data pipeline's rate: damaged training pairs per second, for each task."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from pyramidal.bench.config import BenchConfig
from pyramidal.damage import TASKS, create_task, derive_seed
from pyramidal.data.loader import make_loader
from pyramidal.data.sources import Source, load_source
from pyramidal.errors import PyramidalError

_BENCH_SOURCES: dict[int, Source] = {}


def bench_pairs_per_second(task_name: str, size: int = 64, batch_size: int = 32, seconds: float = 2.0,
                           source: Source | None = None, damage_only: bool = False, num_workers: int = 0) -> float:
    """Training pairs per second: built-in patches + augmentation + damage + float conversion (or damage only)."""
    if source is None:
        source = _BENCH_SOURCES.get(size) or _BENCH_SOURCES.setdefault(size, load_source("builtin", size=size))
    task = create_task(task_name, train=True)
    ds = source.split("train")
    if damage_only:
        clean = torch.stack([ds.get(i, 0) for i in range(batch_size)])
        task(clean, seeds=list(range(batch_size)))  # warm-up
        n, b, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            task(clean, seeds=[derive_seed(b, i) for i in range(batch_size)])
            n, b = n + batch_size, b + 1
        return n / (time.perf_counter() - start)
    loader = make_loader(ds, task, batch_size=batch_size, train=True, seed=0, num_workers=num_workers)
    epoch, n = 0, 0
    it = iter(loader)
    next(it)  # warm-up
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            damaged, _ = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            it = iter(loader)
            continue
        n += damaged.shape[0]
    return n / (time.perf_counter() - start)


def bench_data_pipeline(c: BenchConfig, train_rate: float | None, notes: list[str],
                        say: Callable[[str], None]) -> dict[str, Any]:
    """Damaged training pairs per second for each task, by `bench_pairs_per_second`."""
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
