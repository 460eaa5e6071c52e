"""Training options checked before any work: the choices and limits of TrainConfig's fields, the task and model
options, and whether a training step fits in the device's memory. One error line per bad value.
"""

from __future__ import annotations

import math

from pyramidal.config import TrainConfig, parse_size_schedule, size_phases
from pyramidal.damage import TASKS
from pyramidal.device import resolve_device
from pyramidal.errors import check_choice, flag_error

SCHEDULES = ("none", "cosine", "step")
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("mse", "l1", "charbonnier", "psnr")  # the training objective (step.LOSS_FUNCTIONS); PSNR is reported either way
DEFAULT_EPOCHS = 10  # when no --epochs, --steps or --max-minutes is given

# Highest sensible values: an image side, a batch, a count of steps (at 100 steps/s, 10⁹ steps take 4 months).
MAX_SIDE = 32_768
MAX_BATCH = 1 << 20
MAX_STEPS = 10**9
# Highest allowed value of numeric options; what fits in memory is checked on top (`models.summary.check_memory`).
_HIGHEST = {"size": MAX_SIDE, "batch_size": MAX_BATCH, "steps": MAX_STEPS, "epochs": 10**6,
            "patches_per_epoch": 10**8, "val_images": 10**6, "max_images": 10**9, "warmup_steps": MAX_STEPS,
            "lr_step": MAX_STEPS, "val_every": MAX_STEPS, "log_every": MAX_STEPS, "checkpoint_every_steps": MAX_STEPS,
            "log_images": 1024, "num_workers": 1024, "threads": 4096}
# Lowest allowed value of numeric options (None leaves an option unset); NaN and infinity are refused too.
_LOWEST = {"threads": 1, "num_workers": 0, "max_images": 1, "val_images": 0, "val_every": 0, "log_images": 0,
           "checkpoint_minutes": 0, "checkpoint_every_steps": 0, "warmup_steps": 0, "lr_step": 0,
           "weight_decay": 0, "min_lr": 0, "max_minutes": 0, "max_cpu_minutes": 0}


def _check_limits(c: TrainConfig) -> None:
    """The numeric options' lower limits, the learning-rate factor, and the task and model, before any work."""
    for name, low in _LOWEST.items():
        value = getattr(c, name)
        if value is not None and not (math.isfinite(value) and value >= low):
            raise flag_error(f"{{{name}}} must be at least {low}, got {value}", name)
    for name, high in _HIGHEST.items():
        value = getattr(c, name)
        if value is not None and value > high:
            raise flag_error(f"{{{name}=}}{value}: at most {high:,}", name)
    for at, size, batch in parse_size_schedule(c.size_schedule):
        if at > MAX_STEPS or size > MAX_SIDE or (batch or 0) > MAX_BATCH:
            raise flag_error("{size_schedule=}{part}: steps at most {steps:,}, sizes at most {sides:,}, batches at "
                             "most {batches:,}", "size_schedule", part=f"{at}:{size}{f':{batch}' if batch else ''}",
                             steps=MAX_STEPS, sides=MAX_SIDE, batches=MAX_BATCH)
    if not (math.isfinite(c.lr_gamma) and c.lr_gamma > 0):
        raise flag_error(f"{{lr_gamma}} must be a positive number, got {c.lr_gamma}", "lr_gamma")
    # lazy: models imports torch; config stays torch-free for --help
    from pyramidal.models import check_model

    TASKS.get(c.task)  # ValueError naming the registered tasks
    check_model(c.model, **c.model_kwargs())  # types, limits and size of the model options, nothing built


def check_training_memory(c: TrainConfig) -> None:
    """PyramidalError before anything is allocated when a training step of some phase (--size and --batch-size,
    then each --size-schedule phase) cannot fit in the training device's memory."""
    # lazy: it imports torch; config stays torch-free for --help
    from pyramidal.models.summary import check_memory

    device = resolve_device(c.device)
    for _, size, batch in size_phases(c):
        check_memory(c.model, c.model_kwargs(), batch=batch, size=size, device=device)


def validate_config(c: TrainConfig) -> None:
    """One clear PyramidalError for an impossible option; fills in the default length (--epochs)."""
    check_choice("schedule", c.schedule, SCHEDULES)
    check_choice("optimizer", c.optimizer, OPTIMIZERS)
    check_choice("loss", c.loss, LOSSES)
    if c.schedule == "step" and c.lr_step <= 0:
        raise flag_error("{schedule=}step needs {lr_step=}N (multiply the LR by {lr_gamma} every N steps)",
                         "schedule", "lr_step", "lr_gamma")
    for name in ("size", "batch_size", "patches_per_epoch", "log_every"):
        if getattr(c, name) <= 0:
            raise flag_error(f"{{{name}}} must be positive, got {getattr(c, name)}", name)
    for name in ("epochs", "steps", "max_minutes"):
        v = getattr(c, name)
        if v is not None and v < 0:
            raise flag_error(f"{{{name}}} must be >= 0, got {v}", name)
    if not (c.lr >= 0 and math.isfinite(c.lr)):
        raise flag_error(f"{{lr}} must be a non-negative number, got {c.lr}", "lr")
    if c.ema and not 0.0 < c.ema < 1.0:
        raise flag_error(f"{{ema=}}{c.ema}: the decay must be between 0 and 1 (e.g. 0.999)", "ema")
    if c.clip_grad is not None and c.clip_grad <= 0:
        raise flag_error(f"{{clip_grad}} must be positive, got {c.clip_grad}", "clip_grad")
    _check_limits(c)
    check_training_memory(c)
    from pyramidal.models.conditions import Conditions  # lazy: config is on the torch-free --help path

    if (Conditions.from_options(c.model_kwargs()).hole_fill == "smooth" and c.optimizer == "adam"
            and c.weight_decay > 0 and not c.init_weights and not c.resume):
        # Measured: the output conv starts at zero, so no gradient reaches the other layers at first, and
        # Adam's normalised L2 step (lr-sized, whatever the decay) shrank them to nothing within 800 steps.
        raise flag_error("hole_fill=smooth starts from a zeroed output layer; with {optimizer=}adam and "
                         "{weight_decay} > 0 the L2 decay alone drives the other layers to zero before any "
                         "gradient reaches them: use {optimizer=}adamw (or {weight_decay=}0)", "optimizer", "weight_decay")
    if c.epochs is None and c.steps is None and c.max_minutes is None and c.max_cpu_minutes is None:
        c.epochs = DEFAULT_EPOCHS
