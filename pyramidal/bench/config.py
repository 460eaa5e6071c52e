"""What `pyramidal bench` times: `BenchConfig`, checked before anything is allocated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyramidal.configcheck import MAX_BATCH, MAX_SIDE, MAX_STEPS
from pyramidal.device import resolve_device
from pyramidal.errors import OptionError, flag_error, option_error
from pyramidal.models import check_model
from pyramidal.models.summary import check_memory

MODES = ("train", "infer", "both", "restore")


@dataclass
class BenchConfig:
    model: str = "pyramidal457101215"
    size: int = 64
    batch_size: int = 8
    mode: str = "both"  # train | infer | both
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    memory_efficient: bool = False
    device: str = "auto"
    steps: int = 10
    warmup: int = 2
    reference: bool = False  # also time the plain fp32 NCHW implementation, interleaved
    reference_file: str | None = None
    data: bool = True  # also time the data pipeline (damaged pairs/s per task)
    data_seconds: float = 1.0
    tasks: tuple[str, ...] | None = None  # default: every registered task
    matmul_seconds: float = 0.5
    tune_allocator: bool | None = None  # None: on, except with memory_efficient (as `pyramidal train`)
    threads: int | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # extra create_model options
    # --mode restore: weights ("builtin" or a file; else `model` with random weights), the photo's size,
    # and restore's own options (tile, overlap, batch_size); absent ones keep `pyramidal restore`'s defaults.
    weights: str | None = None
    task: str | None = None
    megapixels: float = 12.0
    restore_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def smoke(cls, **overrides: Any) -> BenchConfig:
        """A seconds-long run that exercises every code path (for CI)."""
        base = dict(model="pyramidal44", size=32, batch_size=2, steps=2, warmup=1, data_seconds=0.05,
                    matmul_seconds=0.05, tasks=None, megapixels=0.05)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        if self.mode not in MODES:
            raise flag_error("{mode=}{value!r}: choose one of {modes}", "mode", value=self.mode, modes=", ".join(MODES))
        if self.size < 1 or self.batch_size < 1:
            raise flag_error("{size} and {batch_size} must be at least 1", "size", "batch_size")
        if self.steps < 1 or self.warmup < 1:
            raise flag_error("{steps} and {warmup} must be at least 1 (the first warm-up step measures memory)",
                             "steps", "warmup")
        if self.threads is not None and self.threads < 1:
            raise flag_error("{threads} must be at least 1", "threads")
        if not (0 < self.megapixels <= 1000):
            raise flag_error("{megapixels=}{value}: must be above 0 and at most 1000", "megapixels", value=self.megapixels)
        if self.weights == "builtin" and not self.task:
            raise OptionError("weights='builtin' needs task= to know which weights to use",
                              "--weights builtin needs --task to know which weights to use")
        for name, value, high in (("size", self.size, MAX_SIDE), ("batch_size", self.batch_size, MAX_BATCH),
                                  ("steps", self.steps, MAX_STEPS), ("warmup", self.warmup, MAX_STEPS)):
            if value > high:
                raise option_error(f"{{{name}}}: at most {high:,}", **{name: value})
        if self.mode != "restore":  # before anything is allocated: a step that cannot fit is one line
            self.build(check_model)
            check_memory(self.model, self.model_options, batch=self.batch_size, size=self.size,
                         device=resolve_device(self.device), training=self.mode != "infer")

    @property
    def model_options(self) -> dict[str, Any]:
        """The options the model is built with: `options`, and memory_efficient when asked for."""
        return {**self.options, **({"memory_efficient": True} if self.memory_efficient else {})}

    def build(self, make: Callable[..., Any]) -> Any:
        """`make(model, **model_options)` (`check_model` or `create_model`); a model without dense blocks asked
        to be memory-efficient is one line."""
        try:
            return make(self.model, **self.model_options)
        except ValueError as exc:
            if self.memory_efficient and "memory_efficient" in str(exc):
                raise flag_error("{memory_efficient}: model {model} has no dense blocks", "memory_efficient",
                                 model=self.model) from None
            raise

