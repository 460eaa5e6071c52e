"""Modules imported on first use, so that declarations (damage tasks, their options) load without torch.

`pyramidal --help` builds its flags from the damage tasks' declared options; with the heavy modules bound
lazily, reading those declarations costs no torch or NumPy import (about 3 s and 0.3 s on a busy CPU).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for the module `name` and imports it on the first attribute access."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        # Only called for names not found on the proxy itself, i.e. the module's attributes.
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r}, {state}>"
