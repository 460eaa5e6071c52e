"""Training: MSE on [-1, 1], Adam, TensorBoard as PSNR, crash-proof checkpoints, exact resume, DDP.

The trainer knows nothing about any particular architecture: it builds whatever `create_model` returns
and talks to it only through `forward`, `parameters()` and `state_dict()`. One optimisation step is
`train_step`, which `pyramidal bench` and the gradient report run too. Options live in pyramidal.config,
the RNG/EMA/stop-signal state in pyramidal.runstate.

    from pyramidal.config import TrainConfig
    from pyramidal.train import train
    run_dir = train(TrainConfig(task="squares", model="pyramidal51", data="builtin", steps=200))
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.checkpoint import (
    describe_spec,
    load_checkpoint,
    load_checkpoint_model,
    load_init_weights,
    save_checkpoint,
    save_weights,
)
from pyramidal.config import (
    TrainConfig,
    check_run_folder,
    learning_rate,
    non_default,
    resume_config,
    size_phases,
    validate_config,
)
from pyramidal.damage import derive_seed
from pyramidal.device import init_distributed, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.fastpath import tune_cpu_allocator
from pyramidal.figures import tile_grid
from pyramidal.hub import resolve_init_weights
from pyramidal.io import folder_problem, missing_folders, remove_empty_folders
from pyramidal.runstate import (
    EMA,
    MetricsLog,
    RunLock,
    StopRequest,
    best_record,
    first_nonfinite,
    new_run_dir,
    rng_state,
    set_rng_state,
    summary_line,
)
from pyramidal.step import (
    grad_scaler,
    make_optimizer,
    model_output,
    psnr_from_mse,
    train_step,
    training_conditions,
)


class TrainingDiverged(PyramidalError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def train(config: TrainConfig) -> Path:
    """Train as `config` says and return the run folder.

    With `config.resume`, the run's saved config is used and every field of `config` that differs from
    the TrainConfig default overrides it (so `TrainConfig(resume=dir, steps=500)` trains on to step 500).
    """
    if config.resume:
        overrides = non_default(config)
        overrides.pop("resume", None)
        config = resume_config(config.resume, overrides)
    return Trainer(config).fit()


def _grid(images: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [-1, 1] → one TensorBoard picture."""
    return tile_grid(((images.detach().float().cpu() + 1) / 2).clamp(0, 1).numpy())


def cached_source(config: TrainConfig, size: int, cache: dict):
    """The data source a run of `config` reads at patch `size`, loaded once per `cache`."""
    from pyramidal.data.sources import load_source

    c = config
    key = ("source", c.data, size, c.max_images, c.seed, c.patches_per_epoch)
    if key not in cache:
        cache[key] = load_source(c.data, size=size, max_images=c.max_images, seed=c.seed,
                                 patches_per_epoch=c.patches_per_epoch)
    return cache[key]


def cached_device_photos(config: TrainConfig, device: torch.device, cache: dict):
    """--data-on-device: the training photographs of `config` held on `device`, once per `cache`."""
    from pyramidal.gpudata import DevicePhotos, window_side

    side = window_side(max(s for _, s, _ in size_phases(config)))
    key = ("device photos", config.data, config.max_images, str(device), side)
    if key not in cache:
        cache[key] = DevicePhotos.from_dataset(cached_source(config, config.size, cache).split("train"), device, side)
    return cache[key]


# ----------------------------------------------------------------------------------------------------------
# The trainer.


class Trainer:
    """One training run: builds data, model and optimizer from a TrainConfig, then `fit()` trains it."""

    def __init__(self, config: TrainConfig, cache: dict | None = None):
        """`cache`: a dict the caller keeps to share loaded data sources and device photographs among the
        runs it trains in one process (the GPU campaign); None loads them for this run alone."""
        from pyramidal.damage import create_task
        from pyramidal.models import create_model

        self.config = c = dataclasses.replace(config)  # a copy: defaults filled in here stay ours
        validate_config(c)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device, self.world_size, self.rank = init_distributed(c.device)
        self.distributed = self.world_size > 1
        self.precision = resolve_precision(c.precision, self.device)
        if self.device.type == "cuda" and not torch.backends.cudnn.deterministic:
            # Every step has the same shapes: cuDNN times its kernels once and keeps the fastest.
            torch.backends.cudnn.benchmark = True
        # The loss is read on the host every step on the CPU (free there) and under DDP (one collective carries
        # it with the stop flags); on a GPU it is summed on the device and read every --log-every steps, so
        # that the host never waits for the GPU between steps.
        self._defer_loss = self.device.type != "cpu" and self.world_size == 1
        if self.device.type == "cpu" and not (c.memory_efficient or c.model_options.get("memory_efficient")):
            # As the bench does: reuse freed memory instead of page-faulting it back every step. A memory-efficient
            # run keeps glibc's default, which returns freed blocks, so its peak RSS stays what the step needs.
            tune_cpu_allocator()
        self.is_main = self.rank == 0
        # Before any data loads: the run folder to resume, or the --out folder a fresh run will be made in.
        # One process trains in a folder at a time: `fit` holds its lock; a busy folder is refused here already.
        self._lock: RunLock | None = None
        self._created: list[Path] = []  # folders this run made: removed again if it fails before training
        if c.resume:
            check_run_folder(c.resume)
        elif self.is_main:
            problem = folder_problem(c.out)
            if problem:
                raise PyramidalError(f"{problem} (--out)")
        if c.progress is None:
            self.progress = self.is_main and sys.stderr.isatty()
        else:
            self.progress = bool(c.progress) and self.is_main

        torch.manual_seed(c.seed)
        np.random.seed(c.seed % 2**32)
        random.seed(c.seed)

        task_kwargs = c.task_kwargs()
        self.task = create_task(c.task, train=True, **task_kwargs)
        self.val_task = create_task(c.task, train=False, **task_kwargs)
        # What the model takes besides the image (models.conditions.Conditions): the holes, or each σ.
        self.conditions = training_conditions(c.model_kwargs(), self.task)
        self.phases = size_phases(c)
        self._sources: dict[int, Any] = {}
        self._loaders: dict[int, Any] = {}
        self._cache = {} if cache is None else cache
        # An epoch: --patches-per-epoch patches with --data-on-device; else the training split's length.
        self.train_len = c.patches_per_epoch if c.data_on_device else len(self._source(c.size).split("train"))
        if c.data_on_device:
            from pyramidal.gpudata import check_device_task

            check_device_task(self.task)
        self.val_loader = self._make_val_loader() if self.is_main else None

        model = create_model(c.model, **c.model_kwargs())
        if c.init_weights and not c.resume:
            load_init_weights(model, resolve_init_weights(c.init_weights))
        if c.sync_bn and self.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif self.is_main:
                print("note: --sync-bn needs GPUs (PyTorch has no CPU SyncBatchNorm); "
                      "keeping per-process BatchNorm", file=sys.stderr)
        model.to(self.device)
        if c.channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.ema = EMA(model, c.ema) if c.ema and self.is_main else None
        self.train_model: nn.Module = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(model, device_ids=ids)
        if c.compile:
            self.train_model = torch.compile(self.train_model)

        self.optimizer = make_optimizer(model.parameters(), c.optimizer, c.lr, c.weight_decay, self.device)
        self.scaler = grad_scaler(self.device, self.precision)
        self.total_steps = self._planned_steps()
        if c.schedule == "cosine" and self.total_steps is None:
            raise PyramidalError("--schedule cosine needs --steps or --epochs to know where the schedule ends")

        # Progress state; everything here goes into last.ckpt.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.phase = 0
        self.best_psnr = float("-inf")
        self.best_step: int | None = None
        self.elapsed = 0.0
        self.cpu_elapsed = 0.0
        self.last_val_step: int | None = None
        self.interrupted = False
        self._out_of_time = False
        self.finished = False
        self.resumed = False

        if c.resume:
            self.run_dir = Path(c.resume)
            self._restore(self.run_dir / "last.ckpt")
        else:
            self.run_dir = self._make_run_dir()
        self.logs: MetricsLog | None = None

    # -- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train until a limit is reached; returns the run folder (last.ckpt, best.safetensors, logs).

        On any failure the run folder stays resumable (last.ckpt is only ever replaced whole), and a fresh
        run that fails before its first step leaves no folder behind.
        """
        ok = False
        try:
            if self.is_main:
                self._lock = RunLock(self.run_dir)  # released in _close, or by the OS if this process dies
            with StopRequest() as stop:
                self._stop = stop
                if self.is_main:
                    self.logs = MetricsLog(self.run_dir, self.config.to_dict(), self.step if self.resumed else None)
                self._loop()
            ok = True
        finally:
            self._close(ok)
        return self.run_dir

    def _close(self, ok: bool) -> None:
        """Close the logs, remove an untrained fresh run's folder after a failure, release the folder lock."""
        try:
            if self.logs is not None:
                self.logs.close()
        except OSError:
            if ok:
                raise  # a failure already on its way out says more than a failed close
        finally:
            if not ok:
                self._discard_untrained_run()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if self.distributed:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _discard_untrained_run(self) -> None:
        """A fresh run that failed before its first step leaves nothing behind: it has nothing to resume."""
        if self.resumed or not self._created or self.step > 0 or (self.run_dir / "last.ckpt").exists():
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)
        remove_empty_folders(self._created[1:])  # the OUT/TASK/MODEL folders it made, while empty

    def _loop(self) -> None:
        self._start()
        while not self._should_stop():
            if self.batch_in_epoch == 0:
                self.phase = self._phase_for(self.step)
            if self._run_epoch():
                break  # stopped part-way through the epoch
            self.epoch += 1
            self.batch_in_epoch = 0
            self._end_of_epoch()
            if not self._should_stop():
                self._timed_save()
        self._finish()

    def _run_epoch(self) -> bool:
        """Train on the rest of this epoch; True if a limit or a signal stopped it before its end."""
        from pyramidal.progress import progress

        c = self.config
        loader = self._train_loader(self.phase)
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
                if self.is_main and self.step % c.log_every == 0:
                    self._log_train()
                if c.val_every and self.step % c.val_every == 0:
                    self._maybe_validate()
                if self._should_stop():
                    return True
                if self._checkpoint_due():
                    self._timed_save()
        return False  # a loader that ran short also ends its epoch

    # -- set-up ---------------------------------------------------------------------------------------------

    def _source(self, size: int):
        if size not in self._sources:
            self._sources[size] = cached_source(self.config, size, self._cache)
        return self._sources[size]

    def _make_loader(self, ds, task, batch_size: int, train: bool, sampler=None):
        from pyramidal.data.loader import make_loader

        kwargs = {}
        if self.config.num_workers:
            # Workers stay up for the whole run; batches bound for a GPU come in page-locked memory.
            kwargs.update(num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")
        return make_loader(ds, task, batch_size=batch_size, train=train, seed=self.config.seed,
                           sampler=sampler, drop_last=train, with_mask=self.conditions.mask_input,
                           with_noise_level=self.conditions.noise_map, **kwargs)

    def _device_loader(self, size: int, batch: int):
        """--data-on-device: batches cut and damaged on the training device from photographs held there."""
        from pyramidal.gpudata import DeviceBatches

        photos = cached_device_photos(self.config, self.device, self._cache)
        return DeviceBatches(photos, self.task, size, batch, self._steps_per_epoch_for(batch),
                             seed=self.config.seed, rank=self.rank, with_mask=self.conditions.mask_input,
                             with_noise_level=self.conditions.noise_map)

    def _train_loader(self, phase: int):
        if phase not in self._loaders:
            self._loaders.clear()  # one phase at a time: no need to keep old patch sizes around
            _, size, batch = self.phases[phase]
            if self.config.data_on_device:
                self._loaders[phase] = self._device_loader(size, batch)
                return self._loaders[phase]
            ds = self._source(size).split("train")
            sampler = None
            if self.distributed:
                from torch.utils.data.distributed import DistributedSampler

                sampler = DistributedSampler(ds, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                             seed=self.config.seed, drop_last=True)
            loader = self._make_loader(ds, self.task, batch, train=True, sampler=sampler)
            if len(loader) == 0:
                raise PyramidalError(
                    f"--patches-per-epoch {self.config.patches_per_epoch} gives no full batch of {batch} "
                    f"per process ({self.world_size} process(es)); raise it or lower --batch-size"
                )
            self._loaders[phase] = loader
        return self._loaders[phase]

    def _make_val_loader(self):
        c = self.config
        ds = self._source(c.size).split("val")
        if c.val_images and c.val_images < len(ds):
            ds = torch.utils.data.Subset(ds, range(c.val_images))
        if len(ds) == 0:
            raise PyramidalError(f"--data {c.data}: the validation split is empty")
        return self._make_loader(ds, self.val_task, c.batch_size, train=False)

    def _phase_for(self, step: int) -> int:
        return max(i for i, (at, _, _) in enumerate(self.phases) if at <= step)

    def _steps_per_epoch(self, phase: int) -> int:
        return self._steps_per_epoch_for(self.phases[phase][2])

    def _steps_per_epoch_for(self, batch: int) -> int:
        per_process = self.train_len // self.world_size if self.distributed else self.train_len
        return max(1, per_process // batch)  # a lone partial batch still counts

    def _planned_steps(self) -> int | None:
        """Steps this run will take by --steps/--epochs (None when only --max-minutes limits it)."""
        c = self.config
        limits = []
        if c.steps is not None:
            limits.append(c.steps)
        if c.epochs is not None:
            step = 0
            for _ in range(c.epochs):
                n = self._steps_per_epoch(self._phase_for(step))
                if n == 0:
                    break
                step += n
            limits.append(step)
        return min(limits) if limits else None

    def _make_run_dir(self) -> Path:
        path = None
        if self.is_main:
            c = self.config
            self._created = missing_folders(Path(c.out) / c.task / c.model)
            run_dir = new_run_dir(c.out, c.task, c.model)
            self._created.insert(0, run_dir)
            path = str(run_dir)
        if self.distributed:
            import torch.distributed as dist

            box = [path]
            dist.broadcast_object_list(box, src=0)
            path = box[0]
        return Path(path)

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _restore(self, path: Path) -> None:
        if not path.exists():
            raise PyramidalError(f"{path}: no checkpoint (the run stopped before its first one); start it again")
        saved = load_checkpoint(path)
        load_checkpoint_model(saved, self.model, str(path))
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.scaler is not None and saved.get("scaler"):
                self.scaler.load_state_dict(saved["scaler"])
            if self.ema is not None:
                if saved.get("ema") is not None:
                    self.ema.load_state_dict(saved["ema"])
                else:  # EMA switched on at resume: start it from the current weights
                    self.ema = EMA(self.model, self.config.ema)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise PyramidalError(f"{path}: checkpoint does not fit this run ({exc})") from None
        self.step = int(saved["step"])
        self.epoch = int(saved["epoch"])
        self.batch_in_epoch = int(saved["batch_in_epoch"])
        self.phase = int(saved.get("phase", 0))
        self.best_psnr = float(saved["best_psnr"])
        self.best_step = saved.get("best_step")
        self.elapsed = float(saved.get("elapsed_s", 0.0))
        self.cpu_elapsed = float(saved.get("cpu_s", 0.0))
        self.last_val_step = saved.get("last_val_step")
        if self.rank == 0:
            set_rng_state(saved["rng"])
        self.resumed = True
        if self.phase >= len(self.phases):
            raise PyramidalError(f"{path}: the run was in size phase {self.phase}, but --size-schedule has fewer")

    def _save_last(self) -> None:
        if not self.is_main:
            return
        self._read_losses()
        state = {
            "spec": self.model.spec,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"schedule": self.config.schedule, "warmup_steps": self.config.warmup_steps,
                          "total_steps": self.total_steps, "lr": self._lr_at(max(self.step - 1, 0))},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "phase": self.phase,
            "best_psnr": self.best_psnr,
            "best_step": self.best_step,
            "last_val_step": self.last_val_step,
            "elapsed_s": self._elapsed(),
            "cpu_s": self._cpu_elapsed(),
            "finished": self.finished,
            "world_size": self.world_size,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "time": time.time(),
        }
        # Everything the checkpoint would hold is checked, BatchNorm statistics, EMA and Adam's moments
        # included: a non-finite value stops the run and the last good checkpoint stays as it is.
        bad = first_nonfinite({key: state[key] for key in ("model", "ema", "optimizer")})
        if bad is not None:
            raise self._diverged(bad[0], bad[1], self.step)
        save_checkpoint(self.run_dir / "last.ckpt", state)
        self.last_ckpt_step = self.step
        self.last_ckpt_time = time.monotonic()

    def _save_best(self, psnr: float) -> None:
        model = self.ema.model if self.ema is not None else self.model
        bad = first_nonfinite(model.state_dict(), "ema" if self.ema is not None else "model")
        if bad is not None:  # never replace good best weights with broken ones
            raise self._diverged(bad[0], bad[1], self.step)
        record = best_record(self.config, self.task.options, self.step, self.epoch, psnr)
        save_weights(model, self.run_dir / "best.safetensors", metadata=record)

    def _diverged(self, what: str, value: float, step: int) -> TrainingDiverged:
        ckpt = self.run_dir / "last.ckpt"
        kept = (f"kept the last good checkpoint {ckpt} (step {self.last_ckpt_step})"
                if ckpt.exists() else "no checkpoint had been written yet")
        return TrainingDiverged(
            f"{what} became non-finite ({value}) at step {step} (epoch {self.epoch + 1}); stopped and "
            f"{kept}. Try a lower --lr" + (", --clip-grad 1.0" if not self.config.clip_grad else "")
            + (" or --precision fp32" if self.precision != "fp32" else "")
        )

    # -- logging --------------------------------------------------------------------------------------------

    def _log(self, values: dict[str, float]) -> None:
        if self.is_main:
            self.logs.scalars(values, self.step, self.epoch, self._elapsed())

    def _read_losses(self) -> None:
        """Bring the losses summed on the device since the last read to the host (one sync): a non-finite one
        stops the run before anything is saved, as a per-step check does."""
        if not self._defer_loss or self._acc_n == self._read_n:
            return
        loss_sum, mse_sum = self._device_sums.tolist()
        self._device_sums.zero_()
        steps, self._read_n = self._acc_n - self._read_n, self._acc_n
        if not math.isfinite(loss_sum):
            raise self._diverged(f"the training loss (read every {self.config.log_every} steps)", loss_sum, self.step)
        self._acc_loss += loss_sum
        self._acc_mse += mse_sum
        self._loss_value, self._mse_value = loss_sum / steps, mse_sum / steps

    def _log_train(self) -> None:
        self._read_losses()
        if self._acc_n == 0:
            return
        mse = self._acc_mse / self._acc_n
        now = time.perf_counter()
        seconds = max(now - self._interval_start - self._excluded, 1e-9)
        self._interval_start, self._excluded = now, 0.0
        values = {"loss/train": self._acc_loss / self._acc_n, "PSNR/train": psnr_from_mse(mse),
                  "lr": self._lr_at(self.step - 1), "images_per_s": self._acc_images / seconds}
        self.last_train = values
        self._log(values)
        self._acc_loss = self._acc_mse = self._acc_n = self._acc_images = self._read_n = 0

    def _elapsed(self) -> float:
        return self.elapsed + (time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0.0)

    def _cpu_elapsed(self) -> float:
        """Seconds of this process's CPU time (all its threads) spent training, summed over resumes."""
        return self.cpu_elapsed + (time.process_time() - self._cpu_start if hasattr(self, "_cpu_start") else 0.0)

    def _budget_spent(self) -> str | None:
        """The flag whose time budget is used up (--max-minutes, --max-cpu-minutes), or None."""
        c = self.config
        if c.max_minutes is not None and self._elapsed() >= c.max_minutes * 60:
            return "--max-minutes"
        if c.max_cpu_minutes is not None and self._cpu_elapsed() >= c.max_cpu_minutes * 60:
            return "--max-cpu-minutes"
        return None

    # -- steps, validation, stopping ------------------------------------------------------------------------

    def _lr_at(self, step: int) -> float:
        return learning_rate(self.config, step, self.total_steps)

    def _should_stop(self) -> bool:
        c = self.config
        if c.steps is not None and self.step >= c.steps:
            return True
        if c.epochs is not None and self.epoch >= c.epochs:
            return True
        # Under DDP only rank 0 watches the clock; its verdict reaches every rank through _stop_flag.
        if not self.distributed:
            if self._budget_spent():
                self._out_of_time = True
                return True
            if self._stop.requested:
                self._stop_flag = self._interrupted = True
        return self._stop_flag

    def _train_step(self, damaged: torch.Tensor, clean: torch.Tensor, condition: torch.Tensor | None = None) -> None:
        c = self.config
        mask = condition if self.conditions.mask_input else None
        noise_level = condition if self.conditions.noise_map else None
        # Dropout draws from the global RNG: seeding it from (seed, step, rank) makes every step's masks a
        # pure function of its position, so a resumed run repeats them exactly whatever else used the RNG.
        torch.manual_seed(derive_seed(c.seed, self.step, self.rank))
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_at(self.step)
        loss, output = train_step(self.train_model, self.optimizer, damaged, clean, device=self.device,
                               precision=self.precision, channels_last=c.channels_last, scaler=self.scaler,
                               clip_grad=c.clip_grad, check_loss=self._check_loss, mask=mask,
                               noise_level=noise_level, conditions=self.conditions, objective=c.loss)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        self.batch_in_epoch += 1
        n = damaged.shape[0] * self.world_size
        # PSNR/train is the MSE's whatever the objective (this process's batch when distributed).
        if self._defer_loss:
            mse_t = loss if c.loss == "mse" else F.mse_loss(output, clean.to(output.device))
            self._device_sums += torch.stack((loss.float(), mse_t.float()))
            mse = self._mse_value
        else:
            mse = self._loss_value if c.loss == "mse" else F.mse_loss(output, clean.to(output.device)).item()
            self._acc_loss += self._loss_value
            self._acc_mse += mse
        self._acc_n += 1
        self._acc_images += n
        self._last_output = output[: c.log_images]
        now = time.perf_counter()
        self._bar_values = (self._loss_value, mse, n / max(now - self._step_end, 1e-9))
        self._step_end = now

    def _check_loss(self, loss: torch.Tensor) -> None:
        """Before the update: stop on a non-finite loss; under DDP also share the loss, signals and clock."""
        if self.distributed:
            import torch.distributed as dist

            # One collective per step carries the mean loss (for logging and a shared NaN verdict), any
            # rank's signal and rank 0's clock, so that every process leaves the loop at the same step.
            out_of_time = self.is_main and self._budget_spent() is not None
            flags = torch.tensor([float(self._stop.requested), float(out_of_time)], device=loss.device)
            packet = torch.cat([loss.float().reshape(1), flags])
            dist.all_reduce(packet)
            value = packet[0].item() / self.world_size
            signalled, out_of_time = packet[1].item() > 0, packet[2].item() > 0
        elif self._defer_loss:
            return  # summed on the device after the step; _read_losses checks it every --log-every steps
        else:
            value = loss.item()
            signalled = out_of_time = False  # checked between steps by _should_stop
        if not math.isfinite(value):
            raise self._diverged("the training loss", value, self.step + 1)
        self._stop_flag = self._stop_flag or signalled or out_of_time
        self._out_of_time = self._out_of_time or out_of_time
        self._interrupted = self._interrupted or signalled
        self._loss_value = value

    @torch.no_grad()
    def _validate(self, first: bool = False) -> float:
        """PSNR over the fixed validation crops (EMA weights when on); logs it and keeps the best weights.

        PSNR/val is the PSNR of the crops' mean MSE; PSNR/val_images, the mean of each crop's PSNR, as
        `pyramidal evaluate` reports. The best weights are chosen by the first, or by the second when the
        objective is `psnr`, which optimizes it.
        """
        model = self.ema.model if self.ema is not None else self.model
        model.eval()
        c = self.config
        se = se_in = 0.0
        count = 0
        image_psnrs: list[float] = []
        shown: list[torch.Tensor] = []
        for damaged, clean, *condition in self.val_loader:
            given = condition[0] if condition else None
            out = model_output(model, damaged, clean, given if self.conditions.mask_input else None,
                               device=self.device, precision=self.precision, channels_last=c.channels_last,
                               noise_level=given if self.conditions.noise_map else None,
                               conditions=self.conditions).cpu()
            squared = (out - clean).pow(2).flatten(1)
            se += squared.sum().item()
            image_psnrs += [psnr_from_mse(v) for v in squared.mean(dim=1).tolist()]
            se_in += F.mse_loss(damaged, clean, reduction="sum").item()
            count += clean.numel()
            if not shown:
                shown = [out[: c.log_images], damaged[: c.log_images], clean[: c.log_images]]
        self.model.train()
        mse = se / count
        psnr = psnr_from_mse(mse)
        mean_psnr = sum(min(v, 100.0) for v in image_psnrs) / len(image_psnrs)  # an exact image counts 100 dB
        values = {"loss/val": mse, "PSNR/val": psnr, "PSNR/val_images": mean_psnr}
        if first:
            values["PSNR/val_input"] = psnr_from_mse(se_in / count)
            self.val_input_psnr = values["PSNR/val_input"]
        self._log(values)
        if c.log_images:
            self.logs.writer.add_image("1 output (val)", _grid(shown[0]), self.step)
            if first:
                self.logs.writer.add_image("2 input", _grid(shown[1]), self.step)
                self.logs.writer.add_image("3 ground truth", _grid(shown[2]), self.step)
        self.last_val_step = self.step
        psnr = values[self._val_label]  # the weights are chosen by the number the objective optimizes
        self.last_val_psnr = psnr
        # Step 0 counts too: a run stopped by --max-minutes before its first update still leaves weights.
        if math.isfinite(psnr) and psnr > self.best_psnr:
            self.best_psnr = psnr
            self.best_step = self.step
            self._save_best(psnr)
        return psnr

    def _maybe_validate(self) -> None:
        if self.is_main and self.last_val_step != self.step:
            t0 = time.perf_counter()
            self._validate()
            self._excluded += time.perf_counter() - t0

    def _end_of_epoch(self) -> None:
        if not self.is_main:
            return
        self._log_train()
        self._maybe_validate()
        self._log_train_images()
        self.logs.writer.flush()
        if not self.config.quiet:
            self._summary()

    def _log_train_images(self) -> None:
        if self.config.log_images and self._last_output is not None and self._train_image_step != self.step:
            self.logs.writer.add_image("4 output (train)", _grid(self._last_output), self.step)
            self._train_image_step = self.step

    def _timed_save(self) -> None:
        t0 = time.perf_counter()
        self._save_last()
        self._excluded += time.perf_counter() - t0

    def _summary(self) -> None:
        print(summary_line(self.epoch, self.config.epochs, self.step, getattr(self, "last_train", {}),
                           getattr(self, "last_val_psnr", None), self.best_psnr, self._elapsed(),
                           val_label=self._val_label), flush=True)

    @property
    def _val_label(self) -> str:
        """The validation number the best weights are chosen by (see `_validate`)."""
        return "PSNR/val_images" if self.config.loss == "psnr" else "PSNR/val"

    def _start(self) -> None:
        c = self.config
        self._stop_flag = False  # stop after this step: a signal, or --max-minutes under DDP
        self._interrupted = False  # the stop came from a signal
        self._acc_loss = self._acc_mse = self._acc_n = self._acc_images = self._read_n = 0
        self._loss_value = self._mse_value = float("nan")
        self._device_sums = torch.zeros(2, device=self.device)
        self._excluded = 0.0
        self._interval_start = self._step_end = time.perf_counter()
        self._last_output = None
        self._train_image_step = None
        self.last_ckpt_step = self.step if self.resumed else None
        self.last_ckpt_time = time.monotonic()
        self._t_start = time.monotonic()
        self._cpu_start = time.process_time()
        if self.is_main and not c.quiet:
            where = f"resuming {self.run_dir} at step {self.step}" if self.resumed else f"run folder {self.run_dir}"
            print(f"{where}  ({describe_spec(self.model.spec)}, task {c.task}, {self.device}, {self.precision}, "
                  f"{self.world_size} process(es); tensorboard --logdir {self.run_dir})", flush=True)
        if self.is_main and not self.resumed:
            self._validate(first=True)

    def _finish(self) -> None:
        self.interrupted = self._interrupted
        self.finished = not self.interrupted
        if not self.is_main:
            return
        self._log_train()
        self._maybe_validate()
        self._log_train_images()
        self._save_last()
        self.logs.writer.flush()
        if not self.config.quiet:
            why = "stopped on request" if self.interrupted else (
                f"time budget ({self._budget_spent() or '--max-minutes'}) reached" if self._out_of_time else "done")
            best = f"best {self._val_label} {self.best_psnr:.2f} dB at step {self.best_step}" if self.best_step is not None else ""
            print(f"{why}: step {self.step}, epoch {self.epoch}; {best}; {self.run_dir}", flush=True)

    def _checkpoint_due(self) -> bool:
        c = self.config
        if c.checkpoint_every_steps and self.step % c.checkpoint_every_steps == 0:
            return True
        if c.checkpoint_minutes and time.monotonic() - self.last_ckpt_time >= c.checkpoint_minutes * 60:
            return True
        return False
