"""pyramidal: restore damaged images with pyramidal autoencoders.

    import pyramidal
    clean = pyramidal.restore("photo.jpg", task="noise")        # PIL image in, PIL image out; arrays too
    model = pyramidal.create_model("pyramidal23456.noise", pretrained=True)
    pyramidal.list_models("pyramidal4*"), pyramidal.list_pretrained()

Importing the package is cheap: torch and the model zoo load on first use of a name below (so
`pyramidal --help` never imports torch), and then only fill the registries: no GPU query, no file access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access. No public name may equal a
# submodule's name: importing `pyramidal.X` sets the package attribute X to the module.
_LAZY = {
    "MODELS": "pyramidal.models",
    "create_model": "pyramidal.hub",
    "list_models": "pyramidal.hub",
    "list_pretrained": "pyramidal.hub",
    "restore": "pyramidal.api",
    "load_weights": "pyramidal.checkpoint",
    "save_weights": "pyramidal.checkpoint",
    "save_pretrained": "pyramidal.checkpoint",
    "read_weights_info": "pyramidal.checkpoint",
    "create_task": "pyramidal.damage",
    "PyramidalError": "pyramidal.errors",
    "RestoreOptions": "pyramidal.options",
}

__all__ = ["MODELS", "PyramidalError", "RestoreOptions", "__version__", "create_model", "create_task", "list_models",
           "list_pretrained", "load_weights", "read_weights_info", "restore", "save_pretrained", "save_weights"]

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from pyramidal.api import restore
    from pyramidal.checkpoint import load_weights, read_weights_info, save_pretrained, save_weights
    from pyramidal.damage import create_task
    from pyramidal.errors import PyramidalError
    from pyramidal.hub import create_model, list_models, list_pretrained
    from pyramidal.models import MODELS
    from pyramidal.options import RestoreOptions


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'pyramidal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
