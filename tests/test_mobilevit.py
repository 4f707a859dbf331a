"""MobileViT (Mehta & Rastegari, ICLR 2022): the block, the network, and what the chapter relies on."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import timm
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


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (apple/ml-cvnets)
# --------------------------------------------------------------------------------------------------------------------

CVNETS_MODES = {"mobilevit_xxs": "xx_small", "mobilevit_xs": "x_small", "mobilevit_s": "small"}


def official_cvnets_keys(name: str) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the official MobileViT's state dict, written out from apple/ml-cvnets (read at tag
    cvnets-v0.1 and at 7771756): ``conv_1``, ``layer_1`` .. ``layer_5``, ``conv_1x1_exp`` and ``classifier.fc``;
    a ConvLayer2d holds ``block.conv`` and (with use_norm) a BatchNorm ``block.norm``; an InvertedResidual holds
    ``block.exp_1x1``, ``block.conv_3x3`` (depthwise), ``block.red_1x1``; a MobileViTBlock holds
    ``local_rep.conv_3x3``, ``local_rep.conv_1x1`` (no norm), ``global_rep`` (TransformerEncoders, then a LayerNorm),
    ``conv_proj`` and ``fusion``; channel sizes from cvnets/models/classification/config/mobilevit.py."""
    cfg = mobilevit.MOBILEVIT_CONFIGS[name.removeprefix("mobilevit_")]
    keys: dict[str, tuple[int, ...]] = {}

    def conv_layer(prefix: str, cin: int, cout: int, kernel: int, groups: int = 1, norm: bool = True) -> None:
        keys[f"{prefix}.block.conv.weight"] = (cout, cin // groups, kernel, kernel)
        if norm:
            keys.update({f"{prefix}.block.norm.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")})
            keys[f"{prefix}.block.norm.num_batches_tracked"] = ()

    def inverted_residual(prefix: str, cin: int, cout: int) -> None:
        hidden = int(round(cin * cfg.mv2_expansion))  # make_divisible(..., 8) changes none of these
        assert hidden % 8 == 0
        conv_layer(f"{prefix}.block.exp_1x1", cin, hidden, 1)
        conv_layer(f"{prefix}.block.conv_3x3", hidden, hidden, 3, groups=hidden)
        conv_layer(f"{prefix}.block.red_1x1", hidden, cout, 1)

    conv_layer("conv_1", 3, 16, 3)
    c1, c2 = cfg.mv2_channels
    inverted_residual("layer_1.0", 16, c1)
    for j in range(3):
        inverted_residual(f"layer_2.{j}", c1 if j == 0 else c2, c2)
    cin = c2
    for n, (chs, d, depth) in enumerate(zip(cfg.vit_channels, cfg.transformer_dims, cfg.transformer_depths), start=3):
        inverted_residual(f"layer_{n}.0", cin, chs)
        block = f"layer_{n}.1"
        conv_layer(f"{block}.local_rep.conv_3x3", chs, chs, 3)
        conv_layer(f"{block}.local_rep.conv_1x1", chs, d, 1, norm=False)
        for i in range(depth):
            layer = f"{block}.global_rep.{i}"
            keys |= {f"{layer}.pre_norm_mha.0.weight": (d,), f"{layer}.pre_norm_mha.0.bias": (d,),
                     f"{layer}.pre_norm_mha.1.qkv_proj.weight": (3 * d, d), f"{layer}.pre_norm_mha.1.qkv_proj.bias": (3 * d,),
                     f"{layer}.pre_norm_mha.1.out_proj.weight": (d, d), f"{layer}.pre_norm_mha.1.out_proj.bias": (d,),
                     f"{layer}.pre_norm_ffn.0.weight": (d,), f"{layer}.pre_norm_ffn.0.bias": (d,),
                     f"{layer}.pre_norm_ffn.1.weight": (2 * d, d), f"{layer}.pre_norm_ffn.1.bias": (2 * d,),
                     f"{layer}.pre_norm_ffn.4.weight": (d, 2 * d), f"{layer}.pre_norm_ffn.4.bias": (d,)}
        keys |= {f"{block}.global_rep.{depth}.weight": (d,), f"{block}.global_rep.{depth}.bias": (d,)}
        conv_layer(f"{block}.conv_proj", d, chs, 1)
        conv_layer(f"{block}.fusion", 2 * chs, chs, 3)
        cin = chs
    exp = min(4 * cin, 960)
    assert exp == cfg.final_channels
    conv_layer("conv_1x1_exp", cin, exp, 1)
    return keys | {"classifier.fc.weight": (1000, exp), "classifier.fc.bias": (1000,)}


def official_cvnets_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in official_cvnets_keys(name).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 1000, shape, generator=generator)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) > 1:
            out[key] = torch.randn(shape, generator=generator) * math.prod(shape[1:]) ** -0.5
        else:
            out[key] = torch.randn(shape, generator=generator) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_every_official_checkpoint_loads_strictly_and_runs(name):
    official = official_cvnets_state_dict(name)
    model = lessons.create_model(name, checkpoint=official).eval()
    assert len(model.state_dict()) == len(official)
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


# (official key -> our key) for tensors that share a shape with a sibling: BN weight/bias/running stats, the MV2
# block's expand vs project, norm1 vs norm2 vs the block's final LayerNorm, qkv weight vs bias, out_proj, fc1 vs fc2,
# the encoder layers in order, local_rep vs fusion, conv_proj vs local_rep.conv_1x1, the last conv and the classifier.
CVNETS_ROLE_PAIRS = [
    ("conv_1.block.norm.weight", "stem.bn.weight"),
    ("conv_1.block.norm.bias", "stem.bn.bias"),
    ("conv_1.block.norm.running_mean", "stem.bn.running_mean"),
    ("conv_1.block.norm.running_var", "stem.bn.running_var"),
    ("conv_1.block.norm.num_batches_tracked", "stem.bn.num_batches_tracked"),
    ("layer_2.1.block.exp_1x1.block.conv.weight", "stages.1.1.expand.conv.weight"),
    ("layer_2.1.block.conv_3x3.block.norm.bias", "stages.1.1.depthwise.bn.bias"),
    ("layer_2.2.block.red_1x1.block.conv.weight", "stages.1.2.project.conv.weight"),
    ("layer_4.0.block.red_1x1.block.norm.running_mean", "stages.3.0.project.bn.running_mean"),
    ("layer_3.1.local_rep.conv_3x3.block.conv.weight", "stages.2.1.local_rep.conv.weight"),
    ("layer_3.1.local_rep.conv_1x1.block.conv.weight", "stages.2.1.to_tokens.weight"),
    ("layer_3.1.global_rep.0.pre_norm_mha.0.weight", "stages.2.1.transformer.0.norm1.weight"),
    ("layer_3.1.global_rep.1.pre_norm_mha.0.weight", "stages.2.1.transformer.1.norm1.weight"),
    ("layer_3.1.global_rep.1.pre_norm_ffn.0.bias", "stages.2.1.transformer.1.norm2.bias"),
    ("layer_3.1.global_rep.2.weight", "stages.2.1.norm.weight"),
    ("layer_4.1.global_rep.3.pre_norm_mha.1.qkv_proj.weight", "stages.3.1.transformer.3.attn.qkv.weight"),
    ("layer_4.1.global_rep.3.pre_norm_mha.1.qkv_proj.bias", "stages.3.1.transformer.3.attn.qkv.bias"),
    ("layer_4.1.global_rep.2.pre_norm_mha.1.out_proj.weight", "stages.3.1.transformer.2.attn.proj.weight"),
    ("layer_5.1.global_rep.0.pre_norm_ffn.1.weight", "stages.4.1.transformer.0.mlp.fc1.weight"),
    ("layer_5.1.global_rep.0.pre_norm_ffn.4.weight", "stages.4.1.transformer.0.mlp.fc2.weight"),
    ("layer_5.1.global_rep.3.bias", "stages.4.1.norm.bias"),
    ("layer_5.1.conv_proj.block.conv.weight", "stages.4.1.from_tokens.conv.weight"),
    ("layer_5.1.fusion.block.norm.weight", "stages.4.1.fusion.bn.weight"),
    ("conv_1x1_exp.block.conv.weight", "final_conv.conv.weight"),
    ("classifier.fc.weight", "fc.weight"),
    ("classifier.fc.bias", "fc.bias"),
]


@pytest.mark.parametrize("name", VARIANTS)
def test_official_tensors_land_in_the_module_that_plays_their_role(name):
    official = official_cvnets_state_dict(name)
    with torch.device("meta"):
        model = lessons.create_model(name)
    ours = mobilevit.checkpoint_filter_cvnets(official, model)
    for official_key, our_key in CVNETS_ROLE_PAIRS:
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)


def test_converted_official_weights_equal_timms_layout_and_outputs():
    """timm's mobilevit_* weights are a port of these checkpoints: loaded through our two filters (cvnets -> ours,
    and timm's names -> ours, inverted), the same tensors must run to the same logits in timm's ByobNet."""
    official = official_cvnets_state_dict("mobilevit_xxs")
    ours = lessons.create_model("mobilevit_xxs", checkpoint=official).eval()
    reference = timm.create_model("mobilevit_xxs", pretrained=False).eval()
    timm_keys = list(reference.state_dict())
    ours_by_timm_key = dict(zip(mobilevit.checkpoint_filter_timm(dict.fromkeys(timm_keys)), timm_keys))
    reference.load_state_dict({ours_by_timm_key[k]: v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_of_another_variant_or_family_or_with_a_key_missing_is_refused():
    with pytest.raises(ValueError, match=r"mobilevit_xxs \(apple/ml-cvnets config/.*xx_small\)"):
        lessons.create_model("mobilevit_xxs", checkpoint=official_cvnets_state_dict("mobilevit_xs"))
    with pytest.raises(ValueError, match="not keys of the official mobilevit_s"):
        # the LayerNorm closing a stage's global_rep sits at index L (its depth): one at another index is foreign
        lessons.create_model("mobilevit_s", checkpoint={**official_cvnets_state_dict("mobilevit_s"),
                                                        "layer_3.1.global_rep.5.weight": torch.zeros(144)})
    from helpers import official_state_dict

    with pytest.raises(ValueError, match="another family"):
        lessons.create_model("mobilevit_xxs", checkpoint=official_state_dict("hrvit_b1_cls"))
    official = official_cvnets_state_dict("mobilevit_xxs")
    del official["layer_4.1.global_rep.1.pre_norm_mha.1.out_proj.bias"]
    with pytest.raises(ValueError, match=r"missing, e.g. stages.3.1.transformer.1.attn.proj.bias"):
        lessons.create_model("mobilevit_xxs", checkpoint=official)


def test_a_truncated_checkpoint_file_says_to_download_it_again(tmp_path):
    from helpers import assert_truncated_file_is_refused

    assert_truncated_file_is_refused(tmp_path, "mobilevit_xxs", official_cvnets_state_dict("mobilevit_xxs"))
