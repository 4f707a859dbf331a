"""Copy a timm reference model's weights into the equivalent ``lessons`` model.

Each family module registers a *checkpoint filter* for the timm architectures it can take weights from: a function
that renames (and where needed reshapes) timm's state-dict entries into ours. :func:`from_timm` builds our model
with the same configuration and loads the filtered weights strictly, so a missing or extra tensor is an error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .registry import create_model

StateDict = dict[str, torch.Tensor]
CheckpointFilter = Callable[[StateDict], StateDict]

_CONVERTERS: dict[str, CheckpointFilter] = {}


def register_timm_converter(architectures: list[str] | tuple[str, ...], checkpoint_filter: CheckpointFilter) -> None:
    """Declare that our model of the same name as each timm ``architecture`` accepts weights via ``checkpoint_filter``."""
    for arch in architectures:
        _CONVERTERS[arch] = checkpoint_filter


def rename_keys(state_dict: StateDict, renames: tuple[tuple[str, str], ...]) -> StateDict:
    """``state_dict`` with every key rewritten by each ``(old, new)`` substring replacement in turn; tensors unchanged."""
    out = {}
    for key, value in state_dict.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def timm_architectures() -> list[str]:
    """The timm architectures :func:`from_timm` can convert."""
    return sorted(_CONVERTERS)


def from_timm(timm_model: nn.Module) -> nn.Module:
    """Return the ``lessons`` model equivalent to ``timm_model`` with its weights copied in (in eval mode if it is)."""
    cfg = getattr(timm_model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if arch not in _CONVERTERS:
        raise ValueError(
            f"cannot convert timm architecture {arch!r}; supported: {', '.join(timm_architectures()) or 'none'}"
        )
    model = create_model(arch, num_classes=timm_model.num_classes)
    state = _CONVERTERS[arch](dict(timm_model.state_dict()))
    model.load_state_dict(state, strict=True)
    model.train(timm_model.training)
    return model
