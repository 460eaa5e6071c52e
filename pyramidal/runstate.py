"""Run state that survives a stop and a resume: every RNG, the weights' moving average, the stop signal, the logs."""

from __future__ import annotations

import copy
import csv
import datetime
import io
import json
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyramidal import __version__
from pyramidal.errors import PyramidalError, flag_error
from pyramidal.io import to_toml, write_text


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "random": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore every RNG from `rng_state()` output (CUDA only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class EMA:
    """Exponential moving average of a model's weights; buffers (BN statistics) are copied as they are.

    The decay ramps up as min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by
    the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise flag_error("{ema=}{decay}: the decay must be between 0 and 1 (e.g. 0.999)", "ema", decay=decay)
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model`'s weights after `step` completed steps."""
        d = min(self.decay, (1 + step) / (10 + step))
        # Two multi-tensor kernels per step whatever the number of layers (one lerp, one copy), where a loop
        # over the tensors would launch one kernel per parameter and buffer on a GPU.
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        buffers = list(self.model.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(model.buffers()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current step, write last.ckpt, stop. Twice: abort."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and writing last.ckpt "
              "(again to abort)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def first_nonfinite(state: Any, prefix: str = "") -> tuple[str, float] | None:
    """(name, value) of the first NaN or infinite float in a nested dict / list of tensors and numbers, or None.

    Walks what a checkpoint would hold (weights, BatchNorm statistics, EMA, optimizer moments), so that a
    diverged run is stopped before it writes anything non-finite.
    """
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            bad = ~torch.isfinite(state)
            if bool(bad.any()):
                return prefix or "tensor", float(state[bad].flatten()[0].real)
        return None
    if isinstance(state, float):
        return None if np.isfinite(state) else (prefix or "value", state)
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


class RunLock:
    """An advisory lock on a run folder, held while a process trains in it (`flock` on RUN/.lock).

    A second process that tries to train in the same folder is refused with one line. The operating
    system drops the lock when its process exits, however it exits (crash, kill -9), so a stale lock
    never blocks a resume. The empty `.lock` file stays in the folder.
    """

    NAME = ".lock"

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self._fh = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        path = self.run_dir / self.NAME
        try:
            fh = open(path, "a+")
        except OSError as exc:
            raise PyramidalError(f"{path}: cannot lock the run folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise PyramidalError(
                f"{self.run_dir}: another process{f' ({holder})' if holder else ''} is training in this run "
                "folder; wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh

    @classmethod
    def check(cls, run_dir: str | os.PathLike) -> None:
        """Refuse (PyramidalError) if another process trains in `run_dir` now; takes no lock, creates nothing."""
        if (Path(run_dir) / cls.NAME).is_file():
            cls(run_dir).release()

    def release(self) -> None:
        """Let another process train in the folder (also done by the OS when this process ends)."""
        if self._fh is not None:
            import fcntl

            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# The columns of a run's metrics.csv, in order.
CSV_COLUMNS = ("step", "epoch", "elapsed_s", "loss/train", "PSNR/train", "loss/val", "PSNR/val",
               "PSNR/val_input", "lr", "images_per_s", "PSNR/val_images")


def new_run_dir(out: str | os.PathLike, task: str, model: str) -> Path:
    """A fresh folder OUT/TASK/MODEL/<date-time>[-n], created here (so two runs never share one)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / task / model / stamp
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{stamp}-{n}")


class MetricsLog:
    """A run folder's logs: the resolved config (config.toml/.json), TensorBoard events and metrics.csv.

    Opened on a resumed run at `resume_step`, it drops what a crashed run logged after its last checkpoint
    (CSV rows and TensorBoard events), since those steps will be trained and logged again.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # Written again on resume so that later resumes see extended limits. `resume` is left out:
        # `--config RUN/config.toml` then starts a fresh run with the same settings.
        saved = {**config, "resume": None}
        text = to_toml(saved)
        write_text(text, run_dir / "config.toml")
        write_text(json.dumps(saved, indent=2) + "\n", run_dir / "config.json")
        self.path = run_dir / "metrics.csv"
        if resume_step is not None:
            self._truncate(resume_step)
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume_step + 1)
        else:
            self.writer = SummaryWriter(log_dir=str(run_dir))
            header = "    " + "\n    ".join(text.splitlines())  # indented: Markdown code block
            self.writer.add_text("config", header, 0)
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(CSV_COLUMNS)
        self.csv_file = open(self.path, "a", newline="")
        self.csv = csv.writer(self.csv_file)

    def _truncate(self, step: int) -> None:
        rows = []
        if self.path.exists():  # read by column name: a file an older version wrote keeps its rows
            with open(self.path, newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        if int(row["step"]) <= step:
                            rows.append([row.get(k) or "" for k in CSV_COLUMNS])
                    except (KeyError, TypeError, ValueError):
                        pass
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        w.writerows(rows)
        write_text(buf.getvalue(), self.path)

    def scalars(self, values: dict[str, float], step: int, epoch: int, elapsed: float) -> None:
        """One TensorBoard scalar per value and one CSV row (empty cells for the other columns)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        row = {"step": step, "epoch": epoch, "elapsed_s": round(elapsed, 3), **values}
        self.csv.writerow(["" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                           for k in CSV_COLUMNS])
        self.csv_file.flush()

    def close(self) -> None:
        self.writer.close()
        self.csv_file.close()


def best_record(config: Any, task_options: dict, step: int, epoch: int, psnr: float) -> dict[str, Any]:
    """What `best.safetensors` records of its run: task, data, steps, validation PSNR and the whole config."""
    return {"task": config.task, "task_options": task_options, "data": config.data, "size": config.size,
            "steps": step, "epoch": epoch, "val_psnr": round(psnr, 4), "val_images": config.val_images,
            "ema": config.ema, "trained_with": f"pyramidal {__version__} train", "config": config.to_dict()}


def summary_line(epoch: int, epochs: int | None, step: int, train: dict[str, float], val_psnr: float | None,
                 best_psnr: float, elapsed: float, val_label: str = "PSNR/val") -> str:
    """The line a run prints after each epoch: step, loss, PSNR (train, validation, best), speed, lr, time."""
    parts = [f"epoch {epoch}" + (f"/{epochs}" if epochs else ""), f"step {step}"]
    if train:
        parts += [f"loss {train['loss/train']:.5f}", f"PSNR/train {train['PSNR/train']:.2f} dB"]
    if val_psnr is not None:
        parts.append(f"{val_label} {val_psnr:.2f} dB (best {best_psnr:.2f})")
    if train:
        parts += [f"{train['images_per_s']:.0f} img/s", f"lr {train['lr']:.2e}"]
    parts.append(f"{elapsed:.0f} s")
    return "  ".join(parts)
