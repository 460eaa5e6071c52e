"""Fast paths for training and inference: allocator tuning, channels_last, autocast, optional torch.compile.

Every choice here was measured with `pyramidal bench` (see the README, Performance); none changes fp32 results.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

import torch
from torch import nn

from pyramidal.device import autocast, resolve_device, resolve_precision

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
    return torch.channels_last if channels_last else torch.contiguous_format


class InferenceModel(nn.Module):
    """Wraps a model for fast inference: inference_mode, autocast, channels_last in, float32 out."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str, channels_last: bool = True,
                 compiled: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        # Kept out of the module tree so that state_dict keys stay the wrapped model's.
        self.__dict__["_compiled"] = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._compiled if self._compiled is not None else self.model
        with torch.inference_mode(), autocast(self.device, self.precision):
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format(self.channels_last))
            return run(x).float()


def prepare_for_inference(model: nn.Module, device: str | torch.device = "auto", precision: str = "auto",
                          channels_last: bool = True, compile: bool = False) -> InferenceModel:
    """Eval mode on `device`, channels_last weights, autocast in the resolved precision, optional torch.compile.

    Returns a callable module: B×3×H×W (any device, any layout) → B×3×H×W float32 on `device`.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    if device.type == "cpu":
        tune_cpu_allocator()
    model.eval()
    model.to(device=device, memory_format=memory_format(channels_last))
    compiled = torch.compile(model, dynamic=True) if compile else None
    return InferenceModel(model, device, precision, channels_last, compiled)


@contextlib.contextmanager
def threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
