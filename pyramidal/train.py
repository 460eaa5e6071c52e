"""Training: MSE on [-1, 1], Adam, TensorBoard as PSNR, crash-proof checkpoints, exact resume, DDP.

The trainer knows nothing about any particular architecture: it builds whatever `create_model` returns
and talks to it only through `forward`, `parameters()` and `state_dict()`.

    from pyramidal.train import TrainConfig, train
    run_dir = train(TrainConfig(task="squares", model="pyramidal51", data="builtin", steps=200))
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyramidal.checkpoint import (
    atomic_write,
    describe_spec,
    load_checkpoint,
    load_checkpoint_model,
    read_sidecar,
    save_checkpoint,
    save_weights,
)
from pyramidal.config import load_toml, to_toml
from pyramidal.device import autocast, resolve_device, resolve_precision
from pyramidal.errors import PyramidalError
from pyramidal.fastpath import tune_cpu_allocator

SCHEDULES = ("none", "cosine", "step")
OPTIMIZERS = ("adam", "adamw")
DEFAULT_EPOCHS = 10  # when no --epochs, --steps or --max-minutes is given
TASK_SHORTHANDS = ("sigma", "factor", "quality")
MODEL_SHORTHANDS = ("m", "growth", "down", "up", "dropout", "residual", "memory_efficient", "channels")
# Fields that may change when a run is resumed without a note (they do not change what is computed).
RESUME_QUIET = {"resume", "config", "epochs", "steps", "max_minutes", "device", "threads", "num_workers", "progress",
                "quiet", "checkpoint_minutes", "checkpoint_every_steps", "out"}
CSV_COLUMNS = ("step", "epoch", "elapsed_s", "loss/train", "PSNR/train", "loss/val", "PSNR/val",
               "PSNR/val_input", "lr", "images_per_s")


@dataclass
class TrainConfig:
    """Every training option; field names are the CLI flags in snake_case (`--batch-size` → batch_size)."""

    # What to learn.
    task: str = "squares"
    task_options: dict[str, Any] = field(default_factory=dict)  # --task-option KEY=VALUE
    sigma: float | None = None  # noise shorthand for task_options["sigma"]
    factor: int | None = None  # pixelate
    quality: int | None = None  # jpeg
    model: str = "pyramidal51"
    model_options: dict[str, Any] = field(default_factory=dict)  # --model-option KEY=VALUE
    m: int | None = None
    growth: int | None = None
    down: str | None = None
    up: str | None = None
    dropout: float | None = None
    residual: bool | None = None
    memory_efficient: bool | None = None
    channels: list[int] | None = None
    init_weights: str | None = None  # start from these weights (.safetensors, .ckpt or a run folder)
    # Data.
    data: str = "builtin"
    size: int = 64
    max_images: int | None = None
    patches_per_epoch: int = 1024
    val_images: int = 256  # fixed validation crops for PSNR/val; 0 = the whole split
    batch_size: int = 32  # per process
    num_workers: int = 0
    size_schedule: str | None = None  # "STEP:SIZE[:BATCH],...": bigger patches late in training
    # Optimisation.
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: str = "adam"  # adam: L2 weight decay as in the research; adamw: decoupled
    schedule: str = "none"  # none | cosine | step
    warmup_steps: int = 0
    min_lr: float = 0.0  # cosine floor
    lr_step: int = 0  # step schedule: multiply the LR by lr_gamma every lr_step steps
    lr_gamma: float = 0.1
    clip_grad: float | None = None  # max global gradient norm
    ema: float | None = None  # e.g. 0.999; None/0 = off
    # Length: training stops at whichever limit comes first.
    epochs: int | None = None
    steps: int | None = None
    max_minutes: float | None = None  # total training time, summed over resumes
    # Machine.
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # CPU threads for torch (torch.set_num_threads); None = torch's default
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    # Monitoring and checkpoints.
    out: str = "runs"
    val_every: int = 0  # also validate every N steps; 0 = once per epoch only
    log_every: int = 50  # train scalars every N steps (and at every epoch end)
    log_images: int = 8  # images per TensorBoard grid
    checkpoint_minutes: float = 10.0  # last.ckpt also every N minutes (0 = only per epoch)
    checkpoint_every_steps: int = 0  # and every N steps (0 = off)
    progress: bool | None = None  # progress bar; None = when stderr is a terminal
    quiet: bool = False  # no epoch summary lines
    # Where the options came from.
    config: str | None = None
    resume: str | None = None

    def task_kwargs(self) -> dict[str, Any]:
        """Task options with the shorthand fields applied."""
        out = dict(self.task_options)
        out.update({k: getattr(self, k) for k in TASK_SHORTHANDS if getattr(self, k) is not None})
        return out

    def model_kwargs(self) -> dict[str, Any]:
        """Model options with the shorthand fields applied."""
        out = dict(self.model_options)
        out.update({k: getattr(self, k) for k in MODEL_SHORTHANDS if getattr(self, k) is not None})
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrainingDiverged(PyramidalError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# ----------------------------------------------------------------------------------------------------------
# Config resolution: defaults ← config file ← explicit options.


def _defaults() -> dict[str, Any]:
    return TrainConfig().to_dict()


def _check_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    valid = set(_defaults())
    out = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in valid:
            raise PyramidalError(f"{source}: unknown option {key!r}; valid: {', '.join(sorted(valid))}")
        out[k] = value
    return out


def _coerce(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Light type checks so a config-file typo fails here, not deep inside training."""
    hints = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in data.items():
        hint = str(hints[key])
        if value is None:
            out[key] = None
            continue
        if hint.startswith("dict") and not isinstance(value, dict):
            raise PyramidalError(f"{source}: {key} must be a table of options, got {value!r}")
        if hint.startswith(("int", "float")) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise PyramidalError(f"{source}: {key} must be a number, got {value!r}")
        if hint.startswith("float"):
            value = float(value)
        elif hint.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise PyramidalError(f"{source}: {key} must be a whole number, got {value!r}")
            value = int(value)
        elif hint.startswith("bool") and not isinstance(value, bool):
            raise PyramidalError(f"{source}: {key} must be true or false, got {value!r}")
        elif hint.startswith("str") and not isinstance(value, str):
            raise PyramidalError(f"{source}: {key} must be a string, got {value!r}")
        out[key] = value
    return out


def resolve_config(overrides: dict[str, Any] | None = None, config_file: str | None = None) -> TrainConfig:
    """TrainConfig from defaults, then `config_file` (TOML), then `overrides`; tables merge key by key."""
    data = _defaults()
    overrides = _coerce(_check_keys(dict(overrides or {}), "option"), "option")
    config_file = overrides.get("config", config_file)
    if config_file:
        from_file = _coerce(_check_keys(load_toml(config_file), str(config_file)), str(config_file))
        data.update(from_file)
        data["config"] = str(config_file)
    for key, value in overrides.items():
        if key in ("task_options", "model_options") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainConfig(**data)


def resume_config(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The saved config of `run_dir` with `overrides` applied (e.g. a later --steps)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PyramidalError(f"{run_dir}: no such run folder")
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        raise PyramidalError(f"{run_dir}: not a training run (no config.json)")
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PyramidalError(f"{saved_path}: unreadable ({exc})") from None
    data = _defaults()
    data.update(_check_keys(saved, str(saved_path)))
    overrides = _coerce(_check_keys(dict(overrides or {}), "option"), "option")
    overrides.pop("config", None)
    for key, value in overrides.items():
        if key in ("task_options", "model_options") and isinstance(value, dict):
            value = {**data[key], **value}
        if key not in RESUME_QUIET and value != data[key]:
            print(f"note: resuming {run_dir} with {key} = {value!r} (was {data[key]!r})", file=sys.stderr)
        data[key] = value
    data["resume"] = str(run_dir)
    return TrainConfig(**data)


def _non_default(config: TrainConfig) -> dict[str, Any]:
    defaults = _defaults()
    return {k: v for k, v in config.to_dict().items() if v != defaults[k]}


def train(config: TrainConfig) -> Path:
    """Train as `config` says and return the run folder.

    With `config.resume`, the run's saved config is used and every field of `config` that differs from
    the TrainConfig default overrides it (so `TrainConfig(resume=dir, steps=500)` trains on to step 500).
    """
    if config.resume:
        overrides = _non_default(config)
        overrides.pop("resume", None)
        config = resume_config(config.resume, overrides)
    return Trainer(config).fit()


# ----------------------------------------------------------------------------------------------------------
# Small helpers.


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB on the 0–1 scale for an MSE measured on [-1, 1] images: 10·log10(4 / MSE)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(4.0 / mse)


def parse_size_schedule(text: str | None) -> list[tuple[int, int, int | None]]:
    """`"4000:96,8000:128:16"` → [(4000, 96, None), (8000, 128, 16)], sorted by step."""
    if not text:
        return []
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split(":")
        try:
            if len(bits) not in (2, 3):
                raise ValueError
            nums = [int(b) for b in bits]
        except ValueError:
            raise PyramidalError(f"--size-schedule {part!r}: expected STEP:SIZE or STEP:SIZE:BATCH") from None
        if nums[0] < 0 or any(n <= 0 for n in nums[1:]):
            raise PyramidalError(f"--size-schedule {part!r}: steps must be >= 0, sizes and batches > 0")
        out.append((nums[0], nums[1], nums[2] if len(nums) == 3 else None))
    return sorted(out)


def _mix(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 chain)."""
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h >> 1


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
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> torch.Tensor:
    """B×3×H×W in [-1, 1] → one 3×H'×W' grid in [0, 1] (white gaps), for TensorBoard."""
    images = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    b, c, h, w = images.shape
    nrow = max(1, min(nrow, b))
    rows = math.ceil(b / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


class EMA:
    """Exponential moving average of a model's weights; buffers (BN statistics) are copied as they are.

    The decay ramps up as min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by
    the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise PyramidalError(f"--ema {decay}: the decay must be between 0 and 1 (e.g. 0.999)")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


class _StopRequest:
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


def _load_init_weights(model: nn.Module, path: str) -> None:
    """Start from weights in a .safetensors (with sidecar), a .ckpt or a run folder (its best weights)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / "best.safetensors"
    if not p.exists():
        raise PyramidalError(f"{p}: no such weights file (--init-weights)")
    if p.suffix == ".ckpt":
        saved = load_checkpoint(p)
    else:
        info = read_sidecar(p)
        try:
            state = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PyramidalError(f"{p}: not a readable safetensors file ({exc})") from None
        saved = {"spec": {"model": info["model"], "options": info.get("options", {})}, "model": state}
    load_checkpoint_model(saved, model, str(p))


# ----------------------------------------------------------------------------------------------------------
# The trainer.


class Trainer:
    """One training run: builds data, model and optimizer from a TrainConfig, then `fit()` trains it."""

    def __init__(self, config: TrainConfig):
        from pyramidal.damage import create_task
        from pyramidal.models import create_model

        self.config = c = dataclasses.replace(config)  # a copy: defaults filled in here stay ours
        self._validate_config()
        if c.threads:
            torch.set_num_threads(c.threads)
        self._init_distributed()
        self.precision = resolve_precision(c.precision, self.device)
        if self.device.type == "cpu" and not (c.memory_efficient or c.model_options.get("memory_efficient")):
            # As the bench does: reuse freed memory instead of page-faulting it back every step. A memory-efficient
            # run keeps glibc's default, which returns freed blocks, so its peak RSS stays what the step needs.
            tune_cpu_allocator()
        self.is_main = self.rank == 0
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
        self.phases = [(0, c.size, c.batch_size)]
        for at, size, batch in parse_size_schedule(c.size_schedule):
            self.phases.append((at, size, batch if batch is not None else self.phases[-1][2]))
        self._sources: dict[int, Any] = {}
        self._loaders: dict[int, Any] = {}
        self.train_len = len(self._source(c.size).split("train"))
        self.val_loader = self._make_val_loader() if self.is_main else None

        model = create_model(c.model, **c.model_kwargs())
        if c.init_weights and not c.resume:
            _load_init_weights(model, c.init_weights)
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

        opt_cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt_cls(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
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
        self.writer = None
        self.csv_file = None

    # -- set-up ---------------------------------------------------------------------------------------------

    def _validate_config(self) -> None:
        c = self.config
        if c.schedule not in SCHEDULES:
            raise PyramidalError(f"--schedule {c.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if c.optimizer not in OPTIMIZERS:
            raise PyramidalError(f"--optimizer {c.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if c.schedule == "step" and c.lr_step <= 0:
            raise PyramidalError("--schedule step needs --lr-step N (multiply the LR by --lr-gamma every N steps)")
        for name in ("size", "batch_size", "patches_per_epoch", "log_every"):
            if getattr(c, name) <= 0:
                raise PyramidalError(f"--{name.replace('_', '-')} must be positive, got {getattr(c, name)}")
        for name in ("epochs", "steps", "max_minutes"):
            v = getattr(c, name)
            if v is not None and v < 0:
                raise PyramidalError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
        if not (c.lr >= 0 and math.isfinite(c.lr)):
            raise PyramidalError(f"--lr must be a non-negative number, got {c.lr}")
        if c.ema and not 0.0 < c.ema < 1.0:
            raise PyramidalError(f"--ema {c.ema}: the decay must be between 0 and 1 (e.g. 0.999)")
        if c.clip_grad is not None and c.clip_grad <= 0:
            raise PyramidalError(f"--clip-grad must be positive, got {c.clip_grad}")
        if c.epochs is None and c.steps is None and c.max_minutes is None:
            c.epochs = DEFAULT_EPOCHS

    def _init_distributed(self) -> None:
        c = self.config
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(c.device)
        self.distributed = self.world_size > 1
        if self.distributed:
            import torch.distributed as dist

            if device.type == "cuda":
                device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.device = device

    def _source(self, size: int):
        from pyramidal.data import load_source

        if size not in self._sources:
            c = self.config
            self._sources[size] = load_source(
                c.data, size=size, max_images=c.max_images, seed=c.seed, patches_per_epoch=c.patches_per_epoch
            )
        return self._sources[size]

    def _make_loader(self, ds, task, batch_size: int, train: bool, sampler=None):
        from pyramidal.data import make_loader

        kwargs = {}
        if self.config.num_workers:
            kwargs["num_workers"] = self.config.num_workers
        return make_loader(ds, task, batch_size=batch_size, train=train, seed=self.config.seed,
                           sampler=sampler, drop_last=train, **kwargs)

    def _train_loader(self, phase: int):
        if phase not in self._loaders:
            self._loaders.clear()  # one phase at a time: no need to keep old patch sizes around
            _, size, batch = self.phases[phase]
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
        per_process = self.train_len // self.world_size if self.distributed else self.train_len
        return max(1, per_process // self.phases[phase][2])  # a lone partial batch still counts

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
        c = self.config
        path = None
        if self.is_main:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            base = Path(c.out) / c.task / c.model / stamp
            base.parent.mkdir(parents=True, exist_ok=True)
            candidate, n = base, 1
            while True:
                try:
                    candidate.mkdir()
                    break
                except FileExistsError:
                    n += 1
                    candidate = base.with_name(f"{stamp}-{n}")
            path = str(candidate)
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
        self.last_val_step = saved.get("last_val_step")
        if self.rank == 0:
            set_rng_state(saved["rng"])
        self.resumed = True
        if self.phase >= len(self.phases):
            raise PyramidalError(f"{path}: the run was in size phase {self.phase}, but --size-schedule has fewer")

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _save_last(self) -> None:
        if not self.is_main:
            return
        if not self._weights_finite():
            raise self._diverged("the weights", float("nan"), self.step)
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
            "finished": self.finished,
            "world_size": self.world_size,
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "time": time.time(),
        }
        save_checkpoint(self.run_dir / "last.ckpt", state)
        self.last_ckpt_step = self.step
        self.last_ckpt_time = time.monotonic()

    def _save_best(self, psnr: float) -> None:
        c = self.config
        model = self.ema.model if self.ema is not None else self.model
        from pyramidal import __version__

        metadata = {
            "task": c.task,
            "task_options": self.task.options,
            "data": c.data,
            "size": c.size,
            "steps": self.step,
            "epoch": self.epoch,
            "val_psnr": round(psnr, 4),
            "val_images": c.val_images,
            "ema": c.ema,
            "trained_with": f"pyramidal {__version__} train",
            "config": c.to_dict(),
        }
        save_weights(model, self.run_dir / "best.safetensors", metadata=metadata)

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

    def _open_logs(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # The resolved config, written again on resume so that later resumes see extended limits.
        # `resume` is left out: `--config RUN/config.toml` then starts a fresh run with the same settings.
        saved = {**self.config.to_dict(), "resume": None}
        text = to_toml(saved)
        atomic_write(self.run_dir / "config.toml", lambda tmp: Path(tmp).write_text(text))
        js = json.dumps(saved, indent=2) + "\n"
        atomic_write(self.run_dir / "config.json", lambda tmp: Path(tmp).write_text(js))
        if self.resumed:
            self._truncate_csv(self.step)
            self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self.step + 1)
        else:
            self.writer = SummaryWriter(log_dir=str(self.run_dir))
            header = "    " + "\n    ".join(text.splitlines())  # indented: Markdown code block
            self.writer.add_text("config", header, 0)
            with open(self.run_dir / "metrics.csv", "w", newline="") as fh:
                csv.writer(fh).writerow(CSV_COLUMNS)
        self.csv_file = open(self.run_dir / "metrics.csv", "a", newline="")
        self.csv = csv.writer(self.csv_file)

    def _truncate_csv(self, step: int) -> None:
        """Drop rows a crashed run logged after its last checkpoint; they will be logged again."""
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.exists():
            with open(path, newline="") as fh:
                for row in csv.reader(fh):
                    if row and row[0] != "step" and len(row) == len(CSV_COLUMNS):
                        try:
                            if int(row[0]) <= step:
                                rows.append(row)
                        except ValueError:
                            pass
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        w.writerows(rows)
        atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def _log(self, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, self.step)
        row = {"step": self.step, "epoch": self.epoch, "elapsed_s": round(self._elapsed(), 3), **values}
        self.csv.writerow(["" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                           for k in CSV_COLUMNS])
        self.csv_file.flush()

    def _log_train(self) -> None:
        if self._acc_n == 0:
            return
        mse = self._acc_loss / self._acc_n
        now = time.perf_counter()
        seconds = max(now - self._interval_start - self._excluded, 1e-9)
        self._interval_start, self._excluded = now, 0.0
        values = {"loss/train": mse, "PSNR/train": psnr_from_mse(mse), "lr": self._lr_at(self.step - 1),
                  "images_per_s": self._acc_images / seconds}
        self.last_train = values
        self._log(values)
        self._acc_loss = self._acc_n = self._acc_images = 0

    def _elapsed(self) -> float:
        return self.elapsed + (time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0.0)

    # -- the loop -------------------------------------------------------------------------------------------

    def _lr_at(self, step: int) -> float:
        """Learning rate for the update after `step` completed steps (warm-up, then the schedule)."""
        c = self.config
        if c.warmup_steps and step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.schedule == "cosine":
            span = max(1, (self.total_steps or 1) - c.warmup_steps)
            t = min(1.0, (step - c.warmup_steps) / span)
            return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if c.schedule == "step":
            return c.lr * c.lr_gamma ** (step // c.lr_step)
        return c.lr

    def _should_stop(self) -> bool:
        c = self.config
        if c.steps is not None and self.step >= c.steps:
            return True
        if c.epochs is not None and self.epoch >= c.epochs:
            return True
        # Under DDP only rank 0 watches the clock; its verdict reaches every rank through _stop_flag.
        if not self.distributed:
            if c.max_minutes is not None and self._elapsed() >= c.max_minutes * 60:
                self._out_of_time = True
                return True
            if self._stop.requested:
                self._stop_flag = self._interrupted = True
        return self._stop_flag

    def _train_step(self, damaged: torch.Tensor, clean: torch.Tensor) -> None:
        c = self.config
        # Dropout draws from the global RNG: seeding it from (seed, step, rank) makes every step's masks a
        # pure function of its position, so a resumed run repeats them exactly whatever else used the RNG.
        torch.manual_seed(_mix(c.seed, self.step, self.rank))
        lr = self._lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        damaged = damaged.to(self.device, non_blocking=True)
        clean = clean.to(self.device, non_blocking=True)
        if c.channels_last:
            damaged = damaged.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            output = self.train_model(damaged)
        loss = F.mse_loss(output.float(), clean.float())
        value = loss.detach()
        if self.distributed:
            import torch.distributed as dist

            # One collective per step carries the mean loss (for logging and a shared NaN verdict), any
            # rank's signal and rank 0's clock, so that every process leaves the loop at the same step.
            out_of_time = self.is_main and c.max_minutes is not None and self._elapsed() >= c.max_minutes * 60
            flags = torch.tensor([float(self._stop.requested), float(out_of_time)], device=value.device)
            packet = torch.cat([value.float().reshape(1), flags])
            dist.all_reduce(packet)
            loss_value = packet[0].item() / self.world_size
            signalled, out_of_time = packet[1].item() > 0, packet[2].item() > 0
        else:
            loss_value = value.item()
            signalled = out_of_time = False  # checked between steps by _should_stop
        if not math.isfinite(loss_value):
            raise self._diverged("the training loss", loss_value, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        params = self.model.parameters()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if c.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, c.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if c.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, c.clip_grad)
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        self.batch_in_epoch += 1
        self._stop_flag = self._stop_flag or signalled or out_of_time
        self._out_of_time = self._out_of_time or out_of_time
        self._interrupted = self._interrupted or signalled
        n = damaged.shape[0] * self.world_size
        self._acc_loss += loss_value
        self._acc_n += 1
        self._acc_images += n
        self._last_output = output.detach()[: c.log_images]
        now = time.perf_counter()
        self._bar_values = (loss_value, n / max(now - self._step_end, 1e-9))
        self._step_end = now

    @torch.no_grad()
    def _validate(self, first: bool = False) -> float:
        """Mean-MSE PSNR over the fixed validation crops (EMA weights when on); logs and keeps the best."""
        model = self.ema.model if self.ema is not None else self.model
        model.eval()
        c = self.config
        se = se_in = 0.0
        count = 0
        shown: list[torch.Tensor] = []
        for damaged, clean in self.val_loader:
            d = damaged.to(self.device)
            if c.channels_last:
                d = d.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                out = model(d)
            out = out.float().cpu()
            se += F.mse_loss(out, clean, reduction="sum").item()
            se_in += F.mse_loss(damaged, clean, reduction="sum").item()
            count += clean.numel()
            if not shown:
                shown = [out[: c.log_images], damaged[: c.log_images], clean[: c.log_images]]
        self.model.train()
        mse = se / count
        psnr = psnr_from_mse(mse)
        values = {"loss/val": mse, "PSNR/val": psnr}
        if first:
            values["PSNR/val_input"] = psnr_from_mse(se_in / count)
            self.val_input_psnr = values["PSNR/val_input"]
        self._log(values)
        if c.log_images:
            self.writer.add_image("1 output (val)", image_grid(shown[0]), self.step)
            if first:
                self.writer.add_image("2 input", image_grid(shown[1]), self.step)
                self.writer.add_image("3 ground truth", image_grid(shown[2]), self.step)
        self.last_val_step = self.step
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
        self.writer.flush()
        if not self.config.quiet:
            self._summary()

    def _log_train_images(self) -> None:
        if self.config.log_images and self._last_output is not None and self._train_image_step != self.step:
            self.writer.add_image("4 output (train)", image_grid(self._last_output), self.step)
            self._train_image_step = self.step

    def _timed_save(self) -> None:
        t0 = time.perf_counter()
        self._save_last()
        self._excluded += time.perf_counter() - t0

    def _summary(self) -> None:
        c = self.config
        t = getattr(self, "last_train", {})
        parts = [f"epoch {self.epoch}" + (f"/{c.epochs}" if c.epochs else ""), f"step {self.step}"]
        if t:
            parts += [f"loss {t['loss/train']:.5f}", f"PSNR/train {t['PSNR/train']:.2f} dB"]
        if getattr(self, "last_val_psnr", None) is not None:
            parts.append(f"PSNR/val {self.last_val_psnr:.2f} dB (best {self.best_psnr:.2f})")
        if t:
            parts += [f"{t['images_per_s']:.0f} img/s", f"lr {t['lr']:.2e}"]
        parts.append(f"{self._elapsed():.0f} s")
        print("  ".join(parts), flush=True)

    def fit(self) -> Path:
        """Train until a limit is reached; returns the run folder (last.ckpt, best.safetensors, logs)."""
        try:
            with _StopRequest() as stop:
                self._stop = stop
                if self.is_main:
                    self._open_logs()
                self._loop()
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.csv_file is not None:
                self.csv_file.close()
            if self.distributed:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()
        return self.run_dir

    def _loop(self) -> None:
        from tqdm import tqdm

        c = self.config
        self._stop_flag = False  # stop after this step: a signal, or --max-minutes under DDP
        self._interrupted = False  # the stop came from a signal
        self._acc_loss = self._acc_n = self._acc_images = 0
        self._excluded = 0.0
        self._interval_start = self._step_end = time.perf_counter()
        self._last_output = None
        self._train_image_step = None
        self.last_ckpt_step = self.step if self.resumed else None
        self.last_ckpt_time = time.monotonic()
        self._t_start = time.monotonic()
        if self.is_main and not c.quiet:
            where = f"resuming {self.run_dir} at step {self.step}" if self.resumed else f"run folder {self.run_dir}"
            print(f"{where}  ({describe_spec(self.model.spec)}, task {c.task}, {self.device}, {self.precision}, "
                  f"{self.world_size} process(es); tensorboard --logdir {self.run_dir})", flush=True)
        if self.is_main and not self.resumed:
            self._validate(first=True)
        while not self._should_stop():
            if self.batch_in_epoch == 0:
                self.phase = self._phase_for(self.step)
            loader = self._train_loader(self.phase)
            loader.set_epoch(self.epoch)  # also forwarded to a DistributedSampler
            if self.batch_in_epoch:
                loader.skip_batches(self.batch_in_epoch)
            total = len(loader)
            bar = tqdm(total=total, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}",
                       disable=not self.progress, leave=False, dynamic_ncols=True, file=sys.stderr)
            stopped_early = False
            try:
                for damaged, clean in loader:
                    self._train_step(damaged, clean)
                    if self.progress:
                        loss, ips = self._bar_values
                        bar.set_postfix_str(f"loss {loss:.4f}  PSNR {psnr_from_mse(loss):.2f} dB  {ips:.0f} img/s",
                                            refresh=False)
                        bar.update(1)
                    if self.batch_in_epoch >= total:
                        break  # the epoch is done: its end-of-epoch work follows below
                    if self.is_main and self.step % c.log_every == 0:
                        self._log_train()
                    if c.val_every and self.step % c.val_every == 0:
                        self._maybe_validate()
                    if self._should_stop():
                        stopped_early = True
                        break
                    if self._checkpoint_due():
                        self._timed_save()
            finally:
                bar.close()
            if not stopped_early:  # (a loader that ran short also ends its epoch here)
                self.epoch += 1
                self.batch_in_epoch = 0
                self._end_of_epoch()
                if not self._should_stop():
                    self._timed_save()
            else:
                break
        self.interrupted = self._interrupted
        self.finished = not self.interrupted
        if self.is_main:
            self._log_train()
            self._maybe_validate()
            self._log_train_images()
            self._save_last()
            self.writer.flush()
            if not c.quiet:
                why = "stopped on request" if self.interrupted else (
                    "time budget (--max-minutes) reached" if self._out_of_time else "done")
                best = ""
                if self.best_step is not None:
                    best = f"best PSNR/val {self.best_psnr:.2f} dB at step {self.best_step}"
                print(f"{why}: step {self.step}, epoch {self.epoch}; {best}; {self.run_dir}", flush=True)

    def _checkpoint_due(self) -> bool:
        c = self.config
        if c.checkpoint_every_steps and self.step % c.checkpoint_every_steps == 0:
            return True
        if c.checkpoint_minutes and time.monotonic() - self.last_ckpt_time >= c.checkpoint_minutes * 60:
            return True
        return False
