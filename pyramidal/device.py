"""Run-time choice of device and numeric precision (never at import)."""

from __future__ import annotations

import contextlib
import os

from pyramidal.errors import option_error
from pyramidal.lazy import LazyModule

torch = LazyModule("torch")  # PRECISIONS is read by the command-line flags, which must not load torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# `--device auto` takes the first of these that is available, else the CPU.
AUTO_ORDER = ("cuda", "mps")


def device_available(kind: str) -> bool:
    """Whether the installed torch reports a usable device of this type here (cpu always; cuda, mps, xpu, ...)."""
    if kind == "cpu":
        return True
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    is_available = getattr(getattr(torch, kind, None), "is_available", None)
    return bool(is_available()) if callable(is_available) else False


def resolve_device(spec: str = "auto") -> torch.device:
    """The device named by `--device`: `auto` → cuda, else mps (Apple silicon), else cpu; or any device type the
    installed torch reports as available (cpu, cuda, cuda:N, mps, xpu, ...). LOCAL_RANK picks the GPU under
    torchrun (`init_distributed`).

    Raises:
        PyramidalError: one line for a name torch does not know, a type not available here, or an index past the
        devices there are.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device(next((kind for kind in AUTO_ORDER if device_available(kind)), "cpu"))
    here = ", ".join(["auto", "cpu", *(kind for kind in (*AUTO_ORDER, "xpu") if device_available(kind))])
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise option_error(f"{{device}}: not a device torch knows; available here: {here}", device=spec) from None
    if not device_available(device.type):
        raise option_error(f"{{device}}: no {device.type.upper()} device is available here (torch "
                           f"{torch.__version__}); available: {here}", device=spec)
    count = getattr(getattr(torch, device.type, None), "device_count", None)
    if device.index is not None and device.type != "cpu" and callable(count) and device.index >= count():
        raise option_error(f"{{device}}: there {'is' if count() == 1 else 'are'} {count()} {device.type} "
                           "device(s) here, numbered from 0", device=spec)
    return device


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory `device` has: a CUDA GPU's total, else the machine's physical memory (None if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # a system that does not say
        return None


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(spec: str) -> None:
    """OptionError naming `precision` unless `spec` is one of PRECISIONS."""
    if spec not in PRECISIONS:
        raise option_error(f"{{precision}}: choose one of {', '.join(PRECISIONS)}", precision=spec)


def resolve_precision(spec: str, device: torch.device) -> str:
    """`auto` → bf16 on CPUs with native bf16 and on bf16-capable CUDA GPUs, fp16 on older ones, else fp32."""
    check_precision(spec)
    if spec != "auto":
        if spec == "fp16" and device.type == "cpu":
            raise option_error("{precision} is for GPUs; use bf16 or fp32 on the CPU", precision=spec)
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"  # other accelerators (mps, xpu): full precision unless asked, until measured there


def autocast(device: torch.device, precision: str):
    """Autocast context for the resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def init_distributed(spec: str = "auto") -> tuple[torch.device, int, int]:
    """(device, world size, rank) for this process; under torchrun also joins the process group.

    Each process of a multi-GPU run takes the GPU named by LOCAL_RANK; NCCL connects GPUs, gloo CPUs.
    """
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = resolve_device(spec)
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, world_size, rank
