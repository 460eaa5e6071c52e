"""What a run logs: the training numbers between two log lines (loss, PSNR and images per second, read from the
device as seldom as the run allows), the run's clock, and metrics.csv and TensorBoard with their pictures."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from pyramidal.config import TrainConfig
from pyramidal.figures import tile_grid
from pyramidal.runstate import MetricsLog
from pyramidal.step import psnr_from_mse
from pyramidal.train.machine import Machine
from pyramidal.train.runfolder import RunFolder


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

    @contextmanager
    def aside(self) -> Iterator[None]:
        """The time spent inside (validation, saving) is left out of images/s."""
        t0 = time.perf_counter()
        yield
        self.excluded += time.perf_counter() - t0

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


class TrainingLog:
    """One run's logging: the training numbers (a LossMeter, on every process) and, on the first process,
    metrics.csv and TensorBoard (MetricsLog) with their pictures. A non-finite loss read late stops the run
    with the run folder's `diverged` error."""

    def __init__(self, c: TrainConfig, machine: Machine, folder: RunFolder, clock: RunClock):
        self.config, self.machine, self.folder, self.clock = c, machine, folder, clock
        self.metrics: MetricsLog | None = None
        self.meter: LossMeter | None = None
        self.last_train: dict[str, float] = {}  # the last interval's train scalars, for the epoch's line
        self._train_output: torch.Tensor | None = None
        self._train_image_step: int | None = None

    def open(self, resume_step: int | None) -> None:
        """First process: write the config and open metrics.csv and TensorBoard (`resume_step`: see MetricsLog)."""
        self.metrics = MetricsLog(self.folder.path, self.config.to_dict(), resume_step)

    def start(self, deferred: bool) -> None:
        """As the loop starts: a fresh interval (`deferred`: see LossMeter)."""
        self.meter = LossMeter(self.machine.device, deferred, self.config.loss)
        self._train_output = None
        self._train_image_step = None

    def add_step(self, loss: torch.Tensor, output: torch.Tensor, clean: torch.Tensor,
                 images: int) -> tuple[float, float, float]:
        """Count one training step (LossMeter.add) and keep its output for the pictures."""
        values = self.meter.add(loss, output, clean, images)
        self._train_output = output[: self.config.log_images]
        return values

    def scalars(self, values: dict[str, float], step: int, epoch: int) -> None:
        if self.machine.is_main:
            self.metrics.scalars(values, step, epoch, self.clock.elapsed())

    def read_losses(self, step: int, epoch: int) -> None:
        """Bring the losses summed on the device since the last read to the host (one sync): a non-finite one
        stops the run before anything is saved, as a per-step check does."""
        read = self.meter.read()
        if read is not None and not math.isfinite(read[0]):
            raise self.folder.diverged(f"the training loss (read every {self.config.log_every} steps)", read[0],
                                       step, epoch)

    def train(self, lr: float, step: int, epoch: int) -> None:
        """Log the interval's train scalars (`lr`: its last step's), if it had a step."""
        self.read_losses(step, epoch)
        values = self.meter.take(lr)
        if values is not None:
            self.last_train = values
            self.scalars(values, step, epoch)

    def train_images(self, step: int) -> None:
        if self.config.log_images and self._train_output is not None and self._train_image_step != step:
            self.metrics.writer.add_image("4 output (train)", tensorboard_grid(self._train_output), step)
            self._train_image_step = step

    def val_images(self, shown: list[torch.Tensor], step: int, first: bool) -> None:
        """The validation output; with `first`, also its input and ground truth."""
        if self.config.log_images:
            self.metrics.writer.add_image("1 output (val)", tensorboard_grid(shown[0]), step)
            if first:
                self.metrics.writer.add_image("2 input", tensorboard_grid(shown[1]), step)
                self.metrics.writer.add_image("3 ground truth", tensorboard_grid(shown[2]), step)

    def flush(self) -> None:
        self.metrics.writer.flush()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
