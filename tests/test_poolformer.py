"""MetaFormer / PoolFormer: the token mixer, the norm, the block, the variants, timm's weights, and bad input."""

import math

import pytest
import timm
import torch
from torch import nn

import lessons
from lessons.measure import count_macs, count_macs_fvcore, count_params
from lessons.poolformer import (
    METAFORMER_CONFIGS,
    FeatureMapAttention,
    GroupNorm1,
    LayerNormChannel,
    MetaFormer,
    MetaFormerBlock,
    MetaFormerConfig,
    Pooling,
    RandomMixing,
    SpatialMlp,
    make_token_mixer,
)
from helpers import meta_model

POOLFORMERS = ["poolformer_s12", "poolformer_s24", "poolformer_s36", "poolformer_m36", "poolformer_m48"]


# ---------------------------------------------------------------------------------------------------- token mixers


def test_pool_mixer_is_zero_on_constant_input():
    x = torch.full((2, 8, 9, 7), 3.25)
    assert torch.allclose(Pooling(3)(x), torch.zeros_like(x), atol=1e-6)


@pytest.mark.parametrize("pool_size", [3, 5, 7])
def test_pooling_excludes_padding_so_a_constant_image_stays_constant_at_the_borders(pool_size):
    x = torch.full((1, 2, 10, 10), 2.0)
    pooled = Pooling(pool_size).pool(x)
    assert torch.allclose(pooled, x, atol=1e-6)  # with zero padding counted the corners would be 4/9 * 2


def test_pool_mixer_is_average_minus_input():
    x = torch.randn(2, 4, 6, 6)
    # the centre pixel of a 3x3 window: its 9 neighbours' mean, minus itself
    expected = x[..., 1:4, 1:4].mean(dim=(-2, -1)) - x[..., 2, 2]
    assert torch.allclose(Pooling(3)(x)[..., 2, 2], expected, atol=1e-6)
    assert Pooling(5)(x).shape == x.shape


@pytest.mark.parametrize("bad", [0, -3, 2, 4, 3.0, True, "3"])
def test_pool_size_must_be_a_positive_odd_int(bad):
    with pytest.raises(ValueError, match="positive odd int"):
        Pooling(bad)
    with pytest.raises(ValueError, match="positive odd int"):
        lessons.create_model("poolformer_s12", pool_size=bad)


def test_unknown_mixer_lists_the_allowed_names():
    with pytest.raises(ValueError, match="'pooling', 'identity', 'attention', 'spatial_mlp'"):
        make_token_mixer("conv")
    with pytest.raises(ValueError, match="unknown token mixer 'conv'"):
        MetaFormerConfig("x", (2, 2, 6, 2), (64, 128, 320, 512), mixers=("pooling", "conv", "pooling", "pooling"))


def test_attention_mixer_keeps_the_map_shape_with_32_channel_heads_and_no_qkv_bias():
    mixer = FeatureMapAttention(64)
    assert mixer.attn.num_heads == 2 and mixer.attn.head_dim == 32 and mixer.attn.qkv.bias is None
    x = torch.randn(2, 64, 5, 3)
    assert mixer(x).shape == x.shape
    # every position sees every other: changing one pixel changes the output everywhere
    y = x.clone()
    y[..., 0, 0] += 1.0
    assert (mixer(y) - mixer(x)).abs().amax(dim=1).min() > 0


def test_spatial_mlp_mixes_positions_and_rejects_other_sizes():
    mixer = SpatialMlp((4, 4))
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        mixer.fc.weight.copy_(torch.eye(16).flip(0))  # reverse the order of the 16 positions
    assert torch.equal(mixer(x), x.flatten(2).flip(-1).reshape(x.shape))
    with pytest.raises(ValueError, match="built for 4x4"):
        mixer(torch.randn(1, 3, 5, 5))


def test_random_mixing_is_frozen_row_stochastic_and_mixes_every_token():
    torch.manual_seed(0)
    mixer = RandomMixing((3, 4))
    matrix = mixer.random_matrix
    assert matrix.shape == (12, 12) and list(mixer.parameters()) == []  # a buffer: nothing to train
    assert "random_matrix" in mixer.state_dict()  # ... but saved with the model
    torch.testing.assert_close(matrix.sum(dim=1), torch.ones(12))  # rows are softmax-normalised
    assert (matrix > 0).all() and not torch.allclose(matrix, torch.full_like(matrix, 1 / 12))  # random, not uniform
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(mixer(x), torch.einsum("mn,bcn->bcm", matrix, x.flatten(2)).reshape(x.shape))
    # every output token depends on every input token: a change at one position moves all twelve outputs
    y = x.clone()
    y[:, :, 2, 3] += 1.0
    assert ((mixer(y) - mixer(x)).abs().amin(dim=(0, 1)) > 0).all()
    # the same seed gives the same matrix (it is drawn when the model is built), another seed another one
    torch.manual_seed(0)
    assert torch.equal(RandomMixing((3, 4)).random_matrix, matrix)
    torch.manual_seed(1)
    assert not torch.equal(RandomMixing((3, 4)).random_matrix, matrix)


def test_random_mixing_stays_frozen_while_the_model_trains():
    torch.manual_seed(0)
    config = MetaFormerConfig("r", (1, 1, 1, 1), (16, 16, 16, 16), mixers=("random",) * 4, img_size=32)
    model = MetaFormer(config, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("random_matrix")}
    assert len(before) == 4 and not any(n.endswith("random_matrix") for n, _ in model.named_parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert model.stages[0].blocks[0].token_mixer.random_matrix.shape == (64, 64)  # 8x8 tokens at 32x32


@pytest.mark.parametrize("bad", [None, (0, 4), (4,), (2.0, 2), (True, 3), "4x4"])
def test_random_mixing_rejects_a_bad_spatial_size(bad):
    with pytest.raises(ValueError, match="spatial_size"):
        RandomMixing(bad)
    if bad is None:
        with pytest.raises(ValueError, match="'random' mixer needs spatial_size"):
            make_token_mixer("random")


def test_random_mixing_rejects_another_map_size_and_needs_img_size():
    mixer = RandomMixing((4, 4))
    with pytest.raises(ValueError, match=r"built for \[B, C, 4, 4\]"):
        mixer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"built for \[B, C, 4, 4\]"):
        mixer(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="fixed token count: give img_size"):
        MetaFormerConfig("x", (1, 1, 1, 1), (16, 16, 16, 16), mixers=("random",) * 4)
    model = MetaFormer(MetaFormerConfig("x", (1, 1, 1, 1), (16, 16, 16, 16), mixers=("random",) * 4, img_size=32), 2)
    with pytest.raises(ValueError, match="build it with img_size=64"):
        model(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------------- norms, block


def test_groupnorm1_equals_groupnorm_one_group_and_normalizes_over_c_h_w():
    torch.manual_seed(0)
    norm, reference = GroupNorm1(6), nn.GroupNorm(1, 6)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(3, 6, 5, 4) * 4 + 2
    assert torch.equal(norm(x), reference(x))
    plain = GroupNorm1(6)(x)  # weight 1, bias 0: zero mean and unit variance per sample over C, H, W together
    assert torch.allclose(plain.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(plain.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    assert not torch.allclose(plain.mean(dim=1), torch.zeros(3, 5, 4), atol=1e-2)  # ... not per position (LayerNorm)


def test_layernorm_channel_normalizes_each_position_over_channels():
    x = torch.randn(2, 8, 3, 3) * 3 + 1
    y = LayerNormChannel(8)(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2, 3, 3), atol=1e-5)
    assert torch.allclose(y, nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2), atol=1e-6)


def test_block_with_identity_mixer_and_zero_layer_scale_is_the_identity():
    block = MetaFormerBlock(16, make_token_mixer("identity"), layer_scale_init=0.0).eval()
    x = torch.randn(2, 16, 7, 7)
    assert torch.equal(block(x), x)


def test_block_is_residual_mixer_then_residual_mlp():
    torch.manual_seed(0)
    block = MetaFormerBlock(8, make_token_mixer("pooling"), layer_scale_init=0.5).eval()
    x = torch.randn(2, 8, 6, 6)
    y = x + 0.5 * block.token_mixer(block.norm1(x))
    assert torch.allclose(block(x), y + 0.5 * block.mlp(block.norm2(y)), atol=1e-6)


def test_mixer_is_a_constructor_argument():
    built = []

    def my_mixer(dim):
        built.append(dim)
        return nn.Identity()

    MetaFormerBlock(24, my_mixer)
    assert built == [24]
    with pytest.raises(TypeError, match="callable"):
        MetaFormerBlock(24, "pooling")


# ---------------------------------------------------------------------------------------------------- variants


@pytest.mark.parametrize("name,depths,dims,ls", [
    ("poolformer_s12", (2, 2, 6, 2), (64, 128, 320, 512), 1e-5),
    ("poolformer_s24", (4, 4, 12, 4), (64, 128, 320, 512), 1e-5),
    ("poolformer_s36", (6, 6, 18, 6), (64, 128, 320, 512), 1e-6),
    ("poolformer_m36", (6, 6, 18, 6), (96, 192, 384, 768), 1e-6),
    ("poolformer_m48", (8, 8, 24, 8), (96, 192, 384, 768), 1e-6),
])
def test_each_variant_has_the_papers_depths_dims_and_layer_scale(name, depths, dims, ls):
    model = meta_model(name)
    assert tuple(len(stage.blocks) for stage in model.stages) == depths
    assert tuple(stage.blocks[0].norm1.num_channels for stage in model.stages) == dims
    assert all(isinstance(b.token_mixer, Pooling) for s in model.stages for b in s.blocks)
    assert all(isinstance(b.norm1, GroupNorm1) for s in model.stages for b in s.blocks)
    assert model.config.layer_scale_init == ls
    assert (model.stem.kernel_size, model.stem.stride, model.stem.padding) == ((7, 7), (4, 4), (2, 2))
    down = model.stages[1].downsample
    assert (down.kernel_size, down.stride, down.padding) == ((3, 3), (2, 2), (1, 1))
    assert isinstance(model.stages[0].downsample, nn.Identity)  # the stem already embedded the patches


def test_layer_scale_starts_at_its_init_value_and_drop_path_rises_linearly():
    config = MetaFormerConfig("tiny", (1, 1, 2, 1), (8, 8, 16, 16), layer_scale_init=1e-6)
    model = MetaFormer(config, num_classes=0, drop_path_rate=0.3)
    scales = torch.cat([b.layer_scale2.scale for s in model.stages for b in s.blocks])
    assert torch.equal(scales, torch.full_like(scales, 1e-6))
    rates = [b.drop_path1.drop_prob for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])  # 0.3 * block index / (5 - 1)


@pytest.mark.parametrize("name", POOLFORMERS)
def test_exact_params_equal_timms(name):
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    assert count_params(meta_model(name)) == count_params(reference)


def test_stage_shapes_at_224():
    outs = meta_model("poolformer_s12").forward_intermediates(torch.empty(1, 3, 224, 224, device="meta"))
    assert [tuple(o.shape[1:]) for o in outs] == [(64, 56, 56), (128, 28, 28), (320, 14, 14), (512, 7, 7)]


def test_hybrid_has_attention_in_stages_3_and_4_only():
    model = meta_model("metaformer_ppaa_s12")
    kinds = [{type(b.token_mixer) for b in stage.blocks} for stage in model.stages]
    assert kinds == [{Pooling}, {Pooling}, {FeatureMapAttention}, {FeatureMapAttention}]
    # as the official metaformer_ppaa_s12_224: channel LayerNorm, and a learned 14x14 position embedding at stage 3
    assert isinstance(model.stages[0].blocks[0].norm1, LayerNormChannel)
    assert model.stages[2].pos_embed.pos_embed.shape == (1, 320, 14, 14)
    assert [isinstance(s.pos_embed, nn.Identity) for s in model.stages] == [True, True, False, True]


def test_identity_and_spatial_mlp_variants():
    ident = meta_model("metaformer_id_s12")
    assert all(isinstance(b.token_mixer, nn.Identity) for s in ident.stages for b in s.blocks)
    assert count_params(ident) == count_params(meta_model("poolformer_s12"))  # pooling has no parameters
    ppff = meta_model("metaformer_ppff_s12")
    assert [type(s.blocks[0].token_mixer) for s in ppff.stages] == [Pooling, Pooling, SpatialMlp, SpatialMlp]
    assert count_params(ppff) - count_params(ident) == 6 * 196**2 + 2 * 49**2  # Linear(N, N), N = 14*14 and 7*7


def test_hybrids_run_at_224():
    x = torch.empty(1, 3, 224, 224, device="meta")
    for name in ("metaformer_ppaa_s12", "metaformer_ppff_s12", "metaformer_pppa_s12", "metaformer_pppf_s12"):
        assert meta_model(name, num_classes=10).eval()(x).shape == (1, 10)


def test_official_head_norms_the_map_then_pools_and_timms_pools_then_norms():
    torch.manual_seed(0)
    official = MetaFormer(MetaFormerConfig("tiny", (1, 1, 1, 1), (8, 8, 8, 16)), num_classes=5).eval()
    timm_style = MetaFormer(MetaFormerConfig("tiny", (1, 1, 1, 1), (8, 8, 8, 16), head_style="timm"), 5).eval()
    with torch.no_grad():
        official.head_norm.weight.normal_(), official.head_norm.bias.normal_()
    timm_style.load_state_dict(official.state_dict())  # same parameter names and shapes
    feats = torch.randn(2, 16, 7, 7) * 3
    norm = official.head_norm
    expected = official.fc(nn.functional.group_norm(feats, 1, norm.weight, norm.bias).mean(dim=(2, 3)))
    assert torch.allclose(official.forward_head(feats), expected, atol=1e-5)
    pooled = nn.functional.layer_norm(feats.mean(dim=(2, 3)), (16,), norm.weight, norm.bias, eps=1e-6)
    assert torch.allclose(timm_style.forward_head(feats), official.fc(pooled), atol=1e-5)
    assert not torch.allclose(timm_style.forward_head(feats), expected, atol=1e-2)
    with pytest.raises(ValueError, match="unknown head_style 'keras'"):
        MetaFormerConfig("tiny", (1, 1, 1, 1), (8, 8, 8, 16), head_style="keras")


# ---------------------------------------------------------------------------------------------------- timm weights


def _random_timm(name: str) -> nn.Module:
    """timm's model with random weights, drawn directly (no init pass): realistic scales, nothing trivially small."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    model = model.to_empty(device="cpu").eval()  # PoolFormer has no buffers, only parameters to fill
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "layer_scale" in pname:  # 1e-5 at init would hide a wrong mixer or MLP; make every branch count
                p.uniform_(0.5, 1.5)
            elif "norm" in pname and pname.endswith("weight"):
                p.normal_(1.0, 0.1)
            elif p.ndim == 1:  # biases
                p.normal_(0.0, 0.02)
            else:  # conv / linear weights, fan-in scaled so activations keep their size
                p.normal_(0.0, p[0].numel() ** -0.5)
    return model


@pytest.mark.parametrize("name", ["poolformer_s12", "poolformer_m36"])
def test_from_timm_gives_equal_outputs(name):
    reference = _random_timm(name)
    ours = lessons.from_timm(reference)
    assert isinstance(ours, MetaFormer) and not ours.training
    x = torch.randn(2, 3, 64, 64)  # any size: PoolFormer has no fixed-size part
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().max() > 1.0  # the check is not trivially about near-zero logits
    assert (got - expected).abs().max() <= 1e-5


# ---------------------------------------------------------------------------------------------------- MACs rule


def test_fvcore_rule_adds_norms_and_adaptive_pooling_but_not_the_pooling_mixer():
    layers = {
        "group_norm": (nn.GroupNorm(1, 4), 5), "layer_norm_written_out": (LayerNormChannel(4), 0),
        "batch_norm": (nn.BatchNorm2d(4), 2), "adaptive_pool": (nn.AdaptiveAvgPool2d(1), 1),
        "pooling_mixer": (Pooling(3), 0), "gelu": (nn.GELU(), 0),
    }
    for name, (layer, per_element) in layers.items():
        assert count_macs_fvcore(layer, (2, 4, 6, 6)) == per_element * 2 * 4 * 6 * 6, name
    upsample = nn.Upsample(scale_factor=2, mode="bilinear")
    assert count_macs_fvcore(upsample, (1, 4, 6, 6)) == 4 * 4 * 12 * 12  # 4 per output element
    conv = nn.Conv2d(4, 8, 3, padding=1)  # a conv counts the same in both rules
    assert count_macs_fvcore(conv, (1, 4, 6, 6)) == count_macs(conv, (1, 4, 6, 6)) == 8 * 4 * 9 * 36


def test_fvcore_rule_reproduces_fvcores_count_of_timms_poolformer_s12():
    with torch.device("meta"):
        reference = timm.create_model("poolformer_s12", pretrained=False)
    # fvcore 0.1.5 FlopCountAnalysis(timm poolformer_s12, 1x3x224x224).total(), as sail-sg/poolformer's
    # misc/mac_count_with_fvcore.py runs it (measured once with fvcore installed; fvcore is not a dependency)
    assert count_macs_fvcore(reference, (3, 224, 224)) == 1_822_580_736
    assert count_macs_fvcore(meta_model("poolformer_s12"), (3, 224, 224)) == 1_822_555_648  # mean, not adaptive pool


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("field,bad", [
    ("depths", (2, 2, 6)), ("depths", (2, 2, 0, 2)), ("depths", (2, 2, 6.0, 2)), ("depths", 12),
    ("dims", (64, 128, 320)), ("dims", (64, -128, 320, 512)), ("dims", (64, 128, 320, 512, 640)),
])
def test_bad_depths_or_dims(field, bad):
    kwargs = {"depths": (2, 2, 6, 2), "dims": (64, 128, 320, 512), field: bad}
    with pytest.raises(ValueError, match=f"{field} must be 4 positive ints"):
        MetaFormerConfig("bad", **kwargs)


def test_wrong_input_channels():
    model = meta_model("poolformer_s12")
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.empty(1, 1, 64, 64, device="meta"))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.empty(3, 64, 64, device="meta"))
    with pytest.raises(ValueError, match="in_chans must be a positive int"):
        meta_model("poolformer_s12", in_chans=0)


def test_fixed_size_parts_reject_other_input_sizes():
    with pytest.raises(ValueError, match="built for 224x224"):
        meta_model("metaformer_ppff_s12")(torch.empty(1, 3, 256, 256, device="meta"))
    with pytest.raises(ValueError, match="built for 224x224"):
        meta_model("metaformer_ppaa_s12")(torch.empty(1, 3, 192, 192, device="meta"))
    with pytest.raises(ValueError, match="give img_size"):
        MetaFormerConfig("x", (1, 1, 1, 1), (32, 32, 32, 32), mixers=("spatial_mlp",) * 4)
    # built for another size, it runs at that size
    model = meta_model("metaformer_ppff_s12", img_size=256, num_classes=3).eval()
    assert model(torch.empty(1, 3, 256, 256, device="meta")).shape == (1, 3)


def test_every_config_is_registered_and_every_poolformer_converts_from_timm():
    assert set(METAFORMER_CONFIGS) <= set(lessons.list_models())
    assert set(POOLFORMERS) <= set(lessons.timm_architectures())


# ------------------------------------------------------------------------------------------- authors' checkpoints

# The official models' flat `network` list (sail-sg/poolformer models/poolformer.py and models/metaformer.py, read at
# commit a075575): per stage an optional AddPositionEmb, the blocks, then the PatchEmbed down to the next stage.
POOLFORMER_NETWORK = ["blocks0", "down1", "blocks1", "down2", "blocks2", "down3", "blocks3"]
OFFICIAL_NETWORK = {
    **{name: POOLFORMER_NETWORK for name in POOLFORMERS + ["metaformer_id_s12", "metaformer_pppf_s12",
                                                           "metaformer_ppff_s12"]},
    "metaformer_pppa_s12": ["blocks0", "down1", "blocks1", "down2", "blocks2", "down3", "pos3", "blocks3"],
    "metaformer_ppaa_s12": ["blocks0", "down1", "blocks1", "down2", "pos2", "blocks2", "down3", "blocks3"],
}
METAFORMERS = sorted(OFFICIAL_NETWORK)


def official_poolformer_keys(name: str) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the official model's state dict, written out from the official classes:
    PatchEmbed.proj (conv), PoolFormerBlock/MetaFormerBlock (norm1, token_mixer, norm2, mlp.fc1/fc2 as 1x1 convs,
    layer_scale_1/2 as [dim] parameters), Attention (qkv without bias, proj), SpatialFc (fc without bias),
    AddPositionEmb (pos_embed [1, dim, h, w]), the final `norm` and the `head` Linear."""
    config = METAFORMER_CONFIGS[name]
    dims, sides = config.dims, (56, 28, 14, 7)
    keys = {"patch_embed.proj.weight": (dims[0], 3, 7, 7), "patch_embed.proj.bias": (dims[0],)}
    for k, entry in enumerate(OFFICIAL_NETWORK[name]):
        stage = int(entry[-1])
        dim = dims[stage]
        if entry.startswith("down"):
            keys |= {f"network.{k}.proj.weight": (dim, dims[stage - 1], 3, 3), f"network.{k}.proj.bias": (dim,)}
        elif entry.startswith("pos"):
            keys[f"network.{k}.pos_embed"] = (1, dim, sides[stage], sides[stage])
        else:
            for j in range(config.depths[stage]):
                block = f"network.{k}.{j}."
                keys |= {block + "layer_scale_1": (dim,), block + "layer_scale_2": (dim,)}
                keys |= {block + f"{norm}.{p}": (dim,) for norm in ("norm1", "norm2") for p in ("weight", "bias")}
                mixer = config.mixers[stage]
                if mixer == "attention":
                    keys |= {block + "token_mixer.qkv.weight": (3 * dim, dim),
                             block + "token_mixer.proj.weight": (dim, dim), block + "token_mixer.proj.bias": (dim,)}
                elif mixer == "spatial_mlp":
                    keys[block + "token_mixer.fc.weight"] = (sides[stage] ** 2, sides[stage] ** 2)
                keys |= {block + "mlp.fc1.weight": (4 * dim, dim, 1, 1), block + "mlp.fc1.bias": (4 * dim,),
                         block + "mlp.fc2.weight": (dim, 4 * dim, 1, 1), block + "mlp.fc2.bias": (dim,)}
    return keys | {"norm.weight": (dims[3],), "norm.bias": (dims[3],), "head.weight": (1000, dims[3]),
                   "head.bias": (1000,)}


def official_poolformer_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values with sensible scales (fan-in for weights, ~1 for norm weights and layer scales)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in official_poolformer_keys(name).items():
        value = torch.randn(shape, generator=generator)
        if len(shape) > 1 and not key.endswith("pos_embed"):
            value = value * (math.prod(shape[1:]) ** -0.5)
        elif key.endswith(("layer_scale_1", "layer_scale_2")) or ("norm" in key and key.endswith("weight")):
            value = 1.0 + 0.1 * value
        else:
            value = 0.02 * value
        out[key] = value
    return out


@pytest.mark.parametrize("name", METAFORMERS)
def test_every_official_checkpoint_loads_strictly_into_its_variant(name):
    official = official_poolformer_state_dict(name)
    model = lessons.create_model(name, checkpoint=official)
    assert sum(p.numel() for p in model.state_dict().values()) == sum(v.numel() for v in official.values())
    assert torch.equal(model.stem.weight, official["patch_embed.proj.weight"])


# (official key -> our key) for every kind of tensor that shares a shape with a sibling: norm1/norm2 and their
# weight/bias, the two layer scales, fc1/fc2 (and weight/bias), the downsampling convs of different stages, the
# head norm vs the last stage's norms, qkv vs proj, the position embedding placed before a stage.
ROLE_PAIRS = {
    "poolformer_s12": [
        ("network.0.1.norm1.weight", "stages.0.blocks.1.norm1.weight"),
        ("network.0.1.norm1.bias", "stages.0.blocks.1.norm1.bias"),
        ("network.0.1.norm2.weight", "stages.0.blocks.1.norm2.weight"),
        ("network.4.5.layer_scale_1", "stages.2.blocks.5.layer_scale1.scale"),
        ("network.4.5.layer_scale_2", "stages.2.blocks.5.layer_scale2.scale"),
        ("network.6.0.mlp.fc1.weight", "stages.3.blocks.0.mlp.fc1.weight"),
        ("network.6.0.mlp.fc2.weight", "stages.3.blocks.0.mlp.fc2.weight"),
        ("network.6.1.mlp.fc2.bias", "stages.3.blocks.1.mlp.fc2.bias"),
        ("network.1.proj.weight", "stages.1.downsample.weight"),
        ("network.5.proj.bias", "stages.3.downsample.bias"),
        ("norm.weight", "head_norm.weight"),
        ("norm.bias", "head_norm.bias"),
        ("head.weight", "fc.weight"),
    ],
    "metaformer_ppaa_s12": [
        ("network.4.pos_embed", "stages.2.pos_embed.pos_embed"),
        ("network.5.0.token_mixer.qkv.weight", "stages.2.blocks.0.token_mixer.attn.qkv.weight"),
        ("network.5.3.token_mixer.proj.weight", "stages.2.blocks.3.token_mixer.attn.proj.weight"),
        ("network.7.1.token_mixer.proj.bias", "stages.3.blocks.1.token_mixer.attn.proj.bias"),
        ("network.6.proj.weight", "stages.3.downsample.weight"),
        ("network.7.1.norm2.bias", "stages.3.blocks.1.norm2.bias"),
    ],
    "metaformer_pppa_s12": [
        ("network.6.pos_embed", "stages.3.pos_embed.pos_embed"),
        ("network.5.proj.weight", "stages.3.downsample.weight"),
        ("network.7.0.token_mixer.qkv.weight", "stages.3.blocks.0.token_mixer.attn.qkv.weight"),
    ],
    "metaformer_ppff_s12": [
        ("network.4.2.token_mixer.fc.weight", "stages.2.blocks.2.token_mixer.fc.weight"),
        ("network.6.1.token_mixer.fc.weight", "stages.3.blocks.1.token_mixer.fc.weight"),
    ],
}


@pytest.mark.parametrize("name", sorted(ROLE_PAIRS))
def test_official_tensors_land_in_the_module_that_plays_their_role(name):
    official = official_poolformer_state_dict(name)
    ours = lessons.poolformer.checkpoint_filter_official(official, meta_model(name))
    for official_key, our_key in ROLE_PAIRS[name]:
        assert torch.equal(ours[our_key], official[official_key]), (official_key, our_key)


@pytest.mark.parametrize("name", ["poolformer_s12", "poolformer_m36"])
def test_official_checkpoint_gives_timms_outputs_when_both_use_timms_head(name):
    """timm converts the same files with its own filter (timm.models.metaformer.checkpoint_filter_fn)."""
    from timm.models.metaformer import checkpoint_filter_fn

    official = official_poolformer_state_dict(name)
    reference = timm.create_model(name, pretrained=False).eval()
    reference.load_state_dict(checkpoint_filter_fn(dict(official), reference))
    ours = lessons.create_model(name, checkpoint=official).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_official_head_style_takes_the_same_checkpoint():
    official = official_poolformer_state_dict("poolformer_s12")
    model = lessons.create_model("poolformer_s12", head_style="official", checkpoint=official, num_classes=1000)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_a_checkpoint_of_another_variant_or_family_or_with_a_key_missing_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"poolformer_s12 \(sail-sg/poolformer models/poolformer.py::poolformer_s12\)"):
        lessons.create_model("poolformer_s12", checkpoint=official_poolformer_state_dict("poolformer_s24"))
    with pytest.raises(ValueError, match="another shape"):
        lessons.create_model("poolformer_s36", checkpoint=official_poolformer_state_dict("poolformer_m36"))
    with pytest.raises(ValueError, match="not keys of the official metaformer_ppaa_s12"):
        lessons.create_model("metaformer_ppaa_s12", checkpoint=official_poolformer_state_dict("poolformer_s12"))
    from helpers import official_state_dict

    with pytest.raises(ValueError, match="another family"):
        lessons.create_model("poolformer_s12", checkpoint=official_state_dict("topformer_tiny"))
    official = official_poolformer_state_dict("poolformer_s12")
    del official["network.2.1.mlp.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing, e.g. stages.1.blocks.1.mlp.fc1.bias"):
        lessons.create_model("poolformer_s12", checkpoint=official)


def test_a_truncated_checkpoint_file_says_to_download_it_again(tmp_path):
    from helpers import assert_truncated_file_is_refused

    assert_truncated_file_is_refused(tmp_path, "poolformer_s12", official_poolformer_state_dict("poolformer_s12"))
