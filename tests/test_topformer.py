"""TopFormer: token pyramid shapes, pooling, the extractor's attention, the injection module, heads, claims, errors,
the authors' checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lessons
from lessons.claims.topformer import ABLATIONS, MMCV_RULES
from lessons.layers import ConvBN, DepthwiseConvMlp, hard_sigmoid, resize_to
from lessons.measure import count_mmcv_flops, count_params, model_count
from lessons.topformer import (
    TOPFORMER_CONFIGS,
    BNAttention,
    PyramidPoolAgg,
    SegmentationHead,
    SemanticInjection,
    TopFormerConfig,
    pooled_grid_size,
)
from helpers import meta_model, official_keys, official_state_dict, randomize_bn


def conv_bn_reference(block: ConvBN, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode conv + BN written with functional calls, to check modules against."""
    y = F.conv2d(x, block.conv.weight, None, block.conv.stride, block.conv.padding, groups=block.conv.groups)
    bn = block.bn
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


# --------------------------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------------------------


def test_token_pyramid_at_512_has_four_scales_with_official_channels():
    model = meta_model("topformer_tiny")
    tokens = model.token_pyramid(torch.empty(1, 3, 512, 512, device="meta"))
    assert [tuple(t.shape) for t in tokens] == [(1, 16, 128, 128), (1, 32, 64, 64), (1, 64, 32, 32), (1, 96, 16, 16)]


def test_tokens_of_an_odd_size_have_ceiling_sides():
    model = meta_model("topformer_base")
    tokens = model.token_pyramid(torch.empty(1, 3, 500, 375, device="meta"))
    expected = [(math.ceil(500 / s), math.ceil(375 / s)) for s in (4, 8, 16, 32)]
    assert [tuple(t.shape[-2:]) for t in tokens] == expected


def test_full_model_runs_on_an_odd_size_with_logits_at_one_eighth():
    lessons.seed_everything(0)
    model = lessons.create_model("topformer_tiny", num_classes=5).eval()
    x = torch.randn(2, 3, 97, 61)
    with torch.no_grad():
        low = model.forward_logits(x)
        full = model(x)
    assert model.logits_stride == 8
    assert low.shape == (2, 5, math.ceil(97 / 8), math.ceil(61 / 8))
    assert full.shape == (2, 5, 97, 61)  # forward: the 1/8 logits resized to the input
    assert torch.equal(full, resize_to(low, (97, 61)))
    assert torch.isfinite(full).all()


def test_pooled_grid_is_one_sixty_fourth_of_the_input():
    model = meta_model("topformer_tiny")
    tokens = model.token_pyramid(torch.empty(1, 3, 512, 512, device="meta"))
    assert tuple(model.pool(tokens).shape) == (1, 16 + 32 + 64 + 96, 8, 8)
    # (H32 - 1) // 2 + 1: a ceiling division, so an odd 1/32 side keeps its last row
    assert pooled_grid_size(16, 15, 2) == (8, 8)
    assert [pooled_grid_size(16, 16, s)[0] for s in (1, 2, 4)] == [16, 8, 4]  # output strides 32, 64, 128


def test_pooling_averages_each_window_of_the_token_map():
    x = torch.randn(2, 3, 16, 16)
    pooled = PyramidPoolAgg(2)([x, torch.randn(2, 5, 8, 8)])  # the last map (8x8) sets the 4x4 grid
    assert torch.allclose(pooled[:, :3], F.avg_pool2d(x, 4), atol=1e-6)


def test_extractor_output_is_split_back_per_scale():
    model = meta_model("topformer_small")
    semantics = model.extractor(model.pool(model.token_pyramid(torch.empty(1, 3, 512, 512, device="meta"))))
    assert [tuple(s.shape) for s in semantics] == [(1, c, 8, 8) for c in (24, 48, 96, 128)]


def test_injected_features_and_logits_at_512():
    model = meta_model("topformer_base")
    features = model.forward_features(torch.empty(1, 3, 512, 512, device="meta"))
    assert [tuple(f.shape) for f in features] == [(1, 256, 64, 64), (1, 256, 32, 32), (1, 256, 16, 16)]
    assert tuple(model.forward_head(features).shape) == (1, 150, 64, 64)
    assert [(f.channels, f.stride) for f in model.feature_info] == [(256, 8), (256, 16), (256, 32)]


# --------------------------------------------------------------------------------------------------------------------
# The pieces compute what the paper and the official code say
# --------------------------------------------------------------------------------------------------------------------


def test_attention_applies_no_inverse_sqrt_scale():
    g = torch.Generator().manual_seed(0)
    attn = BNAttention(dim=12, key_dim=16, num_heads=2, attn_ratio=2.0)
    randomize_bn(attn, g)
    attn.proj[1].bn.weight.data.fill_(1.0)  # undo the zero-init so the output is not trivially 0
    attn.eval()
    x = torch.randn(1, 12, 3, 4, generator=g) * 3  # large inputs: a 1/4 scale would change the softmax a lot
    with torch.no_grad():
        q = conv_bn_reference(attn.to_q, x).reshape(1, 2, 16, 12).transpose(-2, -1)
        k = conv_bn_reference(attn.to_k, x).reshape(1, 2, 16, 12).transpose(-2, -1)
        v = conv_bn_reference(attn.to_v, x).reshape(1, 2, 32, 12).transpose(-2, -1)

        def reference(scale: float) -> torch.Tensor:
            out = (q @ k.transpose(-2, -1) * scale).softmax(-1) @ v
            return attn.proj(out.transpose(-2, -1).reshape(1, 64, 3, 4))

        ours = attn(x)
    assert torch.allclose(ours, reference(1.0), atol=1e-5)
    assert not torch.allclose(ours, reference(16**-0.5), atol=1e-3)


def test_injection_is_local_times_hard_sigmoid_gate_plus_global_semantics():
    g = torch.Generator().manual_seed(1)
    sim = SemanticInjection(in_chs=4, out_chs=3)
    for conv in (sim.local_embed, sim.gate_embed, sim.global_embed):
        conv.conv.weight.data.copy_(torch.randn(conv.conv.weight.shape, generator=g))
    randomize_bn(sim, g)
    sim.eval()
    x_local, x_global = torch.randn(2, 4, 8, 6, generator=g), torch.randn(2, 4, 2, 3, generator=g)
    with torch.no_grad():
        local = conv_bn_reference(sim.local_embed, x_local)
        gate = F.interpolate(hard_sigmoid(conv_bn_reference(sim.gate_embed, x_global)), size=(8, 6),
                             mode="bilinear", align_corners=False)
        glob = F.interpolate(conv_bn_reference(sim.global_embed, x_global), size=(8, 6), mode="bilinear",
                             align_corners=False)
        out = sim(x_local, x_global)
    assert torch.allclose(out, local * gate + glob, atol=1e-5)


def test_injection_gate_is_hard_sigmoid_not_sigmoid():
    sim = SemanticInjection(in_chs=2, out_chs=3).eval()
    sim.gate_embed.conv.weight.data.zero_()
    for pre_activation, expected in ((3.0, 1.0), (-3.0, 0.0), (1.5, 0.75)):
        sim.gate_embed.bn.bias.data.fill_(pre_activation)  # conv outputs 0, so BN outputs its bias
        gate = sim.parts(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)).gate
        assert torch.allclose(gate, torch.full_like(gate, expected))  # sigmoid: 0.953, 0.047, 0.818


def test_injection_modes_keep_only_their_branch():
    x_local, x_global = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)
    attn_only = SemanticInjection(4, 3, "sigmoid_attn").eval()
    info_only = SemanticInjection(4, 3, "sem_info").eval()
    assert attn_only.global_embed is None and info_only.gate_embed is None
    parts = attn_only.parts(x_local, x_global)
    assert torch.allclose(parts.out, parts.local * parts.gate)
    parts = info_only.parts(x_local, x_global)
    assert torch.allclose(parts.out, parts.local + parts.semantics)


def test_head_sums_the_resized_branches_before_classifying():
    g = torch.Generator().manual_seed(2)
    head = SegmentationHead(width=6, num_classes=4, depthwise=False)
    randomize_bn(head, g)
    head.eval()
    feats = [torch.randn(1, 6, 8, 8, generator=g), torch.randn(1, 6, 4, 4, generator=g),
             torch.randn(1, 6, 2, 2, generator=g)]
    summed = feats[0] + resize_to(feats[1], (8, 8)) + resize_to(feats[2], (8, 8))
    with torch.no_grad():
        assert torch.allclose(head(feats), head.classifier(head.fuse(summed)), atol=1e-5)
        only_first = head.classifier(head.fuse(feats[0]))
        assert not torch.allclose(head(feats), only_first, atol=1e-3)


def test_variant_widths_follow_the_official_configs():
    expected = {  # token channels, extractor width, heads, SIM width M, depthwise head fuse
        "topformer_tiny": ((16, 32, 64, 96), 208, 4, 128, True),
        "topformer_small": ((24, 48, 96, 128), 296, 6, 192, False),
        "topformer_base": ((32, 64, 128, 160), 384, 8, 256, False),
    }
    for name, (channels, dim, heads, width, depthwise) in expected.items():
        model = meta_model(name)
        cfg = model.config
        assert (cfg.token_channels, cfg.embed_dim, cfg.num_heads, cfg.sim_width) == (channels, dim, heads, width)
        assert model.extractor.blocks[0].attn.to_q.conv.out_channels == heads * 16
        assert model.extractor.blocks[0].attn.to_v.conv.out_channels == heads * 32
        assert model.extractor.blocks[0].mlp.fc1.conv.out_channels == 2 * dim
        assert (model.head.fuse.conv.groups == width) == depthwise
        assert [sim.local_embed.conv.out_channels for sim in model.injection] == [width] * 3


def test_extractor_holds_most_parameters_but_few_flops():
    shares = lessons.claims.topformer.part_shares("topformer_tiny")
    assert shares["params"]["extractor"] > 70
    assert shares["flops_mmcv"]["extractor"] < 15 and shares["flops_exact"]["extractor"] < 15


def test_classifier_pools_the_global_semantics():
    model = meta_model("topformer_tiny_cls")
    x = torch.empty(2, 3, 224, 224, device="meta")
    assert tuple(model.forward_features(x).shape) == (2, 208, 7, 7)  # 1/32 grid at 224 for classification
    assert tuple(model(x).shape) == (2, 1000)
    maps = model.forward_intermediates(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 56, 56), (32, 28, 28), (64, 14, 14), (96, 7, 7), (208, 7, 7)]
    assert model.get_classifier() is model.head.fc and model.num_features == 208


def test_ablation_settings_build_what_they_name():
    base = TOPFORMER_CONFIGS["base"]
    built = {}
    for table, rows in ABLATIONS.items():
        for row, knobs in rows.items():
            changed = tuple(sorted((k, v) for k, v in knobs.items() if getattr(base, k) != v))
            if changed not in built:
                built[changed] = meta_model("topformer_base", **dict(changed))
            model = built[changed]
            assert all(getattr(model.config, k) == v for k, v in knobs.items()), (table, row)
    last = built[(("extractor_input", "last"),)]
    assert last.extractor.input_proj.conv.in_channels == 160 and last.extractor.input_proj.conv.out_channels == 384
    assert built[(("injection", "sem_info"),)].injection[0].gate_embed is None  # the paper's "Sum head" row
    assert count_params(built[(("sim_width", 128),)]) < count_params(built[()])
    assert built[(("pool_stride", 128),)].pool.stride == 4



def test_extractor_without_attention_holds_a_second_ffn_in_every_block():
    """The paper's "w/o MHSA" row: every attention removed, more FFNs in its place."""
    with_attention = meta_model("topformer_tiny")
    without = meta_model("topformer_tiny", extractor_attention=False)
    assert all(isinstance(b.attn, BNAttention) for b in with_attention.extractor.blocks)
    assert not any(isinstance(m, BNAttention) for m in without.modules())
    for block in without.extractor.blocks:
        assert isinstance(block.attn, DepthwiseConvMlp) and type(block.attn) is type(block.mlp)
    torch.manual_seed(0)
    model = lessons.create_model("topformer_tiny", extractor_attention=False).eval()
    assert model(torch.randn(1, 3, 128, 128)).shape == (1, 150, 128, 128)
    with pytest.raises(TypeError, match="extractor_attention must be a bool"):
        meta_model("topformer_tiny", extractor_attention="no")


def test_ablation_costs_move_the_way_the_paper_text_says():
    """The cost directions the ablation study's prose states (its tables' numbers are not available to this book)."""
    def flops(table: str, row: str) -> int:
        base = TOPFORMER_CONFIGS["base"]
        changed = tuple(sorted((k, v) for k, v in ABLATIONS[table][row].items() if getattr(base, k) != v))
        return model_count("topformer_base", (3, 512, 512), **dict(changed))

    # "{1/4,...,1/32} gives the best result at the heaviest computation, {1/16,1/32} the worst at the lightest"
    stacks = [flops("tokens", f"stack {s}") for s in ("{1/4,1/8,1/16,1/32}", "{1/8,1/16,1/32}", "{1/16,1/32}")]
    assert stacks == sorted(stacks, reverse=True) and len(set(stacks)) == 3
    # "adding both SigmoidAttn and SemInfo brings a large improvement with a little extra computation"
    both = flops("injection", "SigmoidAttn + SemInfo")
    for alone in ("SigmoidAttn", "SemInfo"):
        assert 0 < both - flops("injection", alone) < 0.01 * both  # one 1x1 conv on the 1/64 grid per scale
    # s32 / s64 / s128: fewer pooled tokens, fewer FLOPs; the trade-off is s64
    strides = [flops("pool_stride", s) for s in ("s32", "s64", "s128")]
    assert strides == sorted(strides, reverse=True) and len(set(strides)) == 3
    # SIM width M: a narrower injection and head is cheaper (the paper calls the three "very close" in cost;
    # by this count M=128 saves 19% of Base's FLOPs, because the SIM and the head run at 1/8)
    widths = [flops("sim_width", f"M={m}") for m in (256, 192, 128)]
    assert widths == sorted(widths, reverse=True) and 0.15 < 1 - widths[2] / widths[0] < 0.25


def test_conv_bn_can_start_with_zero_scale():
    block = ConvBN(4, 6, bn_weight_init=0.0).eval()
    assert torch.equal(block(torch.randn(1, 4, 3, 3)), torch.zeros(1, 6, 3, 3))


def test_fresh_model_starts_with_attention_projections_off_and_a_small_classifier():
    """As the official configs build it: Conv2d_BN(bn_weight_init=0) survives init_weights under SyncBN, and mmseg
    draws conv_seg from N(0, 0.01)."""
    torch.manual_seed(0)
    model = lessons.create_model("topformer_small")
    assert all(torch.equal(b.attn.proj[1].bn.weight, torch.zeros(296)) for b in model.extractor.blocks)
    assert all(torch.equal(b.mlp.fc2.bn.weight, torch.ones(296)) for b in model.extractor.blocks)
    assert model.head.classifier.weight.std() < 0.02 and not model.head.classifier.bias.any()
    classifier = lessons.create_model("topformer_small_cls")
    assert not classifier.extractor.blocks[0].attn.proj[1].bn.weight.any()


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_rejected_with_clear_messages():
    model = meta_model("topformer_tiny")
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.empty(1, 1, 64, 64, device="meta"))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.empty(3, 64, 64, device="meta"))
    with pytest.raises(ValueError, match="at least 1"):
        model(torch.empty(1, 3, 0, 64, device="meta"))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8, device="meta"))


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (dict(extractor_scales=(8, 4, 16)), "increasing subset"),
        (dict(extractor_scales=(2, 4)), "increasing subset"),
        (dict(extractor_scales=()), "non-empty"),
        (dict(extractor_scales=(16, 32), injection_scales=(8, 16, 32)), "injection_scales"),
        (dict(head="fpn"), "unknown head"),
        (dict(injection="cross_attention"), "unknown injection"),
        (dict(extractor_input="first"), "unknown extractor_input"),
        (dict(sim_width=0), "sim_width must be a positive int"),
        (dict(sim_width=12.5), "sim_width must be a positive int"),
        (dict(pool_stride=48), "multiple of 32"),
        (dict(depth=-1), "depth"),
    ],
)
def test_bad_configurations_are_rejected(knobs, message):
    with pytest.raises(ValueError, match=message):
        meta_model("topformer_tiny", **knobs)


def test_bad_model_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        meta_model("topformer_tiny", num_classes=0)
    with pytest.raises(ValueError, match="in_chans"):
        meta_model("topformer_tiny", in_chans=0)
    with pytest.raises(ValueError, match="token_rows"):
        TopFormerConfig("broken", TOPFORMER_CONFIGS["tiny"].rows, (1, 2, 3, 4), 4, 128)
    with pytest.raises(ValueError, match="input_size"):
        count_mmcv_flops(meta_model("topformer_tiny"), (512, 512), rules=MMCV_RULES)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (hustvl/TopFormer): names paired by role, then loaded strictly
# --------------------------------------------------------------------------------------------------------------------

VARIANTS = ("tiny", "small", "base")

# (official key -> our key) for every kind of tensor that shares a shape with a sibling, TopFormer-Tiny.
SEGMENTATION_ROLES = [
    # stem conv, and each BN entry (weight, bias, mean, var have one shape)
    ("backbone.tpm.stem.0.c.weight", "token_pyramid.stem.conv.weight"),
    ("backbone.tpm.stem.0.bn.weight", "token_pyramid.stem.bn.weight"),
    ("backbone.tpm.stem.0.bn.bias", "token_pyramid.stem.bn.bias"),
    ("backbone.tpm.stem.0.bn.running_mean", "token_pyramid.stem.bn.running_mean"),
    ("backbone.tpm.stem.0.bn.running_var", "token_pyramid.stem.bn.running_var"),
    ("backbone.tpm.stem.0.bn.num_batches_tracked", "token_pyramid.stem.bn.num_batches_tracked"),
    # row 1 (t = 1): [depthwise, act, project]; row 3 (t = 3): [expand, act, depthwise, act, project]
    ("backbone.tpm.layer1.conv.0.c.weight", "token_pyramid.blocks.0.depthwise.conv.weight"),
    ("backbone.tpm.layer1.conv.2.c.weight", "token_pyramid.blocks.0.project.conv.weight"),
    ("backbone.tpm.layer1.conv.0.bn.weight", "token_pyramid.blocks.0.depthwise.bn.weight"),
    ("backbone.tpm.layer1.conv.2.bn.weight", "token_pyramid.blocks.0.project.bn.weight"),
    ("backbone.tpm.layer3.conv.0.c.weight", "token_pyramid.blocks.2.expand.conv.weight"),
    ("backbone.tpm.layer3.conv.2.c.weight", "token_pyramid.blocks.2.depthwise.conv.weight"),
    ("backbone.tpm.layer3.conv.4.c.weight", "token_pyramid.blocks.2.project.conv.weight"),
    ("backbone.tpm.layer3.conv.0.bn.running_var", "token_pyramid.blocks.2.expand.bn.running_var"),
    ("backbone.tpm.layer3.conv.2.bn.running_var", "token_pyramid.blocks.2.depthwise.bn.running_var"),
    ("backbone.tpm.layer9.conv.4.bn.bias", "token_pyramid.blocks.8.project.bn.bias"),
    # attention: q and k have one shape; each block its own
    ("backbone.trans.transformer_blocks.1.attn.to_q.c.weight", "extractor.blocks.1.attn.to_q.conv.weight"),
    ("backbone.trans.transformer_blocks.1.attn.to_k.c.weight", "extractor.blocks.1.attn.to_k.conv.weight"),
    ("backbone.trans.transformer_blocks.1.attn.to_v.c.weight", "extractor.blocks.1.attn.to_v.conv.weight"),
    ("backbone.trans.transformer_blocks.1.attn.to_q.bn.bias", "extractor.blocks.1.attn.to_q.bn.bias"),
    ("backbone.trans.transformer_blocks.1.attn.to_k.bn.bias", "extractor.blocks.1.attn.to_k.bn.bias"),
    ("backbone.trans.transformer_blocks.2.attn.to_q.c.weight", "extractor.blocks.2.attn.to_q.conv.weight"),
    ("backbone.trans.transformer_blocks.3.attn.proj.1.bn.weight", "extractor.blocks.3.attn.proj.1.bn.weight"),
    # MLP: fc1's BN, the depthwise conv's bias share a shape; fc2's BN and the proj's BN too
    ("backbone.trans.transformer_blocks.0.mlp.fc1.bn.bias", "extractor.blocks.0.mlp.fc1.bn.bias"),
    ("backbone.trans.transformer_blocks.0.mlp.dwconv.bias", "extractor.blocks.0.mlp.dwconv.bias"),
    ("backbone.trans.transformer_blocks.0.mlp.fc2.bn.bias", "extractor.blocks.0.mlp.fc2.bn.bias"),
    ("backbone.trans.transformer_blocks.0.attn.proj.1.bn.bias", "extractor.blocks.0.attn.proj.1.bn.bias"),
    # injection: three branches of one shape, three scales (official slot 0 is the unused 1/4 scale)
    ("backbone.SIM.1.local_embedding.conv.weight", "injection.0.local_embed.conv.weight"),
    ("backbone.SIM.1.global_act.conv.weight", "injection.0.gate_embed.conv.weight"),
    ("backbone.SIM.1.global_embedding.conv.weight", "injection.0.global_embed.conv.weight"),
    ("backbone.SIM.2.global_embedding.bn.bias", "injection.1.global_embed.bn.bias"),
    ("backbone.SIM.3.global_act.bn.running_mean", "injection.2.gate_embed.bn.running_mean"),
    ("backbone.SIM.3.local_embedding.bn.weight", "injection.2.local_embed.bn.weight"),
    # head: the fuse conv's BN and the classifier
    ("decode_head.linear_fuse.conv.weight", "head.fuse.conv.weight"),
    ("decode_head.linear_fuse.bn.weight", "head.fuse.bn.weight"),
    ("decode_head.conv_seg.weight", "head.classifier.weight"),
    ("decode_head.conv_seg.bias", "head.classifier.bias"),
]


def _sane_bn_statistics(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random official values made runnable: positive running variances, and other floats scaled down so that
    N(0, 1) weights through 20-odd layers and an unscaled softmax stay finite."""
    def tame(key: str, v: torch.Tensor) -> torch.Tensor:
        if key.endswith("running_var"):
            return v.abs() + 0.5
        return v * 0.2 if v.is_floating_point() else v

    return {k: tame(k, v) for k, v in state_dict.items()}


def classifier_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An ImageNet checkpoint's layout (topformer-{T,S,B}-224-*.pth): the backbone's ``tpm``/``trans`` keys without
    the mmseg prefix and no SIM (PaddleViT's converter builds the classifier with injection=False and loads the file
    strictly), then ``head.bn`` (BatchNorm1d) and ``head.l`` (Linear, 1000 classes)."""
    out = {k.removeprefix("backbone."): v for k, v in official_state_dict(f"topformer_{variant}", seed).items()
           if k.startswith(("backbone.tpm.", "backbone.trans."))}
    dim = TOPFORMER_CONFIGS[variant].embed_dim
    g = torch.Generator().manual_seed(seed + 1)
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"head.bn.{name}"] = torch.rand(dim, generator=g) + 0.5
    out["head.bn.num_batches_tracked"] = torch.tensor(7)
    out["head.l.weight"] = torch.randn(1000, dim, generator=g)
    out["head.l.bias"] = torch.randn(1000, generator=g)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_segmentation_checkpoint_loads_strictly_into_its_variant(variant):
    official = official_state_dict(f"topformer_{variant}")
    with torch.device("meta"):
        model = lessons.create_model(f"topformer_{variant}")
    converted = lessons.checkpoints.official_converter(model)(official, model)
    assert set(converted) == set(model.state_dict())
    assert len(converted) == official_keys(f"topformer_{variant}")["num_keys"]
    lessons.load_official(lessons.create_model(f"topformer_{variant}"), official)


def test_official_segmentation_checkpoint_values_land_by_role():
    official = official_state_dict("topformer_tiny", seed=3)
    ours = lessons.create_model("topformer_tiny", checkpoint=official).state_dict()
    for theirs, mine in SEGMENTATION_ROLES:
        assert torch.equal(ours[mine], official[theirs]), (theirs, mine)


def test_small_and_base_tenth_row_and_wider_sims_land_by_role():
    official = official_state_dict("topformer_base", seed=4)
    ours = lessons.create_model("topformer_base", checkpoint=official).state_dict()
    pairs = [("backbone.tpm.layer10.conv.0.c.weight", "token_pyramid.blocks.9.expand.conv.weight"),
             ("backbone.tpm.layer10.conv.2.c.weight", "token_pyramid.blocks.9.depthwise.conv.weight"),
             ("backbone.SIM.2.global_act.conv.weight", "injection.1.gate_embed.conv.weight"),
             ("backbone.SIM.2.global_embedding.conv.weight", "injection.1.global_embed.conv.weight")]
    for theirs, mine in pairs:
        assert torch.equal(ours[mine], official[theirs]), (theirs, mine)


def test_converted_checkpoint_runs_to_finite_logits_of_the_right_shape():
    official = _sane_bn_statistics(official_state_dict("topformer_tiny"))
    model = lessons.create_model("topformer_tiny", checkpoint=official)
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, 64, 48))
        labels = model.predict(torch.randn(1, 3, 64, 48))
    assert logits.shape == (1, 150, 64, 48) and torch.isfinite(logits).all()
    assert labels.shape == (1, 64, 48)


@pytest.mark.parametrize(("checkpoint", "model"), [("tiny", "small"), ("small", "base"), ("base", "tiny")])
def test_checkpoint_of_another_variant_is_refused_naming_the_expected_one(checkpoint, model):
    with pytest.raises(ValueError, match=f"topformer_{model}"):
        lessons.create_model(f"topformer_{model}", checkpoint=official_state_dict(f"topformer_{checkpoint}"))


@pytest.mark.parametrize("other", ["seaformer_tiny", "hrvit_b1_seg_segformerhead_ade20k", "pp_mobileseg_tiny"])
def test_checkpoint_of_another_family_is_refused(other):
    with pytest.raises(ValueError, match="topformer_tiny"):
        lessons.create_model("topformer_tiny", checkpoint=official_state_dict(other))


def test_checkpoint_with_a_missing_key_is_refused():
    official = official_state_dict("topformer_tiny")
    del official["backbone.SIM.2.global_act.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing.*injection\.1\.gate_embed\.bn\.running_var"):
        lessons.create_model("topformer_tiny", checkpoint=official)


def test_truncated_checkpoint_file_is_refused_with_a_hint_to_download_again(tmp_path):
    from helpers import assert_truncated_file_is_refused

    official = {"meta": {"mmseg_version": "0.19.0"}, "state_dict": official_state_dict("topformer_tiny")}
    assert_truncated_file_is_refused(tmp_path, "topformer_tiny", official)


@pytest.mark.parametrize("variant", VARIANTS)
def test_imagenet_checkpoint_loads_into_the_classifier_by_role(variant):
    official = classifier_state_dict(variant, seed=5)
    model = lessons.create_model(f"topformer_{variant}_cls", checkpoint=official)
    ours = model.state_dict()
    pairs = [("head.bn.weight", "head.norm.weight"), ("head.bn.bias", "head.norm.bias"),
             ("head.bn.running_mean", "head.norm.running_mean"), ("head.bn.running_var", "head.norm.running_var"),
             ("head.l.weight", "head.fc.weight"), ("head.l.bias", "head.fc.bias"),
             ("tpm.layer2.conv.0.c.weight", "token_pyramid.blocks.1.expand.conv.weight"),
             ("trans.transformer_blocks.0.attn.to_q.c.weight", "extractor.blocks.0.attn.to_q.conv.weight"),
             ("trans.transformer_blocks.0.attn.to_k.c.weight", "extractor.blocks.0.attn.to_k.conv.weight")]
    for theirs, mine in pairs:
        assert torch.equal(ours[mine], official[theirs]), (theirs, mine)
    with torch.no_grad():
        logits = lessons.create_model(f"topformer_{variant}_cls", checkpoint=_sane_bn_statistics(official)).eval()(
            torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_checkpoints_of_the_other_task_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="segmentation checkpoint.*topformer_tiny"):
        lessons.create_model("topformer_tiny_cls", checkpoint=official_state_dict("topformer_tiny"))
    with pytest.raises(ValueError, match="ImageNet classifier checkpoint.*token_pyramid"):
        lessons.create_model("topformer_tiny", checkpoint=classifier_state_dict("tiny"))
    with pytest.raises(ValueError, match="topformer_small_cls"):
        lessons.create_model("topformer_small_cls", checkpoint=classifier_state_dict("tiny"))
