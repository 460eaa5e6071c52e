"""Process-level speed settings shared by training, inference and the bench: allocator tuning, memory layout.

Every choice here was measured with `pyramidal bench` (see docs/performance.md); none changes fp32 results.
The inference path itself is `pyramidal.inference.prepare_for_inference`.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

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
