"""Model zoo: every architecture is registered in MODELS and built with fresh weights by `create_model`."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

from pyramidal.errors import OptionError
from pyramidal.registry import Registry

MODELS = Registry("model")

# A model above this many parameters is refused before any memory is allocated (4 GB of fp32 weights,
# ~16 GB with Adam's state): far above every model in the zoo, far below what a typo in `m` asks for.
MAX_PARAMETERS = 1_000_000_000


def _check_option(model: str, key: str, value: Any, hint: str, limits: tuple) -> None:
    """OptionError unless `value` fits the config field's type hint and its (low, high) limits."""
    low, high = limits

    def bad(expected: str) -> OptionError:
        return OptionError(f"model {model}: option {key} must be {expected}, got {value!r}")

    if value is None:
        if "None" not in hint:
            raise bad("set")
        return
    where = (f" from {low} to {high}" if high is not None else f" >= {low}") if low is not None else ""
    if hint.startswith("tuple"):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad(f"a list of whole numbers{where}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low) or \
                    (high is not None and v > high):
                raise bad(f"a list of whole numbers{where}")
    elif hint.startswith("int") or hint.startswith("float"):
        whole = hint.startswith("int")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise bad(("a whole number" if whole else "a number") + where)
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise bad(("a whole number" if whole else "a number") + where)
    elif hint.startswith("bool") and not isinstance(value, bool):
        raise bad("true or false")
    elif hint.startswith("str") and not isinstance(value, str):
        raise bad("a name")


def check_options(model: str, config_cls: type, options: dict[str, Any]) -> None:
    """Validate `options` against the fields of a model's config dataclass (types and limits), one line each.

    Whole numbers must be >= 1 unless the config's `LIMITS` says otherwise ({field: (low, high)}; None = open).
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(options) - set(fields)
    if unknown:
        raise OptionError(f"unknown option(s) {sorted(unknown)} for model {model!r}; valid: {sorted(fields)}")
    limits = getattr(config_cls, "LIMITS", {})
    for key, value in options.items():
        hint = str(fields[key].type)
        default = (1, None) if hint.startswith(("int", "tuple")) else (None, None)
        _check_option(model, key, value, hint, limits.get(key, default))


def _check_size(model: str, build: Any) -> None:
    """Refuse a model too large to build, counting its parameters on the meta device (nothing allocated)."""
    with torch.device("meta"):
        probe = build()
    count = sum(p.numel() for p in probe.parameters())
    if count > MAX_PARAMETERS:
        raise OptionError(f"model {model}: these options give {count:.3g} parameters, more than the limit of "
                          f"{MAX_PARAMETERS:.0e}; check m, growth, channels and the block sizes")


def register_configured(name: str, model_cls: type, config_cls: type, tuple_fields: tuple[str, ...] = (),
                        **defaults) -> None:
    """Register `name` as `model_cls(config_cls(**defaults, **options))`; bad options fail with one clear line."""

    def configure(options: dict[str, Any]) -> Any:
        """The model's config from `options`, validated: types, limits, and size (counted, not allocated)."""
        check_options(name, config_cls, options)
        for key in tuple_fields:  # JSON sidecars and TOML give lists
            if options.get(key) is not None:
                options[key] = tuple(options[key])
        config = config_cls(**{**defaults, **options})
        if options:  # the registered defaults are known to be small
            _check_size(name, lambda: model_cls(config))
        return config

    def build(**options) -> nn.Module:
        return model_cls(configure(options))

    def check(**options) -> None:
        configure(options)

    build.check = check  # `check_model`: validate without building

    build.__doc__ = f"{model_cls.__name__} {name}: " + ", ".join(f"{k}={v}" for k, v in defaults.items())
    MODELS.register(name)(build)

# Registration happens on import of these modules.
from pyramidal.models import densepyramid, plain  # noqa: E402,F401


def check_model(name: str, **options: Any) -> None:
    """Validate a model name and its options without building the model (OptionError / ValueError, one line).

    Lets a command refuse bad options before it loads data or creates folders.
    """
    check = getattr(MODELS.get(name), "check", None)
    if check is not None:
        check(**copy.deepcopy(options))


def create_model(name: str, **options: Any) -> nn.Module:
    """Build a registered model with fresh weights (`pyramidal.hub.create_model` adds `pretrained=`).

    Args:
        name: a registered architecture ("pyramidal23456"; `list_models()`); a pretrained name
            "ARCHITECTURE.TASK" ("pyramidal23456.noise") names its architecture.
        **options: the architecture's options (e.g. `growth=8`, `down="maxpool"`, `memory_efficient=True`).

    Returns:
        The model in training mode; `model.spec` records name and options so that it can be rebuilt exactly.
    """
    if name not in MODELS and "." in name:
        name = name.split(".", 1)[0]  # "pyramidal23456.noise" names the architecture too
    model = MODELS.get(name)(**copy.deepcopy(options))
    model.spec = {"model": name, "options": _jsonable(options)}
    return model


def list_models(filter: str | Sequence[str] = "") -> list[str]:
    """Names of the registered models (`pyramidal.hub.list_models` can keep those with built-in weights).

    Args:
        filter: an fnmatch pattern ("pyramidal4*") or several; empty for every model.

    Returns:
        Sorted model names.
    """
    names = MODELS.names()
    patterns = [filter] if isinstance(filter, str) else list(filter)
    patterns = [p for p in patterns if p]
    if patterns:
        names = [n for n in names if any(fnmatch(n, p) for p in patterns)]
    return names


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
