"""Statements about the shared blocks in ``lessons.layers`` that every family builds on.

Each test names what a reader relies on: a block equals its textbook definition, keeps its promises about shapes and
residuals, and rejects arguments that cannot work with a ValueError that says so.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lessons import layers
from lessons.measure import count_params


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------------------------
# Primitives
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(8, 3, 1, 0), (8, 3, 1, 1), (9, 3, 2, 1), (10, 5, 2, 2), (7, 1, 1, 0), (11, 4, 3, 2)],
)
def test_conv2d_as_matmul_equals_conv2d(size: int, kernel: int, stride: int, padding: int) -> None:
    x = torch.randn(2, 3, size, size + 1)  # non-square, so height and width cannot be swapped unnoticed
    weight, bias = torch.randn(4, 3, kernel, kernel), torch.randn(4)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    got = layers.conv2d_as_matmul(x, weight, bias, stride=stride, padding=padding)
    assert got.shape == expected.shape
    # float32 sums in a different order: equal to about 1e-6 relative, not bit for bit
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_conv2d_as_matmul_without_bias_equals_conv2d() -> None:
    x, weight = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(layers.conv2d_as_matmul(x, weight, padding=1), F.conv2d(x, weight, padding=1))


def test_conv2d_as_matmul_rejects_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="input channels"):
        layers.conv2d_as_matmul(torch.randn(1, 3, 5, 5), torch.randn(4, 2, 3, 3))


def test_attention_equals_sdpa() -> None:
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)  # [B=2, heads=4, N=7, d=8] each
    torch.testing.assert_close(layers.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(
        layers.attention(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3)
    )


def test_attention_rows_are_convex_combinations_of_values() -> None:
    # softmax weights are positive and sum to 1, so every output lies between the smallest and largest value
    q, k = torch.randn(2, 1, 5, 4).unbind(0)
    v = torch.randn(1, 5, 4)
    out = layers.attention(q, k, v)
    assert (out <= v.max(dim=1, keepdim=True).values + 1e-6).all()
    assert (out >= v.min(dim=1, keepdim=True).values - 1e-6).all()


def test_hard_sigmoid_equals_relu6_formula() -> None:
    x = torch.linspace(-6, 6, 241)
    expected = torch.clamp(x + 3, 0, 6) / 6  # ReLU6(x + 3) / 6, MobileNetV3 §5.2
    assert torch.equal(layers.hard_sigmoid(x), expected)
    torch.testing.assert_close(layers.HardSigmoid()(x), F.hardsigmoid(x))
    assert layers.hard_sigmoid(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]


def test_make_divisible_never_rounds_down_more_than_10_percent() -> None:
    for divisor in (4, 8, 16, 32):
        for value in range(1, 1025):
            for scaled in (value, value * 1.5, value / 3):
                result = layers.make_divisible(scaled, divisor)
                assert result % divisor == 0
                assert result >= 0.9 * scaled
                assert result >= divisor  # min_value defaults to the divisor


def test_make_divisible_examples() -> None:
    assert layers.make_divisible(36, 8) == 40  # nearest multiple, rounding half up
    assert layers.make_divisible(64, 8) == 64  # multiples stay put
    assert layers.make_divisible(3, 8) == 8  # never below min_value
    assert layers.make_divisible(20, 16) == 32  # 16 would lose 20%: go up instead
    assert layers.make_divisible(10, 8, min_value=16) == 16


def test_output_size_matches_conv2d() -> None:
    for size, kernel, stride, padding in [(7, 3, 2, 1), (8, 3, 2, 1), (224, 7, 4, 2), (5, 5, 1, 0)]:
        conv = nn.Conv2d(1, 1, kernel, stride, padding)
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == layers.output_size(size, kernel, stride, padding)


def test_drop_path_rates_rise_linearly_from_zero() -> None:
    assert layers.drop_path_rates(0.1, 0) == []
    assert layers.drop_path_rates(0.1, 1) == [0.0]
    rates = layers.drop_path_rates(0.3, 4)
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.3)
    assert all(math.isclose(b - a, 0.1) for a, b in zip(rates, rates[1:]))


# ------------------------------------------------------------------------------------------------------------------
# Convolutional blocks
# ------------------------------------------------------------------------------------------------------------------
def test_conv_norm_act_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="groups=4 must divide"):
        layers.ConvNormAct(6, 8, groups=4)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        layers.ConvNormAct(8, 8, groups=0)
    with pytest.raises(ValueError, match="out_chs must be a positive int"):
        layers.ConvNormAct(8, 0)


def test_conv_norm_act_has_no_conv_bias_when_a_norm_follows() -> None:
    assert layers.ConvNormAct(4, 8).conv.bias is None
    assert layers.ConvNormAct(4, 8, norm=False).conv.bias is not None
    linear = layers.ConvNormAct(4, 8, act_layer=None)
    assert isinstance(linear.act, nn.Identity)


def test_conv_norm_act_keeps_size_with_odd_kernels() -> None:
    x = torch.randn(1, 4, 9, 9)
    for kernel, dilation in ((1, 1), (3, 1), (5, 1), (3, 2)):
        assert layers.ConvNormAct(4, 6, kernel, dilation=dilation)(x).shape == (1, 6, 9, 9)


def _zero_projection(block: layers.InvertedResidual) -> layers.InvertedResidual:
    """Make the block's branch output exactly zero (projection BatchNorm scale and shift 0), in eval mode."""
    with torch.no_grad():
        block.project.bn.weight.zero_()
        block.project.bn.bias.zero_()
    return block.eval()


def test_inverted_residual_has_residual_only_when_shape_kept() -> None:
    x = torch.randn(2, 16, 8, 8)
    kept = _zero_projection(layers.InvertedResidual(16, 16, stride=1))
    assert kept.use_residual
    assert torch.equal(kept(x), x)  # branch is zero, so the output is the residual alone

    for in_chs, out_chs, stride in ((16, 24, 1), (16, 16, 2)):
        changed = _zero_projection(layers.InvertedResidual(in_chs, out_chs, stride=stride))
        assert not changed.use_residual
        out = changed(x)
        assert out.shape == (2, out_chs, 8 // stride, 8 // stride)
        assert torch.count_nonzero(out) == 0  # no residual: a zero branch gives zero


def test_inverted_residual_skips_expansion_when_ratio_is_one() -> None:
    block = layers.InvertedResidual(16, 24, expand_ratio=1)
    assert isinstance(block.expand, nn.Identity)
    assert block.depthwise.conv.in_channels == 16 and block.depthwise.conv.groups == 16
    # depthwise 3x3 + BN, then 1x1 projection + BN: no expansion weights anywhere
    assert count_params(block) == (9 * 16 + 2 * 16) + (16 * 24 + 2 * 24)


def test_inverted_residual_expands_to_a_multiple_of_8() -> None:
    block = layers.InvertedResidual(24, 24, expand_ratio=2.5)  # 60 -> 64 (MobileNetV2's _make_divisible)
    assert block.expand.conv.out_channels == 64
    assert layers.InvertedResidual(16, 16, expand_ratio=4).depthwise.conv.groups == 64


def test_inverted_residual_rejects_bad_stride_and_ratio() -> None:
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        layers.InvertedResidual(16, 16, stride=3)
    with pytest.raises(ValueError, match="expand_ratio must be positive"):
        layers.InvertedResidual(16, 16, expand_ratio=0)


def test_conv_mlp_equals_mlp_on_tokens() -> None:
    # A 1x1 conv on a feature map is a linear layer on each pixel's channel vector.
    conv_mlp, mlp = layers.ConvMlp(8, 16), layers.Mlp(8, 16)
    with torch.no_grad():
        for conv, linear in ((conv_mlp.fc1, mlp.fc1), (conv_mlp.fc2, mlp.fc2)):
            linear.weight.copy_(conv.weight.flatten(1))
            linear.bias.copy_(conv.bias)
    x = torch.randn(2, 8, 5, 6)
    tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
    expected = mlp(tokens).transpose(1, 2).reshape(2, 8, 5, 6)
    torch.testing.assert_close(conv_mlp(x), expected)


# ------------------------------------------------------------------------------------------------------------------
# Transformer blocks
# ------------------------------------------------------------------------------------------------------------------
def test_mhsa_equals_per_head_attention_written_out() -> None:
    dim, heads, tokens = 12, 3, 5
    mhsa = layers.MultiHeadSelfAttention(dim, heads).eval()
    x = torch.randn(2, tokens, dim)
    q, k, v = (x @ mhsa.qkv.weight.T + mhsa.qkv.bias).chunk(3, dim=-1)  # [B, N, C] each
    split = lambda t: t.reshape(2, tokens, heads, dim // heads).transpose(1, 2)  # noqa: E731
    per_head = layers.attention(split(q), split(k), split(v))
    expected = per_head.transpose(1, 2).reshape(2, tokens, dim) @ mhsa.proj.weight.T + mhsa.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(mhsa(x), expected)


def test_mhsa_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="num_heads=4 must be positive and divide dim=10"):
        layers.MultiHeadSelfAttention(10, 4)
    with pytest.raises(ValueError, match="num_heads=0"):
        layers.MultiHeadSelfAttention(8, 0)
    # an explicit head_dim decouples the inner width from dim
    mhsa = layers.MultiHeadSelfAttention(10, 4, head_dim=6)
    assert mhsa.qkv.out_features == 3 * 4 * 6 and mhsa(torch.randn(1, 3, 10)).shape == (1, 3, 10)


def test_mhsa_mixes_tokens_but_is_permutation_equivariant() -> None:
    # no position information inside attention: permuting the tokens permutes the output the same way
    mhsa = layers.MultiHeadSelfAttention(8, 2).eval()
    x = torch.randn(1, 6, 8)
    perm = torch.randperm(6)
    with torch.no_grad():
        torch.testing.assert_close(mhsa(x)[:, perm], mhsa(x[:, perm]))


def test_transformer_encoder_layer_is_identity_when_branches_are_zero() -> None:
    layer = layers.TransformerEncoderLayer(8, 2).eval()
    with torch.no_grad():
        for linear in (layer.attn.proj, layer.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.equal(layer(x), x)


def test_drop_path_is_identity_in_eval_and_keeps_expectation_in_train() -> None:
    drop = layers.DropPath(0.3)
    x = torch.ones(20_000, 3, 2)
    drop.eval()
    assert drop(x) is x

    drop.train()
    out = drop(x)
    per_sample = out.flatten(1)
    # a whole sample is either dropped or kept and scaled by 1/keep (Huang et al. 2016)
    assert torch.all((per_sample == 0).all(dim=1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(dim=1))
    # the mean over 20k samples: standard error ~0.005, so 0.03 is a six-sigma band around the expectation 1
    assert abs(out.mean().item() - 1.0) < 0.03
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.3) < 0.02
    assert layers.DropPath(0.0).train()(x) is x


def test_drop_path_rejects_probability_one() -> None:
    with pytest.raises(ValueError, match=r"drop_prob must be in \[0, 1\)"):
        layers.DropPath(1.0)
    with pytest.raises(ValueError, match="drop_prob"):
        layers.DropPath(-0.1)


def test_layer_scale_channel_dim() -> None:
    tokens_scale = layers.LayerScale(4, init_value=1e-5)
    assert torch.equal(tokens_scale.scale, torch.full((4,), 1e-5))
    with torch.no_grad():
        tokens_scale.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    tokens = torch.randn(2, 5, 4)  # [B, N, C]: channels last
    assert torch.equal(tokens_scale(tokens), tokens * torch.tensor([1.0, 2.0, 3.0, 4.0]))

    map_scale = layers.LayerScale(4, channel_dim=1)
    with torch.no_grad():
        map_scale.scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    feature_map = torch.randn(2, 4, 3, 5)  # [B, C, H, W]: channels second
    expected = feature_map * torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None]
    assert torch.equal(map_scale(feature_map), expected)


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "8", None])
def test_count_check_refuses_what_is_not_a_positive_int_and_names_the_argument(value):
    with pytest.raises(ValueError, match=r"num_heads must be a positive int \(per stage\), got"):
        layers.check_count("num_heads", value, note=" (per stage)")


def test_count_check_accepts_zero_only_where_zero_means_something():
    layers.check_count("num_classes", 0, minimum=0)  # 0 = no classifier
    layers.check_count("depth", 12)
    with pytest.raises(ValueError, match="num_classes must be a non-negative int"):
        layers.check_count("num_classes", -1, minimum=0)
    with pytest.raises(ValueError, match="at least 3"):
        layers.check_count("side", 2, minimum=3)


def test_conv_norm_act_activation_is_in_place_and_changes_nothing():
    """In-place activations (timm's choice, for memory traffic) must give the out-of-place result, forward and back."""
    from lessons.layers import ConvNormAct, make_act

    assert make_act(nn.SiLU).inplace and make_act(nn.ReLU).inplace and make_act(nn.Hardswish).inplace
    assert isinstance(make_act(nn.GELU), nn.GELU)  # a layer without ``inplace`` is built as it is
    torch.manual_seed(0)
    block = ConvNormAct(4, 8, act_layer=nn.SiLU)
    assert block.act.inplace
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = block(x)
    expected = torch.nn.functional.silu(block.bn(block.conv(x)))
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad, expected_grad)


# ---------------------------------------------------------------------------------------------------- patch embedding


def test_patch_embed_projects_each_flattened_patch_in_row_major_order():
    embed = layers.PatchEmbed(3, 5, patch_size=4)
    x = torch.randn(2, 3, 8, 12)
    tokens = embed(x)
    assert tokens.shape == (2, (8 // 4) * (12 // 4), 5)
    # token (row 1, column 2) is the linear map of the patch x[:, :, 4:8, 8:12], flattened as the kernel is
    patch = x[:, :, 4:8, 8:12].reshape(2, -1)
    expected = patch @ embed.proj.weight.reshape(5, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens[:, 1 * 3 + 2], expected)


def test_patch_embed_refuses_sides_that_are_not_multiples_of_the_patch():
    embed = layers.PatchEmbed(3, 8, patch_size=4)
    with pytest.raises(ValueError, match="multiples of 4"):
        embed(torch.randn(1, 3, 10, 8))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        embed(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        layers.PatchEmbed(3, 8, patch_size=0)
