"""The settings of one GPU campaign call (`pyramidal.compare.gpucall.run`): `CallSettings`, a GPU run's
defaults and a smoke run's, checked where they are made. scripts/gpu-campaign.py builds them from its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from pyramidal.configfiles import parse_options
from pyramidal.errors import check_choice, flag_error

LR_RULES = ("sqrt", "linear")
DEFAULT_TRAIN = ("noise", "noise-wide=noise")
DEFAULT_MODEL_OPTIONS = ("noise-wide:m=48", "noise-wide:growth=24")  # 2× the width: 3.2 M parameters, 3.9× the FLOPs
COMPILE_CHOICES = ("off", "on", "auto")
MAX_ENTRIES = 2  # the budget has room for two
# A smoke run's defaults where they differ from a GPU's: tiny sizes on the CPU (CI), the built-in photographs.
SMOKE_DEFAULTS = {"seconds": 45.0, "batch_size": 4, "steps_per_epoch": 4, "workers": 0, "size": 32, "sweep": (1, 2),
                  "bench_steps": 1, "precision": "auto", "compile": "off", "probe_seconds": 1.0, "eval_limit": 1,
                  "data": "builtin"}
# A smoke run's training options before the given ones: 32-px patches, 4 validation crops, one thread.
SMOKE_TRAIN_OPTIONS = ("size=32", "val_images=4", "threads=1")
# The settings that take their default when given empty or zero, as well as None (`CallSettings.resolve`).
UNSET_IF_EMPTY = ("seconds", "check_seconds", "train", "batch_size", "steps_per_epoch", "sweep", "bench_steps",
                  "precision", "compile", "eval_limit", "data")


def _default_workers() -> int:
    return max(1, (os.cpu_count() or 4) - 2)


@dataclass(frozen=True)
class CallSettings:
    """The settings of one campaign call (`gpucall.run`); the defaults are a GPU's (`resolve` gives a smoke
    run's). scripts/gpu-campaign.py builds them from its flags, one flag per field of the same name.

    out: where the returned files go (`run` needs it); argv: the command line, as the report records it;
    seconds: the wall-clock budget of the whole call; smoke: tiny sizes on the CPU (CI); work: the scratch
    folder of the runs; check_seconds: the cap on the CUDA tests; test_timeout: each CUDA test's (pytest-timeout).
    train: the entries, `RECIPE` or `LABEL=RECIPE`, at most two; model: `LABEL:MODEL`, another architecture;
    model_option: `[LABEL:]KEY=VALUE`, model options per entry (the default: those of the default entries' wider
    one); data: the training data spec of every entry, relative to the checkout (None: the recipe's);
    task_option: `KEY=VALUE`, task options of every entry; train_option: `[LABEL:]KEY=VALUE`, any other
    `pyramidal train` option. batch_size: the training batch; lr_rule: the learning rate from the recipe's,
    `sqrt` (×√k) or `linear` (×k) for k times its batch; steps_per_epoch: validation and last.ckpt every N steps;
    workers: loader processes for tasks damaged on the CPU. size: the bench's patch side; sweep: the bench's
    batches for the default architecture; bench_steps: timed bench steps per batch; precision: of the bench and
    the training; compile: torch.compile the training model, `off`, `on` or `auto` (timed beside the CUDA tests,
    used when it pays); probe_seconds: per start candidate; max_steps: a cap on each entry's steps;
    benchmark: folders of clean images to score noise entries on; eval_limit: validation images per setting
    (None: all).
    """
    out: str | None = None
    argv: tuple[str, ...] = ()
    seconds: float = 480.0
    smoke: bool = False
    work: str = "runs/gpu-campaign"
    check_seconds: float = 45.0
    test_timeout: int = 25
    train: tuple[str, ...] = DEFAULT_TRAIN
    model: tuple[str, ...] = ()
    model_option: tuple[str, ...] = DEFAULT_MODEL_OPTIONS
    data: str | None = None
    task_option: tuple[str, ...] = ()
    train_option: tuple[str, ...] = ()
    batch_size: int = 256
    lr_rule: str = "sqrt"
    steps_per_epoch: int = 500
    workers: int = field(default_factory=_default_workers)
    size: int = 64
    sweep: tuple[int, ...] = (64, 256, 1024)
    bench_steps: int = 10
    precision: str = "bf16"
    compile: str = "auto"
    probe_seconds: float = 8.0
    max_steps: int | None = None
    benchmark: tuple[str, ...] = ()
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("argv", "train", "model", "model_option", "task_option", "train_option", "sweep", "benchmark"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.train) > MAX_ENTRIES:
            raise flag_error("{train}: at most two entries (the budget has room for two)", "train")
        check_choice("compile", self.compile, COMPILE_CHOICES)
        check_choice("lr_rule", self.lr_rule, LR_RULES)

    @classmethod
    def resolve(cls, smoke: bool = False, **given: Any) -> CallSettings:
        """The settings with `given` over the defaults of a GPU run or, with `smoke`, of a smoke run (tiny sizes
        on the CPU). A setting given as None takes the default, as an unset flag does; so does an empty or zero
        one of UNSET_IF_EMPTY. `model_option`'s default is the default entries' (none when `train` is given); a
        smoke run's patch is 32 unless another size than the GPU's 64 is given, and its training options start
        with SMOKE_TRAIN_OPTIONS."""
        names = [f.name for f in fields(cls) if f.name != "smoke"]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"CallSettings.resolve: unknown settings {', '.join(unknown)}")
        defaults = {**{f.name: f.default for f in fields(cls) if f.name != "workers"}, "workers": _default_workers(),
                    **(SMOKE_DEFAULTS if smoke else {}), "size": cls.size, "model_option": None}
        values = {}
        for name in names:
            value = given.get(name)
            unset = not value if name in UNSET_IF_EMPTY else value is None
            values[name] = defaults[name] if unset else value
        if smoke and values["size"] == cls.size:
            values["size"] = SMOKE_DEFAULTS["size"]
        if values["model_option"] is None:
            values["model_option"] = DEFAULT_MODEL_OPTIONS if tuple(values["train"]) == DEFAULT_TRAIN else ()
        if smoke:
            values["train_option"] = (*SMOKE_TRAIN_OPTIONS, *values["train_option"])
        return cls(smoke=smoke, **values)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    @property
    def score_reserve(self) -> float:
        """Seconds kept at the end of each entry for its scores."""
        return 4.0 if self.smoke else 30.0

    @property
    def final_reserve(self) -> float:
        """Seconds kept at the end of the call for the report."""
        return 2.0 if self.smoke else 10.0

    @property
    def eval_crop(self) -> int | str:
        return 64 if self.smoke else "auto"

    @property
    def eval_crops(self) -> int | None:
        return 1 if self.smoke else None

    def task_options(self) -> dict[str, Any]:
        """`task_option` parsed (TOML values)."""
        return parse_options(list(self.task_option), "--task-option")
