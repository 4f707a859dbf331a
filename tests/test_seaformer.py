"""SeaFormer: the pieces of SEA attention, the backbone's strides, the light head, parameter formulas, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lessons
from lessons.layers import hard_sigmoid
from lessons.measure import count_params
from lessons.seaformer import (
    SEAFORMER_CONFIGS,
    FusionBlock,
    LightHead,
    SeaAttention,
    SeaFormerConfig,
    SqueezeAxialPositionalEmbedding,
    create_seaformer_seg,
    squeeze_axial_attention,
    squeeze_columns,
    squeeze_rows,
)
from helpers import meta_model, one_thread_for_the_module, randomize_bn

one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


@pytest.fixture
def attn() -> SeaAttention:
    g = lessons.seed_everything(0)
    module = SeaAttention(dim=32, key_dim=8, num_heads=2).eval()
    randomize_bn(module, g)
    return module


# --------------------------------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------------------------------


def test_squeezing_rows_and_columns_is_the_mean_along_the_other_axis():
    x = torch.randn(2, 3, 5, 7)
    assert squeeze_rows(x).shape == (2, 3, 5)
    assert squeeze_columns(x).shape == (2, 3, 7)
    torch.testing.assert_close(squeeze_rows(x)[:, :, 2], x[:, :, 2, :].sum(-1) / 7)
    torch.testing.assert_close(squeeze_columns(x)[:, :, 4], x[:, :, :, 4].sum(-1) / 5)


def test_position_embedding_keeps_its_16_values_at_length_16_and_interpolates_linearly_otherwise():
    torch.manual_seed(0)
    pe = SqueezeAxialPositionalEmbedding(dim=4, length=16)
    table = pe.pos_embed[0]  # [4, 16]
    assert torch.equal(pe.embedding(16)[0], table)
    for length in (32, 7, 1):
        # align_corners=False: output position i samples the table at (i + 0.5) * 16 / length - 0.5
        src = ((torch.arange(length) + 0.5) * 16 / length - 0.5).clamp(min=0)
        lo = src.floor().long().clamp(max=15)
        hi = (lo + 1).clamp(max=15)
        frac = src - lo
        expected = table[:, lo] * (1 - frac) + table[:, hi] * frac
        torch.testing.assert_close(pe.embedding(length)[0], expected)
    x = torch.zeros(2, 4, 9)
    torch.testing.assert_close(pe(x), pe.embedding(9).expand(2, -1, -1))


def test_squeeze_axial_attention_is_per_head_softmax_attention_with_inverse_sqrt_scale():
    torch.manual_seed(0)
    heads, dk, dv, n = 2, 8, 16, 11
    q, k, v = torch.randn(3, heads * dk, n), torch.randn(3, heads * dk, n), torch.randn(3, heads * dv, n)
    split = lambda t: t.reshape(3, heads, -1, n).transpose(-2, -1)  # noqa: E731  [B, h, N, d]
    expected = F.scaled_dot_product_attention(split(q), split(k), split(v))  # default scale dk^-0.5
    expected = expected.transpose(-2, -1).reshape(3, heads * dv, n)
    torch.testing.assert_close(squeeze_axial_attention(q, k, v, heads), expected)


def test_sea_attention_row_branch_uses_the_inverse_sqrt_key_dim_scale(attn):
    x = torch.randn(2, 32, 6, 10)
    parts = attn.parts(x)
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    qr, kr, vr = attn.pos_embed_row_q(q.mean(-1)), attn.pos_embed_row_k(k.mean(-1)), v.mean(-1)

    def row_with_scale(scale: float) -> torch.Tensor:
        return attn.proj_row(squeeze_axial_attention(qr, kr, vr, 2, scale).unsqueeze(-1))

    torch.testing.assert_close(parts.row, row_with_scale(8**-0.5))
    assert not torch.allclose(parts.row, row_with_scale(1.0), atol=1e-4)  # TopFormer's unscaled softmax differs


def test_sea_attention_output_is_hard_sigmoid_gate_times_detail(attn):
    x = torch.randn(2, 32, 6, 10)
    parts = attn.parts(x)
    v = attn.to_v(x)
    torch.testing.assert_close(parts.gate, hard_sigmoid(attn.proj(v + parts.row + parts.column)))
    torch.testing.assert_close(attn(x), parts.gate * parts.detail)
    qkv = torch.cat([attn.to_q(x), attn.to_k(x), v], dim=1)
    torch.testing.assert_close(parts.detail, attn.detail_pw(attn.detail_act(attn.detail_dw(qkv))))


def test_gate_saturates_exactly_at_zero_and_one_as_a_hard_sigmoid_does(attn):
    attn.proj[1].bn.weight.data.fill_(200.0)  # push the gate's input far beyond +-3
    gate = attn.parts(torch.randn(2, 32, 6, 10)).gate
    assert (gate == 0).any() and (gate == 1).any()  # torch.sigmoid would never reach 0 or 1 exactly
    assert ((gate > 0) & (gate < 1)).float().mean() < 0.5


def test_sea_attention_shapes_plain_and_strided():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 12, 20)
    plain = SeaAttention(32, 8, 2).eval()
    strided = SeaAttention(32, 8, 2, stride=2).eval()
    parts = plain.parts(x)
    assert parts.row.shape == (2, 32, 12, 1) and parts.column.shape == (2, 32, 1, 20)
    assert plain(x).shape == x.shape
    strided_parts = strided.parts(x)
    assert strided_parts.row.shape == (2, 32, 6, 1) and strided_parts.column.shape == (2, 32, 1, 10)
    assert strided(x).shape == x.shape  # upsampled back


def test_sea_attention_parameter_count_follows_the_architecture():
    dim, dk, heads, ratio = 48, 16, 4, 2
    dq, dv = heads * dk, heads * dk * ratio
    detail = 2 * dq + dv
    conv_bn = lambda cin, cout, k=1, groups=1: cin // groups * cout * k * k + 2 * cout  # noqa: E731
    expected = (
        2 * conv_bn(dim, dq) + conv_bn(dim, dv)  # q, k, v
        + conv_bn(detail, detail, 3, detail) + conv_bn(detail, dim)  # detail branch: DW 3x3, PW
        + 4 * dq * 16  # four squeeze-axial position embeddings of length 16
        + 2 * conv_bn(dv, dv) + conv_bn(dv, dim)  # row and column projections, output projection
    )
    assert count_params(SeaAttention(dim, dk, heads, ratio)) == expected
    # the strided form adds one depthwise 3x3 conv with bias and a BN
    assert count_params(SeaAttention(dim, dk, heads, ratio, stride=2)) == expected + dim * 9 + dim + 2 * dim


def test_fusion_block_multiplies_local_by_upsampled_hard_sigmoid_of_global():
    g = lessons.seed_everything(0)
    fusion = FusionBlock(8, 12, 16).eval()
    randomize_bn(fusion, g)
    local, glob = torch.randn(1, 8, 16, 16), torch.randn(1, 12, 4, 4)
    gate = F.interpolate(hard_sigmoid(fusion.global_act(glob)), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fusion(local, glob), fusion.local_embedding(local) * gate)


# --------------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("seaformer_tiny_cls", [(32, 64), (128, 16), (160, 8)]),
    ("seaformer_base_cls", [(64, 64), (192, 16), (256, 8)]),
    ("seaformer_large_cls", [(128, 64), (192, 32), (256, 16), (320, 8)]),
])
def test_backbone_gives_detail_at_one_eighth_and_transformer_outputs_at_the_last_strides(name, expected):
    model = meta_model(name)
    feats = model.forward_intermediates(torch.empty(1, 3, 512, 512, device="meta"))
    assert [(f.shape[1], f.shape[2]) for f in feats] == expected
    assert all(f.shape[2] == f.shape[3] for f in feats)


def test_every_official_variant_downsamples_64_times():
    assert {c.total_stride for c in SEAFORMER_CONFIGS.values()} == {64}


def test_segmentation_logits_come_out_at_one_eighth_and_forward_resizes_to_the_input():
    model = meta_model("seaformer_small")
    x = torch.empty(1, 3, 512, 512, device="meta")
    assert model.forward_logits(x).shape == (1, 150, 64, 64)
    assert model(x).shape == (1, 150, 512, 512)


def test_classifier_is_average_pool_and_one_linear_layer():
    model = meta_model("seaformer_tiny_cls")
    assert model(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)
    assert count_params(model) - count_params(model.stages) - count_params(model.transformers) \
        - count_params(model.stem) == 160 * 1000 + 1000


def test_light_head_parameters_follow_the_config():
    head = meta_model("seaformer_tiny").head  # in (32, 128, 160), fusion widths (64, 96), depthwise 1x1
    conv_bn = lambda cin, cout: cin * cout + 2 * cout  # noqa: E731
    expected = conv_bn(32, 64) + conv_bn(128, 64) + conv_bn(64, 96) + conv_bn(160, 96)
    expected += 96 + 2 * 96  # depthwise 1x1 + BN
    expected += 96 * 150 + 150  # classifier
    assert count_params(head) == expected


def test_a_small_model_runs_on_an_odd_size():
    lessons.seed_everything(0)
    model = lessons.create_model("seaformer_tiny", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 97))
    assert out.shape == (1, 5, 65, 97) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = meta_model("seaformer_tiny")
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.empty(1, 1, 128, 128, device="meta"))
    with pytest.raises(ValueError, match="at least 64"):
        model(torch.empty(1, 3, 63, 128, device="meta"))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.empty(3, 128, 128, device="meta"))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0]])


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown SeaFormer variant"):
        create_seaformer_seg("huge")
    base = SEAFORMER_CONFIGS["tiny"]
    with pytest.raises(ValueError, match="must equal the channels"):
        SeaFormerConfig("bad", base.stages, (96, 160), base.depths, base.key_dims, 4, base.head_embed_dims)
    with pytest.raises(ValueError, match="one entry per transformer stage"):
        SeaFormerConfig("bad", base.stages, base.embed_dims, (2, 2, 2), base.key_dims, 4, base.head_embed_dims)
    with pytest.raises(ValueError, match="stride must be 1"):
        SeaAttention(32, 8, 2, stride=3)
    with pytest.raises(ValueError, match="num_classes"):
        lessons.create_model("seaformer_tiny", num_classes=0)


def test_wrong_channels_inside_the_network_are_named():
    head = LightHead((32, 128, 160), (64, 96), 150)
    feats = [torch.zeros(1, 32, 8, 8), torch.zeros(1, 120, 2, 2), torch.zeros(1, 160, 1, 1)]
    with pytest.raises(ValueError, match="feature 1 has 120 channels"):
        head(feats)
    with pytest.raises(ValueError, match=r"\[B, 4, N\]"):
        SqueezeAxialPositionalEmbedding(4)(torch.zeros(1, 3, 9))
    with pytest.raises(ValueError, match="must divide"):
        squeeze_axial_attention(torch.zeros(1, 6, 5), torch.zeros(1, 6, 5), torch.zeros(1, 6, 5), num_heads=4)

