"""pyramidal: restore damaged images with pyramidal autoencoders.

Importing the package only fills the registries: no GPU query, no file access.
"""

__version__ = "0.1.0"

from pyramidal.models import MODELS, create_model, list_models  # noqa: E402

__all__ = ["MODELS", "__version__", "create_model", "list_models"]
