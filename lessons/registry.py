"""A model registry in the spirit of timm's: ``create_model(name, **kwargs)`` and ``list_models(pattern)``.

Each family module registers its named variants at the bottom of its file with ``@register_model``;
the function's name is the model's name (``mobilevit_xxs``, ``poolformer_s12`` ...).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]

_MODELS: dict[str, ModelFactory] = {}


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register ``factory`` under its function name; a name may be registered once."""
    name = factory.__name__
    if name in _MODELS and _MODELS[name] is not factory:
        raise ValueError(f"a model named {name!r} is already registered")
    _MODELS[name] = factory
    return factory


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models that match the shell-style ``pattern`` (``"mobilevit_*"``)."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as 'mobilevit_*', got {type(pattern).__name__}")
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its factory (e.g. ``num_classes``)."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} lessons.list_models() lists all {len(_MODELS)} known names."
        )
    return _MODELS[name](**kwargs)
