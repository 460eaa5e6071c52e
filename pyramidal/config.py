"""Training configuration: TrainConfig and its resolution, the size schedule and the learning rate it sets.

Resolution: TrainConfig defaults ← a TOML config file ← explicit options; a resumed run starts from its saved
config.json instead. A misspelt option or a value of the wrong type fails here with one line naming the option
or the file; `configcheck.validate_config` checks the values themselves, `configfiles` reads the files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyramidal.configfiles import find_config, load_toml
from pyramidal.errors import OptionError, PyramidalError, flag_error

# ----------------------------------------------------------------------------------------------------------
# Training options: defaults ← config file ← explicit options.

TASK_SHORTHANDS = ("sigma", "factor", "quality")
MODEL_SHORTHANDS = ("m", "growth", "down", "up", "dropout", "residual", "memory_efficient", "channels")
# Fields that may change when a run is resumed without a note (they do not change what is computed).
RESUME_QUIET = {"resume", "config", "epochs", "steps", "max_minutes", "max_cpu_minutes", "device", "threads", "num_workers", "progress",
                "quiet", "checkpoint_minutes", "checkpoint_every_steps", "out"}


@dataclass
class TrainConfig:
    """Every training option; field names are the CLI flags in snake_case (`--batch-size` → batch_size).

    The fields stay flat on purpose: each is one `pyramidal train` flag, one key of a --config or recipe TOML
    file, of a run folder's config.json/config.toml and of a weight file's metadata, so that every file written
    so far reads back as it is. The comments group them into sections, in the order `pyramidal train --help`
    lists them: what to learn (task, model), data, optimisation, length, machine, monitoring and checkpoints,
    and where the options came from.
    """

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
    init_weights: str | None = None  # start from these weights (.safetensors, .ckpt, a run folder, builtin:TASK)
    # Data.
    data: str = "builtin"
    size: int = 64
    max_images: int | None = None
    patches_per_epoch: int = 1024
    val_images: int = 256  # fixed validation crops for PSNR/val; 0 = the whole split
    batch_size: int = 32  # per process
    num_workers: int = 0
    data_on_device: bool = False  # cut and damage training batches on the training device (pyramidal/gpudata.py)
    size_schedule: str | None = None  # "STEP:SIZE[:BATCH],...": bigger patches late in training
    # Optimisation.
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: str = "adam"  # adam: L2 weight decay as in the research; adamw: decoupled
    loss: str = "mse"  # mse | l1 | charbonnier (a smooth L1) | psnr (each image equal in dB); PSNR stays on the MSE
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
    max_cpu_minutes: float | None = None  # this process's CPU time (all its threads), summed over resumes
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
    recipe: str | None = None  # the recipe (`train --recipe`) and its stage this run trains; set by the runner
    stage: str | None = None

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


def check_options(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Training options from a file (names in snake_case or with '-'), checked by name and type; one-line
    errors name `source`."""
    return _coerce(_check_keys(data, source), source)


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
        from_file = _coerce(_check_keys(load_toml(find_config(config_file)), str(config_file)), str(config_file))
        data.update(from_file)
        data["config"] = str(config_file)
    for key, value in overrides.items():
        if key in ("task_options", "model_options") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainConfig(**data)


def check_run_folder(run_dir: str | os.PathLike) -> Path:
    """A run folder that can be resumed; else one PyramidalError line, the same from the CLI and the library.

    Raises:
        PyramidalError: no such folder, no config.json in it, no last.ckpt yet, or another process training
        in it (checked by the first process of a torchrun group only).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OptionError(f"resume={str(run_dir)!r}: no such run folder", f"{run_dir}: no such run folder (--resume)")
    if not (run_dir / "config.json").is_file():
        raise OptionError(f"resume={str(run_dir)!r}: not a training run folder (no config.json)",
                          f"{run_dir}: not a training run folder (no config.json) (--resume)")
    if not (run_dir / "last.ckpt").is_file():
        raise PyramidalError(f"{run_dir}: no last.ckpt to resume from (the run stopped before its first "
                             "checkpoint); start it again")
    if os.environ.get("RANK", "0") == "0":  # the ranks of one torchrun group share the folder
        # lazy: runstate imports torch; config stays torch-free for --help
        from pyramidal.runstate import RunLock

        RunLock.check(run_dir)  # refused at once if another process trains there
    return run_dir


def resume_config(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The saved config of `run_dir` with `overrides` applied (e.g. a later --steps)."""
    run_dir = check_run_folder(run_dir)
    saved_path = run_dir / "config.json"
    # lazy: io is not on the torch-free --help list (it loads numpy)
    from pyramidal.io import read_json

    saved = read_json(saved_path, "run config")
    if not isinstance(saved, dict):
        raise PyramidalError(f"{saved_path}: not a run config (expected a JSON object)")
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


def non_default(config: TrainConfig) -> dict[str, Any]:
    """The fields of `config` that differ from the TrainConfig defaults."""
    defaults = _defaults()
    return {k: v for k, v in config.to_dict().items() if v != defaults[k]}


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
            raise flag_error("{size_schedule=}{part!r}: expected STEP:SIZE or STEP:SIZE:BATCH", "size_schedule",
                             part=part) from None
        if nums[0] < 0 or any(n <= 0 for n in nums[1:]):
            raise flag_error("{size_schedule=}{part!r}: steps must be >= 0, sizes and batches > 0", "size_schedule",
                             part=part)
        out.append((nums[0], nums[1], nums[2] if len(nums) == 3 else None))
    return sorted(out)


def learning_rate(c: TrainConfig, step: int, total_steps: int | None) -> float:
    """The learning rate for the update after `step` completed steps: warm-up, then the schedule."""
    if c.warmup_steps and step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    if c.schedule == "cosine":
        span = max(1, (total_steps or 1) - c.warmup_steps)
        t = min(1.0, (step - c.warmup_steps) / span)
        return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
    if c.schedule == "step":
        return c.lr * c.lr_gamma ** (step // c.lr_step)
    return c.lr


def size_phases(c: TrainConfig) -> list[tuple[int, int, int]]:
    """(first step, patch size, batch size) of each phase: --size and --batch-size, then --size-schedule's."""
    phases = [(0, c.size, c.batch_size)]
    for at, size, batch in parse_size_schedule(c.size_schedule):
        phases.append((at, size, batch if batch is not None else phases[-1][2]))
    return phases
