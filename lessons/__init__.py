"""Efficient vision transformers from scratch: the package behind the book.

``create_model(name)`` and ``list_models(pattern)`` work like timm's. Importing the package registers every family.
"""

from .registry import create_model, list_models, register_model
from .timm_convert import from_timm, register_timm_converter, timm_architectures
from .notebook import seed_everything, show_source

# Families register their models on import.
from . import mobilevit  # noqa: E402,F401
from . import poolformer  # noqa: E402,F401
from . import topformer  # noqa: E402,F401
from . import seaformer  # noqa: E402,F401
from . import pp_mobileseg  # noqa: E402,F401
from . import hrvit  # noqa: E402,F401
from . import claims  # noqa: E402,F401  (after the families: claims build their models)

__all__ = [
    "create_model", "list_models", "register_model", "from_timm", "register_timm_converter", "timm_architectures",
    "seed_everything", "show_source",
]
