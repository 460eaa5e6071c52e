"""Model zoo: every architecture is registered in MODELS and built with `create_model`."""

from __future__ import annotations

import copy

from torch import nn

from pyramidal.registry import Registry

MODELS = Registry("model")


def register_configured(name: str, model_cls: type, config_cls: type, tuple_fields: tuple[str, ...] = (),
                        **defaults) -> None:
    """Register `name` as `model_cls(config_cls(**defaults, **options))`; unknown options fail clearly."""

    def build(**options) -> nn.Module:
        valid = set(config_cls.__dataclass_fields__)
        unknown = set(options) - valid
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for model {name!r}; valid: {sorted(valid)}")
        for key in tuple_fields:  # JSON sidecars and TOML give lists
            if options.get(key) is not None:
                options[key] = tuple(options[key])
        return model_cls(config_cls(**{**defaults, **options}))

    build.__doc__ = f"{model_cls.__name__} {name}: " + ", ".join(f"{k}={v}" for k, v in defaults.items())
    MODELS.register(name)(build)

# Registration happens on import of these modules.
from pyramidal.models import densepyramid, plain  # noqa: E402,F401


def create_model(name: str, **options) -> nn.Module:
    """Build a registered model; `model.spec` records name and options so it can be rebuilt exactly."""
    model = MODELS.get(name)(**copy.deepcopy(options))
    model.spec = {"model": name, "options": _jsonable(options)}
    return model


def list_models() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
