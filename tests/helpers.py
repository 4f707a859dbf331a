"""Helpers the family tests share: models built on the meta device, and BatchNorms that are not the identity."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from torch import nn

import lessons
from lessons import measure


def meta_model(name: str, **kwargs) -> nn.Module:
    """Registered model ``name`` in eval mode on the meta device: shapes and counts, no memory, no arithmetic."""
    return measure.meta_model(name, **kwargs)


def randomize_bn(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine parameters, so no test passes because a BN is zero or the
    identity (SEA's projections and TopFormer's residual branches start with BN weight 0, HRViT's attention ends with
    a BatchNorm1d of weight 0)."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def one_thread_for_the_module():
    """Body of an autouse fixture: small CPU forwards are fastest on one thread, and cannot oversubscribe a busy
    machine; the previous thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_keys"


def official_keys(variant: str) -> dict:
    """The key list of an official model (``topformer_tiny``, ``hrvit_b1_cls`` ...): name, shape and dtype of every
    state-dict entry in order, as the authors' code builds it (see data/official_keys/README.md)."""
    path = OFFICIAL_KEYS / f"{variant}_keys.json.gz"
    if not path.exists():
        known = sorted(p.name.removesuffix("_keys.json.gz") for p in OFFICIAL_KEYS.glob("*_keys.json.gz"))
        raise ValueError(f"no official key list {path.name}; known: {known}")
    with gzip.open(path, "rt") as f:
        return json.load(f)


def official_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the official names and shapes, filled with distinct random values (integers for
    integer entries), so a test can follow every tensor from the official name to the module it lands in."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in official_keys(variant)["keys"]:
        if "int" in dtype:
            out[key] = torch.randint(0, 1000, shape, generator=generator, dtype=torch.int64)
        else:
            out[key] = torch.randn(shape, generator=generator)
    return out


def assert_truncated_file_is_refused(tmp_path: Path, name: str, checkpoint: dict) -> None:
    """The whole checkpoint file loads into model ``name``; the same file cut in half (an interrupted download)
    fails with a message that says so. ``checkpoint`` is what the authors' script saves (a state dict, or mmseg's
    ``{"meta": ..., "state_dict": ...}``)."""
    import pytest

    path = tmp_path / f"{name}.pth"
    torch.save(checkpoint, path)
    lessons.create_model(name, checkpoint=path)  # the whole file loads
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="download it again"):
        lessons.create_model(name, checkpoint=path)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts/ is not a package), for the tests of the data a script writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
