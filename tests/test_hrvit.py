"""HRViT: cross-shaped attention with K = V, stripes and their padding, MixCFN, DES, fusion, layout, counts, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lessons
from lessons.hrvit import (
    HRVIT_CONFIGS,
    MMCV_RULES,
    PAD_LOGIT,
    CrossShapedAttention,
    DiversityEnhancedShortcut,
    EfficientPatchEmbed,
    FusionLayer,
    HRViTConfig,
    HRViTSegmentation,
    MixCFN,
    MixConv,
    OverlapPatchEmbed,
    TokenMlp,
    convert_official_checkpoint,
    fusion_path,
    kronecker_factor,
    make_config,
    stripe_attention,
    stripe_attention_macs,
)
from lessons.measure import MmcvFlopCounter, count_params, model_params
from helpers import meta_model, official_keys, official_state_dict


def blocks_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "HRViTBlock"]


def randomize(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Random weights and BN statistics, so no output is trivially zero (the official BN init is zero)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return module.eval()


def naive_cross_attention(q, k, v, size, window, head_dim):
    """Cross-shaped attention written per query pixel: its horizontal stripe is the ``window`` rows that contain it
    (fewer at the bottom edge), its vertical stripe the ``window`` columns; no padding anywhere."""
    _, _, chs = q.shape
    height, width = size
    half = chs // 2
    out = torch.zeros_like(q)
    for start, horizontal in ((0, True), (half, False)):
        heads = max(1, half // head_dim)
        d = half // heads
        for r in range(height):
            for c in range(width):
                if horizontal:
                    first = r // window * window
                    keys = [i * width + j for i in range(first, min(first + window, height)) for j in range(width)]
                else:
                    first = c // window * window
                    keys = [i * width + j for i in range(height) for j in range(first, min(first + window, width))]
                for h in range(heads):
                    ch = slice(start + h * d, start + (h + 1) * d)
                    weights = (torch.einsum("bd,bnd->bn", q[:, r * width + c, ch], k[:, keys, ch]) * d**-0.5)
                    out[:, r * width + c, ch] = torch.einsum("bn,bnd->bd", weights.softmax(-1), v[:, keys, ch])
    return out


def official_style_stripes(q, k, v, size, window, heads, horizontal):
    """The official procedure for one half: zero-pad rows (columns) to a multiple of ``window``, add -100 to every
    logit of the last stripe whose query *or* key is padding, softmax, crop (models/hrvit.py, HRViTAttention)."""
    batch, _, chs = q.shape
    height, width = size
    d = chs // heads
    maps = [t.reshape(batch, height, width, chs) for t in (q, k, v)]
    if not horizontal:
        maps = [t.transpose(1, 2) for t in maps]
    rows, cols = maps[0].shape[1:3]
    padded = math.ceil(rows / window) * window
    maps = [torch.cat([t, t.new_zeros(batch, padded - rows, cols, chs)], dim=1) for t in maps]
    qs, ks, vs = [t.reshape(batch, padded // window, window * cols, heads, d).transpose(2, 3) for t in maps]
    logits = qs @ ks.transpose(-1, -2) * d**-0.5
    real = (window - (padded - rows)) * cols  # real tokens in the last stripe
    mask = torch.full((window * cols, window * cols), PAD_LOGIT)
    mask[:real, :real] = 0.0
    logits[:, -1] = logits[:, -1] + mask
    out = (logits.softmax(-1) @ vs).transpose(2, 3).reshape(batch, padded, cols, chs)[:, :rows]
    if not horizontal:
        out = out.transpose(1, 2)
    return out.reshape(batch, height * width, chs)


# --------------------------------------------------------------------------------------------------------------------
# Cross-shaped attention
# --------------------------------------------------------------------------------------------------------------------


def bare_attention(shared_kv: bool, dim: int = 32, head_dim: int = 8, window: int = 2) -> CrossShapedAttention:
    attn = CrossShapedAttention(dim, head_dim, window, shared_kv=shared_kv, parallel_conv=False, extra_act_bn=False)
    return randomize(attn, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("size", [(6, 5), (4, 4)])
def test_key_is_the_value_projection(size):
    attn = bare_attention(shared_kv=True)
    x = torch.randn(2, size[0] * size[1], 32, generator=torch.Generator().manual_seed(1))
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = x @ weight[:32].T + bias[:32]
    v = x @ weight[-32:].T + bias[-32:]
    expected = attn.proj(naive_cross_attention(q, v, v, size, 2, 8))  # k = v
    assert attn.qkv.out_features == 2 * 32  # no key projection at all
    torch.testing.assert_close(attn(x, size), expected, rtol=1e-4, atol=1e-4)


def test_independent_key_does_not_follow_the_k_equals_v_formula():
    attn = bare_attention(shared_kv=False)
    size = (6, 5)
    x = torch.randn(2, 30, 32, generator=torch.Generator().manual_seed(1))
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = x @ weight[:32].T + bias[:32]
    k = x @ weight[32:64].T + bias[32:64]
    v = x @ weight[-32:].T + bias[-32:]
    assert not torch.allclose(attn(x, size), attn.proj(naive_cross_attention(q, v, v, size, 2, 8)), atol=1e-3)
    torch.testing.assert_close(attn(x, size), attn.proj(naive_cross_attention(q, k, v, size, 2, 8)),
                               rtol=1e-4, atol=1e-4)


def test_horizontal_stripe_only_sees_its_rows():
    g = torch.Generator().manual_seed(2)
    size, window = (8, 8), 2
    q, k, v = (torch.randn(1, 64, 16, generator=g) for _ in range(3))
    base = stripe_attention(q, k, v, size, window, head_dim=8, horizontal=True)
    k2, v2 = k.clone(), v.clone()
    pixel = 5 * 8 + 3  # row 5 is in stripe 2 (rows 4-5)
    k2[:, pixel] += 5.0
    v2[:, pixel] += 5.0
    out = stripe_attention(q, k2, v2, size, window, head_dim=8, horizontal=True)
    same_column_other_stripe = 0 * 8 + 3  # row 0, same column: a vertical stripe would see the pixel
    assert torch.equal(out[:, same_column_other_stripe], base[:, same_column_other_stripe])
    assert torch.equal(out[:, :32], base[:, :32])  # rows 0-3: stripes 0 and 1 are untouched
    assert not torch.allclose(out[:, 4 * 8 + 7], base[:, 4 * 8 + 7])  # row 4, far column: same stripe, changed


def test_vertical_stripe_only_sees_its_columns():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 36, 8, generator=g) for _ in range(3))
    base = stripe_attention(q, k, v, (6, 6), 3, head_dim=8, horizontal=False)
    k2, v2 = k.clone(), v.clone()
    k2[:, 2 * 6 + 4] -= 3.0  # column 4: second vertical stripe (columns 3-5)
    v2[:, 2 * 6 + 4] -= 3.0
    out = stripe_attention(q, k2, v2, (6, 6), 3, head_dim=8, horizontal=False).reshape(1, 6, 6, 8)
    base = base.reshape(1, 6, 6, 8)
    assert torch.equal(out[:, :, :3], base[:, :, :3])  # columns 0-2, including row 2: unchanged
    assert not torch.allclose(out[:, 0, 5], base[:, 0, 5])


@pytest.mark.parametrize("horizontal", [True, False])
@pytest.mark.parametrize("size,window", [((7, 5), 3), ((5, 9), 4), ((3, 3), 7)])
def test_padding_matches_the_official_pad_and_mask(size, window, horizontal):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, size[0] * size[1], 16, generator=g) for _ in range(3))
    ours = stripe_attention(q, k, v, size, window, head_dim=8, horizontal=horizontal)
    official = official_style_stripes(q, k, v, size, window, heads=2, horizontal=horizontal)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-6)


def test_padding_equals_a_narrower_last_stripe():
    g = torch.Generator().manual_seed(5)
    size = (7, 5)  # window 3: stripes of 3, 3 and 1 rows / 3 and 2 columns
    q, k, v = (torch.randn(1, 35, 16, generator=g) for _ in range(3))
    ours = torch.cat([stripe_attention(q[..., :8], k[..., :8], v[..., :8], size, 3, 8, True),
                      stripe_attention(q[..., 8:], k[..., 8:], v[..., 8:], size, 3, 8, False)], dim=-1)
    torch.testing.assert_close(ours, naive_cross_attention(q, k, v, size, 3, 8), rtol=1e-5, atol=1e-6)


def test_full_attention_adds_the_conv_path_then_hardswish_linear_batchnorm():
    attn = randomize(CrossShapedAttention(16, 8, 2), torch.Generator().manual_seed(6))
    size = (4, 6)
    x = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(7))
    q, k, v = attn.project(x)
    assert k is v
    core = naive_cross_attention(q, v, v, size, 2, 8)
    conv = attn.parallel_conv(v.transpose(1, 2).reshape(2, 16, *size)).flatten(2).transpose(1, 2)
    y = attn.proj(nn.functional.hardswish(core + conv))
    expected = attn.norm(y.reshape(-1, 16)).reshape(2, 24, 16)
    torch.testing.assert_close(attn(x, size), expected, rtol=1e-4, atol=1e-4)


def test_attention_branch_outputs_zero_at_initialisation():
    attn = CrossShapedAttention(32, 16, 2).train()
    assert torch.equal(attn(torch.randn(2, 16, 32), (4, 4)), torch.zeros(2, 16, 32))


def test_heads_follow_the_official_rule_for_narrow_halves():
    attn = CrossShapedAttention(32, 32, 1)  # HRViT-b1 branch 1: halves of 16 < head_dim 32 -> one head of 16
    x = torch.randn(1, 12, 32)
    q, k, v = attn.project(x)
    torch.testing.assert_close(stripe_attention(q[..., :16], k[..., :16], v[..., :16], (3, 4), 1, 32),
                               naive_cross_attention(q, k, v, (3, 4), 1, 32)[..., :16], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# MixCFN, DES, patch embeddings, fusion
# --------------------------------------------------------------------------------------------------------------------


def test_mixconv_uses_3x3_on_the_first_half_and_5x5_on_the_second():
    mix = MixConv(8)
    assert mix.conv3.weight.shape == (4, 1, 3, 3) and mix.conv5.weight.shape == (4, 1, 5, 5)
    with torch.no_grad():
        for conv in (mix.conv3, mix.conv5):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
    x = torch.zeros(1, 8, 9, 9)
    x[:, :, 4, 4] = 1.0  # an impulse in every channel
    y = mix(x)
    assert (y[0, :4] != 0).sum(dim=(1, 2)).tolist() == [9] * 4  # 3x3 footprint
    assert (y[0, 4:] != 0).sum(dim=(1, 2)).tolist() == [25] * 4  # 5x5 footprint
    x2 = torch.zeros(1, 8, 9, 9)
    x2[:, 0, 4, 4] = 1.0  # first-half channel 0 only reaches output channel 0
    assert torch.count_nonzero(mix(x2)[0, 1:]) == 0


def test_mixcfn_is_linear_mixconv_gelu_linear():
    cfn = randomize(MixCFN(8, 16), torch.Generator().manual_seed(8))
    x = torch.randn(2, 12, 8)
    h = cfn.fc1(x).transpose(1, 2).reshape(2, 16, 3, 4)
    expected = cfn.fc2(nn.functional.gelu(cfn.conv(h)).flatten(2).transpose(1, 2))
    torch.testing.assert_close(cfn(x, (3, 4)), expected)


@pytest.mark.parametrize("dim,p", [(32, 8), (48, 8), (64, 8), (96, 8), (128, 16), (240, 16), (256, 16), (384, 16),
                                   (512, 32)])
def test_des_parameters_are_p_squared_plus_c_over_p_squared(dim, p):
    des = DiversityEnhancedShortcut(dim)
    k = dim // p
    assert kronecker_factor(dim) == p
    assert count_params(des) == p * p + p + k * k + k  # two small linears with biases
    assert count_params(des) < dim * dim // 4


def test_des_without_its_gelu_is_a_kronecker_product():
    des = DiversityEnhancedShortcut(64)
    des.act = nn.Identity()
    x = torch.randn(5, 64)
    kron = torch.kron(des.proj_left.weight, des.proj_right.weight)  # (C/p x C/p) kron (p x p) = C x C
    torch.testing.assert_close(des(x) - des(torch.zeros(1, 64)), x @ kron.T, rtol=1e-5, atol=1e-5)


def test_patch_embeddings_keep_resolution_and_differ_in_cost():
    x = torch.randn(1, 16, 6, 7)
    for embed in (EfficientPatchEmbed(16, 32), OverlapPatchEmbed(16, 32)):
        tokens, size = embed(x)
        assert tokens.shape == (1, 42, 32) and size == (6, 7)
    assert count_params(EfficientPatchEmbed(16, 32)) == (16 * 32 + 32) + (9 * 32 + 32) + 2 * 32
    assert count_params(OverlapPatchEmbed(16, 32)) == (9 * 16 * 32 + 32) + 2 * 32


def test_fusion_path_shapes_for_every_branch_pair():
    widths = (8, 16, 32, 64)
    maps = [torch.randn(2, c, 32 // 2**i, 24 // 2**i) for i, c in enumerate(widths)]
    for dst, out_chs in enumerate(widths):
        for src, in_chs in enumerate(widths):
            y = fusion_path(in_chs, out_chs, src, dst).eval()(maps[src])
            assert y.shape == maps[dst].shape, (src, dst)


def test_fusion_layer_is_dense_and_creates_the_new_branch():
    fusion = FusionLayer((8, 16, 32), (8, 16, 32, 64)).eval()
    xs = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((8, 16, 32))]
    outs = fusion(xs)
    assert [tuple(o.shape) for o in outs] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
    assert [len(p) for p in fusion.paths] == [3, 3, 3, 3]  # every output reads every input
    sparse = FusionLayer((8, 16, 32), (8, 16, 32, 64), dense=False)
    assert [sorted(map(int, p)) for p in sparse.paths] == [[0, 1], [0, 1, 2], [1, 2], [2]]


def test_fusion_layer_sums_paths_then_gelu():
    fusion = randomize(FusionLayer((4, 8), (4, 8)), torch.Generator().manual_seed(9))
    xs = [torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)]
    expected = nn.functional.gelu(xs[0] + fusion.paths[0]["1"](xs[1]))
    torch.testing.assert_close(fusion(xs)[0], expected)


# --------------------------------------------------------------------------------------------------------------------
# Layout and counts of b1 / b2 / b3
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["b1", "b2", "b3"])
def test_stage_and_branch_layout(variant):
    config = HRVIT_CONFIGS[variant]
    backbone = meta_model(f"hrvit_{variant}_cls").backbone
    assert len(backbone.stages) == 6
    assert [len(s.branches) for s in backbone.stages] == [1, 2, 3, 3, 4, 4]
    for stage, depths in zip(backbone.stages, config.depths):
        assert tuple(len(b) for b in stage.branches) == depths
        for i, branch in enumerate(stage.branches):
            for block in branch:
                assert block.attn.dim == config.channels[i]
                assert block.attn.window == (1, 2, 7, 7)[i]
    new_branches = [len(f.out_channels) - len(f.in_channels) for f in backbone.fusions]
    assert new_branches == [0, 1, 1, 0, 1, 0]  # branches 2, 3, 4 appear at modules 2, 3 and 5


def test_b1_forward_shapes():
    model = lessons.create_model("hrvit_b1_cls").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    assert [tuple(f.shape) for f in feats] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)]
    assert logits.shape == (1, 1000)
    with torch.no_grad():  # maps 24, 12, 6, 3: the stripes of 7 are padded (the official code pads too)
        feats = model.forward_features(torch.randn(1, 3, 96, 96))
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3] and all(torch.isfinite(f).all() for f in feats)


def test_segmentation_model_returns_full_size_logits_and_uses_the_backbone_widths():
    model = lessons.create_model("hrvit_b1", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7, 64, 64)
    b2 = meta_model("hrvit_b2")
    assert [conv.in_channels for conv in b2.decode_head.linear] == [48, 96, 240, 384]  # not the config's 192
    assert meta_model("hrvit_b3").decode_head.classify.in_channels == 768


def test_segmentation_variants_use_the_configs_stochastic_depth():
    rates = [b.drop_path.drop_prob for b in blocks_of(meta_model("hrvit_b2"))]
    assert min(rates) == 0.0 and max(rates) == pytest.approx(0.2)  # segformer_hrvit_b2_...: drop_path_rate=0.2
    assert max(b.drop_path.drop_prob for b in blocks_of(meta_model("hrvit_b2_cls"))) == 0.0


# Counted by running the official models/hrvit.py (facebookresearch/HRViT 6a63b5b) with torch 2.x.
OFFICIAL_PARAMS = {"b1": 19_685_152, "b2": 32_486_408, "b3": 37_870_304}


@pytest.mark.parametrize("variant", ["b1", "b2", "b3"])
def test_parameter_counts_equal_the_official_models(variant):
    assert count_params(meta_model(f"hrvit_{variant}_cls")) == OFFICIAL_PARAMS[variant]


def test_ablation_switches_change_exactly_what_they_should():
    base = meta_model("hrvit_b1_cls")
    blocks = blocks_of(base)
    dims = [b.attn.dim for b in blocks]
    base_params = count_params(base)

    indep = meta_model("hrvit_b1_cls", shared_kv=False)
    assert all(b.attn.qkv.out_features == 3 * b.attn.dim for b in blocks_of(indep))
    assert count_params(indep) - base_params == sum(c * c + c for c in dims)  # one C x C key projection per block

    no_conv = meta_model("hrvit_b1_cls", parallel_conv=False)
    assert count_params(base) - count_params(no_conv) == sum(9 * c + c for c in dims)

    no_bn = meta_model("hrvit_b1_cls", extra_act_bn=False)
    assert all(b.attn.norm is None and isinstance(b.attn.act, nn.Identity) for b in blocks_of(no_bn))
    assert base_params - count_params(no_bn) == sum(2 * c for c in dims)

    no_des = meta_model("hrvit_b1_cls", des=False)
    assert base_params - count_params(no_des) == sum(count_params(b.des) for b in blocks)

    mlp = meta_model("hrvit_b1_cls", mix_cfn=False)
    assert all(isinstance(b.ffn, TokenMlp) for b in blocks_of(mlp))
    assert base_params - count_params(mlp) == sum(count_params(b.ffn.conv) for b in blocks)

    overlap = meta_model("hrvit_b1_cls", overlap_patch_embed=True)
    embeds = [e for s in overlap.backbone.stages for e in s.patch_embed]
    assert all(isinstance(e, OverlapPatchEmbed) for e in embeds)
    extra = sum(8 * e.proj.in_channels * e.proj.out_channels - 10 * e.proj.out_channels for e in embeds)
    assert count_params(overlap) - base_params == extra  # 9*Cin*C + C instead of (Cin*C + C) + (9C + C)

    sparse = meta_model("hrvit_b1_cls", dense_fusion=False)
    assert all(abs(i - int(j)) <= 1 for f in sparse.backbone.fusions for i, p in enumerate(f.paths) for j in p)
    assert count_params(sparse) < base_params


def test_without_the_high_res_branch_exactly_the_quarter_branch_goes_and_logits_come_at_one_eighth():
    import re

    base, low = meta_model("hrvit_b1"), meta_model("hrvit_b1", high_res_branch=False)
    assert [f.stride for f in base.feature_info] == [4, 8, 16, 32] and base.logits_stride == 4
    assert [f.stride for f in low.feature_info] == [8, 16, 32] and low.logits_stride == 8
    assert len(low.backbone.layers) == len(base.backbone.layers) - 1  # module 1 held only the 1/4 branch
    assert [conv.in_channels for conv in low.decode_head.linear] == [64, 128, 256]
    # the blocks: those of the 32-channel (1/4) branch go, every other block stays
    assert sorted(b.attn.dim for b in blocks_of(low)) == sorted(b.attn.dim for b in blocks_of(base) if b.attn.dim != 32)
    # the parameters: exactly the 1/4 branch's (its blocks, patch embeddings, norms, fusion paths to and from it,
    # its head projection and its share of the head's fusion conv), less the stem's new path to 1/8
    quarter = re.compile(r"(stage\.(branches|patch_embed|norms)\.0\.|fusion\.paths\.(0\.|\d+\.0\.)|decode_head\.linear\.0\.)")
    gone = sum(p.numel() for name, p in base.named_parameters() if quarter.search(name))
    head = base.decode_head.fuse.conv.in_channels - low.decode_head.fuse.conv.in_channels  # 256 inputs fewer
    stem_path = count_params(low.backbone.layers[0].fusion)
    assert isinstance(low.backbone.layers[0].fusion.path[0], nn.Conv2d)
    assert low.backbone.layers[0].fusion.path[0].stride == (2, 2)  # the stem's 1/4 map goes down to 1/8
    assert count_params(base) - count_params(low) == gone + head * 256 - stem_path
    micro = HRViTConfig("micro", (16, 32, 48, 64), ((1,), (1, 1), (1, 1, 1), (1, 1, 1, 1)), head_dim=8,
                        mlp_ratios=(2, 2, 2, 2), windows=(1, 2, 4, 2), stem_channels=16, high_res_branch=False)
    model = HRViTSegmentation(micro, num_classes=5, head_channels=32).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 5, 64, 64)
        assert model.forward_head(model.forward_features(x)).shape == (1, 5, 8, 8)


def test_the_high_res_switch_leaves_the_official_segmenters_as_they_were():
    # counted before the switch existed (the README's 8.2M, 20.8M, 28.7M); the classifiers' exact counts are above
    assert [model_params(f"hrvit_{v}") for v in ("b1", "b2", "b3")] == [8_183_118, 20_809_782, 28_724_494]
    assert all(c.high_res_branch for c in HRVIT_CONFIGS.values())


def test_attention_counted_by_shape_equals_the_exact_matmul_count():
    with torch.device("meta"):
        model = lessons.create_model("hrvit_b1_cls").eval()
    size = (1, 3, 96, 96)  # maps 24, 12, 6, 3: windows of 7 need padding
    counter = FlopCounterMode(display=False)
    with MmcvFlopCounter(model, MMCV_RULES) as hooks, counter, torch.no_grad():
        model(torch.empty(size, device="meta"))
    bmm = counter.get_flop_counts()["Global"][torch.ops.aten.bmm] // 2
    assert hooks.total(extra_counts={"attention_product": 2}) - hooks.total() == bmm  # both products, counted from shapes
    assert hooks.total() == hooks.total(extra_counts={"attention_product": 0}) > 0
    # per half: two stripes (7 rows, the second padded) of 7 x 8 = 56 tokens, 56^2 x 32 multiply-adds each
    assert stripe_attention_macs(64, (8, 8), 7) == 2 * 2 * 56**2 * 32


def test_registered_names():
    assert lessons.list_models("hrvit_*") == [
        "hrvit_b1", "hrvit_b1_cls", "hrvit_b2", "hrvit_b2_cls", "hrvit_b3", "hrvit_b3_cls"]
    assert lessons.list_models(family="hrvit", task="segmentation") == ["hrvit_b1", "hrvit_b2", "hrvit_b3"]


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = lessons.create_model("hrvit_b1_cls").eval()
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 80 + 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="do not form"):
        stripe_attention(torch.randn(1, 10, 8), torch.randn(1, 10, 8), torch.randn(1, 10, 8), (3, 4), 2, 8)


@pytest.mark.parametrize("overrides,message", [
    (dict(windows=(1, 2, 7)), "one window and one mlp_ratio per branch"),
    (dict(mlp_ratios=(4, 4)), "one window and one mlp_ratio per branch"),
    (dict(channels=(32, 64, 128, 256, 512), windows=(1, 2, 7, 7, 7), mlp_ratios=(4,) * 5), "last module has 4"),
    (dict(depths=((1,), (1, 1), (1, 1, 1, 1))), "keeps the branches or adds one"),
    (dict(depths=((1, 1),)), "first module"),
    (dict(channels=(32, 96, 128, 256)), "cannot be split into heads"),
    (dict(channels=(33, 64, 128, 256)), "must be even"),
    (dict(channels=(32, 64, 128, 256), head_dim=0), "head_dim"),
    (dict(channels=(36, 64, 128, 256), head_dim=2), "not divisible by its Kronecker factor"),
    (dict(windows=(1, 0, 7, 7)), "positive ints"),
    (dict(high_res_branch="no"), "high_res_branch must be True or False"),
    (dict(high_res_branch=0), "high_res_branch must be True or False"),
    (dict(channels=(32,), depths=((1,),), windows=(1,), mlp_ratios=(4,), high_res_branch=False),
     "needs a coarser branch"),
])
def test_bad_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("b1", **overrides)


def test_the_classifier_refuses_the_no_high_res_ablation():
    with pytest.raises(ValueError, match="segmenter"):
        meta_model("hrvit_b1_cls", high_res_branch=False)


def test_unknown_names_and_fields():
    with pytest.raises(TypeError, match="shared_key"):
        lessons.create_model("hrvit_b1_cls", shared_key=False)
    with pytest.raises(TypeError, match="unknown HRViTConfig field"):
        make_config("b1", shared_key=False)
    with pytest.raises(ValueError, match="unknown HRViT variant"):
        make_config("b4")
    with pytest.raises(ValueError, match="in_chans"):
        lessons.create_model("hrvit_b1_cls", in_chans=0)
    with pytest.raises(ValueError, match="even"):
        MixConv(7)
    with pytest.raises(ValueError, match="keeps the branches or adds one"):
        FusionLayer((8, 16), (8, 16, 32, 64))
    assert isinstance(HRViTConfig("x", (8, 16), ((1,), (1, 1)), 4, (2, 2), windows=(1, 2)), HRViTConfig)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (facebookresearch/HRViT): key lists in tests/data/official_keys
# --------------------------------------------------------------------------------------------------------------------

# official key list -> the registered model it loads into
OFFICIAL_VARIANTS = {
    **{f"hrvit_{v}_cls": f"hrvit_{v}_cls" for v in ("b1", "b2", "b3")},
    **{f"hrvit_{v}_seg_segformerhead_ade20k": f"hrvit_{v}" for v in ("b1", "b2", "b3")},
}

# Official trunk key -> ours (without the "backbone." both carry in a segmentation checkpoint), chosen where tensors
# share a shape with a sibling of another role. features.{2k} is fusion k, features.{2k+1} stage k.
TRUNK_PAIRS = [
    ("stem.conv1.weight", "stem.0.conv.weight"),
    ("stem.conv2.bias", "stem.1.conv.bias"),
    ("stem.bn1.weight", "stem.0.bn.weight"),  # BN scale, shift and statistics: four tensors of one shape
    ("stem.bn1.bias", "stem.0.bn.bias"),
    ("stem.bn1.running_mean", "stem.0.bn.running_mean"),
    ("stem.bn1.running_var", "stem.0.bn.running_var"),
    ("stem.bn2.running_var", "stem.1.bn.running_var"),
    # attention: q and v in one projection (q first, v = k second, in both codes); output projection; its BN
    ("features.1.branches.0.0.attn.to_qkv.weight", "layers.0.stage.branches.0.0.attn.qkv.weight"),
    ("features.1.branches.0.0.attn.to_qkv.bias", "layers.0.stage.branches.0.0.attn.qkv.bias"),
    ("features.5.branches.2.3.attn.to_out.0.weight", "layers.2.stage.branches.2.3.attn.proj.weight"),
    ("features.5.branches.2.3.attn.attn_bn.weight", "layers.2.stage.branches.2.3.attn.norm.weight"),
    ("features.5.branches.2.3.attn.attn_bn.running_var", "layers.2.stage.branches.2.3.attn.norm.running_var"),
    ("features.5.branches.2.3.attn_norm.weight", "layers.2.stage.branches.2.3.attn_norm.weight"),
    ("features.5.branches.2.3.ffn_norm.weight", "layers.2.stage.branches.2.3.ffn_norm.weight"),
    # depthwise 3x3 kernels of one shape: the attention's conv path on V and the patch embedding's second conv
    ("features.3.branches.1.0.attn.parallel_conv.1.weight",
     "layers.1.stage.branches.1.0.attn.parallel_conv.1.weight"),
    ("features.3.patch_embed.1.proj.1.weight", "layers.1.stage.patch_embed.1.proj.1.weight"),
    ("features.3.patch_embed.1.proj.0.weight", "layers.1.stage.patch_embed.1.proj.0.weight"),
    # MixCFN: the 3x3 half and the 5x5 half (biases of one shape), the two linears
    ("features.7.branches.2.5.ffn.conv.conv_3.bias", "layers.3.stage.branches.2.5.ffn.conv.conv3.bias"),
    ("features.7.branches.2.5.ffn.conv.conv_5.bias", "layers.3.stage.branches.2.5.ffn.conv.conv5.bias"),
    ("features.7.branches.2.5.ffn.conv.conv_5.weight", "layers.3.stage.branches.2.5.ffn.conv.conv5.weight"),
    ("features.7.branches.2.5.ffn.fc1.weight", "layers.3.stage.branches.2.5.ffn.fc1.weight"),
    ("features.7.branches.2.5.ffn.fc2.weight", "layers.3.stage.branches.2.5.ffn.fc2.weight"),
    # DES: the p x p and the C/p x C/p factors (both 8 x 8 for b1's 64-channel branch)
    ("features.3.branches.1.0.des.proj_right.weight", "layers.1.stage.branches.1.0.des.proj_right.weight"),
    ("features.3.branches.1.0.des.proj_left.weight", "layers.1.stage.branches.1.0.des.proj_left.weight"),
    # the LayerNorm ending each branch of a stage
    ("features.11.norm.0.weight", "layers.5.stage.norms.0.weight"),
    ("features.11.norm.3.bias", "layers.5.stage.norms.3.bias"),
    ("features.11.branches.3.1.attn.to_qkv.weight", "layers.5.stage.branches.3.1.attn.qkv.weight"),
    # fusion: the path j -> i is blocks.{i}.{j}; down = DWConv, BN, Conv1x1, BN; up = Conv1x1, BN, Upsample
    ("features.2.blocks.1.0.0.weight", "layers.1.fusion.paths.1.0.0.weight"),  # the new branch 1, made from 0
    ("features.10.blocks.1.2.0.weight", "layers.5.fusion.paths.1.2.0.weight"),  # up 2 -> 1
    ("features.10.blocks.2.1.2.weight", "layers.5.fusion.paths.2.1.2.weight"),  # down 1 -> 2
    ("features.10.blocks.1.0.1.running_mean", "layers.5.fusion.paths.1.0.1.running_mean"),  # down 0 -> 1, first BN
    ("features.10.blocks.1.0.3.running_mean", "layers.5.fusion.paths.1.0.3.running_mean"),  # ... second BN
    ("features.10.blocks.1.2.1.running_mean", "layers.5.fusion.paths.1.2.1.running_mean"),  # up 2 -> 1, its BN
    ("features.10.blocks.0.3.0.bias", "layers.5.fusion.paths.0.3.0.bias"),  # up 3 -> 0
    ("features.10.blocks.3.0.0.weight", "layers.5.fusion.paths.3.0.0.weight"),  # down 0 -> 3: DWConv 9x9 stride 8
]
CLS_HEAD_PAIRS = [
    ("head.incre_modules.0.0.conv1.weight", "head.widen.0.conv1.conv.weight"),
    ("head.incre_modules.0.0.conv3.weight", "head.widen.0.conv3.conv.weight"),
    ("head.incre_modules.2.0.bn2.running_var", "head.widen.2.conv2.bn.running_var"),
    ("head.incre_modules.1.0.bn3.bias", "head.widen.1.conv3.bn.bias"),  # same shape as the shortcut's BN
    ("head.incre_modules.1.0.downsample.1.bias", "head.widen.1.shortcut.bn.bias"),
    ("head.incre_modules.3.0.downsample.0.weight", "head.widen.3.shortcut.conv.weight"),
    ("head.downsamp_modules.2.0.weight", "head.downsample.2.conv.weight"),
    ("head.downsamp_modules.0.1.running_mean", "head.downsample.0.bn.running_mean"),
    ("head.final_layer.0.bias", "head.final.conv.bias"),  # conv bias and BN shift: both [2048]
    ("head.final_layer.1.bias", "head.final.bn.bias"),
    ("head.classifier.weight", "head.fc.weight"),
]
SEG_HEAD_PAIRS = [
    ("decode_head.convs.0.conv.weight", "decode_head.linear.0.weight"),
    ("decode_head.convs.1.conv.bias", "decode_head.linear.1.bias"),  # every branch's bias is [channels]
    ("decode_head.convs.3.conv.bias", "decode_head.linear.3.bias"),
    ("decode_head.fusion_conv.conv.weight", "decode_head.fuse.conv.weight"),
    ("decode_head.fusion_conv.bn.weight", "decode_head.fuse.bn.weight"),
    ("decode_head.fusion_conv.bn.running_var", "decode_head.fuse.bn.running_var"),
    ("decode_head.conv_seg.bias", "decode_head.classify.bias"),
]


def role_pairs(official: str) -> list[tuple[str, str]]:
    if official.endswith("_cls"):
        return [(o, f"backbone.{ours}") for o, ours in TRUNK_PAIRS] + CLS_HEAD_PAIRS
    return [(f"backbone.{o}", f"backbone.{ours}") for o, ours in TRUNK_PAIRS] + SEG_HEAD_PAIRS


def empty_model(name: str) -> nn.Module:
    """Registered model ``name`` with uninitialised CPU storage (building is instant; loading fills it)."""
    return meta_model(name).to_empty(device="cpu")


@pytest.mark.parametrize("official,name", OFFICIAL_VARIANTS.items())
def test_official_checkpoint_loads_strictly_and_every_tensor_lands_by_role(official, name):
    checkpoint = official_state_dict(official)
    model = lessons.load_official(empty_model(name), checkpoint)
    ours = model.state_dict()
    assert len(ours) == len(checkpoint) == len(official_keys(official)["keys"])
    for official_key, our_key in role_pairs(official):
        assert torch.equal(ours[our_key], checkpoint[official_key]), (official_key, our_key)
    # no transform anywhere: every official tensor arrives unchanged, each in exactly one place
    converted = convert_official_checkpoint(checkpoint, model)
    assert sorted(id(t) for t in converted.values()) == sorted(id(t) for t in checkpoint.values())


def test_shared_key_value_projection_keeps_q_first_and_v_second():
    checkpoint = official_state_dict("hrvit_b1_cls")
    model = lessons.load_official(empty_model("hrvit_b1_cls"), checkpoint)
    attn = model.backbone.layers[0].stage.branches[0][0].attn
    weight = checkpoint["features.1.branches.0.0.attn.to_qkv.weight"]  # official: q, v = to_qkv(x).chunk(2)
    bias = checkpoint["features.1.branches.0.0.attn.to_qkv.bias"]
    x = torch.randn(1, 4, 32)
    q, k, v = attn.project(x)
    torch.testing.assert_close(q, x @ weight[:32].T + bias[:32])
    torch.testing.assert_close(v, x @ weight[32:].T + bias[32:])
    assert k is v


@pytest.mark.parametrize("name", ["hrvit_b1_cls", "hrvit_b1"])
def test_converted_model_runs_to_finite_outputs(name):
    official = next(o for o, n in OFFICIAL_VARIANTS.items() if n == name)
    checkpoint = official_state_dict(official, seed=1)
    for key, tensor in checkpoint.items():
        if key.endswith("running_var"):
            checkpoint[key] = tensor.abs() + 0.5  # a variance is positive
        elif tensor.is_floating_point():
            checkpoint[key] = tensor * 0.1
    model = lessons.create_model(name, checkpoint=checkpoint).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == ((1, 1000) if name.endswith("_cls") else (1, 150, 64, 64))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("official,name", [
    ("hrvit_b1_cls", "hrvit_b2_cls"), ("hrvit_b3_cls", "hrvit_b1_cls"),
    ("hrvit_b1_seg_segformerhead_ade20k", "hrvit_b3"), ("hrvit_b3_seg_segformerhead_ade20k", "hrvit_b2"),
])
def test_checkpoint_of_another_variant_is_refused_naming_the_model(official, name):
    with pytest.raises(ValueError, match=rf"does not fit {name} \(facebookresearch/HRViT"):
        lessons.load_official(meta_model(name), official_state_dict(official))


def test_checkpoint_of_the_other_task_is_refused_with_the_model_to_use():
    with pytest.raises(ValueError, match="ImageNet checkpoint.*hrvit_b\\*_cls"):
        lessons.load_official(meta_model("hrvit_b1"), official_state_dict("hrvit_b1_cls"))
    with pytest.raises(ValueError, match="segmentation checkpoint.*segmenter"):
        lessons.load_official(meta_model("hrvit_b1_cls"), official_state_dict("hrvit_b1_seg_segformerhead_ade20k"))


@pytest.mark.parametrize("name", ["hrvit_b1", "hrvit_b1_cls"])
def test_checkpoint_of_another_family_is_refused(name):
    with pytest.raises(ValueError, match="not keys of the official HRViT"):
        lessons.load_official(meta_model(name), official_state_dict("topformer_tiny"))


def test_checkpoint_with_a_missing_tensor_is_refused():
    checkpoint = official_state_dict("hrvit_b1_seg_segformerhead_ade20k")
    del checkpoint["backbone.features.9.branches.2.4.attn.to_qkv.bias"]
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing.*layers\.4\.stage\.branches\.2\.4\.attn\.qkv\.bias"):
        lessons.load_official(meta_model("hrvit_b1"), checkpoint)


def test_checkpoint_saved_from_a_distributed_wrapper_loads():
    checkpoint = {f"module.{k}": v for k, v in official_state_dict("hrvit_b1_cls").items()}
    model = lessons.load_official(empty_model("hrvit_b1_cls"), {"state_dict": checkpoint})
    assert torch.equal(model.head.fc.bias, checkpoint["module.head.classifier.bias"])


def test_truncated_checkpoint_file_asks_for_a_new_download(tmp_path):
    from helpers import assert_truncated_file_is_refused

    official = {"meta": {}, "state_dict": official_state_dict("hrvit_b1_seg_segformerhead_ade20k")}
    assert_truncated_file_is_refused(tmp_path, "hrvit_b1", official)
