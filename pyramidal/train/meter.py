"""The training numbers between two log lines: loss, PSNR and images per second, read from the device as
seldom as the run allows; and the pictures TensorBoard shows."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from pyramidal.figures import tile_grid
from pyramidal.step import psnr_from_mse


def tensorboard_grid(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [-1, 1] → one TensorBoard picture."""
    return tile_grid(((images.detach().float().cpu() + 1) / 2).clamp(0, 1).numpy())


class LossMeter:
    """The loss and MSE of the training steps since the last log line.

    `deferred`: the losses are summed on the device and brought to the host by `read` (one sync per log
    line, so that the host never waits for the GPU between steps); else the caller sets `loss_value` from the
    loss it read after each step. PSNR/train is the MSE's whatever the objective.
    """

    def __init__(self, device: torch.device, deferred: bool, objective: str):
        self.deferred, self.objective = deferred, objective
        self.loss_sum = self.mse_sum = 0.0
        self.steps = self.images = self.read_steps = 0
        self.loss_value = self.mse_value = float("nan")  # the last step's (deferred: the last read's mean)
        self._device_sums = torch.zeros(2, device=device)
        self.excluded = 0.0  # seconds of validation and saving in this interval, left out of images/s
        self.interval_start = self._step_end = time.perf_counter()

    def add(self, loss: torch.Tensor, output: torch.Tensor, clean: torch.Tensor, images: int) -> tuple[float, float, float]:
        """Count one step of `images` images; returns the progress bar's (loss, MSE, images/s)."""
        if self.deferred:
            mse_t = loss if self.objective == "mse" else F.mse_loss(output, clean.to(output.device))
            self._device_sums += torch.stack((loss.float(), mse_t.float()))
            mse = self.mse_value
        else:
            mse = self.loss_value if self.objective == "mse" else F.mse_loss(output, clean.to(output.device)).item()
            self.loss_sum += self.loss_value
            self.mse_sum += mse
        self.steps += 1
        self.images += images
        now = time.perf_counter()
        values = (self.loss_value, mse, images / max(now - self._step_end, 1e-9))
        self._step_end = now
        return values

    def read(self) -> tuple[float, int] | None:
        """Deferred: bring the losses summed on the device since the last read to the host (one sync); returns
        (their sum, the number of steps), None when there was nothing to read. The caller checks it is finite."""
        if not self.deferred or self.steps == self.read_steps:
            return None
        loss_sum, mse_sum = self._device_sums.tolist()
        self._device_sums.zero_()
        steps, self.read_steps = self.steps - self.read_steps, self.steps
        if math.isfinite(loss_sum):
            self.loss_sum += loss_sum
            self.mse_sum += mse_sum
            self.loss_value, self.mse_value = loss_sum / steps, mse_sum / steps
        return loss_sum, steps

    def take(self, lr: float) -> dict[str, float] | None:
        """The interval's train scalars (`lr` among them), and a fresh interval; None when it had no step."""
        if self.steps == 0:
            return None
        now = time.perf_counter()
        seconds = max(now - self.interval_start - self.excluded, 1e-9)
        self.interval_start, self.excluded = now, 0.0
        values = {"loss/train": self.loss_sum / self.steps, "PSNR/train": psnr_from_mse(self.mse_sum / self.steps),
                  "lr": lr, "images_per_s": self.images / seconds}
        self.loss_sum = self.mse_sum = 0.0
        self.steps = self.images = self.read_steps = 0
        return values


class RunClock:
    """The seconds a run has trained, wall-clock and this process's CPU time (all its threads), each summed
    over resumes, and which time budget they have used up."""

    def __init__(self, max_minutes: float | None, max_cpu_minutes: float | None):
        self.max_minutes, self.max_cpu_minutes = max_minutes, max_cpu_minutes
        self.before = self.cpu_before = 0.0  # the seconds of the runs resumed
        self._start: float | None = None
        self._cpu_start: float | None = None

    def start(self) -> None:
        self._start, self._cpu_start = time.monotonic(), time.process_time()

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self._start if self._start is not None else 0.0)

    def cpu_elapsed(self) -> float:
        return self.cpu_before + (time.process_time() - self._cpu_start if self._cpu_start is not None else 0.0)

    def budget_spent(self) -> str | None:
        """The flag whose time budget is used up (--max-minutes, --max-cpu-minutes), or None."""
        if self.max_minutes is not None and self.elapsed() >= self.max_minutes * 60:
            return "--max-minutes"
        if self.max_cpu_minutes is not None and self.cpu_elapsed() >= self.max_cpu_minutes * 60:
            return "--max-cpu-minutes"
        return None
