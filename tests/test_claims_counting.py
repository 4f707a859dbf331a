"""The counting rules behind the README FLOPs/MACs claims, held apart so a later change cannot blur them again.

TopFormer and SeaFormer: mmcv's counter matches module types exactly, so the official configs' SyncBN counts 0;
the READMEs match only a plain-BN build (an inference, registered both ways). PoolFormer's hybrids: the official
``LayerNormChannel`` is written with mean/pow/sqrt, which fvcore charges nothing for.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lessons.claims import evaluate, get_claim
from lessons.claims.topformer import MMCV_FLOPS, MMCV_FLOPS_SYNCBN, MMCV_RULES
from lessons.layers import HardSigmoid
from lessons.measure import MmcvRules, count_macs, count_macs_fvcore, count_mmcv_flops, meta_model, model_count
from lessons.poolformer import LayerNormChannel

# mmcv 1.x as it is: exact type matching (``type(m) in get_modules_mapping()``); HardSigmoid stands for the official
# h_sigmoid, an nn.ReLU6 module, as in MMCV_RULES.
MMCV_LITERAL = MmcvRules(exact_types=True, kinds=MMCV_RULES.kinds, extra_types={"relu": (HardSigmoid,)})

SEGMENTERS = {  # model: (README FLOPs in G at 512x512, does the literal SyncBN count round to it?)
    "topformer_tiny": (0.6, False),
    "topformer_small": (1.2, False),
    "topformer_base": (1.8, True),
    "seaformer_small": (1.1, False),
    "seaformer_large": (6.5, False),
}


def as_syncbn(model: nn.Module) -> nn.Module:
    """The model as the official configs build it: every BatchNorm a SyncBatchNorm (``norm_cfg=dict(type='SyncBN')``)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))


@pytest.mark.parametrize("name", ["topformer_tiny", "seaformer_small"])
def test_mmcv_literal_matching_counts_plain_bn_and_skips_syncbn(name):
    plain = meta_model(name)
    synced = as_syncbn(plain)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    size = (1, 3, 512, 512)
    # on a plain-BN build, mmcv's exact matching and this book's rule agree (every module is of a listed type)
    assert count_mmcv_flops(plain, size, rules=MMCV_LITERAL) == count_mmcv_flops(plain, size, rules=MMCV_RULES)
    # on the SyncBN build, mmcv counts no BN: that is what MMCV_FLOPS_SYNCBN counts, and it is less
    literal = count_mmcv_flops(synced, size, rules=MMCV_LITERAL)
    assert literal == MMCV_FLOPS_SYNCBN(plain, size)
    assert literal < MMCV_FLOPS(plain, size)


@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_readme_flops_round_from_the_plain_bn_count_and_the_syncbn_count_only_where_registered(name):
    readme, syncbn_rounds = SEGMENTERS[name]
    plain = model_count(name, (3, 512, 512), counter=MMCV_FLOPS) / 1e9
    synced = model_count(name, (3, 512, 512), counter=MMCV_FLOPS_SYNCBN) / 1e9
    assert round(plain, 1) == readme
    assert (round(synced, 1) == readme) is syncbn_rounds
    family, variant = name.split("_")
    claim = get_claim(f"{family}.{variant}.flops_mmcv_syncbn")
    assert (claim.discrepancy is None) is syncbn_rounds
    assert evaluate(claim).ours == pytest.approx(synced)


def test_official_layernorm_channel_is_free_under_fvcore_and_equals_layer_norm():
    norm = LayerNormChannel(8)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    x = torch.randn(2, 8, 5, 5)
    expected = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x), expected.permute(0, 3, 1, 2))
    assert count_macs_fvcore(norm, (2, 8, 5, 5)) == 0  # written out with mean/pow/sqrt, as the official code
    assert count_macs_fvcore(nn.LayerNorm(5), (2, 8, 5, 5)) == 5 * 2 * 8 * 5 * 5  # a layer_norm call costs 5/element


@pytest.mark.parametrize("name,paper", [("metaformer_ppaa_s12", 2.5), ("metaformer_pppa_s12", 1.9)])
def test_hybrid_macs_are_fvcores_count_of_the_official_model(name, paper):
    model = meta_model(name)
    fvcore = count_macs_fvcore(model, (1, 3, 224, 224))
    # The official hybrids have no norm fvcore sees (LayerNormChannel everywhere, head included): fvcore's rule is
    # the plain conv + matmul count, 2.549G and 1.920G, as fvcore 0.1.5 gives on the official metaformer_*_s12_224.
    assert fvcore == count_macs(model, (1, 3, 224, 224))
    assert round(fvcore / 1e9, 3) == {"metaformer_ppaa_s12": 2.549, "metaformer_pppa_s12": 1.920}[name]
    assert round(fvcore / 1e9, 1) == paper  # arXiv v3, Table 5
    short = name.removeprefix("metaformer_")
    assert get_claim(f"poolformer.{short}.macs").discrepancy is None
