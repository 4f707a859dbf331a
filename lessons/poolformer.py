"""MetaFormer and PoolFormer (Yu et al., "MetaFormer is Actually What You Need for Vision", CVPR 2022, 2111.11418).

The paper's claim: what makes a vision transformer work is less the attention than the *structure* around it,
the MetaFormer block (§3.1, Eq. 2-3; Eq. 1 is the patch embedding):

    Y = X + TokenMixer(Norm(X))          mix information between tokens (positions)
    Z = Y + ChannelMLP(Norm(Y))          mix information between channels, per token

The token mixer is a slot. Put attention in it and you have a transformer; put a spatial MLP in it and you have an
MLP-mixer; put a parameter-free 3x3 average pooling in it (Eq. 4) and you have PoolFormer, which still beats DeiT
and ResMLP of the same size. Here the mixer is a constructor argument (a callable ``dim -> nn.Module``) of one
:class:`MetaFormerBlock`, so every variant in the paper is the same network with a different argument.

Sources: the official code, sail-sg/poolformer ``models/poolformer.py`` (PoolFormer) and ``models/metaformer.py``
(the identity and hybrid models of the §4.4 ablation); timm ``timm/models/metaformer.py`` (``poolformer_*``),
whose weights :func:`checkpoint_filter_timm` copies into this model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from .checkpoints import register_official_converter, rename_by_rules
from .contract import FeatureInfo, ImageClassifier
from .layers import (
    ConvMlp, DropPath, LayerScale, MultiHeadSelfAttention, check_count, check_image_batch, drop_path_rates,
    output_size,
)
from .registry import imagenet_classifier, register_model
from .timm_convert import register_timm_converter, rename_keys

# FX symbolic tracing records the input checks as one call each (run on real tensors) instead of tracing into them.
torch.fx.wrap("check_image_batch")


def check_fixed_map_size(x: torch.Tensor, spatial_size: tuple[int, int], part: str) -> None:
    """Raise unless the feature map ``x`` has the size ``part`` (a spatial MLP, a position embedding) was built for."""
    if tuple(x.shape[-2:]) != tuple(spatial_size):
        raise ValueError(
            f"{part} was built for {spatial_size[0]}x{spatial_size[1]} feature maps but got "
            f"{x.shape[-2]}x{x.shape[-1]}; build the model with img_size equal to the input size"
        )


def check_fixed_input_size(x: torch.Tensor, size: int, name: str) -> None:
    """Raise unless the image batch ``x`` is ``size`` x ``size``, the input a model with fixed parts was built for."""
    if tuple(x.shape[-2:]) != (size, size):
        raise ValueError(
            f"{name} has parts of fixed size (spatial MLP / position embedding) built for "
            f"{size}x{size} inputs, got {x.shape[-2]}x{x.shape[-1]}; build it with img_size={x.shape[-1]}"
        )


torch.fx.wrap("check_fixed_map_size")
torch.fx.wrap("check_fixed_input_size")

TokenMixerFactory = Callable[[int], nn.Module]
NormFactory = Callable[[int], nn.Module]

# --------------------------------------------------------------------------------------------------------------------
# Token mixers: what goes into the slot (paper §3.2 Eq. 4 and the §4.4 ablation)
# --------------------------------------------------------------------------------------------------------------------


def _check_pool_size(pool_size: object) -> int:
    # bool is an int in Python; a pool size of True is a bug, not a 1.
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1 or pool_size % 2 == 0:
        raise ValueError(
            f"pool_size must be a positive odd int (3, 5, 7 ...), got {pool_size!r}: with stride 1 and padding "
            "pool_size // 2 only an odd window keeps the feature map's size"
        )
    return pool_size


class Pooling(nn.Module):
    """PoolFormer's token mixer (paper §3.2, Eq. 4): ``AvgPool(x) - x``; official ``models/poolformer.py::Pooling``.

    Each position becomes the mean of its ``pool_size x pool_size`` neighbourhood. ``count_include_pad=False``
    averages only the positions that exist, so a border pixel is not dragged towards the zero padding (a constant
    image stays constant). The ``- x``: the MetaFormer block adds its input back (``X + mixer(Norm(X))``), so
    returning ``pool(x) - x`` makes the block compute ``X + pool(Norm X) - Norm X``; on a constant region the mixer
    contributes nothing. No parameters: the mixing is fixed.
    """

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool_size = _check_pool_size(pool_size)
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


class FeatureMapAttention(nn.Module):
    """Self-attention as a token mixer on a feature map: ``[B, C, H, W]`` -> H*W tokens -> attention -> back.

    The hybrid models of the ablation (paper §4.4; official ``models/metaformer.py::Attention``): heads of
    ``head_dim = 32`` (so C/32 heads), no bias in the qkv projection, a bias in the output projection.
    The attention itself is :class:`lessons.layers.MultiHeadSelfAttention`.
    """

    def __init__(self, dim: int, head_dim: int = 32, qkv_bias: bool = False) -> None:
        super().__init__()
        if head_dim < 1 or dim % head_dim:
            raise ValueError(f"dim={dim} must be a multiple of head_dim={head_dim} (official code asserts this)")
        self.attn = MultiHeadSelfAttention(dim, num_heads=dim // head_dim, head_dim=head_dim, qkv_bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C], N = H*W
        return self.attn(tokens).transpose(1, 2).reshape(batch, dim, height, width)


class SpatialMlp(nn.Module):
    """A spatial MLP as a token mixer: one ``Linear(N, N)`` across the N = H*W positions, shared by all channels.

    The ``SpatialFc`` of the official ``models/metaformer.py`` (hybrids ``metaformer_pppf/ppff``; MLP-Mixer's token
    mixing with a single layer, no bias). Its weight is N x N, so the network only accepts the input size it was
    built for; any other size is an error here rather than a silent reshape.
    """

    def __init__(self, spatial_size: tuple[int, int]) -> None:
        super().__init__()
        height, width = spatial_size
        if height < 1 or width < 1:
            raise ValueError(f"spatial_size must be two positive ints, got {spatial_size!r}")
        self.spatial_size = (height, width)
        self.fc = nn.Linear(height * width, height * width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_fixed_map_size(x, self.spatial_size, f"the spatial MLP mixer (weight N x N, N = {self.fc.in_features})")
        return self.fc(x.flatten(2)).reshape(x.shape)  # [B, C, N] @ W^T: every channel mixed over positions alike

    def extra_repr(self) -> str:
        return f"spatial_size={self.spatial_size}"


class RandomMixing(nn.Module):
    """A frozen random token-mixing matrix: the "global random matrix" of the token-mixer ablation.

    Paper §4.4 (ablation table, "Token mixers": pooling -> global random matrix, 75.8% for S12 against 77.2% for
    pooling and 74.3% for identity; figures as quoted in the project brief, the paper text was not reachable) and
    its sequel's RandFormer (Yu et al., "MetaFormer Baselines for Vision", TPAMI 2024). The official code is the
    sequel's ``RandomMixing`` (sail-sg/metaformer ``metaformer_baselines.py``; sail-sg/poolformer has none):

        random_matrix = softmax(rand(N, N), dim=-1)      # N = H*W tokens, drawn once, never trained
        out[:, m] = sum_n random_matrix[m, n] * x[:, n]  # every channel mixed over all positions alike

    So every output token is a fixed, positive, row-normalised mix of *all* N input tokens (rand in [0, 1) through
    a softmax gives weights within a factor e of each other: a global average with random, frozen tilts). Like
    :class:`SpatialMlp` it fixes the token count, and like it it has no ``- x``: the block adds its input back.
    Drawn from the global RNG when the model is built, so ``torch.manual_seed`` before building seeds it. Stored as
    a buffer (the official code keeps a ``Parameter`` with ``requires_grad=False``; same state-dict key): saved with
    the model, moved with ``.to()``, but never a parameter, so no optimizer, weight decay or parameter count sees it.
    """

    def __init__(self, spatial_size: tuple[int, int]) -> None:
        super().__init__()
        if (
            not isinstance(spatial_size, (tuple, list)) or len(spatial_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in spatial_size)
        ):
            raise ValueError(f"spatial_size must be two positive ints (height, width), got {spatial_size!r}")
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        n = self.spatial_size[0] * self.spatial_size[1]
        self.register_buffer("random_matrix", torch.softmax(torch.rand(n, n), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.spatial_size:
            raise ValueError(
                f"the random-mixing mixer was built for [B, C, {self.spatial_size[0]}, {self.spatial_size[1]}] "
                f"feature maps (its matrix is N x N with N = {self.random_matrix.shape[0]}) but got "
                f"{list(x.shape)}; build the model with img_size equal to the input size"
            )
        return (x.flatten(2) @ self.random_matrix.T).reshape(x.shape)  # [B, C, N] @ M^T: out_m = sum_n M[m, n] x_n

    def extra_repr(self) -> str:
        return f"spatial_size={self.spatial_size}, frozen"


TOKEN_MIXERS = ("pooling", "identity", "attention", "spatial_mlp", "random")


def make_token_mixer(
    name: str, pool_size: int = 3, head_dim: int = 32, spatial_size: tuple[int, int] | None = None
) -> TokenMixerFactory:
    """The callable ``dim -> nn.Module`` that fills the MetaFormer block's token-mixer slot.

    ``"pooling"`` (PoolFormer, Eq. 4), ``"identity"`` (no token mixing at all, an ablation model),
    ``"attention"`` (a transformer), ``"spatial_mlp"`` (an MLP-like model; needs ``spatial_size``) or ``"random"``
    (a frozen random token-mixing matrix, :class:`RandomMixing`; needs ``spatial_size``).
    """
    if name not in TOKEN_MIXERS:
        raise ValueError(f"unknown token mixer {name!r}; allowed: {', '.join(map(repr, TOKEN_MIXERS))}")
    if name == "pooling":
        _check_pool_size(pool_size)
        return lambda dim: Pooling(pool_size)
    if name == "identity":
        return lambda dim: nn.Identity()
    if name == "attention":
        return lambda dim: FeatureMapAttention(dim, head_dim)
    if spatial_size is None:
        raise ValueError(f"the {name!r} mixer needs spatial_size: its N x N matrix fixes the token count")
    if name == "random":
        return lambda dim: RandomMixing(spatial_size)
    return lambda dim: SpatialMlp(spatial_size)


# --------------------------------------------------------------------------------------------------------------------
# Norms (paper §4.4 "Normalization" ablation)
# --------------------------------------------------------------------------------------------------------------------


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: normalise each sample over C, H and W together, then scale/shift per channel.

    The paper's "modified Layer Normalization" (official ``models/poolformer.py::GroupNorm``): a transformer's
    LayerNorm normalises each token over its channels only; this one pools the statistics over the whole feature
    map. The ablation (§4.4) finds it better than both channel-only LayerNorm and BatchNorm.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(1, num_channels, eps=eps)


class LayerNormChannel(nn.Module):
    """LayerNorm over the channels of each position of a ``[B, C, H, W]`` map: a transformer's LayerNorm.

    Official ``models/poolformer.py::LayerNormChannel``, the norm of the attention hybrids
    (``metaformer_pppa/ppaa_s12_224`` leave ``norm_layer`` at this default). Written out with ``mean``, ``pow`` and
    ``sqrt`` as the official code writes it, not with ``F.layer_norm`` (the same values): the README's counter,
    fvcore, charges nothing for those operations but 5 per element for a ``layer_norm`` call, so only this form is
    counted the way the paper's MACs were (:func:`lessons.measure.count_macs_fvcore`).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)  # biased variance, as LayerNorm's
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


NORMS: dict[str, NormFactory] = {"group": GroupNorm1, "layer_channel": LayerNormChannel}
HEAD_STYLES = ("official", "timm")
TIMM_HEAD_NORM_EPS = 1e-6  # timm metaformer.py: output_norm=LayerNorm2d, whose eps defaults to 1e-6

# --------------------------------------------------------------------------------------------------------------------
# The MetaFormer block (paper §3.1, Eq. 2-3, Fig. 1)
# --------------------------------------------------------------------------------------------------------------------


class MetaFormerBlock(nn.Module):
    """One MetaFormer block; the token mixer is whatever ``token_mixer(dim)`` builds (paper §3.1, Eq. 2-3).

        X = X + DropPath(LayerScale(TokenMixer(Norm(X))))
        X = X + DropPath(LayerScale(MLP(Norm(X))))

    ``Norm`` is GroupNorm1 by default, the MLP is 1x1 conv -> GELU -> 1x1 conv with ``mlp_ratio`` times more hidden
    channels (Eq. 3, :class:`lessons.layers.ConvMlp`), and LayerScale (CaiT) multiplies each residual branch by a
    learnable per-channel factor initialised at ``layer_scale_init`` (1e-5, or 1e-6 for the deeper models), which
    keeps a deep stack close to the identity at the start of training. ``layer_scale_init=None`` removes it.
    """

    def __init__(
        self,
        dim: int,
        token_mixer: TokenMixerFactory,
        mlp_ratio: float = 4.0,
        norm_layer: NormFactory = GroupNorm1,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1e-5,
    ) -> None:
        super().__init__()
        if not callable(token_mixer):
            raise TypeError(f"token_mixer must be a callable dim -> nn.Module, got {type(token_mixer).__name__}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")

        def layer_scale() -> nn.Module:
            return nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init, channel_dim=1)

        self.norm1 = norm_layer(dim)
        self.token_mixer = token_mixer(dim)
        self.layer_scale1 = layer_scale()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.layer_scale2 = layer_scale()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.layer_scale1(self.token_mixer(self.norm1(x))))  # Eq. 2: token mixing
        return x + self.drop_path2(self.layer_scale2(self.mlp(self.norm2(x))))  # Eq. 3: channel MLP


# --------------------------------------------------------------------------------------------------------------------
# Patch embeddings: the stem (paper Eq. 1, "InputEmb") and the downsampling between stages (Fig. 2; official PatchEmbed)
# --------------------------------------------------------------------------------------------------------------------


def stem_conv(in_chans: int, dim: int) -> nn.Conv2d:
    """The stem: a 7x7 conv with stride 4 and padding 2 (official ``in_patch_size=7, in_stride=4, in_pad=2``).

    Overlapping 7x7 patches every 4 pixels turn 224x224 into 56x56 tokens of ``dim`` channels; no norm after it.
    """
    return nn.Conv2d(in_chans, dim, kernel_size=7, stride=4, padding=2)


def downsample_conv(in_dim: int, out_dim: int) -> nn.Conv2d:
    """Between stages: a 3x3 conv with stride 2, padding 1 (official ``down_patch_size=3, down_stride=2, down_pad=1``).

    The same "patch embedding" as the stem at a smaller scale: it halves H and W and changes the width.
    """
    return nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)


class PositionEmbedding(nn.Module):
    """A learned position embedding added to a ``[B, C, H, W]`` map (official ``metaformer.py::AddPositionEmb``).

    The attention hybrids add it once, before their first attention stage (attention alone ignores positions;
    pooling and convs do not need it). Its size is fixed, so it ties the model to one input size. Zero at init.
    """

    def __init__(self, dim: int, spatial_size: tuple[int, int]) -> None:
        super().__init__()
        self.spatial_size = tuple(spatial_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *spatial_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_fixed_map_size(x, self.spatial_size, "the position embedding")
        return x + self.pos_embed


class MetaFormerStage(nn.Module):
    """One stage: downsample (not in stage 1: the stem did it), optional position embedding, ``depth`` blocks."""

    def __init__(
        self, downsample: nn.Module, blocks: Sequence[MetaFormerBlock], pos_embed: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.pos_embed = pos_embed if pos_embed is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_embed(self.downsample(x)))


# --------------------------------------------------------------------------------------------------------------------
# The network (paper §3.2, Table 1; official models/poolformer.py and models/metaformer.py)
# --------------------------------------------------------------------------------------------------------------------


def _four_positive_ints(label: str, values: object) -> tuple[int, int, int, int]:
    if (
        not isinstance(values, (tuple, list))
        or len(values) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        raise ValueError(f"{label} must be 4 positive ints (one per stage), got {values!r}")
    return tuple(values)  # type: ignore[return-value]


@dataclass(frozen=True)
class MetaFormerConfig:
    """A MetaFormer variant: four stages at strides 4, 8, 16, 32, each with its own token mixer.

    ``img_size`` is only needed (and then required) by parts whose size is fixed: the spatial MLP mixer and the
    position embedding. ``head_style`` says how the classifier head normalises: ``"official"`` is the official code
    (the stage norm, GroupNorm1, on the last 7x7 map, then the mean over positions); ``"timm"`` is timm's port
    (the mean first, then a channel LayerNorm with eps 1e-6 on the pooled vector). Same parameters, different
    outputs from the same weights; the ``poolformer_*`` variants, whose weights this book takes from timm, use
    ``"timm"``, the ablation models (official code only) ``"official"``.
    """

    name: str
    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]
    mixers: tuple[str, str, str, str] = ("pooling",) * 4
    mlp_ratio: float = 4.0  # paper Table 1: 4 in every stage
    pool_size: int = 3  # paper Table 1 / §4.4 (the ablation compares 3, 5, 7 and 9)
    layer_scale_init: float | None = 1e-5  # official: 1e-5 (S12, S24), 1e-6 (S36, M36, M48)
    norm: str = "group"
    pos_embed: tuple[bool, bool, bool, bool] = (False,) * 4
    img_size: int | None = None
    attn_head_dim: int = 32  # official metaformer.py Attention(head_dim=32)
    head_style: str = "official"

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", _four_positive_ints("depths", self.depths))
        object.__setattr__(self, "dims", _four_positive_ints("dims", self.dims))
        if not isinstance(self.mixers, (tuple, list)) or len(self.mixers) != 4:
            raise ValueError(f"mixers must name 4 token mixers (one per stage), got {self.mixers!r}")
        for mixer in self.mixers:
            if mixer not in TOKEN_MIXERS:
                raise ValueError(f"unknown token mixer {mixer!r}; allowed: {', '.join(map(repr, TOKEN_MIXERS))}")
        object.__setattr__(self, "mixers", tuple(self.mixers))
        object.__setattr__(self, "pos_embed", tuple(bool(p) for p in self.pos_embed))
        if len(self.pos_embed) != 4:
            raise ValueError(f"pos_embed must be 4 booleans (one per stage), got {self.pos_embed!r}")
        _check_pool_size(self.pool_size)
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if self.head_style not in HEAD_STYLES:
            raise ValueError(f"unknown head_style {self.head_style!r}; allowed: {', '.join(map(repr, HEAD_STYLES))}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; allowed: {', '.join(map(repr, NORMS))}")
        for mixer, dim in zip(self.mixers, self.dims):
            if mixer == "attention" and dim % self.attn_head_dim:
                raise ValueError(f"an attention stage's width {dim} must be a multiple of attn_head_dim "
                                 f"({self.attn_head_dim})")
        if self.img_size is not None:
            if isinstance(self.img_size, bool) or not isinstance(self.img_size, int) or self.img_size < 32:
                raise ValueError(f"img_size must be an int >= 32, got {self.img_size!r}")
        elif self.fixed_size:
            raise ValueError(
                "a spatial MLP or random-mixing mixer or a position embedding has a fixed token count: give img_size "
                "(e.g. 224)"
            )

    @property
    def fixed_size(self) -> bool:
        """Whether some part (spatial MLP, position embedding) only works at ``img_size``."""
        return "spatial_mlp" in self.mixers or "random" in self.mixers or any(self.pos_embed)

    @property
    def stage_sizes(self) -> tuple[int, int, int, int] | None:
        """Feature-map side of each stage for an ``img_size`` input (56, 28, 14, 7 at 224), or None."""
        if self.img_size is None:
            return None
        # stem 7x7 s4 p2, then 3x3 s2 p1 between stages (the official PatchEmbed sizes)
        sizes = [output_size(self.img_size, 7, 4, 2)]
        for _ in range(3):
            sizes.append(output_size(sizes[-1], 3, 2, 1))
        return tuple(sizes)  # type: ignore[return-value]


class MetaFormer(ImageClassifier):
    """MetaFormer for classification: stem, four stages of :class:`MetaFormerBlock`, norm, global mean, linear.

    PoolFormer is this network with the pooling mixer in every stage (paper Fig. 2); the ablation's models swap the
    mixer of some stages. ``forward_features`` gives the last feature map (stride 32), ``forward_intermediates`` all
    four (strides 4, 8, 16, 32, the maps the dense-prediction heads use; ``feature_info``), ``forward_head`` the
    logits.
    """

    classifier_path = "fc"

    def __init__(
        self,
        config: MetaFormerConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(config, MetaFormerConfig):
            raise TypeError(f"config must be a MetaFormerConfig, got {type(config).__name__}")
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier)")
        check_count("in_chans", in_chans)
        self.config = config
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = config.dims[-1]
        norm_layer = NORMS[config.norm]

        self.stem = stem_conv(in_chans, config.dims[0])
        # stochastic depth rising linearly with the block's index over the whole network (official basic_blocks)
        rates = iter(drop_path_rates(drop_path_rate, sum(config.depths)))
        stages = []
        for i, (depth, dim, mixer) in enumerate(zip(config.depths, config.dims, config.mixers)):
            spatial = (config.stage_sizes[i],) * 2 if config.stage_sizes else None
            make_mixer = make_token_mixer(mixer, config.pool_size, config.attn_head_dim, spatial)
            blocks = [
                MetaFormerBlock(
                    dim, make_mixer, config.mlp_ratio, norm_layer, drop=0.0, drop_path=next(rates),
                    layer_scale_init=config.layer_scale_init,
                )
                for _ in range(depth)
            ]
            downsample = nn.Identity() if i == 0 else downsample_conv(config.dims[i - 1], dim)
            pos_embed = PositionEmbedding(dim, spatial) if config.pos_embed[i] else None
            stages.append(MetaFormerStage(downsample, blocks, pos_embed))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [FeatureInfo(dim, 4 * 2**i, f"stages.{i}") for i, dim in enumerate(config.dims)]
        # The trunk is initialised before the head is built, so its weights do not depend on num_classes: a model
        # built with num_classes=0 and the same seed gives the same features as one with a classifier.
        self.apply(self._init_weights)

        if config.head_style == "official":
            self.head_norm = norm_layer(self.num_features)  # applied to the [B, C, H, W] map
        else:
            self.head_norm = nn.LayerNorm(self.num_features, eps=TIMM_HEAD_NORM_EPS)  # applied to the pooled [B, C]
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self._init_weights(self.fc)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # official code: trunc_normal(std=.02) for every Linear (cls_init_weights) and the MLP's 1x1 convs (Mlp),
        # zero biases; the stem and downsampling convs keep PyTorch's default initialisation.
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        check_image_batch(x, self.in_chans)
        if self.config.fixed_size:
            check_fixed_input_size(x, self.config.img_size, self.config.name)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each of the four stages (strides 4, 8, 16, 32; ``feature_info``)."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: image -> last feature map ``[B, dims[-1], H/32, W/32]``."""
        self._check_input(x)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Norm, global mean over H and W, dropout, linear (norm before or after the mean: ``config.head_style``)."""
        if self.config.head_style == "official":
            x = self.head_norm(x).mean(dim=(2, 3))  # official: norm the map (GroupNorm1: over C, H, W), then mean
        else:
            x = self.head_norm(x.mean(dim=(2, 3)))  # timm: mean, then LayerNorm over the C pooled values
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)


# --------------------------------------------------------------------------------------------------------------------
# Configurations (paper Table 1; official models/poolformer.py and models/metaformer.py)
# --------------------------------------------------------------------------------------------------------------------

_S_DIMS = (64, 128, 320, 512)  # S models (Table 1)
_M_DIMS = (96, 192, 384, 768)  # M models (Table 1)
_S12 = (2, 2, 6, 2)

METAFORMER_CONFIGS: dict[str, MetaFormerConfig] = {
    # PoolFormer (Table 1). Layer scale 1e-5 for S12/S24 and 1e-6 for the deeper ones (official README / timm).
    # head_style="timm": timm's port, whose weights the book loads (see MetaFormerConfig).
    "poolformer_s12": MetaFormerConfig("poolformer_s12", _S12, _S_DIMS, head_style="timm"),
    "poolformer_s24": MetaFormerConfig("poolformer_s24", (4, 4, 12, 4), _S_DIMS, head_style="timm"),
    "poolformer_s36": MetaFormerConfig(
        "poolformer_s36", (6, 6, 18, 6), _S_DIMS, layer_scale_init=1e-6, head_style="timm"
    ),
    "poolformer_m36": MetaFormerConfig(
        "poolformer_m36", (6, 6, 18, 6), _M_DIMS, layer_scale_init=1e-6, head_style="timm"
    ),
    "poolformer_m48": MetaFormerConfig(
        "poolformer_m48", (8, 8, 24, 8), _M_DIMS, layer_scale_init=1e-6, head_style="timm"
    ),
    # The §4.4 ablation's S12-sized models (official models/metaformer.py).
    "metaformer_id_s12": MetaFormerConfig("metaformer_id_s12", _S12, _S_DIMS, mixers=("identity",) * 4),
    "metaformer_pppa_s12": MetaFormerConfig(
        "metaformer_pppa_s12", _S12, _S_DIMS, mixers=("pooling", "pooling", "pooling", "attention"),
        norm="layer_channel", pos_embed=(False, False, False, True), img_size=224,
    ),
    "metaformer_ppaa_s12": MetaFormerConfig(
        "metaformer_ppaa_s12", _S12, _S_DIMS, mixers=("pooling", "pooling", "attention", "attention"),
        norm="layer_channel", pos_embed=(False, False, True, False), img_size=224,
    ),
    "metaformer_pppf_s12": MetaFormerConfig(
        "metaformer_pppf_s12", _S12, _S_DIMS, mixers=("pooling", "pooling", "pooling", "spatial_mlp"), img_size=224,
    ),
    "metaformer_ppff_s12": MetaFormerConfig(
        "metaformer_ppff_s12", _S12, _S_DIMS, mixers=("pooling", "pooling", "spatial_mlp", "spatial_mlp"),
        img_size=224,
    ),
}


def _create(name: str, img_size: int | None = None, pool_size: int | None = None,
            head_style: str | None = None, **kwargs) -> MetaFormer:
    """Build a named variant; ``img_size``, ``pool_size`` and ``head_style`` override its config."""
    config = METAFORMER_CONFIGS[name]
    overrides = {
        key: value for key, value in
        (("img_size", img_size), ("pool_size", pool_size), ("head_style", head_style))
        if value is not None
    }
    if overrides:
        config = replace(config, **overrides)
    return MetaFormer(config, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Weights from timm (timm/models/metaformer.py, class MetaFormer) -> ours
# --------------------------------------------------------------------------------------------------------------------

_TIMM_RENAMES = (
    ("stem.conv.", "stem."),  # timm wraps the stem conv in a Stem module
    (".downsample.conv.", ".downsample."),  # ... and each downsampling conv in a Downsampling module
    ("head.norm.", "head_norm."),
    ("head.fc.", "fc."),
)


def checkpoint_filter_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm ``poolformer_*`` weights to this module's names; the tensors are unchanged.

    Blocks already share timm's names (``norm1``, ``layer_scale1.scale``, ``mlp.fc1`` ...), so only the stem, the
    downsampling convs and the head move.
    """
    return rename_keys(state_dict, _TIMM_RENAMES)


register_timm_converter(
    ("poolformer_s12", "poolformer_s24", "poolformer_s36", "poolformer_m36", "poolformer_m48"), checkpoint_filter_timm
)

# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (sail-sg/poolformer: poolformer_s12.pth.tar ..., metaformer_*_s12*.pth.tar) -> ours
# --------------------------------------------------------------------------------------------------------------------


def official_network_layout(config: MetaFormerConfig) -> list[tuple[str, int]]:
    """What each entry ``network.<k>`` of the official model is, for a model built like ``config``.

    The official ``PoolFormer``/``MetaFormer`` keep one flat ``nn.ModuleList``: per stage an optional position
    embedding (``AddPositionEmb``, metaformer.py only), the stage's blocks, then the downsampling ``PatchEmbed`` to the
    next stage. So ``network.1`` is a downsampling conv in PoolFormer but ``network.4`` is a position embedding in
    ``metaformer_ppaa_s12_224``: the index means nothing without this layout.
    """
    layout = []
    for stage in range(4):
        if config.pos_embed[stage]:
            layout.append(("pos_embed", stage))
        layout.append(("blocks", stage))
        if stage < 3:
            layout.append(("downsample", stage + 1))
    return layout


_OFFICIAL_BLOCK_PARTS = r"(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"


def _official_rules(config: MetaFormerConfig) -> list[tuple[str, str]]:
    rules = [
        (r"patch_embed\.proj\.(weight|bias)", r"stem.\1"),  # the 7x7 stride-4 stem (Eq. 1)
        (r"norm\.(weight|bias)", r"head_norm.\1"),
        (r"head\.(weight|bias)", r"fc.\1"),
    ]
    for k, (kind, stage) in enumerate(official_network_layout(config)):
        ours = f"stages.{stage}"
        if kind == "pos_embed":
            rules.append((rf"network\.{k}\.pos_embed", f"{ours}.pos_embed.pos_embed"))
        elif kind == "downsample":
            rules.append((rf"network\.{k}\.proj\.(weight|bias)", rf"{ours}.downsample.\1"))
        else:
            block = rf"network\.{k}\.(\d+)\."
            rules += [
                (block + _OFFICIAL_BLOCK_PARTS, rf"{ours}.blocks.\1.\2.\3"),
                (block + r"layer_scale_([12])", rf"{ours}.blocks.\1.layer_scale\2.scale"),
                # metaformer.py's Attention (qkv without bias, proj with) and SpatialFc (no bias)
                (block + r"token_mixer\.(qkv\.weight|proj\.weight|proj\.bias)",
                 rf"{ours}.blocks.\1.token_mixer.attn.\2"),
                (block + r"token_mixer\.fc\.weight", rf"{ours}.blocks.\1.token_mixer.fc.weight"),
            ]
    return rules


@register_official_converter(MetaFormer)
def checkpoint_filter_official(state_dict: dict[str, torch.Tensor], model: MetaFormer) -> dict[str, torch.Tensor]:
    """Rename the authors' PoolFormer / MetaFormer checkpoint (sail-sg/poolformer ``models/poolformer.py``,
    ``models/metaformer.py``) to this module's names; the tensors are unchanged.

    The official head normalises the last map before pooling (``head_style="official"``); the ``poolformer_*``
    variants default to timm's head, which pools first and gives slightly different logits from the same weights
    (see :class:`MetaFormerConfig`). Build with ``head_style="official"`` to run the authors' model exactly.
    """
    return rename_by_rules(state_dict, _official_rules(model.config), f"{model.config.name} (sail-sg/poolformer)")


# --------------------------------------------------------------------------------------------------------------------
# Named variants
# --------------------------------------------------------------------------------------------------------------------


# The official pipelines (sail-sg/poolformer, timm's data config) normalise with ImageNet's mean and std; any input
# size works for the pooling and identity models (size_divisor 1); the hybrids with a spatial MLP or a position
# embedding accept only the img_size they were built for (224 by default).
_CLS = imagenet_classifier("poolformer")
_POOLFORMER = "sail-sg/poolformer models/poolformer.py::{}"
_METAFORMER = "sail-sg/poolformer models/metaformer.py::{}"


@register_model(**_CLS, official=_POOLFORMER.format("poolformer_s12"))
def poolformer_s12(**kwargs) -> MetaFormer:
    """PoolFormer-S12: layers (2, 2, 6, 2), widths (64, 128, 320, 512) (paper Table 1)."""
    return _create("poolformer_s12", **kwargs)


@register_model(**_CLS, official=_POOLFORMER.format("poolformer_s24"))
def poolformer_s24(**kwargs) -> MetaFormer:
    """PoolFormer-S24: layers (4, 4, 12, 4), widths (64, 128, 320, 512)."""
    return _create("poolformer_s24", **kwargs)


@register_model(**_CLS, official=_POOLFORMER.format("poolformer_s36"))
def poolformer_s36(**kwargs) -> MetaFormer:
    """PoolFormer-S36: layers (6, 6, 18, 6), widths (64, 128, 320, 512), layer scale 1e-6."""
    return _create("poolformer_s36", **kwargs)


@register_model(**_CLS, official=_POOLFORMER.format("poolformer_m36"))
def poolformer_m36(**kwargs) -> MetaFormer:
    """PoolFormer-M36: layers (6, 6, 18, 6), widths (96, 192, 384, 768), layer scale 1e-6."""
    return _create("poolformer_m36", **kwargs)


@register_model(**_CLS, official=_POOLFORMER.format("poolformer_m48"))
def poolformer_m48(**kwargs) -> MetaFormer:
    """PoolFormer-M48: layers (8, 8, 24, 8), widths (96, 192, 384, 768), layer scale 1e-6."""
    return _create("poolformer_m48", **kwargs)


@register_model(**_CLS, official=_METAFORMER.format("metaformer_id_s12"))
def metaformer_id_s12(**kwargs) -> MetaFormer:
    """The S12 MetaFormer with identity token mixers: no mixing between positions at all (§4.4 ablation)."""
    return _create("metaformer_id_s12", **kwargs)


@register_model(**_CLS, official=_METAFORMER.format("metaformer_pppa_s12_224"))
def metaformer_pppa_s12(**kwargs) -> MetaFormer:
    """Hybrid S12: pooling in stages 1-3, attention in stage 4 (+ position embedding), for 224x224 inputs."""
    return _create("metaformer_pppa_s12", **kwargs)


@register_model(**_CLS, official=_METAFORMER.format("metaformer_ppaa_s12_224"))
def metaformer_ppaa_s12(**kwargs) -> MetaFormer:
    """Hybrid S12: pooling in stages 1-2, attention in 3-4 (+ position embedding at stage 3), for 224x224 inputs."""
    return _create("metaformer_ppaa_s12", **kwargs)


@register_model(**_CLS, official=_METAFORMER.format("metaformer_pppf_s12_224"))
def metaformer_pppf_s12(**kwargs) -> MetaFormer:
    """Hybrid S12: pooling in stages 1-3, a spatial MLP in stage 4, for 224x224 inputs."""
    return _create("metaformer_pppf_s12", **kwargs)


@register_model(**_CLS, official=_METAFORMER.format("metaformer_ppff_s12_224"))
def metaformer_ppff_s12(**kwargs) -> MetaFormer:
    """Hybrid S12: pooling in stages 1-2, spatial MLPs in stages 3-4, for 224x224 inputs."""
    return _create("metaformer_ppff_s12", **kwargs)
