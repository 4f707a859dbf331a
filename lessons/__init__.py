"""Efficient vision transformers from scratch: the package behind the book.

``create_model(name)`` and ``list_models(pattern, family=..., task=...)`` work like timm's; ``model_info(name)`` says
what a model is; ``families()`` lists the book's families in chapter order. Importing the package registers every
family. ``create_model(name, checkpoint=PATH)`` / ``load_official(model, PATH)`` load the authors' checkpoints.
"""

import importlib

from .registry import FAMILIES, ModelInfo, create_model, families, list_models, model_info, register_model
from .checkpoints import load_official
from .timm_convert import from_timm, register_timm_converter, timm_architectures
from .notebook import seed_everything, show_source

# Each family registers its models on import (lessons/<family>.py, in chapter order); then the claims, which
# build those models.
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
from . import claims  # noqa: E402,F401

__all__ = [
    "FAMILIES", "ModelInfo", "create_model", "families", "list_models", "model_info", "register_model",
    "load_official", "from_timm", "register_timm_converter", "timm_architectures", "seed_everything", "show_source",
]
