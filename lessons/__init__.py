"""Efficient vision transformers from scratch: the package behind the book.

``create_model(name)`` and ``list_models(pattern, family=..., task=...)`` work like timm's; ``model_info(name)`` says
what a model is; ``families()`` lists the book's families in chapter order. Importing the package registers every
family. ``create_model(name, checkpoint=PATH)`` / ``load_official(model, PATH)`` load the authors' checkpoints.
"""

from .registry import FAMILIES, ModelInfo, create_model, families, list_models, model_info, register_model
from .checkpoints import load_official
from .timm_convert import from_timm, register_timm_converter, timm_architectures
from .notebook import seed_everything, show_source

# Families register their models on import, in chapter order.
from . import mobilevit  # noqa: E402,F401
from . import poolformer  # noqa: E402,F401
from . import topformer  # noqa: E402,F401
from . import seaformer  # noqa: E402,F401
from . import pp_mobileseg  # noqa: E402,F401
from . import hrvit  # noqa: E402,F401
from . import claims  # noqa: E402,F401  (after the families: claims build their models)

__all__ = [
    "FAMILIES", "ModelInfo", "create_model", "families", "list_models", "model_info", "register_model",
    "load_official", "from_timm", "register_timm_converter", "timm_architectures", "seed_everything", "show_source",
]
