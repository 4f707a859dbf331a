"""PP-MobileSeg: MobileNetV3 blocks, StrideFormer's strides, AAM's formula, VIM, parameter formulas, the official
checkpoints' converter, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lessons
from lessons.checkpoints import load_official
from lessons.contract import Segmenter
from lessons.measure import count_params
from lessons.pp_mobileseg import (
    STRIDEFORMER_CONFIGS,
    AggregatedAttention,
    AggregatedAttentionX8,
    LabelPredictor,
    MobileNetV3Block,
    PPMobileSegHead,
    SqueezeExcite,
    StrideFormerConfig,
    create_pp_mobileseg,
    interpolate_argmax,
    interpolate_classes,
    paddle_hardsigmoid,
    present_classes,
    valid_interpolate,
)
from lessons.seaformer import SeaAttention
from helpers import meta_model, official_keys, official_state_dict, one_thread_for_the_module

one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


def make_identity_bn(module: nn.Module) -> None:
    """Every BN the identity (eval mode, mean 0, var 1, eps 0), so hand-computed values are exact."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
    module.eval()


def adversarial_logits() -> torch.Tensor:
    """Two pixels: class 0 wins the left, class 1 the right, class 2 is a close second at both.

    Halfway between them classes 0 and 1 both fall to 0.5 while class 2 stays at 0.9, so after bilinear
    upsampling class 2 wins pixels that VIM cannot give it: it won nowhere at low resolution.
    """
    logits = torch.full((1, 40, 1, 2), -10.0)
    logits[0, 0, 0] = torch.tensor([1.0, 0.0])
    logits[0, 1, 0] = torch.tensor([0.0, 1.0])
    logits[0, 2, 0] = torch.tensor([0.9, 0.9])
    return logits


# --------------------------------------------------------------------------------------------------------------------
# MobileNetV3 blocks
# --------------------------------------------------------------------------------------------------------------------


def test_paddle_hardsigmoid_has_slope_one_fifth_not_one_sixth():
    x = torch.tensor([-3.0, -2.5, 0.0, 1.0, 2.5, 3.0])
    assert paddle_hardsigmoid(x).tolist() == pytest.approx([0.0, 0.0, 0.5, 0.7, 1.0, 1.0])
    assert F.hardsigmoid(torch.tensor(1.0)).item() == pytest.approx(4 / 6)  # torch's: ReLU6(x + 3) / 6


def test_squeeze_excite_scales_each_channel_by_a_gate_from_its_mean():
    torch.manual_seed(0)
    se = SqueezeExcite(8)
    x = torch.randn(2, 8, 5, 5)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    gate = (0.2 * se.expand(F.relu(se.reduce(pooled))) + 0.5).clamp(0, 1)
    torch.testing.assert_close(se(x), x * gate)
    assert se.reduce.out_channels == 2  # reduction 4, no rounding to multiples of 8


def test_mobilenetv3_block_always_expands_and_keeps_a_residual_when_shape_is_kept():
    block = MobileNetV3Block(16, 16, 16, 3, 1, True, "relu")
    assert isinstance(block.expand.conv, nn.Conv2d) and block.expand.conv.in_channels == 16
    assert block.use_residual
    assert not MobileNetV3Block(16, 64, 32, 3, 2, False, "relu").use_residual
    assert isinstance(MobileNetV3Block(32, 128, 64, 5, 2, True, "hardswish").expand.act, nn.Hardswish)


# --------------------------------------------------------------------------------------------------------------------
# StrideFormer
# --------------------------------------------------------------------------------------------------------------------


# channels: the official configs' `out_feat_chs` (pp_mobileseg_{base,tiny}_ade20k_512x512_80k.yml)
@pytest.mark.parametrize("variant, channels", [("base", (64, 128, 192)), ("tiny", (32, 64, 128))])
def test_strideformer_features_are_at_one_8th_16th_32nd(variant, channels):
    model = meta_model(f"pp_mobileseg_{variant}")
    feats = model.backbone(torch.empty(1, 3, 512, 512, device="meta"))
    assert [tuple(f.shape) for f in feats] == [(1, c, s, s) for c, s in zip(channels, (64, 32, 16))]
    assert STRIDEFORMER_CONFIGS[variant].feature_channels == channels


def test_strided_sea_attention_works_at_half_the_stage_resolution():
    model = meta_model("pp_mobileseg_base")
    seen = []
    for m in model.modules():
        if isinstance(m, SeaAttention):
            m.to_q.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    model.backbone(torch.empty(1, 3, 512, 512, device="meta"))
    assert seen == [(16, 16)] * 3 + [(8, 8)] * 3  # stages at 32x32 and 16x16, attention at a quarter of the pixels


def test_logits_resolution_depends_on_the_fusion():
    x = torch.empty(1, 3, 512, 512, device="meta")
    assert meta_model("pp_mobileseg_base").forward_logits(x).shape == (1, 150, 64, 64)  # AAMSx8: 1/8
    assert meta_model("pp_mobileseg_tiny").forward_logits(x).shape == (1, 150, 32, 32)  # AAM: 1/16
    assert meta_model("pp_mobileseg_tiny")(x).shape == (1, 150, 512, 512)


def test_five_stage_variant_adds_a_64x_stage_and_moves_attention_down():
    model = meta_model("pp_mobileseg_base_5stage")
    feats = model.backbone(torch.empty(1, 3, 512, 512, device="meta"))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 64, 64), (1, 192, 16, 16), (1, 256, 8, 8)]
    assert STRIDEFORMER_CONFIGS["base_5stage"].total_stride == 128  # 1/64 stage, attention strided to 1/128


# --------------------------------------------------------------------------------------------------------------------
# AAM
# --------------------------------------------------------------------------------------------------------------------


def _constant_aam(cls: type, gate: str) -> nn.Module:
    aam = cls((1, 1, 1), out_channels=1, gate=gate)
    for m in aam.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.fill_(1.0)
    make_identity_bn(aam)
    return aam


def test_aam_is_product_of_three_votes_times_detail_plus_semantics():
    aam = _constant_aam(AggregatedAttention, "sigmoid")
    feats = [torch.full((1, 1, 16, 16), 1.0), torch.full((1, 1, 8, 8), 2.0), torch.full((1, 1, 4, 4), 3.0)]
    s = torch.sigmoid
    expected = s(torch.tensor(1.0)) * s(torch.tensor(2.0)) * s(torch.tensor(3.0)) * (1.0 + 2.0) + 3.0
    out = aam(feats)
    assert out.shape == (1, 1, 8, 8)  # at 1/16: the 1/8 features are halved
    torch.testing.assert_close(out, torch.full_like(out, expected.item()))


def test_aam_with_the_first_release_relu6_gate():
    aam = _constant_aam(AggregatedAttention, "relu6")
    feats = [torch.full((1, 1, 16, 16), 1.0), torch.full((1, 1, 8, 8), 2.0), torch.full((1, 1, 4, 4), 3.0)]
    torch.testing.assert_close(aam(feats), torch.full((1, 1, 8, 8), 1.0 * 2.0 * 3.0 * (1.0 + 2.0) + 3.0))


def test_aam_x8_drops_the_detail_vote_and_the_x16_embedding():
    aam = _constant_aam(AggregatedAttentionX8, "sigmoid")
    feats = [torch.full((1, 1, 16, 16), 1.0), torch.full((1, 1, 8, 8), 2.0), torch.full((1, 1, 4, 4), 3.0)]
    expected = torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(3.0)) * 1.0 + 3.0
    out = aam(feats)
    assert out.shape == (1, 1, 16, 16)  # at 1/8
    torch.testing.assert_close(out, torch.full_like(out, expected.item()))


def test_aam_votes_filter_a_varying_detail_map():
    torch.manual_seed(0)
    aam = AggregatedAttention((4, 6, 8), 5).eval()
    x8, x16, x32 = torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4)
    f1 = F.interpolate(x8, size=(8, 8), mode="bilinear", align_corners=False)
    up = lambda t: F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False)  # noqa: E731
    votes = [torch.sigmoid(aam.vote_embeddings[i](f)) for i, f in enumerate((f1, x16, x32))]
    expected = votes[0] * votes[1] * up(votes[2]) * (aam.embeddings[0](f1) + aam.embeddings[1](x16)) \
        + up(aam.embeddings[2](x32))
    torch.testing.assert_close(aam([x8, x16, x32]), expected)


def test_fusion_and_head_parameter_counts_follow_the_architecture():
    conv_bn = lambda cin, cout: cin * cout + 2 * cout  # noqa: E731
    chs = (64, 128, 192)
    assert count_params(AggregatedAttention(chs)) == sum(2 * conv_bn(c, 256) for c in chs)
    assert count_params(AggregatedAttentionX8(chs)) == conv_bn(64, 256) + 2 * conv_bn(192, 256) + conv_bn(128, 256)
    assert count_params(PPMobileSegHead(256, 150)) == 256 + 2 * 256 + 256 * 150 + 150  # DW 1x1 + BN, classifier


# --------------------------------------------------------------------------------------------------------------------
# VIM
# --------------------------------------------------------------------------------------------------------------------


def test_vim_equals_interpolate_then_argmax_when_every_class_is_present():
    torch.manual_seed(0)
    logits = torch.randn(2, 40, 8, 8)
    for c in range(40):  # class c wins pixel c of the first image
        logits[0, c, c // 8, c % 8] = 20.0
    assert present_classes(logits).tolist() == list(range(40))
    assert torch.equal(valid_interpolate(logits, (37, 53)), interpolate_argmax(logits, (37, 53)))


def test_vim_maps_winners_back_to_their_class_ids():
    logits = torch.zeros(1, 60, 4, 4)
    logits[0, 3, :2] = 5.0
    logits[0, 17, 2:, :2] = 5.0
    logits[0, 42, 2:, 2:] = 5.0
    labels = valid_interpolate(logits, (16, 16))
    assert present_classes(logits).tolist() == [3, 17, 42]
    assert set(labels.unique().tolist()) == {3, 17, 42}
    assert labels.dtype == torch.int64 and labels.shape == (1, 16, 16)
    assert torch.equal(labels, interpolate_argmax(logits, (16, 16)))


def test_vim_with_a_single_present_class_predicts_it_everywhere():
    logits = torch.randn(2, 150, 8, 8)
    logits[:, 7] = 100.0
    labels = valid_interpolate(logits, (64, 64))
    assert torch.equal(labels, torch.full((2, 64, 64), 7))
    assert torch.equal(labels, interpolate_argmax(logits, (64, 64)))


def test_vim_can_differ_where_an_absent_class_would_win_between_pixels():
    logits = adversarial_logits()
    full, vim = interpolate_argmax(logits, (1, 8)), valid_interpolate(logits, (1, 8))
    assert 2 in full.unique().tolist() and 2 not in vim.unique().tolist()


def test_label_predictor_uses_vim_only_at_inference_with_at_least_30_classes():
    class FixedLogits(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.num_classes = num_classes

        def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
            return adversarial_logits()[:, : self.num_classes]

    x = torch.zeros(1, 3, 1, 8)
    logits = adversarial_logits()
    full, vim = interpolate_argmax(logits, (1, 8)), valid_interpolate(logits, (1, 8))
    predictor = LabelPredictor(FixedLogits(40), "vim").eval()
    assert predictor.vim_active and torch.equal(predictor(x), vim)
    predictor.train()
    assert not predictor.vim_active and torch.equal(predictor(x), full)
    few = LabelPredictor(FixedLogits(29), "vim").eval()
    assert not few.vim_active and torch.equal(few(x), interpolate_argmax(logits[:, :29], (1, 8)))
    assert not LabelPredictor(FixedLogits(40), "interpolate").eval().vim_active


def test_model_predict_goes_through_vim_at_inference():
    lessons.seed_everything(0)
    model = lessons.create_model("pp_mobileseg_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model.forward_logits(x)
    assert model.vim_active
    assert torch.equal(model.predict(x), valid_interpolate(logits, (64, 64)))
    assert not meta_model("pp_mobileseg_tiny", num_classes=19).vim_active


@pytest.mark.parametrize("name", ["topformer_tiny", "hrvit_b1", "seaformer_tiny"])
def test_label_predictor_wraps_any_segmenter(name):
    lessons.seed_everything(0)
    model = lessons.create_model(name, num_classes=40).eval()
    assert isinstance(model, Segmenter)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model.forward_logits(x)
        vim, plain = LabelPredictor(model, "vim").eval(), LabelPredictor(model, "interpolate").eval()
        assert vim.vim_active and not plain.vim_active
        assert torch.equal(vim(x), valid_interpolate(logits, (64, 64)))
        assert torch.equal(plain(x), model.predict(x))  # the inherited predict: resize, then argmax


def test_features_and_logits_strides_follow_the_fusion():
    base, tiny = meta_model("pp_mobileseg_base"), meta_model("pp_mobileseg_tiny")
    assert [(f.channels, f.stride) for f in base.feature_info] == [(64, 8), (128, 16), (192, 32)]
    assert [f.module for f in tiny.feature_info] == ["backbone.stages.1", "backbone.transformers.0",
                                                     "backbone.transformers.1"]
    assert (base.logits_stride, tiny.logits_stride) == (8, 16)  # AAMSx8 keeps 1/8, AAM halves it
    assert meta_model("pp_mobileseg_base_5stage").logits_stride == 8  # SeaFormer's fusion chain keeps 1/8
    assert [f.stride for f in meta_model("pp_mobileseg_base_5stage").feature_info] == [8, 32, 64]


def test_registry_entries_follow_the_official_configs():
    for name in ("pp_mobileseg_base", "pp_mobileseg_tiny"):
        info = lessons.model_info(name)
        assert info.mean == (0.485, 0.456, 0.406) and info.std == (0.229, 0.224, 0.225)  # the yml's Normalize
        assert info.size_divisor == 1 and f"{name}_ade20k_512x512_80k.yml" in info.official
    assert "book's own construction" in lessons.model_info("pp_mobileseg_base_5stage").official


def test_vim_rejects_empty_and_invalid_class_sets():
    logits = torch.randn(1, 40, 4, 4)
    with pytest.raises(ValueError, match="empty"):
        interpolate_classes(logits, torch.tensor([], dtype=torch.long), (8, 8))
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        interpolate_classes(logits, torch.tensor([3, 40]), (8, 8))
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        interpolate_classes(logits, torch.tensor([-1]), (8, 8))
    with pytest.raises(ValueError, match="distinct"):
        interpolate_classes(logits, torch.tensor([3, 3]), (8, 8))
    with pytest.raises(ValueError, match="integer tensor"):
        interpolate_classes(logits, torch.tensor([3.0]), (8, 8))
    with pytest.raises(ValueError, match="integer tensor"):
        interpolate_classes(logits, [3, 4], (8, 8))
    with pytest.raises(ValueError, match=r"\[B, K, h, w\]"):
        valid_interpolate(torch.randn(40, 4, 4), (8, 8))


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_and_configurations_raise_clear_errors():
    model = meta_model("pp_mobileseg_tiny")
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.empty(1, 4, 128, 128, device="meta"))
    with pytest.raises(ValueError, match="at least 32"):  # the 1/32 map would be empty
        model(torch.empty(1, 3, 128, 16, device="meta"))
    with pytest.raises(ValueError, match="unknown PP-MobileSeg variant"):
        create_pp_mobileseg("large")
    with pytest.raises(ValueError, match="unknown fusion"):
        create_pp_mobileseg("tiny", fusion="concat")
    with pytest.raises(ValueError, match="unknown AAM gate"):
        AggregatedAttention((8, 8, 8), gate="tanh")
    with pytest.raises(ValueError, match="three features"):
        AggregatedAttention((8, 8))
    with pytest.raises(ValueError, match="upsample"):
        create_pp_mobileseg("tiny", upsample="nearest")
    with pytest.raises(TypeError, match="forward_logits.*Segmenter"):
        LabelPredictor(nn.Identity())
    with pytest.raises(ValueError, match="unknown activation"):
        MobileNetV3Block(8, 16, 8, 3, 1, False, "gelu")
    base = STRIDEFORMER_CONFIGS["base"]
    with pytest.raises(ValueError, match="must equal the channels"):
        StrideFormerConfig("bad", base.stages, (128, 160), base.depths, 8)


def test_aam_names_the_input_with_wrong_channels():
    aam = AggregatedAttention((8, 16, 32), 4)
    feats = [torch.zeros(1, 8, 8, 8), torch.zeros(1, 12, 4, 4), torch.zeros(1, 32, 2, 2)]
    with pytest.raises(ValueError, match=r"input 1 must be \[B, 16, H, W\]"):
        aam(feats)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (PaddleSeg .pdparams)
# --------------------------------------------------------------------------------------------------------------------

VARIANTS = ["pp_mobileseg_base", "pp_mobileseg_tiny"]

# Official key -> our key, for tensors that share a shape with a sibling and could be swapped by a loader that pairs
# by order or shape: q/k/v, the row/column/output projections and positional embeddings, the two convs of the
# detail branch and of the MLP, BN weight/bias/statistics, the MobileNetV3 block's convs and SE layers, blocks and
# stages by index, and the head's two layers.
SEA = "backbone.trans{t}.transformer_blocks.{b}.attn."
OURS_SEA = "backbone.transformers.{t0}.{b}.attn."
COMMON_ROLES = [
    ("backbone.smb1.conv.c.weight", "backbone.stem.conv.weight"),
    ("backbone.smb1.conv.bn.weight", "backbone.stem.bn.weight"),
    ("backbone.smb1.conv.bn.bias", "backbone.stem.bn.bias"),
    ("backbone.smb1.conv.bn._mean", "backbone.stem.bn.running_mean"),
    ("backbone.smb1.conv.bn._variance", "backbone.stem.bn.running_var"),
    ("backbone.smb1.blocks.0.expand_conv.c.weight", "backbone.stages.0.0.expand.conv.weight"),
    ("backbone.smb1.blocks.0.linear_conv.c.weight", "backbone.stages.0.0.project.conv.weight"),
    ("backbone.smb1.blocks.0.bottleneck_conv.bn._mean", "backbone.stages.0.0.depthwise.bn.running_mean"),
    ("backbone.smb2.blocks.1.mid_se.conv1.weight", "backbone.stages.1.1.se.reduce.weight"),
    ("backbone.smb2.blocks.1.mid_se.conv2.bias", "backbone.stages.1.1.se.expand.bias"),
    ("backbone.smb3.blocks.1.expand_conv.c.weight", "backbone.stages.2.1.expand.conv.weight"),
    ("backbone.smb4.blocks.0.bottleneck_conv.c.weight", "backbone.stages.3.0.depthwise.conv.weight"),
    *[
        (SEA.format(t=t, b=b) + theirs, OURS_SEA.format(t0=t - 1, b=b) + ours)
        for t, b in ((1, 0), (2, 1))
        for theirs, ours in (
            ("to_q.c.weight", "to_q.conv.weight"), ("to_k.c.weight", "to_k.conv.weight"),
            ("to_v.c.weight", "to_v.conv.weight"),
            ("to_q.bn.weight", "to_q.bn.weight"), ("to_q.bn.bias", "to_q.bn.bias"),
            ("to_k.bn._mean", "to_k.bn.running_mean"), ("to_k.bn._variance", "to_k.bn.running_var"),
            ("proj_encode_row.1.c.weight", "proj_row.1.conv.weight"),
            ("proj_encode_column.1.c.weight", "proj_col.1.conv.weight"),
            ("proj_encode_column.1.bn.weight", "proj_col.1.bn.weight"),
            ("proj.1.c.weight", "proj.1.conv.weight"),
            ("pos_emb_rowq.pos_embed", "pos_embed_row_q.pos_embed"),
            ("pos_emb_rowk.pos_embed", "pos_embed_row_k.pos_embed"),
            ("pos_emb_columnq.pos_embed", "pos_embed_col_q.pos_embed"),
            ("pos_emb_columnk.pos_embed", "pos_embed_col_k.pos_embed"),
            ("dwconv.c.weight", "detail_dw.conv.weight"), ("pwconv.c.weight", "detail_pw.conv.weight"),
            ("stride_conv.0.weight", "downsample.0.weight"), ("stride_conv.0.bias", "downsample.0.bias"),
            ("stride_conv.1.weight", "downsample.1.weight"), ("stride_conv.1._variance", "downsample.1.running_var"),
        )
    ],
    ("backbone.trans1.transformer_blocks.1.mlp.fc1.c.weight", "backbone.transformers.0.1.mlp.fc1.conv.weight"),
    ("backbone.trans1.transformer_blocks.1.mlp.fc2.bn.bias", "backbone.transformers.0.1.mlp.fc2.bn.bias"),
    ("backbone.trans1.transformer_blocks.1.mlp.dwconv.weight", "backbone.transformers.0.1.mlp.dwconv.weight"),
    ("decode_head.linear_fuse.conv.weight", "head.linear_fuse.conv.weight"),
    ("decode_head.linear_fuse.bn._mean", "head.linear_fuse.bn.running_mean"),
    ("decode_head.conv_seg.weight", "head.classifier.weight"),
    ("decode_head.conv_seg.bias", "head.classifier.bias"),
]
INJ = "backbone.inj_module."
FUSION_ROLES = {
    "pp_mobileseg_tiny": [  # AAM: an embedding and a vote per input; x16's two layers share a shape
        *[(f"{INJ}embedding_list.{i}.conv.weight", f"fusion.embeddings.{i}.conv.weight") for i in range(3)],
        *[(f"{INJ}act_embedding_list.{i}.conv.weight", f"fusion.vote_embeddings.{i}.conv.weight") for i in range(3)],
        (f"{INJ}embedding_list.1.bn.bias", "fusion.embeddings.1.bn.bias"),
        (f"{INJ}act_embedding_list.1.bn._mean", "fusion.vote_embeddings.1.bn.running_mean"),
    ],
    "pp_mobileseg_base": [  # AAMSx8: the lists skip x16's embedding and x8's vote, so index 1 means x32 in both
        (f"{INJ}embedding_list.0.conv.weight", "fusion.embedding_x8.conv.weight"),
        (f"{INJ}embedding_list.1.conv.weight", "fusion.embedding_x32.conv.weight"),
        (f"{INJ}act_embedding_list.0.conv.weight", "fusion.vote_embedding_x16.conv.weight"),
        (f"{INJ}act_embedding_list.1.conv.weight", "fusion.vote_embedding_x32.conv.weight"),
        (f"{INJ}embedding_list.1.bn.weight", "fusion.embedding_x32.bn.weight"),
        (f"{INJ}act_embedding_list.1.bn._variance", "fusion.vote_embedding_x32.bn.running_var"),
    ],
}


def converted(variant: str, seed: int = 0) -> tuple[dict, nn.Module]:
    official = official_state_dict(variant, seed)
    model = lessons.create_model(variant)
    load_official(model, official)
    return official, model


def write_pdparams(path, state_dict: dict, protocol: int = 2) -> None:
    """A file laid out as ``paddle.save`` writes a state dict: a pickle of a dict of NumPy arrays (protocol 2, as
    ``paddle.save``'s default for ``.pdparams`` in PaddleSeg's era) with Paddle's table of structured names."""
    data = {k: v.numpy() for k, v in state_dict.items()}
    data["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(state_dict)}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_checkpoint_loads_strictly_and_pairs_tensors_by_role(variant):
    official, model = converted(variant)
    ours = model.state_dict()
    roles = COMMON_ROLES + FUSION_ROLES[variant]
    if variant == "pp_mobileseg_base":  # three SEA blocks per stage in Base
        roles.append(("backbone.trans2.transformer_blocks.2.attn.to_v.c.weight",
                      "backbone.transformers.1.2.attn.to_v.conv.weight"))
    for theirs, our_key in roles:
        assert torch.equal(ours[our_key], official[theirs]), f"{theirs} -> {our_key}"
    tracked = [k for k in ours if k.endswith("num_batches_tracked")]
    assert tracked and all(int(ours[k]) == 0 for k in tracked)  # Paddle does not count batches


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_official_weight_lands_somewhere_and_counters_are_dropped(variant):
    official, model = converted(variant)
    counters = [k for k in official if k.rsplit(".", 1)[-1] in ("total_ops", "total_params", "input_shape",
                                                               "output_shape")]
    assert counters  # the key lists carry paddle.flops' counters
    weights = [v for k, v in official.items() if k not in counters]
    ours = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(weights) == len(ours)
    assert sum(v.numel() for v in weights) == sum(v.numel() for v in ours)
    assert official_keys(variant)["num_params_incl_bn_stats"] == sum(v.numel() for v in ours)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pdparams_file_loads_through_create_model_and_runs(tmp_path, variant):
    official = official_state_dict(variant, seed=1)
    for key, value in official.items():  # tame the random values so 60 layers of them stay finite
        if key.endswith("._variance"):
            official[key] = value.abs() + 1.0
        elif value.is_floating_point():
            official[key] = value * (0.1 if value.ndim < 4 else value[0].numel() ** -0.5)
    path = tmp_path / "model.pdparams"
    write_pdparams(path, official)
    model = lessons.create_model(variant, checkpoint=path).eval()
    torch.testing.assert_close(model.state_dict()["head.classifier.weight"], official["decode_head.conv_seg.weight"],
                               rtol=0, atol=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 150, 64, 64) and torch.isfinite(logits).all()
    assert model.predict(x).shape == (1, 64, 64)


def test_pdparams_with_protocol_4_loads_too(tmp_path):
    path = tmp_path / "model.pdparams"
    write_pdparams(path, official_state_dict("pp_mobileseg_tiny"), protocol=4)
    assert lessons.create_model("pp_mobileseg_tiny", checkpoint=path).num_classes == 150


class _RunsACommand:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"decode_head.conv_seg.bias": np.zeros(150, np.float32), "x": _RunsACommand(marker)}, f,
                    protocol=2)
    with pytest.raises(ValueError, match=r"not a PaddlePaddle weights file.*refusing to load (os|posix|nt)\.system"):
        lessons.create_model("pp_mobileseg_tiny", checkpoint=path)
    assert not marker.exists()


def test_checkpoint_of_the_other_variant_names_the_model_to_build():
    with pytest.raises(ValueError, match=r"'AAMSx8' \(PP-MobileSeg-Base, pp_mobileseg_base\).*'AAM'"):
        load_official(lessons.create_model("pp_mobileseg_tiny"), official_state_dict("pp_mobileseg_base"))
    with pytest.raises(ValueError, match=r"'AAM' \(PP-MobileSeg-Tiny, pp_mobileseg_tiny\).*build the matching"):
        load_official(lessons.create_model("pp_mobileseg_base"), official_state_dict("pp_mobileseg_tiny"))


def test_checkpoint_with_another_class_count_does_not_fit():
    with pytest.raises(ValueError, match=r"(?s)does not fit pp_mobileseg_tiny.*head\.classifier\.weight"):
        load_official(lessons.create_model("pp_mobileseg_tiny", num_classes=19),
                      official_state_dict("pp_mobileseg_tiny"))


def test_checkpoint_of_another_family_is_refused():
    with pytest.raises(ValueError, match="not keys of the official PaddleSeg PP-MobileSeg model"):
        load_official(lessons.create_model("pp_mobileseg_tiny"), official_state_dict("topformer_tiny"))


def test_missing_and_unknown_keys_raise():
    official = official_state_dict("pp_mobileseg_tiny")
    del official["backbone.trans1.transformer_blocks.0.attn.to_k.c.weight"]
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing.*attn\.to_k\.conv\.weight"):
        load_official(lessons.create_model("pp_mobileseg_tiny"), official)
    official = official_state_dict("pp_mobileseg_tiny")
    official["backbone.smb1.conv.c.extra"] = torch.zeros(1)  # neither a weight nor one of paddle.flops' counters
    with pytest.raises(ValueError, match="backbone.smb1.conv.c.extra"):
        load_official(lessons.create_model("pp_mobileseg_tiny"), official)


@pytest.mark.parametrize("writer", ["torch", "pdparams"])
def test_truncated_file_asks_for_a_new_download(tmp_path, writer):
    official = official_state_dict("pp_mobileseg_tiny")
    path = tmp_path / ("model.pth" if writer == "torch" else "model.pdparams")
    if writer == "torch":
        torch.save(official, path)
    else:
        write_pdparams(path, official)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="download"):
        lessons.create_model("pp_mobileseg_tiny", checkpoint=path)


def test_vim_agreement_by_classes_groups_images_by_classes_present_and_finds_the_disagreement():
    from lessons.pp_mobileseg import vim_agreement_by_classes

    # image 0: classes 0 and 1 win one pixel each; class 2 wins nowhere at low resolution, but between the two
    # pixels (logits about 6.25, 3.75, 7) it wins after interpolation -- VIM, which dropped it, must disagree there
    between = torch.tensor([[10.0, 0.0], [0.0, 10.0], [7.0, 7.0]]).reshape(1, 3, 1, 2)
    # image 1: all three classes present -- VIM equals interpolate-then-argmax
    everywhere = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]]).reshape(1, 3, 1, 3)
    rows = vim_agreement_by_classes(torch.cat([between, torch.zeros(1, 3, 1, 2)]), (1, 8))
    assert set(rows) == {1, 2} and rows[2][0] == 1 and rows[1] == (1, 100.0)  # all-zero logits: one class
    assert 0 < rows[2][1] < 100
    assert vim_agreement_by_classes(everywhere, (3, 9)) == {3: (1, 100.0)}
    with pytest.raises(ValueError, match="expected logits"):
        vim_agreement_by_classes(torch.zeros(3, 4, 4), (8, 8))
