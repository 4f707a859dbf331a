"""Statements about ``lessons.measure``: what is counted, exactly, and what is rejected.

Every count is compared with a formula written out by hand; models are small, or built on the meta device.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lessons
from lessons import layers, measure
from lessons.measure import (
    Latency,
    compare_latency,
    count_flops,
    count_macs,
    count_params,
    flops_by_part,
    macs_by_operator,
    measure_latency,
    paired_ratio,
    params_by_part,
)


class SelfAttentionOfInput(nn.Module):
    """softmax(x x^T / sqrt(d)) x through the fused kernel, on an input laid out [B, heads, N, d]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


class AttentionOnMap(nn.Module):
    """Multi-head self-attention over the H*W pixels of a feature map (count_flops takes image-shaped inputs)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = layers.MultiHeadSelfAttention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x.flatten(2).transpose(1, 2))


# ------------------------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------------------------
def test_count_params_counts_every_element_and_skips_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))
    assert count_params(model) == (3 * 8 * 9 + 8) + (2 * 8) + (8 * 4 + 4)  # running stats are buffers
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - 3 * 8 * 9


def test_params_by_part_sums_to_the_total() -> None:
    with torch.device("meta"):
        model = lessons.create_model("mobilevit_xxs")
    parts = params_by_part(model)
    assert list(parts) == [name for name, _ in model.named_children()]
    assert sum(parts.values()) == count_params(model)


def test_params_by_part_reports_the_roots_own_parameters() -> None:
    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
            self.head = nn.Linear(16, 10)

    model = WithToken()
    parts = params_by_part(model)
    assert parts == {"head": 170, "(own parameters)": 16}
    assert sum(parts.values()) == count_params(model)


# ------------------------------------------------------------------------------------------------------------------
# FLOPs and MACs
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), (1, 8), (2, 4)])
def test_conv_flops_equal_the_hand_formula(stride: int, groups: int) -> None:
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=1, groups=groups)  # the bias is not counted
    out_side = (20 + 2 - 3) // stride + 1
    macs = 3 * 3 * (8 // groups) * 16 * out_side * out_side  # k*k*(C_in/groups)*C_out*H_out*W_out
    assert count_flops(conv, (8, 20, 20)) == 2 * macs
    assert count_macs(conv, (8, 20, 20)) == macs


def test_linear_flops_equal_the_hand_formula() -> None:
    # a classifier on pooled features: [B, C_in] @ [C_in, C_out]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    assert count_flops(head, (4, 32, 7, 7)) == 2 * 4 * 32 * 10  # pooling is not counted


def test_a_batch_costs_batch_times_one_image() -> None:
    model = layers.InvertedResidual(8, 8)
    assert count_flops(model, (3, 8, 16, 16)) == 3 * count_flops(model, (8, 16, 16))


def test_count_flops_counts_attention_on_meta() -> None:
    batch, heads, tokens, head_dim = 2, 4, 64, 16
    flops = count_flops(SelfAttentionOfInput(), (batch, heads, tokens, head_dim))
    assert flops > 0
    # QK^T and AV: two products of B*H*N*N*D multiply-adds each, 2 FLOPs per multiply-add
    assert flops == 4 * batch * heads * tokens**2 * head_dim


def test_flop_counter_misses_fused_attention_on_cpu() -> None:
    # Why count_flops runs on meta: on the CPU the fused SDPA kernel has no FLOP formula. If PyTorch adds one,
    # this test fails and lessons.measure's docstring (and the foundations chapter) must be updated.
    q = torch.randn(1, 2, 32, 8)
    counter = FlopCounterMode(display=False)
    with counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 0


def test_macs_by_operator_separates_linear_layers_from_attention_products() -> None:
    dim, side = 32, 8
    tokens = side * side
    by_op = macs_by_operator(AttentionOnMap(dim, num_heads=4), (dim, side, side))
    linear = by_op.get("addmm", 0) + by_op.get("mm", 0)
    assert linear == 4 * tokens * dim * dim  # q, k, v (3C^2) and output (C^2) projections per token
    assert by_op["bmm"] == 2 * tokens * tokens * dim  # QK^T and AV: N^2 C each
    assert sum(by_op.values()) == count_macs(AttentionOnMap(dim, 4), (dim, side, side))
    assert list(by_op.values()) == sorted(by_op.values(), reverse=True)


def test_count_flops_leaves_the_model_where_it_was() -> None:
    model = layers.InvertedResidual(8, 8).train()
    count_flops(model, (8, 8, 8))
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_count_flops_moves_a_module_with_only_buffers_to_meta() -> None:
    class FixedPositionAndMixing(nn.Module):
        """No parameters, two CPU buffers: must still be moved to meta (a CPU tensor added to a meta one fails)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("position", torch.zeros(4))
            self.register_buffer("mixing", torch.ones(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + self.position) @ self.mixing

    model = FixedPositionAndMixing()
    assert count_flops(model, (1, 2, 3, 4)) == 2 * (2 * 3) * 4 * 4
    assert model.position.device.type == "cpu"  # counted on a copy


def test_flops_by_part_sums_to_the_total() -> None:
    with torch.device("meta"):
        model = lessons.create_model("mobilevit_xxs")
    parts = flops_by_part(model, (3, 64, 64))
    assert sum(parts.values()) == count_flops(model, (3, 64, 64))
    assert parts["stages"] > parts["stem"] > 0
    assert "(elsewhere)" not in parts  # MobileViT's own forward computes nothing outside its children


def test_flops_by_part_puts_the_roots_own_work_elsewhere() -> None:
    class ProjectThenAttend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.proj(x).flatten(2).transpose(1, 2)  # [B, HW, C]
            return F.scaled_dot_product_attention(tokens, tokens, tokens)

    parts = flops_by_part(ProjectThenAttend(), (4, 4, 4))
    assert parts == {"proj": 2 * 16 * 4 * 4, "(elsewhere)": 4 * 16 * 16 * 4}


@pytest.mark.parametrize(
    "bad", [(3, 32), (1, 1, 3, 32, 32), (3, 0, 32), (3, 32.0, 32), (-1, 3, 32, 32), "3x32x32"]
)
def test_input_size_must_be_positive_ints_of_length_3_or_4(bad: object) -> None:
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\) or \(B, C, H, W\)"):
        count_flops(nn.Conv2d(3, 4, 1), bad)
    with pytest.raises(ValueError, match="input_size"):
        measure_latency(nn.Conv2d(3, 4, 1), bad)


# ------------------------------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------------------------------
def test_measure_latency_returns_a_positive_median() -> None:
    result = measure_latency(nn.Conv2d(3, 8, 3), (3, 16, 16), warmup=1, min_run_time=0.02)
    assert isinstance(result, Latency)
    assert result.median_ms > 0 and result.iqr_ms >= 0 and result.runs >= 1
    assert "ms" in str(result)


def test_measure_latency_counts_timed_blocks_and_the_passes_in_them() -> None:
    result = measure_latency(nn.Conv2d(3, 8, 3), (3, 16, 16), warmup=1, min_run_time=0.02)
    # torch.utils.benchmark times blocks of passes: samples are blocks, and every pass is in one
    assert result.samples == len(result.samples_ms) == result.runs >= 1
    assert result.passes_per_sample >= 1 and result.forward_passes == result.samples * result.passes_per_sample
    assert f"{result.samples} timed blocks" in str(result) or result.passes_per_sample == 1


def test_compare_latency_keeps_every_pass_and_pairs_them_by_round() -> None:
    models = {"one conv": nn.Conv2d(3, 8, 3, padding=1), "two convs": nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))}
    results = compare_latency(models, (3, 32, 32), rounds=3, warmup=1, per_round=2)
    for result in results.values():
        assert result.samples == result.forward_passes == 6 and result.passes_per_sample == 1
        assert len(result.samples_ms) == 6 and "6 timed passes" in str(result)
    q1, median, q3 = paired_ratio(results["two convs"], results["one conv"])
    assert q1 <= median <= q3 and median > 0
    ratios = sorted(a / b for a, b in zip(results["two convs"].samples_ms, results["one conv"].samples_ms))
    assert ratios[0] <= median <= ratios[-1]


def test_paired_ratio_refuses_results_it_cannot_pair() -> None:
    with pytest.raises(TypeError, match="two lessons.measure.Latency"):
        paired_ratio(1.0, 2.0)
    with pytest.raises(ValueError, match="one compare_latency call"):
        paired_ratio(Latency(1.0, 0.1, 2, 1, (1.0, 1.0)), Latency(1.0, 0.1, 3, 1, (1.0, 1.0, 1.0)))


def test_compare_latency_returns_one_result_per_model() -> None:
    models = {"small": nn.Conv2d(3, 4, 1), "larger": nn.Conv2d(3, 16, 3, padding=1)}
    results = compare_latency(models, (3, 16, 16), rounds=2, warmup=1, per_round=2)
    assert list(results) == ["small", "larger"]
    for result in results.values():
        assert result.median_ms > 0 and result.iqr_ms >= 0
        assert result.runs == 2 * 2  # rounds x per_round


def test_compare_latency_rejects_an_empty_dict() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        compare_latency({}, (3, 16, 16))


def test_lessons_import_does_not_import_torch_benchmark() -> None:
    # torch.utils.benchmark imports cpp_extension, which logs a time-stamped warning on machines with nvcc but no
    # GPU: that line must not appear in every chapter's first cell (nbval could never reproduce it).
    import subprocess
    import sys

    code = "import sys, lessons; print('torch.utils.cpp_extension' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
    assert measure._torch_benchmark().Timer is not None


# --------------------------------------------------------------------------------------------------------------------
# mmcv's module-hook rule (one implementation; TopFormer/SeaFormer and HRViT pass their MmcvRules)
# --------------------------------------------------------------------------------------------------------------------


class WrappedConv(nn.Conv2d):
    """A Conv2d subclass: mmcv matches exact types, so it counts 0 there and in full under ``isinstance`` rules."""


def _tiny_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Upsample(scale_factor=2))


def test_mmcv_rule_counts_bias_norm_activation_and_upsample_elements() -> None:
    model = _tiny_net()
    conv, bn, relu, upsample = 3 * 9 * 8 * 100 + 8 * 100, 2 * 800, 800, 3200  # 10 x 10 map; upsample: 8 x 20 x 20
    assert measure.count_mmcv_flops(model, (3, 10, 10)) == conv + bn + relu + upsample
    assert measure.count_mmcv_flops(model, (3, 10, 10), count_batchnorm=False) == conv + relu + upsample
    assert measure.count_mmcv_flops(model, (4, 3, 10, 10)) == conv + bn + relu + upsample  # per image, as mmcv
    assert measure.mmcv_flops_by_part(model, (3, 10, 10)) == {"0": conv, "1": bn, "2": relu, "3": upsample}
    layernorm = nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4))
    # input (1, 2, 5, 6): 10 tokens x 6 x 4 multiply-adds, no bias; LayerNorm 40 elements, twice (affine)
    assert measure.count_mmcv_flops(layernorm, (2, 5, 6)) == 10 * 6 * 4 + 2 * 40


def test_topformer_rules_match_subclasses_and_skip_upsample_and_layernorm() -> None:
    from lessons.layers import HardSigmoid
    from lessons.claims.topformer import MMCV_RULES as TOPFORMER

    positions = 8 * 8
    expected = 3 * 3 * 3 * 8 * positions + 8 * positions + 2 * 8 * positions + 8 * positions  # conv+bias, BN, ReLU
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    assert measure.count_mmcv_flops(model, (3, 8, 8), rules=TOPFORMER) == expected
    assert measure.count_mmcv_flops(nn.Sequential(model, HardSigmoid()), (3, 8, 8), rules=TOPFORMER) == (
        expected + 8 * positions)  # the official h_sigmoid is an nn.ReLU6 module
    assert measure.count_mmcv_flops(_tiny_net(), (3, 8, 8), rules=TOPFORMER) == expected  # Upsample: 0
    assert measure.count_mmcv_flops(nn.LayerNorm(8), (1, 3, 8, 8), rules=TOPFORMER) == 0
    wrapped = WrappedConv(3, 8, 1, bias=False)
    assert measure.count_mmcv_flops(wrapped, (3, 8, 8), rules=TOPFORMER) == 3 * 8 * positions
    assert measure.count_mmcv_flops(wrapped, (3, 8, 8)) == 0  # mmcv itself: exact types


def test_mmcv_extra_kinds_are_recorded_but_only_added_on_request() -> None:
    relu_kind = (nn.ReLU, lambda m, inputs, output: 7)  # a made-up charge for what mmcv never sees
    rules = measure.MmcvRules(kinds=("conv",), extra_kinds={"custom": relu_kind})
    model = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU())
    with measure.MmcvFlopCounter(model, rules) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 4, 4))
    assert counter.by_kind == {"conv": 3 * 2 * 16, "custom": 7}
    assert counter.total() == 3 * 2 * 16
    assert counter.total(extra_counts={"custom": 2}) == 3 * 2 * 16 + 14
    assert counter.by_part == {"0": 3 * 2 * 16, "1": 0}  # parts add up to mmcv's total, extras left out


def test_mmcv_counter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="input_size"):
        measure.count_mmcv_flops(_tiny_net(), (10, 10))
    with pytest.raises(ValueError, match="unknown mmcv kinds"):
        measure.MmcvRules(kinds=("convolution",))
    with pytest.raises(ValueError, match="must not reuse"):
        measure.MmcvRules(extra_kinds={"conv": (nn.ReLU, lambda m, i, o: 0)})
    with pytest.raises(TypeError, match="MmcvRules"):
        measure.MmcvFlopCounter(_tiny_net(), rules={"exact_types": True})
    counter = measure.MmcvFlopCounter(_tiny_net())
    with pytest.raises(ValueError, match="extra kinds"):
        counter.total(extra_counts={"attention_product": 1})


# ------------------------------------------------------------------------------------------------------------------
# Registered models by name: the one meta-device helper and its cache
# ------------------------------------------------------------------------------------------------------------------


def test_on_meta_restores_the_mode_it_found_even_when_the_forward_fails() -> None:
    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Fails().train()
    with pytest.raises(RuntimeError, match="boom"), measure.on_meta(model, (3, 4, 4)) as (meta, x):
        assert not meta.training and x.device.type == "meta" and x.shape == (1, 3, 4, 4)
        meta(x)
    assert model.training
    evaluated = layers.InvertedResidual(8, 8).eval()
    count_flops(evaluated, (8, 8, 8))
    assert not evaluated.training


def test_meta_model_builds_a_registered_model_without_memory_in_eval_mode() -> None:
    model = measure.meta_model("mobilevit_xxs", num_classes=10)
    assert not model.training and model.fc.out_features == 10
    assert all(p.device.type == "meta" for p in model.parameters())


def test_model_count_and_model_params_equal_counting_the_built_model_and_are_cached() -> None:
    with torch.device("meta"):
        model = lessons.create_model("mobilevit_xxs", num_classes=10)
    assert measure.model_params("mobilevit_xxs", num_classes=10) == count_params(model)
    assert measure.model_count("mobilevit_xxs", (3, 64, 64), num_classes=10) == count_macs(model, (3, 64, 64))
    assert measure.model_count("mobilevit_xxs", (3, 64, 64), counter=count_flops, num_classes=10) == count_flops(
        model, (3, 64, 64))
    hits = measure._cached_count.cache_info().hits
    measure.model_count("mobilevit_xxs", (3, 64, 64), num_classes=10)
    assert measure._cached_count.cache_info().hits == hits + 1
