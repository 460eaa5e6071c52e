"""Model zoo: every architecture is registered in MODELS and built with `create_model`."""

from __future__ import annotations

import copy

from torch import nn

from pyramidal.registry import Registry

MODELS = Registry("model")

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
