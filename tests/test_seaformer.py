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
    SeaFormerSeg,
    SqueezeAxialPositionalEmbedding,
    create_seaformer_seg,
    squeeze_axial_attention,
    squeeze_columns,
    squeeze_rows,
)
from helpers import meta_model, official_state_dict, one_thread_for_the_module, randomize_bn

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



def test_sea_attention_ablations_keep_only_their_branch():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 10)
    full = SeaAttention(32, 8, 2)
    no_detail = SeaAttention(32, 8, 2, detail=False)
    no_axial = SeaAttention(32, 8, 2, axial=False)
    for module in (full, no_detail, no_axial):
        randomize_bn(module, torch.Generator().manual_seed(1))
        module.eval()
    assert not hasattr(no_detail, "detail_dw") and not hasattr(no_axial, "proj_row")
    parts = no_detail.parts(x)
    assert parts.detail is None
    torch.testing.assert_close(no_detail(x), no_detail.proj(no_detail.to_v(x) + parts.row + parts.column))
    parts = no_axial.parts(x)
    assert parts.row is None and parts.gate is None
    torch.testing.assert_close(no_axial(x), parts.detail)
    # the two ablations together hold exactly the full block's parameters, less q, k, v counted once
    shared = sum(count_params(getattr(full, n)) for n in ("to_q", "to_k", "to_v"))
    assert count_params(no_detail) + count_params(no_axial) == count_params(full) + shared


def test_sea_branch_switches_reach_every_block_and_bad_ones_are_refused():
    base = SEAFORMER_CONFIGS["tiny"]
    no_axial = SeaFormerConfig("tiny", base.stages, base.embed_dims, base.depths, base.key_dims, base.num_heads,
                               base.head_embed_dims, sea_axial=False)
    model = SeaFormerSeg(no_axial, num_classes=6)
    blocks = [m for m in model.modules() if isinstance(m, SeaAttention)]
    assert blocks and all(not b.has_axial and b.has_detail for b in blocks)
    assert count_params(model) < count_params(SeaFormerSeg(base, num_classes=6))
    with pytest.raises(ValueError, match="at least one branch"):
        SeaAttention(32, 8, 2, detail=False, axial=False)
    with pytest.raises(ValueError, match="at least one branch"):
        SeaFormerConfig("bad", base.stages, base.embed_dims, base.depths, base.key_dims, 4, base.head_embed_dims,
                        sea_detail=False, sea_axial=False)
    with pytest.raises(TypeError, match="must be bools"):
        SeaAttention(32, 8, 2, detail=1)


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
    assert [(info.channels, 512 // info.stride) for info in model.feature_info] == expected
    assert model.feature_info[0].module == "stages.1"  # cfg2's output, the official `if i == 1`


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


def test_light_head_starts_as_mmseg_initialises_a_decode_head():
    torch.manual_seed(0)
    head = LightHead((32, 128, 160), (64, 96), 150)
    # conv_seg ~ N(0, 0.01), bias 0
    assert 0.009 < float(head.classifier.weight.detach().std()) < 0.011 and not head.classifier.bias.any()
    fan_out = 64  # kaiming_normal_ by torch's fan-out (out_chs * k * k) with ReLU gain: std sqrt(2 / 64)
    assert abs(float(head.fusions[0].global_act.conv.weight.detach().std()) - (2 / fan_out) ** 0.5) < 0.01
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)


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



# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints: fudan-zvg/SeaFormer, seaformer-seg (mmseg) and seaformer-cls (timm)
# --------------------------------------------------------------------------------------------------------------------

SEG_VARIANTS = ("tiny", "small", "base", "large")

# (official key, our key) for every kind of tensor that shares its shape with a sibling: q/k (and v where h*dv
# equals C), the four positional embeddings, the row/column/output projections, the detail branch's two convs, the
# MLP's two 1x1 convs, a BN's four entries, a MobileNetV2 row's expand/depthwise/project convs (a row with expansion
# 1 has no expand conv, so its indices shift), the fusion's detail and gate branches, fusion 1 vs 2.
ROLE_PAIRS_TINY = [
    ("backbone.smb1.stem_block.0.c.weight", "backbone.stem.conv.weight"),
    ("backbone.smb1.stem_block.0.bn.weight", "backbone.stem.bn.weight"),
    ("backbone.smb1.stem_block.0.bn.bias", "backbone.stem.bn.bias"),
    ("backbone.smb1.stem_block.0.bn.running_mean", "backbone.stem.bn.running_mean"),
    ("backbone.smb1.stem_block.0.bn.running_var", "backbone.stem.bn.running_var"),
    ("backbone.smb1.stem_block.0.bn.num_batches_tracked", "backbone.stem.bn.num_batches_tracked"),
    ("backbone.smb1.layer1.conv.0.c.weight", "backbone.stages.0.0.depthwise.conv.weight"),  # t = 1: no expand
    ("backbone.smb1.layer1.conv.2.c.weight", "backbone.stages.0.0.project.conv.weight"),
    ("backbone.smb1.layer3.conv.0.c.weight", "backbone.stages.0.2.expand.conv.weight"),
    ("backbone.smb1.layer3.conv.2.c.weight", "backbone.stages.0.2.depthwise.conv.weight"),
    ("backbone.smb1.layer3.conv.4.c.weight", "backbone.stages.0.2.project.conv.weight"),
    ("backbone.smb3.layer2.conv.4.bn.running_var", "backbone.stages.2.1.project.bn.running_var"),
    ("backbone.smb5.layer1.conv.2.bn.bias", "backbone.stages.4.0.depthwise.bn.bias"),
    ("backbone.trans1.transformer_blocks.0.attn.to_q.c.weight", "backbone.transformers.0.0.attn.to_q.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.to_k.c.weight", "backbone.transformers.0.0.attn.to_k.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.to_v.c.weight", "backbone.transformers.0.0.attn.to_v.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.to_q.bn.bias", "backbone.transformers.0.0.attn.to_q.bn.bias"),
    ("backbone.trans1.transformer_blocks.0.attn.to_k.bn.bias", "backbone.transformers.0.0.attn.to_k.bn.bias"),
    ("backbone.trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed",
     "backbone.transformers.0.0.attn.pos_embed_row_q.pos_embed"),
    ("backbone.trans1.transformer_blocks.0.attn.pos_emb_rowk.pos_embed",
     "backbone.transformers.0.0.attn.pos_embed_row_k.pos_embed"),
    ("backbone.trans1.transformer_blocks.0.attn.pos_emb_columnq.pos_embed",
     "backbone.transformers.0.0.attn.pos_embed_col_q.pos_embed"),
    ("backbone.trans1.transformer_blocks.0.attn.pos_emb_columnk.pos_embed",
     "backbone.transformers.0.0.attn.pos_embed_col_k.pos_embed"),
    ("backbone.trans1.transformer_blocks.0.attn.proj_encode_row.1.c.weight",
     "backbone.transformers.0.0.attn.proj_row.1.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.proj_encode_column.1.c.weight",
     "backbone.transformers.0.0.attn.proj_col.1.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.proj.1.c.weight", "backbone.transformers.0.0.attn.proj.1.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.proj_encode_row.1.bn.weight",
     "backbone.transformers.0.0.attn.proj_row.1.bn.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.proj_encode_column.1.bn.weight",
     "backbone.transformers.0.0.attn.proj_col.1.bn.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.dwconv.c.weight",
     "backbone.transformers.0.0.attn.detail_dw.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.attn.pwconv.c.weight",
     "backbone.transformers.0.0.attn.detail_pw.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.mlp.fc1.c.weight", "backbone.transformers.0.0.mlp.fc1.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.mlp.fc2.c.weight", "backbone.transformers.0.0.mlp.fc2.conv.weight"),
    ("backbone.trans1.transformer_blocks.0.mlp.dwconv.weight", "backbone.transformers.0.0.mlp.dwconv.weight"),
    ("backbone.trans1.transformer_blocks.0.mlp.dwconv.bias", "backbone.transformers.0.0.mlp.dwconv.bias"),
    ("backbone.trans1.transformer_blocks.1.attn.to_q.c.weight", "backbone.transformers.0.1.attn.to_q.conv.weight"),
    ("backbone.trans2.transformer_blocks.1.attn.to_k.c.weight", "backbone.transformers.1.1.attn.to_k.conv.weight"),
    ("decode_head.fuse1.local_embedding.conv.weight", "head.fusions.0.local_embedding.conv.weight"),
    ("decode_head.fuse1.global_act.conv.weight", "head.fusions.0.global_act.conv.weight"),
    ("decode_head.fuse1.local_embedding.bn.running_mean", "head.fusions.0.local_embedding.bn.running_mean"),
    ("decode_head.fuse1.global_act.bn.running_mean", "head.fusions.0.global_act.bn.running_mean"),
    ("decode_head.fuse2.local_embedding.bn.weight", "head.fusions.1.local_embedding.bn.weight"),
    ("decode_head.fuse2.global_act.bn.weight", "head.fusions.1.global_act.bn.weight"),
    ("decode_head.linear_fuse.conv.weight", "head.linear_fuse.conv.weight"),
    ("decode_head.linear_fuse.bn.bias", "head.linear_fuse.bn.bias"),
    ("decode_head.conv_seg.weight", "head.classifier.weight"),
    ("decode_head.conv_seg.bias", "head.classifier.bias"),
]
# Large: the first row expands (t = 3), so its conv.0 is the expansion; a third transformer stage and fusion.
ROLE_PAIRS_LARGE = [
    ("backbone.smb1.layer1.conv.0.c.weight", "backbone.stages.0.0.expand.conv.weight"),
    ("backbone.smb1.layer1.conv.2.c.weight", "backbone.stages.0.0.depthwise.conv.weight"),
    ("backbone.smb1.layer1.conv.4.c.weight", "backbone.stages.0.0.project.conv.weight"),
    ("backbone.trans1.transformer_blocks.2.attn.to_v.c.weight", "backbone.transformers.0.2.attn.to_v.conv.weight"),
    ("backbone.trans3.transformer_blocks.2.attn.pos_emb_columnk.pos_embed",
     "backbone.transformers.2.2.attn.pos_embed_col_k.pos_embed"),
    ("decode_head.fuse3.global_act.conv.weight", "head.fusions.2.global_act.conv.weight"),
    ("decode_head.fuse3.local_embedding.conv.weight", "head.fusions.2.local_embedding.conv.weight"),
]


def cls_official_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the keys of seaformer-cls's ``SeaFormer_{T,S,B,L}`` (tests/data/official_keys covers only the
    segmentation models). seaformer-cls/seaformer.py builds the backbone from the same classes and the same cfgs as
    seaformer-seg's backbone (``smb{i}`` = StackedMV2Block, ``trans{i}`` = BasicLayer; the configs of the four
    variants are identical), with no ``backbone.`` prefix, then ``self.linear = nn.Linear(channels[-1], 1000)`` and a
    parameterless AdaptiveAvgPool2d. So: the segmentation checkpoint's ``backbone.*`` entries without the prefix,
    no ``decode_head.*``, plus ``linear.weight`` [1000, C] and ``linear.bias`` [1000]."""
    seg = official_state_dict(f"seaformer_{variant}", seed)
    out = {k.removeprefix("backbone."): v for k, v in seg.items() if k.startswith("backbone.")}
    channels = SEAFORMER_CONFIGS[variant].stage_channels[-1]
    generator = torch.Generator().manual_seed(seed + 1)
    out["linear.weight"] = torch.randn(1000, channels, generator=generator)
    out["linear.bias"] = torch.randn(1000, generator=generator)
    return out


@pytest.mark.parametrize("variant", SEG_VARIANTS)
def test_official_segmentation_checkpoint_loads_strictly_and_pairs_tensors_by_role(variant):
    official = official_state_dict(f"seaformer_{variant}")
    model = lessons.create_model(f"seaformer_{variant}", checkpoint=official)
    ours = model.state_dict()
    assert len(ours) == len(official)
    pairs = ROLE_PAIRS_TINY if variant == "tiny" else ROLE_PAIRS_LARGE if variant == "large" else []
    pairs = pairs + [  # present in every variant
        ("backbone.trans2.transformer_blocks.0.attn.to_q.c.weight", "backbone.transformers.1.0.attn.to_q.conv.weight"),
        ("backbone.trans2.transformer_blocks.0.attn.to_k.c.weight", "backbone.transformers.1.0.attn.to_k.conv.weight"),
        ("backbone.smb2.layer1.conv.0.c.weight", "backbone.stages.1.0.expand.conv.weight"),
        ("decode_head.fuse2.global_act.conv.weight", "head.fusions.1.global_act.conv.weight"),
    ]
    for official_key, our_key in pairs:
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)


@pytest.mark.parametrize("variant", SEG_VARIANTS)
def test_official_classification_checkpoint_loads_strictly_and_pairs_tensors_by_role(variant):
    official = cls_official_state_dict(variant)
    model = lessons.create_model(f"seaformer_{variant}_cls", checkpoint=official)
    ours = model.state_dict()
    assert len(ours) == len(official)
    for official_key, our_key in [
        ("linear.weight", "fc.weight"), ("linear.bias", "fc.bias"),
        ("smb1.stem_block.0.c.weight", "stem.conv.weight"),
        ("smb1.stem_block.0.bn.running_var", "stem.bn.running_var"),
        ("trans1.transformer_blocks.0.attn.to_q.c.weight", "transformers.0.0.attn.to_q.conv.weight"),
        ("trans1.transformer_blocks.0.attn.to_k.c.weight", "transformers.0.0.attn.to_k.conv.weight"),
        ("trans2.transformer_blocks.1.attn.pos_emb_rowk.pos_embed", "transformers.1.1.attn.pos_embed_row_k.pos_embed"),
        ("trans2.transformer_blocks.1.attn.pos_emb_columnq.pos_embed",
         "transformers.1.1.attn.pos_embed_col_q.pos_embed"),
        ("smb2.layer2.conv.2.c.weight", "stages.1.1.depthwise.conv.weight"),
    ]:
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)


def scaled_like_trained(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conv and linear weights divided by sqrt(fan-in), so a network of standard-normal weights does not overflow."""
    return {k: v / v[0].numel() ** 0.5 if v.ndim >= 2 and "pos_embed" not in k else v for k, v in state_dict.items()}


def test_converted_models_run_and_give_finite_outputs_of_the_right_shape():
    seg = lessons.create_model("seaformer_tiny", checkpoint=scaled_like_trained(official_state_dict("seaformer_tiny")))
    cls = lessons.create_model("seaformer_tiny_cls", checkpoint=scaled_like_trained(cls_official_state_dict("tiny")))
    seg.eval(), cls.eval()
    # random checkpoint values: make the BN statistics valid (variances positive), as a trained checkpoint's are
    g = torch.Generator().manual_seed(0)
    randomize_bn(seg, g)
    randomize_bn(cls, g)
    x = torch.randn(1, 3, 128, 128, generator=g)
    with torch.no_grad():
        labels, logits = seg.predict(x), cls(x)
    assert labels.shape == (1, 128, 128) and logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_a_checkpoint_of_another_variant_is_refused_naming_the_expected_model():
    with pytest.raises(ValueError, match=r"seaformer_tiny \(fudan-zvg/SeaFormer .*seaformer_tiny_512x512"):
        lessons.create_model("seaformer_tiny", checkpoint=official_state_dict("seaformer_small"))
    with pytest.raises(ValueError, match="seaformer_base_cls"):
        lessons.create_model("seaformer_base_cls", checkpoint=cls_official_state_dict("large"))


def test_a_checkpoint_of_another_family_or_task_is_refused():
    with pytest.raises(ValueError, match="not keys of the official seaformer_tiny"):
        lessons.create_model("seaformer_tiny", checkpoint=official_state_dict("topformer_tiny"))
    with pytest.raises(ValueError, match="ImageNet .*seaformer_tiny_cls"):
        lessons.create_model("seaformer_tiny", checkpoint=cls_official_state_dict("tiny"))
    with pytest.raises(ValueError, match="segmentation .*seaformer_tiny,"):
        lessons.create_model("seaformer_tiny_cls", checkpoint=official_state_dict("seaformer_tiny"))


def test_a_checkpoint_missing_a_tensor_is_refused_naming_it():
    official = official_state_dict("seaformer_tiny")
    del official["backbone.trans1.transformer_blocks.0.attn.to_k.c.weight"]
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing.*transformers\.0\.0\.attn\.to_k\.conv\.weight"):
        lessons.create_model("seaformer_tiny", checkpoint=official)


def test_a_truncated_checkpoint_file_is_refused_with_a_hint_to_download_again(tmp_path):
    from helpers import assert_truncated_file_is_refused

    official = {"meta": {}, "state_dict": official_state_dict("seaformer_tiny")}
    assert_truncated_file_is_refused(tmp_path, "seaformer_tiny", official)
