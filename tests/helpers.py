"""Helpers the family tests share: models built on the meta device, and BatchNorms that are not the identity."""

from __future__ import annotations

import torch
from torch import nn

import lessons


def meta_model(name: str, **kwargs) -> nn.Module:
    """Registered model ``name`` in eval mode on the meta device: shapes and counts, no memory, no arithmetic."""
    with torch.device("meta"):
        return lessons.create_model(name, **kwargs).eval()


def randomize_bn(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine parameters, so no test passes because a BN is zero or the
    identity (SEA's projections and TopFormer's residual branches start with BN weight 0)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
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
