"""The files of a run: its folder (new, or the one resumed) and the lock on it, last.ckpt (and when the next is
due) and best.safetensors, each checked to be finite before it is written, and the error that stops a diverged
run with the last good checkpoint kept."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyramidal.checkpoint import load_checkpoint, load_checkpoint_model, save_checkpoint, save_weights
from pyramidal.config import TrainConfig, check_run_folder
from pyramidal.errors import OptionError, PyramidalError, option_wording
from pyramidal.io import folder_problem, missing_folders, remove_empty_folders
from pyramidal.runstate import EMA, RunLock, best_record, first_nonfinite, new_run_dir
from pyramidal.train.machine import Machine, broadcast_from_main


class TrainingDiverged(PyramidalError):
    """The loss became NaN or infinite; the last good checkpoint was kept. The message names options as Python
    callers write them (`lr=`), its `flags` as the command line does (`--lr`)."""


def check_destination(c: TrainConfig, machine: Machine) -> None:
    """Before any data loads: the run folder to resume, or the `out` folder a fresh run will be made in.
    One process trains in a folder at a time: a busy folder is refused here already."""
    if c.resume:
        check_run_folder(c.resume)
    elif machine.is_main:
        problem = folder_problem(c.out)
        if problem:
            raise OptionError(f"{problem} (out={c.out!r})", f"{problem} (--out)")


class RunFolder:
    """One run's folder and the checkpoint files in it: `open` gives the folder resumed, or a fresh one."""

    def __init__(self, path: Path, c: TrainConfig, precision: str, created: list[Path] | None = None):
        self.path = path
        self.config, self.precision = c, precision  # what the cadence and a divergence's advice depend on
        self._created = created or []  # folders this run made: removed again if it fails before training
        self._lock: RunLock | None = None
        self.last_ckpt_step: int | None = None  # the step of the last.ckpt on disk
        self.last_ckpt_time = time.monotonic()

    @classmethod
    def open(cls, c: TrainConfig, machine: Machine) -> RunFolder:
        """The run folder `c.resume` names, or a fresh run's folder, OUT/TASK/MODEL/TIME, made by the first
        process and named to all."""
        if c.resume:
            return cls(Path(c.resume), c, machine.precision)
        path, created = None, []
        if machine.is_main:
            created = missing_folders(Path(c.out) / c.task / c.model)
            run_dir = new_run_dir(c.out, c.task, c.model)
            created.insert(0, run_dir)
            path = str(run_dir)
        return cls(Path(broadcast_from_main(path, machine)), c, machine.precision, created)

    def lock(self) -> None:
        """Hold the folder's lock until `release` (or until this process dies: the OS drops it)."""
        self._lock = RunLock(self.path)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def discard_untrained(self, resumed: bool, step: int) -> None:
        """A fresh run that failed before its first step leaves nothing behind: it has nothing to resume."""
        if resumed or not self._created or step > 0 or (self.path / "last.ckpt").exists():
            return
        shutil.rmtree(self.path, ignore_errors=True)
        remove_empty_folders(self._created[1:])  # the OUT/TASK/MODEL folders it made, while empty

    def load_last(self) -> dict[str, Any]:
        path = self.path / "last.ckpt"
        if not path.exists():
            raise PyramidalError(f"{path}: no checkpoint (the run stopped before its first one); start it again")
        return load_checkpoint(path)

    def checkpoint_due(self, step: int) -> bool:
        """Whether last.ckpt is due after `step`: every checkpoint_every_steps, or checkpoint_minutes after the last."""
        c = self.config
        if c.checkpoint_every_steps and step % c.checkpoint_every_steps == 0:
            return True
        return bool(c.checkpoint_minutes and time.monotonic() - self.last_ckpt_time >= c.checkpoint_minutes * 60)

    def save_last(self, state: dict[str, Any]) -> None:
        """Replace last.ckpt, whole, with `state`. Everything it would hold is checked, BatchNorm statistics, EMA
        and Adam's moments included: a non-finite value stops the run and the last good checkpoint stays."""
        bad = first_nonfinite({key: state[key] for key in ("model", "ema", "optimizer")})
        if bad is not None:
            raise self.diverged(bad[0], bad[1], state["step"], state["epoch"])
        save_checkpoint(self.path / "last.ckpt", state)
        self.last_ckpt_step = state["step"]
        self.last_ckpt_time = time.monotonic()

    def save_best(self, model: nn.Module, name: str, task_options: dict, step: int, epoch: int, psnr: float) -> None:
        """Write best.safetensors from `model` (`name`: "model" or "ema", as a divergence names it), never
        replacing good best weights with broken ones."""
        bad = first_nonfinite(model.state_dict(), name)
        if bad is not None:
            raise self.diverged(bad[0], bad[1], step, epoch)
        save_weights(model, self.path / "best.safetensors",
                     metadata=best_record(self.config, task_options, step, epoch, psnr))

    def diverged(self, what: str, value: float, step: int, epoch: int) -> TrainingDiverged:
        """The error for a non-finite `what` at `step`: what was kept, and what to try."""
        c, ckpt = self.config, self.path / "last.ckpt"
        kept = (f"kept the last good checkpoint {ckpt} (step {self.last_ckpt_step})"
                if ckpt.exists() else "no checkpoint had been written yet")
        return TrainingDiverged(*option_wording(
            "{what} became non-finite ({value}) at step {step} (epoch {epoch}); stopped and {kept}. Try a lower "
            "{lr}" + (", {clip_grad=}1.0" if not c.clip_grad else "") + (" or {precision=}fp32" if self.precision != "fp32" else ""),
            "lr", "clip_grad", "precision", what=what, value=value, step=step, epoch=epoch + 1, kept=kept))


def restore_weights(saved: dict[str, Any], path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler, ema: EMA | None, ema_decay: float | None) -> EMA | None:
    """Load a checkpoint's model, optimizer, loss-scaler and EMA states (read from `path`) into a run's; returns
    the EMA to go on with (a fresh one from the weights when EMA is switched on at resume)."""
    load_checkpoint_model(saved, model, str(path))
    try:
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            if saved.get("ema") is not None:
                ema.load_state_dict(saved["ema"])
            else:  # EMA switched on at resume: start it from the current weights
                ema = EMA(model, ema_decay)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise PyramidalError(f"{path}: checkpoint does not fit this run ({exc})") from None
    return ema
