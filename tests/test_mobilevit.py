"""MobileViT (Mehta & Rastegari, ICLR 2022): the block, the network, and what the chapter relies on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lessons
from lessons import mobilevit
from lessons.claims.mobilevit import count_macs_cvnets, norm_elements
from lessons.layers import DropPath, MultiHeadSelfAttention
from lessons.measure import count_macs, count_macs_fvcore, count_params, macs_by_operator, model_count
from lessons.viz import attention_reach

VARIANTS = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")


# --------------------------------------------------------------------------------------------------------------------
# Unfold and fold (paper §3.1)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch_h, patch_w, height, width", [(2, 2, 8, 8), (2, 2, 6, 10), (4, 2, 8, 6), (3, 3, 9, 12)])
def test_fold_inverts_unfold(patch_h, patch_w, height, width):
    x = torch.randn(2, 5, height, width)
    tokens = mobilevit.unfold_patches(x, patch_h, patch_w)
    assert tokens.shape == (2 * patch_h * patch_w, height * width // (patch_h * patch_w), 5)
    assert torch.equal(mobilevit.fold_patches(tokens, 2, height, width, patch_h, patch_w), x)


def test_unfold_puts_pixel_position_p_of_every_patch_in_sequence_p():
    # Every value names its own (batch, channel, row, column), so each token says where it came from.
    batch, dim, height, width, ph, pw = 2, 3, 4, 6, 2, 2
    b, c, r, w = torch.meshgrid(*(torch.arange(n) for n in (batch, dim, height, width)), indexing="ij")
    x = (b * 1000 + c * 100 + r * 10 + w).float()
    tokens = mobilevit.unfold_patches(x, ph, pw)
    n_w = width // pw
    for bi in range(batch):
        for i in range(ph):
            for j in range(pw):
                sequence = tokens[bi * ph * pw + i * pw + j]  # [N, d]: position (i, j) of every patch
                for n in range(sequence.shape[0]):
                    row, col = (n // n_w) * ph + i, (n % n_w) * pw + j  # patch n, row-major, then the position
                    assert sequence[n].tolist() == [bi * 1000 + ci * 100 + row * 10 + col for ci in range(dim)]


def test_unfold_rejects_a_map_that_is_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        mobilevit.unfold_patches(torch.zeros(1, 4, 7, 8), 2, 2)


# --------------------------------------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 5)])
def test_block_keeps_the_input_shape(size):
    block = mobilevit.MobileViTBlock(16, 32, depth=1).eval()
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        assert block(x).shape == x.shape


def test_odd_feature_map_is_resized_to_the_next_patch_multiple_and_back():
    """Official code and timm: bilinear resize (align_corners=False) before unfolding and after folding."""
    torch.manual_seed(0)
    block = mobilevit.MobileViTBlock(8, 16, depth=1, patch_size=2).eval()
    x = torch.randn(1, 8, 7, 9)
    with torch.no_grad():
        y = block.to_tokens(block.local_rep(x))
        y = F.interpolate(y, size=(8, 10), mode="bilinear", align_corners=False)
        tokens = block.norm(block.transformer(mobilevit.unfold_patches(y, 2, 2)))
        y = mobilevit.fold_patches(tokens, 1, 8, 10, 2, 2)
        y = F.interpolate(y, size=(7, 9), mode="bilinear", align_corners=False)
        expected = block.fusion(torch.cat((x, block.from_tokens(y)), dim=1))
        assert torch.equal(block(x), expected)


def test_one_block_lets_a_pixel_reach_exactly_the_predicted_pixels():
    """Paper Fig. 4: conv n x n -> unfold -> attention -> fold; checked by which input pixels get a gradient."""
    size, pixel = 16, (5, 10)
    for patch in (2, 4, 8):
        torch.manual_seed(patch)
        conv = nn.Conv2d(2, 4, 3, padding=1).double()
        attn = MultiHeadSelfAttention(4, num_heads=2).double().eval()
        x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
        y = conv(x)
        out = mobilevit.fold_patches(attn(mobilevit.unfold_patches(y, patch, patch)), 1, size, size, patch, patch)
        out[0, :, pixel[0], pixel[1]].sum().backward()
        measured = (x.grad.abs().sum(dim=1)[0] > 0).numpy()
        assert np.array_equal(measured, attention_reach(size, patch, 3, pixel))
    # h = w = 2 <= n = 3: every pixel is reached (the paper's argument for patch 2); 8 x 8 patches leave gaps.
    assert attention_reach(size, 2, 3, pixel).all()
    assert not attention_reach(size, 8, 3, pixel).all()


def test_attention_reach_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        attention_reach(10, 4, 3, (0, 0))
    with pytest.raises(ValueError, match="odd kernel"):
        attention_reach(16, 2, 2, (0, 0))
    with pytest.raises(ValueError, match="outside"):
        attention_reach(16, 2, 3, (16, 0))


# --------------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 224])
def test_stages_have_output_strides_2_to_32(size):
    with torch.device("meta"):  # shapes only
        model = lessons.create_model("mobilevit_xxs").eval()
        stages = model.forward_intermediates(torch.empty(1, 3, size, size))
    assert [size // s.shape[-1] for s in stages] == [2, 4, 8, 16, 32]
    assert [s.shape[1] for s in stages] == [16, 24, 48, 64, 80]  # cvnets config for XXS


def test_sizes_that_are_not_multiples_of_32_give_logits():
    model = lessons.create_model("mobilevit_xxs").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 200, 170))  # stage maps 25x22, 13x11, 7x6: resized inside the blocks
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_export_at_a_size_that_takes_the_resize_branch_matches_eager():
    """torch.export traces one input size: the block's "is the map a multiple of the patch?" test is decided then,
    so a 200 x 232 input (stage maps 25 x 29, 13 x 15, 7 x 8) exports with its resizes and runs as eager does."""
    torch.manual_seed(0)
    model = lessons.create_model("mobilevit_xxs", num_classes=5).eval()
    x = torch.randn(1, 3, 200, 232)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_config_b_has_the_same_parameters_and_fewer_attention_macs():
    """Paper §4.3: config-B (8, 4, 2) vs config-A (2, 2, 2). Attention MACs per layer = 2 (HW)^2 d / P."""
    for name in ("mobilevit_xxs", "mobilevit_s"):
        with torch.device("meta"):
            config_a = lessons.create_model(name)
            config_b = lessons.create_model(name, patch_sizes=(8, 4, 2))
        assert count_params(config_a) == count_params(config_b)
        attention = {}
        for label, model in (("A", config_a), ("B", config_b)):
            attention[label] = macs_by_operator(model, (3, 256, 256))["bmm"]
            cfg = model.config
            formula = sum(
                depth * 2 * (256 // stride) ** 4 * d // p**2
                for d, depth, p, stride in zip(cfg.transformer_dims, cfg.transformer_depths, cfg.patch_sizes,
                                               (8, 16, 32))
            )
            assert attention[label] == formula
        assert attention["B"] < attention["A"] / 4


def test_drop_path_rate_changes_training_only():
    torch.manual_seed(0)
    plain = lessons.create_model("mobilevit_xxs", num_classes=10)
    dropped = lessons.create_model("mobilevit_xxs", num_classes=10, drop_path_rate=0.2)
    dropped.load_state_dict(plain.state_dict())  # DropPath owns no weights: the same tensors load
    rates = [m.drop_prob for m in dropped.modules() if isinstance(m, DropPath)]
    assert max(rates) == pytest.approx(0.2) and min(rates) == 0.0  # linear over the three MobileViT blocks
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x))
        torch.manual_seed(1)
        train_plain = plain.train()(x)
        torch.manual_seed(1)
        train_dropped = dropped.train()(x)
    assert not torch.allclose(train_plain, train_dropped)


def test_elements_fvcore_charges_follow_the_config():
    """fvcore's rule charges 5 per LayerNorm element, (2L + 1) HW d per block, and 4 per bilinear resize output."""
    for name in VARIANTS:
        cfg = mobilevit.MOBILEVIT_CONFIGS[name.removeprefix("mobilevit_")]
        expected = sum((2 * depth + 1) * (256 // stride) ** 2 * d
                       for d, depth, stride in zip(cfg.transformer_dims, cfg.transformer_depths, (8, 16, 32)))
        assert norm_elements(name, (3, 256, 256))["layernorm"] == expected
        assert norm_elements(name, (3, 256, 256))["bilinear"] == 0  # every map is a multiple of the patch
        # At 224 the stage-5 map is 7 x 7: resized to 8 x 8 for 2 x 2 patches and back, d channels each way.
        assert norm_elements(name, (3, 224, 224))["bilinear"] == cfg.transformer_dims[2] * (8 * 8 + 7 * 7)
        # fvcore's count is ours plus exactly those charges (2 per BN element, 5 per LN element, 4 per resize output):
        # the extra terms the "fvcore rule" claims add are the MobileViT elements counted above, nothing else.
        for size in (256, 224):
            with torch.device("meta"):
                model = lessons.create_model(name).eval()
            extra = norm_elements(name, (3, size, size))
            charges = 2 * extra["batchnorm"] + 5 * extra["layernorm"] + 4 * extra["bilinear"]
            assert count_macs_fvcore(model, (3, size, size)) == count_macs(model, (3, size, size)) + charges


# --------------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xxs() -> nn.Module:
    return lessons.create_model("mobilevit_xxs").eval()


def test_wrong_channel_count_names_expected_and_got(xxs):
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 1"):
        xxs(torch.randn(1, 1, 64, 64))


def test_unbatched_image_is_rejected(xxs):
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        xxs(torch.randn(3, 64, 64))


def test_integer_image_is_rejected(xxs):
    with pytest.raises(TypeError, match="floating-point"):
        xxs(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs, message", [
    ({"patch_sizes": (2, 0, 2)}, "patch_sizes must be 3 positive ints"),
    ({"patch_sizes": (8, 4)}, "patch_sizes must be 3 positive ints"),
])
def test_bad_patch_sizes_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lessons.create_model("mobilevit_xxs", **kwargs)


@pytest.mark.parametrize("changes, message", [
    ({"transformer_dims": (64, 80, 90)}, "not divisible by num_heads"),
    ({"transformer_depths": (2, 4)}, "transformer_depths must be 3 positive ints"),
    ({"vit_channels": (48, 64, 80, 96)}, "vit_channels must be 3 positive ints"),
    ({"mv2_expansion": 0.0}, "mv2_expansion must be positive"),
])
def test_bad_configs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(mobilevit.MOBILEVIT_CONFIGS["xxs"], **changes)


def test_bad_block_arguments_are_rejected():
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        mobilevit.MobileViTBlock(16, 32, 1, patch_size=0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        mobilevit.MobileViTBlock(16, 30, 1, num_heads=4)


def test_unknown_model_name_suggests_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'mobilevit_xxl'.*mobilevit_x"):
        lessons.create_model("mobilevit_xxl")


def test_cvnets_rule_charges_biases_and_n_d_squared_attention():
    """cvnets-v0.1's profiler: conv and linear MACs, plus linear biases per token, plus 2 N d^2 per sequence."""
    with torch.device("meta"):
        model = lessons.create_model("mobilevit_xxs")
    by_operator = macs_by_operator(model, (3, 256, 256))
    cfg = model.config
    biases, attention = 1000, 0  # the classifier's biases, on one vector
    for d, depth, stride in zip(cfg.transformer_dims, cfg.transformer_depths, (8, 16, 32)):
        tokens = (256 // stride) ** 2  # P sequences of N tokens: P * N = H * W
        biases += depth * tokens * (3 * d + d + 2 * d + d)  # qkv, projection, MLP in and out
        attention += depth * 2 * tokens * d * d
    expected = by_operator["convolution"] + by_operator["addmm"] + by_operator.get("mm", 0) + biases + attention
    assert count_macs_cvnets(model, (3, 256, 256)) == expected
    assert model_count("mobilevit_xxs", (3, 256, 256), counter=count_macs_cvnets) == expected
