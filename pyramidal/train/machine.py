"""The machine a run trains on: threads, device, processes (DDP), precision and seeds, and what crosses between
the processes of a torchrun group."""

from __future__ import annotations

import gc
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pyramidal.config import TrainConfig
from pyramidal.device import init_distributed, resolve_precision
from pyramidal.fastpath import tune_cpu_allocator


@dataclass(frozen=True)
class Machine:
    """This process's place in a run: its device, the number of processes and its rank, the precision."""

    device: torch.device
    world_size: int
    rank: int
    precision: str

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that validates, logs and writes the run's files (rank 0)."""
        return self.rank == 0


def set_up_machine(c: TrainConfig) -> Machine:
    """Threads, device and process group, precision, and the CPU allocator and cuDNN settings for training."""
    if c.threads:
        torch.set_num_threads(c.threads)
    device, world_size, rank = init_distributed(c.device)
    machine = Machine(device, world_size, rank, resolve_precision(c.precision, device))
    if device.type == "cuda" and not torch.backends.cudnn.deterministic:
        # Every step has the same shapes: cuDNN times its kernels once and keeps the fastest.
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu" and not (c.memory_efficient or c.model_options.get("memory_efficient")):
        # As the bench does: reuse freed memory instead of page-faulting it back every step. A memory-efficient
        # run keeps glibc's default, which returns freed blocks, so its peak RSS stays what the step needs.
        tune_cpu_allocator()
    return machine


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's `random` alike."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def place_model(model: nn.Module, c: TrainConfig, machine: Machine) -> nn.Module:
    """`model` on the training device, in training mode, with SyncBatchNorm under DDP on GPUs (--sync-bn)."""
    if c.sync_bn and machine.distributed:
        if machine.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif machine.is_main:
            print("note: --sync-bn needs GPUs (PyTorch has no CPU SyncBatchNorm); "
                  "keeping per-process BatchNorm", file=sys.stderr)
    model.to(machine.device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    return model


def training_wrapper(model: nn.Module, c: TrainConfig, machine: Machine) -> nn.Module:
    """What the step calls: `model`, under DDP in a DistributedDataParallel, compiled with --compile."""
    wrapped = model
    if machine.distributed:
        ids = [machine.device.index] if machine.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    if c.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def broadcast_from_main(value: Any, machine: Machine) -> Any:
    """`value` as the first process has it, in every process of the group."""
    if not machine.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_step(loss: torch.Tensor, stop_requested: bool, out_of_time: bool,
               machine: Machine) -> tuple[float, bool, bool]:
    """One collective per step: (the mean loss over the processes, any process asked to stop, the first
    process's clock ran out), so that every process leaves the loop at the same step."""
    flags = torch.tensor([float(stop_requested), float(out_of_time)], device=loss.device)
    packet = torch.cat([loss.float().reshape(1), flags])
    dist.all_reduce(packet)
    return packet[0].item() / machine.world_size, packet[1].item() > 0, packet[2].item() > 0


def end_process_group(machine: Machine, drop_wrapper: Callable[[], None]) -> None:
    """Leave the torchrun group; `drop_wrapper` lets go of the DDP wrapper.

    The gloo group's destructor joins its worker threads, and a worker may still hold its last collective,
    whose copy of the thread state holds a Python object (every backward() puts one there), so it needs the
    GIL to finish. The destructor must therefore not run with the GIL held, as it does when the DDP wrapper's
    C++ Reducer drops the group's last reference: a deadlock at exit. So this process holds the group through
    its Python handle, whose release lets go of the GIL first, while the wrapper goes and the group is
    unregistered; the handle is the last reference.
    """
    if not (machine.distributed and dist.is_initialized()):
        drop_wrapper()
        return
    group = dist.group.WORLD
    drop_wrapper()
    gc.collect()  # DDP's module sits in reference cycles
    dist.destroy_process_group()
    del group  # ~ProcessGroupGloo, with the GIL released
