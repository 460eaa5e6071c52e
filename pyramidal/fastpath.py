"""Process-level speed settings shared by training, inference and the bench: allocator tuning, memory layout.

Every choice here was measured with `pyramidal bench` (see docs/performance.md); none changes fp32 results.
The inference path itself is `pyramidal.inference.model.prepare_for_inference`.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Make glibc keep freed memory for reuse; True if applied (Linux/glibc only, once per process).

    Every training step allocates and frees the same few hundred MB of activations. By default glibc serves
    big blocks with fresh mmap()s and hands freed heap back to the kernel, so each step page-faults its whole
    working set again; in a VM a fault is expensive. Keeping the memory costs nothing the step did not
    already need at its peak. Set PYRAMIDAL_NO_ALLOCATOR_TUNING=1 to leave the allocator alone.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("PYRAMIDAL_NO_ALLOCATOR_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok = mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1
    _ALLOCATOR_TUNED = ok
    return ok


def allocator_tuned() -> bool:
    """Whether `tune_cpu_allocator` has been applied in this process."""
    return _ALLOCATOR_TUNED


def memory_format(channels_last: bool) -> torch.memory_format:
    """channels_last (NHWC, what oneDNN and cuDNN prefer) or the default contiguous layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


def map_one_thread_each(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """`fn` over `items` in `workers` Python threads of one torch thread each; results in order.

    For independent pieces of work such as restore's tiles: two threads with one intra-op thread each keep
    two cores busy without the barrier after every op that an intra-op team needs. Narrow convolutions (12
    output channels) split poorly across a team, and a busy machine stalls it at every barrier (measured:
    see docs/performance.md). With `workers` 1 this is a plain `map` in the calling thread.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a caller that stops early leaves no work running
        torch.set_num_threads(threads)  # MKL's count is process-wide: the workers' setting must not stay
