"""Model zoo: every architecture is registered in MODELS and built with `create_model`."""

from __future__ import annotations

from pyramidal.registry import Registry

MODELS = Registry("model")
