"""PP-MobileSeg: MobileNetV3 blocks, StrideFormer's strides, AAM's formula, VIM, parameter formulas, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lessons
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
from helpers import meta_model, one_thread_for_the_module

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
    with pytest.raises(ValueError, match="at least 64"):
        model(torch.empty(1, 3, 128, 32, device="meta"))
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
    with pytest.raises(TypeError, match="forward_logits"):
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
