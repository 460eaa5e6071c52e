"""The Trainer: one run's set-up, in named steps, and its loop of epochs, steps, validations and saves.

What it coordinates lives beside it: the machine and processes (machine.py), the loaders (loaders.py), the
run folder, its checkpoint files and their cadence (runfolder.py), the logged numbers (meter.py), when to
stop (stopping.py) and the validation scores (validation.py). One optimisation step is `step.train_step`,
which `pyramidal bench` and the gradient report run too.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyramidal.checkpoint import describe_spec, load_init_weights
from pyramidal.config import TrainConfig, learning_rate
from pyramidal.configcheck import validate_config
from pyramidal.damage import create_task, derive_seed
from pyramidal.errors import flag_error
from pyramidal.hub import resolve_init_weights
from pyramidal.models import create_model
from pyramidal.progress import progress
from pyramidal.runstate import EMA, StopRequest, rng_state, set_rng_state, summary_line
from pyramidal.step import grad_scaler, make_optimizer, psnr_from_mse, train_step, training_conditions
from pyramidal.train.loaders import TrainingData
from pyramidal.train.machine import (
    end_process_group,
    place_model,
    seed_everything,
    set_up_machine,
    training_wrapper,
)
from pyramidal.train.meter import RunClock, TrainingLog
from pyramidal.train.runfolder import RunFolder, check_destination, restore_weights
from pyramidal.train.stopping import Stopping
from pyramidal.train.validation import val_label, validation_scores


class Trainer:
    """One training run: builds data, model and optimizer from a TrainConfig, then `fit()` trains it."""

    def __init__(self, config: TrainConfig, cache: dict | None = None):
        """`cache`: a dict the caller keeps to share loaded data sources and device photographs among the
        runs it trains in one process (the GPU campaign); None loads them for this run alone."""
        self.config = c = dataclasses.replace(config)  # a copy: defaults filled in here stay ours
        validate_config(c)
        self.machine = m = set_up_machine(c)
        # The loss is read on the host every step on the CPU (free there) and under DDP (one collective carries
        # it with the stop flags); on a GPU it is summed on the device and read every log_every steps, so
        # that the host never waits for the GPU between steps.
        self._defer_loss = m.device.type != "cpu" and m.world_size == 1
        check_destination(c, m)
        self.progress = m.is_main and (sys.stderr.isatty() if c.progress is None else bool(c.progress))
        seed_everything(c.seed)
        self._make_tasks()
        self.data = TrainingData(c, self.task, self.val_task, m, cache, self.conditions)
        self._build_model()
        self._build_optimizer()
        self._start_counters()
        self.files = RunFolder.open(c, m)
        self.run_dir = self.files.path
        self.log = TrainingLog(c, m, self.files, self.clock)
        self.val_label = val_label(c.loss)  # the validation number the best weights are chosen by
        if c.resume:
            self._restore(self.files.load_last())

    # -- set-up ---------------------------------------------------------------------------------------------

    def _make_tasks(self) -> None:
        c = self.config
        task_kwargs = c.task_kwargs()
        self.task = create_task(c.task, train=True, **task_kwargs)
        self.val_task = create_task(c.task, train=False, **task_kwargs)
        # What the model takes besides the image (models.conditions.Conditions): the holes, or each σ.
        self.conditions = training_conditions(c.model_kwargs(), self.task)

    def _build_model(self) -> None:
        """The model (from init_weights unless resuming), its EMA, and what the step calls (DDP, compiled)."""
        c = self.config
        model = create_model(c.model, **c.model_kwargs())
        if c.init_weights and not c.resume:
            load_init_weights(model, resolve_init_weights(c.init_weights))
        self.model = place_model(model, c, self.machine)
        self.ema = EMA(self.model, c.ema) if c.ema and self.machine.is_main else None
        self.train_model: nn.Module = training_wrapper(self.model, c, self.machine)

    def _build_optimizer(self) -> None:
        c = self.config
        self.optimizer = make_optimizer(self.model.parameters(), c.optimizer, c.lr, c.weight_decay,
                                        self.machine.device)
        self.scaler = grad_scaler(self.machine.device, self.machine.precision)
        self.total_steps = self.data.planned_steps()
        if c.schedule == "cosine" and self.total_steps is None:
            raise flag_error("{schedule=}cosine needs {steps} or {epochs} to know where the schedule ends",
                             "schedule", "steps", "epochs")

    def _start_counters(self) -> None:
        """Progress state; everything here goes into last.ckpt."""
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.phase = 0
        self.best_psnr = float("-inf")
        self.best_step: int | None = None
        self.clock = RunClock(self.config.max_minutes, self.config.max_cpu_minutes)
        self.stopping = Stopping(self.config, self.machine, self.clock)
        self.last_val_step: int | None = None
        self.interrupted = False
        self.finished = False
        self.resumed = False

    # -- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train until a limit is reached; returns the run folder (last.ckpt, best.safetensors, logs).

        On any failure the run folder stays resumable (last.ckpt is only ever replaced whole), and a fresh
        run that fails before its first step leaves no folder behind.
        """
        ok = False
        try:
            if self.machine.is_main:
                self.files.lock()  # released in _close, or by the OS if this process dies
            with StopRequest() as stop:
                self.stopping.request = stop
                if self.machine.is_main:
                    self.log.open(self.step if self.resumed else None)
                self._loop()
            ok = True
        finally:
            self._close(ok)
        return self.run_dir

    def _close(self, ok: bool) -> None:
        """Close the logs, remove an untrained fresh run's folder after a failure, release the folder lock."""
        try:
            self.log.close()
        except OSError:
            if ok:
                raise  # a failure already on its way out says more than a failed close
        finally:
            if not ok:
                self.files.discard_untrained(self.resumed, self.step)
            self.files.release()
            end_process_group(self.machine, self._drop_wrapper)

    def _drop_wrapper(self) -> None:
        """The DDP wrapper (and its reference to the process group) goes with the group."""
        if self.machine.distributed:
            self.train_model = self.model

    def _loop(self) -> None:
        self._start()
        while not self.stopping.due(self.step, self.epoch):
            if self.batch_in_epoch == 0:
                self.phase = self.data.phase_for(self.step)
            if self._run_epoch():
                break  # stopped part-way through the epoch
            self.epoch += 1
            self.batch_in_epoch = 0
            self._end_of_epoch()
            if not self.stopping.due(self.step, self.epoch):
                with self.log.meter.aside():
                    self._save_last()
        self._finish()

    def _run_epoch(self) -> bool:
        """Train on the rest of this epoch; True if a limit or a signal stopped it before its end."""
        c = self.config
        loader = self.data.train_loader(self.phase)
        loader.set_epoch(self.epoch)  # also forwarded to a DistributedSampler
        if self.batch_in_epoch:
            loader.skip_batches(self.batch_in_epoch)
        total = len(loader)
        # A bar on a terminal; with --progress in a log, plain lines (progress.py) rather than bar refreshes.
        with progress(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}", unit="steps",
                      enabled=self.progress, file=sys.stderr) as bar:
            # A third item comes only for a conditioned model: the holes (mask_input) or each σ (noise_map).
            for damaged, clean, *condition in loader:
                self._train_step(damaged, clean, *condition)
                if self.progress:
                    loss, mse, ips = self._bar_values
                    bar.set_postfix_str(f"loss {loss:.4f}  PSNR {psnr_from_mse(mse):.2f} dB  {ips:.0f} img/s",
                                        refresh=False)
                    bar.update(1)
                if self.batch_in_epoch >= total:
                    return False  # the epoch is done: its end-of-epoch work follows in _loop
                if self.machine.is_main and self.step % c.log_every == 0:
                    self.log.train(self._lr_at(self.step - 1), self.step, self.epoch)
                if c.val_every and self.step % c.val_every == 0:
                    self._maybe_validate()
                if self.stopping.due(self.step, self.epoch):
                    return True
                if self.files.checkpoint_due(self.step):
                    with self.log.meter.aside():
                        self._save_last()
        return False  # a loader that ran short also ends its epoch

    def _start(self) -> None:
        c, m = self.config, self.machine
        self.log.start(self._defer_loss)
        self.files.last_ckpt_step = self.step if self.resumed else None
        self.files.last_ckpt_time = time.monotonic()
        self.clock.start()
        if m.is_main and not c.quiet:
            where = f"resuming {self.run_dir} at step {self.step}" if self.resumed else f"run folder {self.run_dir}"
            print(f"{where}  ({describe_spec(self.model.spec)}, task {c.task}, {m.device}, {m.precision}, "
                  f"{m.world_size} process(es); tensorboard --logdir {self.run_dir})", flush=True)
        if m.is_main and not self.resumed:
            self._validate(first=True)

    def _finish(self) -> None:
        self.interrupted = self.stopping.interrupted
        self.finished = not self.interrupted
        if not self.machine.is_main:
            return
        self.log.train(self._lr_at(self.step - 1), self.step, self.epoch)
        self._maybe_validate()
        self.log.train_images(self.step)
        self._save_last()
        self.log.flush()
        if not self.config.quiet:
            why = "stopped on request" if self.interrupted else (
                f"time budget ({self.clock.budget_spent() or '--max-minutes'}) reached" if self.stopping.out_of_time else "done")
            best = f"best {self.val_label} {self.best_psnr:.2f} dB at step {self.best_step}" if self.best_step is not None else ""
            print(f"{why}: step {self.step}, epoch {self.epoch}; {best}; {self.run_dir}", flush=True)

    def _end_of_epoch(self) -> None:
        if not self.machine.is_main:
            return
        self.log.train(self._lr_at(self.step - 1), self.step, self.epoch)
        self._maybe_validate()
        self.log.train_images(self.step)
        self.log.flush()
        if not self.config.quiet:
            print(summary_line(self.epoch, self.config.epochs, self.step, self.log.last_train,
                               getattr(self, "last_val_psnr", None), self.best_psnr, self.clock.elapsed(),
                               val_label=self.val_label), flush=True)

    # -- one step -------------------------------------------------------------------------------------------

    def _lr_at(self, step: int) -> float:
        return learning_rate(self.config, step, self.total_steps)

    def _train_step(self, damaged: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None) -> None:
        c, m = self.config, self.machine
        mask = condition if self.conditions.mask_input else None
        noise_level = condition if self.conditions.noise_map else None
        # Dropout draws from the global RNG: seeding it from (seed, step, rank) makes every step's masks a
        # pure function of its position, so a resumed run repeats them exactly whatever else used the RNG.
        torch.manual_seed(derive_seed(c.seed, self.step, m.rank))
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_at(self.step)
        loss, output = train_step(self.train_model, self.optimizer, damaged, clean, device=m.device,
                                  precision=m.precision, channels_last=c.channels_last, scaler=self.scaler,
                                  clip_grad=c.clip_grad, check_loss=self._check_loss, mask=mask,
                                  noise_level=noise_level, conditions=self.conditions, objective=c.loss)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        self.batch_in_epoch += 1
        # PSNR/train is the MSE's whatever the objective (this process's batch when distributed).
        self._bar_values = self.log.add_step(loss, output, clean, damaged.shape[0] * m.world_size)

    def _check_loss(self, loss: torch.Tensor) -> None:
        """Before the update: stop on a non-finite loss; under DDP also share the loss, signals and clock."""
        if self.machine.distributed:
            # One collective per step carries the mean loss (for logging and a shared NaN verdict), any
            # rank's signal and rank 0's clock, so that every process leaves the loop at the same step.
            value = self.stopping.share(loss)
        elif self._defer_loss:
            return  # summed on the device after the step; TrainingLog.read_losses checks it every log_every steps
        else:
            value = loss.item()  # signals and the clock are checked between steps by Stopping.due
        if not math.isfinite(value):
            raise self.files.diverged("the training loss", value, self.step + 1, self.epoch)
        self.log.meter.loss_value = value

    # -- validation and checkpoints -------------------------------------------------------------------------

    def _validate(self, first: bool = False) -> float:
        """PSNR over the fixed validation crops (EMA weights when on); logs it and keeps the best weights."""
        c = self.config
        model = self.ema.model if self.ema is not None else self.model
        scores = validation_scores(model, self.data.val_loader, self.machine, channels_last=c.channels_last,
                                   log_images=c.log_images, conditions=self.conditions)
        self.model.train()
        values = dict(scores.values)
        if first:
            values["PSNR/val_input"] = self.val_input_psnr = scores.input_psnr
        self.log.scalars(values, self.step, self.epoch)
        self.log.val_images(scores.shown, self.step, first)
        self.last_val_step = self.step
        psnr = values[self.val_label]  # the weights are chosen by the number the objective optimizes
        self.last_val_psnr = psnr
        # Step 0 counts too: a run stopped by its time budget before its first update still leaves weights.
        if math.isfinite(psnr) and psnr > self.best_psnr:
            self.best_psnr = psnr
            self.best_step = self.step
            self.files.save_best(model, "ema" if self.ema is not None else "model", self.task.options, self.step,
                                 self.epoch, psnr)
        return psnr

    def _maybe_validate(self) -> None:
        if self.machine.is_main and self.last_val_step != self.step:
            with self.log.meter.aside():
                self._validate()

    def _save_last(self) -> None:
        if not self.machine.is_main:
            return
        self.log.read_losses(self.step, self.epoch)
        c = self.config
        self.files.save_last({
            "spec": self.model.spec,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"schedule": c.schedule, "warmup_steps": c.warmup_steps,
                          "total_steps": self.total_steps, "lr": self._lr_at(max(self.step - 1, 0))},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "phase": self.phase,
            "best_psnr": self.best_psnr,
            "best_step": self.best_step,
            "last_val_step": self.last_val_step,
            "elapsed_s": self.clock.elapsed(),
            "cpu_s": self.clock.cpu_elapsed(),
            "finished": self.finished,
            "world_size": self.machine.world_size,
            "rng": rng_state(),
            "config": c.to_dict(),
            "time": time.time(),
        })

    def _restore(self, saved: dict[str, Any]) -> None:
        """Take up the run where `saved` (its last.ckpt) left it: weights, optimizer, EMA, counters, RNG."""
        path = self.run_dir / "last.ckpt"
        self.ema = restore_weights(saved, path, self.model, self.optimizer, self.scaler, self.ema, self.config.ema)
        self.step = int(saved["step"])
        self.epoch = int(saved["epoch"])
        self.batch_in_epoch = int(saved["batch_in_epoch"])
        self.phase = int(saved.get("phase", 0))
        self.best_psnr = float(saved["best_psnr"])
        self.best_step = saved.get("best_step")
        self.clock.before = float(saved.get("elapsed_s", 0.0))
        self.clock.cpu_before = float(saved.get("cpu_s", 0.0))
        self.last_val_step = saved.get("last_val_step")
        if self.machine.is_main:
            set_rng_state(saved["rng"])
        self.resumed = True
        if self.phase >= len(self.data.phases):
            raise flag_error("{path}: the run was in size phase {phase}, but {size_schedule} has fewer",
                             "size_schedule", path=path, phase=self.phase)
