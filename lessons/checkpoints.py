"""The authors' released checkpoints, read and mapped into the book's models by name.

``lessons.create_model(name, checkpoint=PATH)`` and :func:`load_official` read a checkpoint file (or take a state
dict already loaded), hand it to the converter its family registered for that model class, and load the result
strictly. Every converter renames keys by rules that say which official tensor plays which role (never by order or
by shape alone: a query and a key projection have the same shape), so a checkpoint of another family or variant, or
a file cut short, fails with an error that says what was expected.

Formats read:

- PyTorch ``.pth``/``.pt``/``.tar`` (mmseg's ``{"meta": ..., "state_dict": ...}``, DeiT-style ``{"model": ...}``, or a
  bare state dict), with ``torch.load(weights_only=True)``, which refuses to run code from the file;
- PaddlePaddle ``.pdparams`` (PP-MobileSeg), without installing Paddle: the file is a pickle of a dict of NumPy
  arrays, read by an unpickler that builds NumPy arrays and nothing else.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import nn

StateDict = dict[str, torch.Tensor]
Converter = Callable[[StateDict, nn.Module], StateDict]
CheckpointSource = str | PathLike | Mapping

# Where training scripts nest the weights (mmseg/mmcv: state_dict; DeiT/timm train scripts: model, model_ema). The
# averaged (EMA) weights come first when a file has both, as timm's load_checkpoint(use_ema=True) does: TopFormer's
# ImageNet files report the accuracy of their state_dict_ema.
_EMA_KEYS = ("state_dict_ema", "model_ema")
_NESTED_KEYS = ("state_dict", "model", "module")

_CONVERTERS: dict[type, Converter] = {}


# --------------------------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------------------------


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a Python object other than NumPy's array machinery: not a weights file."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, dtypes and plain containers; refuses every other global, so a ``.pdparams`` file
    cannot run code while it is read."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        # pickle protocol 2 (Paddle's for .pdparams) writes each array's bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise RefusedGlobal(f"refusing to load {module}.{name}: a .pdparams file holds only NumPy arrays")


def read_pdparams(path: str | PathLike) -> StateDict:
    """A PaddlePaddle ``.pdparams`` file as a state dict of torch tensors (names and layouts stay Paddle's)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _NumpyOnlyUnpickler(f).load()
    except RefusedGlobal as err:
        raise ValueError(
            f"{path} is not a PaddlePaddle weights file: {err}. Loading it could run code, so it was not loaded; "
            "use the model.pdparams linked from the official README"
        ) from err
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise ValueError(
            f"could not read {path} as a PaddlePaddle .pdparams file ({type(err).__name__}: {err}); a file cut "
            "short by an interrupted download fails like this: download it again"
        ) from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict of arrays in a .pdparams file, got {type(data).__name__}")
    # Paddle adds a table of structured names; it is not a parameter.
    return {k: v for k, v in data.items() if k != "StructuredToParameterName@@"}


def read_torch_checkpoint(path: str | PathLike) -> Mapping:
    """A PyTorch checkpoint file, loaded on the CPU with ``weights_only=True`` (no code from the file runs)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"could not read {path} as a PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "a file cut short by an interrupted download fails like this: download it again"
        ) from err


def _as_tensor(key: str, value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor or array")


def read_checkpoint(source: CheckpointSource, use_ema: bool = True) -> StateDict:
    """The state dict in ``source``: a path (``.pdparams`` or a PyTorch file) or an already loaded mapping, with
    the weights taken out of the ``state_dict``/``model`` entry that training scripts wrap them in (the averaged
    ``state_dict_ema``/``model_ema`` first when the file has them and ``use_ema``)."""
    if isinstance(source, Mapping):
        data: Mapping = source
    elif isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint file at {path}")
        data = read_pdparams(path) if path.suffix == ".pdparams" else read_torch_checkpoint(path)
    else:
        raise TypeError(f"checkpoint must be a file path or a state dict, got {type(source).__name__}")
    for key in (_EMA_KEYS if use_ema else ()) + _NESTED_KEYS:
        if key in data and isinstance(data[key], Mapping):
            data = data[key]
            break
    return {key: _as_tensor(key, value) for key, value in data.items()}


# --------------------------------------------------------------------------------------------------------------------
# Converting: renaming rules, and the registry of converters per model class
# --------------------------------------------------------------------------------------------------------------------


def rename_by_rules(
    state_dict: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]], source: str,
) -> StateDict:
    """Rename every key with the first rule ``(pattern, replacement)`` whose regular expression matches it whole.

    A key that no rule matches is not a key of the ``source`` model (a checkpoint of another family or variant), and
    two keys renamed to one are a bug in the rules: both raise ``ValueError``.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: StateDict = {}
    unmatched = []
    for key, value in state_dict.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                new = pattern.sub(replacement, key)
                if new in out:
                    raise ValueError(f"two checkpoint keys map to {new!r} (the second is {key!r})")
                out[new] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        shown = ", ".join(map(repr, unmatched[:5]))
        raise ValueError(
            f"{len(unmatched)} key(s) of this checkpoint are not keys of the official {source} model, e.g. {shown}: "
            "is it a checkpoint of another family or task?"
        )
    return out


def register_official_converter(*model_types: type) -> Callable[[Converter], Converter]:
    """Declare the decorated ``converter(state_dict, model) -> our state dict`` for models of ``model_types``."""

    def register(converter: Converter) -> Converter:
        for model_type in model_types:
            _CONVERTERS[model_type] = converter
        return converter

    return register


def official_converter(model: nn.Module) -> Converter:
    """The converter registered for ``model``'s class (or its nearest base class)."""
    for cls in type(model).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    known = ", ".join(sorted(t.__name__ for t in _CONVERTERS)) or "none"
    raise TypeError(f"no official checkpoint converter for {type(model).__name__}; models with one: {known}")


def _describe(model: nn.Module) -> str:
    info = getattr(model, "info", None)
    if info is None:
        return type(model).__name__
    return f"{info.name} ({info.official})" if info.official else info.name


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``state_dict`` has exactly ``model``'s keys, each with the model's shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"this checkpoint does not fit {_describe(model)}:"]
    if missing:
        lines.append(f"  {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:5])}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:5])}")
    if wrong:
        lines.append(f"  {len(wrong)} tensor(s) of another shape, e.g. {'; '.join(wrong[:5])}")
    lines.append("  A checkpoint of another variant (or a truncated one) does not load: build the matching model.")
    raise ValueError("\n".join(lines))


def load_official(model: nn.Module, checkpoint: CheckpointSource, use_ema: bool = True) -> nn.Module:
    """Load the authors' checkpoint (a path or a loaded state dict) into ``model``, strictly; returns ``model``.

    The family's converter renames the official keys to ours (and converts layouts where the official code's differ);
    a checkpoint that does not fit raises ``ValueError`` naming what was missing, unexpected or of another shape.
    ``use_ema``: take the averaged weights when the file has both (TopFormer's ImageNet files).
    """
    converter = official_converter(model)
    state_dict = converter(read_checkpoint(checkpoint, use_ema), model)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model

