"""When a run's loop ends: its step and epoch limits, its time budgets, a stop signal; under DDP one verdict
for every process."""

from __future__ import annotations

import torch

from pyramidal.config import TrainConfig
from pyramidal.runstate import StopRequest
from pyramidal.train.machine import Machine, share_step
from pyramidal.train.meter import RunClock


class Stopping:
    """The stop verdicts of one run. Under DDP only the first process watches the clock: one collective per
    step (`share`) carries its verdict and any process's signal to all, so that every process leaves the loop
    at the same step."""

    def __init__(self, c: TrainConfig, machine: Machine, clock: RunClock):
        self.steps, self.epochs = c.steps, c.epochs
        self.machine, self.clock = machine, clock
        self.request: StopRequest | None = None  # the signal handler, set while the loop runs
        self.flag = False  # stop after this step: a signal, or the clock under DDP
        self.interrupted = False  # the stop came from a signal
        self.out_of_time = False  # a time budget was used up

    def share(self, loss: torch.Tensor) -> float:
        """DDP, before the update: the mean loss over the processes; takes in this step's stop verdicts."""
        m = self.machine
        out_of_time = m.is_main and self.clock.budget_spent() is not None
        value, signalled, out_of_time = share_step(loss, self.request.requested, out_of_time, m)
        self.flag = self.flag or signalled or out_of_time
        self.out_of_time = self.out_of_time or out_of_time
        self.interrupted = self.interrupted or signalled
        return value

    def due(self, step: int, epoch: int) -> bool:
        """Whether the loop ends at `step` in `epoch` (counted from 0)."""
        if self.steps is not None and step >= self.steps:
            return True
        if self.epochs is not None and epoch >= self.epochs:
            return True
        # Under DDP only rank 0 watches the clock; its verdict reaches every rank through `share`.
        if not self.machine.distributed:
            if self.clock.budget_spent():
                self.out_of_time = True
                return True
            if self.request.requested:
                self.flag = self.interrupted = True
        return self.flag
