"""Run-time choice of device and numeric precision (never at import)."""

from __future__ import annotations

import contextlib

from pyramidal.errors import PyramidalError
from pyramidal.lazy import LazyModule

torch = LazyModule("torch")  # PRECISIONS is read by the command-line flags, which must not load torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` → cuda if available (LOCAL_RANK picks the GPU under torchrun), else cpu."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise PyramidalError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if spec not in ("cpu",) and not spec.startswith("cuda"):
        raise PyramidalError(f"--device {spec!r}: choose auto, cpu or cuda")
    return torch.device(spec)


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(spec: str, device: torch.device) -> str:
    """`auto` → bf16 on CPUs with native bf16 and on bf16-capable GPUs, fp16 on older GPUs, else fp32."""
    if spec not in PRECISIONS:
        raise PyramidalError(f"--precision {spec!r}: choose one of {', '.join(PRECISIONS)}")
    if spec != "auto":
        if spec == "fp16" and device.type == "cpu":
            raise PyramidalError("--precision fp16 is for GPUs; use bf16 or fp32 on the CPU")
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


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
    import os

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
