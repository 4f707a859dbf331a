"""Our MobileViT equals timm's ``mobilevit_xxs/xs/s`` (a port of the official cvnets weights) with weights copied.

timm is the installable reference (paper README: apple/ml-cvnets -> timm ``mobilevit_*``). A fresh timm model has
BatchNorm statistics of 0 and 1 and LayerNorms of 1 and 0, which would hide a mistake in how a norm is applied, so
every norm is randomized before the weights are copied with ``lessons.from_timm``.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import lessons

TOLERANCE = 1e-5  # fp32, eval mode; the two implementations run the same operations


def randomized_timm(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"])
def test_from_timm_gives_the_same_outputs(name):
    reference = randomized_timm(name)
    ours = lessons.from_timm(reference)
    assert not ours.training
    # 256: the training size. 200 x 232: not a multiple of 32, so some stage maps are odd and both models take the
    # resize path of the MobileViT block (stage-3 map 25 x 29 -> 26 x 30 for 2 x 2 patches).
    for batch, height, width in ((2, 256, 256), (1, 200, 232)):
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            diff = (ours(x) - reference(x)).abs().max().item()
        assert diff <= TOLERANCE, f"{name} at {height}x{width}: max |ours - timm| = {diff:.2e}"


def test_from_timm_keeps_the_number_of_classes():
    reference = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=7).eval()
    ours = lessons.from_timm(reference)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert ours(x).shape == (1, 7)
        assert torch.allclose(ours(x), reference(x), atol=TOLERANCE, rtol=0)


def test_from_timm_rejects_an_unsupported_architecture_and_lists_the_supported_ones():
    # test_byobnet is the same timm class (ByobNet) as mobilevit_*, so the check must be by architecture name.
    other = timm.create_model("test_byobnet", pretrained=False)
    with pytest.raises(ValueError, match="cannot convert timm architecture 'test_byobnet'") as err:
        lessons.from_timm(other)
    for name in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"):
        assert name in str(err.value)
