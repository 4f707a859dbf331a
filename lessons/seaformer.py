"""SeaFormer (Wan et al., ICLR 2023, arXiv 2301.13156): squeeze-enhanced axial attention for mobile segmentation.

Full self-attention over an H x W map costs (HW)^2; SeaFormer's answer is to *squeeze* the map first. The queries,
keys and values are averaged along each row (a column vector of length H) and along each column (a row vector of
length W); attention runs on those two short sequences, so its cost grows like H^2 + W^2 instead of (HW)^2. The
result, broadcast back over the map, is global along both axes. A depthwise-conv "detail" branch keeps the local
information the squeeze throws away, and a hard-sigmoid gate built from the global branch scales it.

The network is TopFormer's recipe (a MobileNetV2 pyramid with a BatchNorm transformer on the coarse end) with SEA
attention in place of full attention and a "light head" that multiplies the 1/8 detail map by gates computed from
the coarse, global maps. Configurations follow the official code (fudan-zvg/SeaFormer):
``seaformer-seg/mmseg/models/backbones/seaformer.py``, ``decode_heads/light_head.py``,
``local_configs/seaformer/seaformer_{tiny,small,base,large}.py`` and ``seaformer-cls/seaformer.py``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register_official_converter, rename_by_rules
from .contract import FeatureInfo, ImageClassifier, Segmenter
from .layers import (
    ActLayer, BNTransformerBlock, ConvBN, ConvNormAct, HardSigmoid, check_count, check_image_batch, drop_path_rates,
    init_mmseg_head, init_mobile_weights, mobilenetv2_block, resize_to, row_stages, stack_rows,
)
from .registry import ade20k_segmenter, imagenet_classifier, register_model

# FX symbolic tracing records the input check as one call (run on real tensors) instead of tracing into it.
torch.fx.wrap("check_image_batch")
torch.fx.wrap("resize_to")  # its size may be a traced shape, which FX cannot turn into a tuple

# --------------------------------------------------------------------------------------------------------------------
# The pieces of SEA attention (the paper's "squeeze-enhanced Axial attention"; official ``Sea_Attention``)
# --------------------------------------------------------------------------------------------------------------------


def squeeze_rows(x: torch.Tensor) -> torch.Tensor:
    """Squeeze along the width: [B, C, H, W] -> [B, C, H], the mean of each row (the paper's q_(h)).

    One token per row remains, and it summarises the whole row, so attention between these H tokens is attention
    between whole rows ("vertical" global context).
    """
    return x.mean(dim=-1)


def squeeze_columns(x: torch.Tensor) -> torch.Tensor:
    """Squeeze along the height: [B, C, H, W] -> [B, C, W], the mean of each column (the paper's q_(v))."""
    return x.mean(dim=-2)


def check_squeezed_axis(x: torch.Tensor, dim: int) -> None:
    """Raise unless ``x`` is a squeezed axis ``[B, dim, N]``."""
    if x.ndim != 3 or x.shape[1] != dim:
        raise ValueError(f"expected a squeezed axis [B, {dim}, N], got shape {tuple(x.shape)}")


torch.fx.wrap("check_squeezed_axis")


class SqueezeAxialPositionalEmbedding(nn.Module):
    """A learnable positional embedding for a squeezed axis, [1, dim, 16], linearly resized to the axis length.

    Source: official ``SqueezeAxialPositionalEmbedding`` (length 16, ``F.interpolate(mode='linear',
    align_corners=False)``). Squeezing averages positions away; this puts back *where* along the axis a row or column
    is, and linear interpolation lets the same 16 numbers per channel serve a 16-pixel axis (a 512 image at 1/32) or
    any other length.
    """

    def __init__(self, dim: int, length: int = 16) -> None:
        super().__init__()
        if dim < 1 or length < 1:
            raise ValueError(f"dim and length must be positive, got dim={dim}, length={length}")
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))  # official init: standard normal

    def embedding(self, length: int) -> torch.Tensor:
        """The embedding resized to ``length`` positions: [1, dim, length]."""
        return F.interpolate(self.pos_embed, size=length, mode="linear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_squeezed_axis(x, self.pos_embed.shape[1])
        return x + self.embedding(x.shape[-1])


def _check_branches(detail: bool, axial: bool) -> None:
    """The SEA block's two ablation switches: bools, and at least one branch left."""
    if not isinstance(detail, bool) or not isinstance(axial, bool):
        raise TypeError(f"the SEA branch switches must be bools, got detail={detail!r}, axial={axial!r}")
    if not (detail or axial):
        raise ValueError("a SEA block needs at least one branch: detail enhancement or squeeze-axial attention")


def check_axial_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> None:
    """Raise unless q, k ``[B, h*dk, N]`` and v ``[B, h*dv, N]`` fit together and split into ``num_heads`` heads."""
    batch, qk_chs, length = q.shape
    if k.shape != q.shape or v.shape[0] != batch or v.shape[-1] != length:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not match")
    if qk_chs % num_heads or v.shape[1] % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the q/k channels {qk_chs} and v channels {v.shape[1]}")


torch.fx.wrap("check_axial_qkv")


def squeeze_axial_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float | None = None
) -> torch.Tensor:
    """Multi-head attention along one squeezed axis: q, k [B, h*dk, N], v [B, h*dv, N] -> [B, h*dv, N].

    softmax(q^T k * scale) v per head, with ``scale = dk ** -0.5`` by default (official
    ``self.scale = key_dim ** -0.5``, applied to both axes). Channels are laid out head-major, as the official reshape
    ``[B, h, d, N]`` assumes. N is H (rows) or W (columns), so the attention matrix is only N x N.
    """
    check_axial_qkv(q, k, v, num_heads)
    batch, qk_chs, length = q.shape
    key_dim = qk_chs // num_heads
    scale = key_dim**-0.5 if scale is None else scale
    q = q.reshape(batch, num_heads, key_dim, length).transpose(-2, -1)  # [B, h, N, dk]
    k = k.reshape(batch, num_heads, key_dim, length)  # [B, h, dk, N]
    v = v.reshape(batch, num_heads, -1, length).transpose(-2, -1)  # [B, h, N, dv]
    weights = (q @ k * scale).softmax(dim=-1)  # [B, h, N, N]
    out = weights @ v  # [B, h, N, dv]
    return out.transpose(-2, -1).reshape(batch, -1, length)


class SeaAttentionParts(NamedTuple):
    """The intermediate results of :class:`SeaAttention`, for teaching and testing (``None``: a switched-off
    branch of the ablations)."""

    detail: torch.Tensor | None  # the detail-enhancement branch, [B, C, H, W]
    row: torch.Tensor | None  # attention between rows after its projection, [B, h*dv, H, 1]
    column: torch.Tensor | None  # attention between columns after its projection, [B, h*dv, 1, W]
    gate: torch.Tensor | None  # hard_sigmoid(proj(v + row + column)), [B, C, H, W]
    context: torch.Tensor | None = None  # proj(v + row + column) before the gate: the squeeze-axial output


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention (the paper's SEA attention and its figure of the SeaFormer layer; official
    ``Sea_Attention``).

    1. q, k = ConvBN 1x1 (C -> h*dk); v = ConvBN 1x1 (C -> h*dv), dv = ``attn_ratio`` * dk.
    2. Detail enhancement: ConvBN(PW) o act o ConvBN(DW 3x3) on concat(q, k, v) -> C channels.
    3. Row branch: squeeze q, k, v along the width, add the positional embeddings to q and k, attend between the H
       rows, then act -> ConvBN 1x1 (BN weight 0). Column branch: the same along the height, between the W columns.
    4. out = hard_sigmoid(ConvBN(act(v + row + column))) * detail; row and column broadcast over the map.

    Ablation switches (the paper's study of the SEA block's components, §4.3): ``detail=False`` drops the
    detail-enhancement branch, and the block returns the squeeze-axial context ``proj(v + row + column)`` itself
    (no gate left to multiply); ``axial=False`` drops the squeeze-axial branch (positional embeddings, row and column
    attention, their projections and the gate), and the block returns the detail branch alone. Defaults: both on.

    ``stride=2`` is PP-MobileSeg's *strided* SEA attention (StrideFormer, paper §2.1): a depthwise 3x3 stride-2 conv
    (with bias) + BN first, attention at half resolution (a quarter of the cost), and a bilinear upsample back.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        attn_ratio: float = 2.0,
        act_layer: ActLayer = nn.ReLU6,
        stride: int = 1,
        pos_embed_length: int = 16,
        detail: bool = True,
        axial: bool = True,
    ) -> None:
        super().__init__()
        for label, value in (("dim", dim), ("key_dim", key_dim), ("num_heads", num_heads)):
            check_count(label, value)
        _check_branches(detail, axial)
        self.has_detail, self.has_axial = detail, axial
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 (SeaFormer) or 2 (StrideFormer), got {stride!r}")
        value_dim = int(attn_ratio * key_dim)
        if value_dim < 1:
            raise ValueError(f"attn_ratio * key_dim must be at least 1, got {attn_ratio} * {key_dim}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5  # official Sea_Attention; TopFormer's code omits it, SeaFormer's applies it
        qk_chs, v_chs = num_heads * key_dim, num_heads * value_dim
        self.stride = stride
        # strided attention: official StrideFormer Sea_Attention.stride_conv (Conv2D keeps Paddle's default bias)
        self.downsample = (
            nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1, groups=dim, bias=True), nn.BatchNorm2d(dim))
            if stride == 2 else None
        )
        self.to_q = ConvBN(dim, qk_chs)
        self.to_k = ConvBN(dim, qk_chs)
        self.to_v = ConvBN(dim, v_chs)
        # detail enhancement on the concatenation (2*h*dk + h*dv channels; = 2*h*dv in the official configs)
        detail_chs = 2 * qk_chs + v_chs
        if detail:
            self.detail_dw = ConvBN(detail_chs, detail_chs, 3, groups=detail_chs)
            self.detail_act = act_layer()
            self.detail_pw = ConvBN(detail_chs, dim)
        if axial:
            self.pos_embed_row_q = SqueezeAxialPositionalEmbedding(qk_chs, pos_embed_length)
            self.pos_embed_row_k = SqueezeAxialPositionalEmbedding(qk_chs, pos_embed_length)
            self.pos_embed_col_q = SqueezeAxialPositionalEmbedding(qk_chs, pos_embed_length)
            self.pos_embed_col_k = SqueezeAxialPositionalEmbedding(qk_chs, pos_embed_length)
            # the projections after attention start at zero (BN weight 0, official bn_weight_init=0)
            self.proj_row = nn.Sequential(act_layer(), ConvBN(v_chs, v_chs, bn_weight_init=0.0))
            self.proj_col = nn.Sequential(act_layer(), ConvBN(v_chs, v_chs, bn_weight_init=0.0))
            self.proj = nn.Sequential(act_layer(), ConvBN(v_chs, dim, bn_weight_init=0.0))
            self.gate = HardSigmoid()  # ReLU6(x + 3) / 6, the official h_sigmoid; the paper's figure says "sigmoid"

    def parts(self, x: torch.Tensor) -> SeaAttentionParts:
        """Everything but the final product (and, when strided, the upsample): see :class:`SeaAttentionParts`."""
        if self.downsample is not None:
            x = self.downsample(x)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = None
        if self.has_detail:
            detail = self.detail_pw(self.detail_act(self.detail_dw(torch.cat([q, k, v], dim=1))))
        if not self.has_axial:
            return SeaAttentionParts(detail, None, None, None, None)

        row = squeeze_axial_attention(
            self.pos_embed_row_q(squeeze_rows(q)), self.pos_embed_row_k(squeeze_rows(k)), squeeze_rows(v),
            self.num_heads, self.scale,
        )  # [B, h*dv, H]
        column = squeeze_axial_attention(
            self.pos_embed_col_q(squeeze_columns(q)), self.pos_embed_col_k(squeeze_columns(k)),
            squeeze_columns(v), self.num_heads, self.scale,
        )  # [B, h*dv, W]
        row = self.proj_row(row.unsqueeze(-1))  # [B, h*dv, H, 1]
        column = self.proj_col(column.unsqueeze(-2))  # [B, h*dv, 1, W]
        # broadcasting adds the row context to every column and the column context to every row
        context = self.proj(v + (row + column))
        return SeaAttentionParts(detail, row, column, self.gate(context), context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.parts(x)
        if parts.detail is None:  # ablation: the squeeze-axial context alone
            out = parts.context
        elif parts.gate is None:  # ablation: the detail-enhancement branch alone
            out = parts.detail
        else:
            out = parts.gate * parts.detail
        if self.downsample is not None:
            out = resize_to(out, x.shape[-2:])
        return out


class SeaFormerBlock(BNTransformerBlock):
    """One SeaFormer layer (the paper's SeaFormer layer, official ``Block``): x + SEA(x), then x + MLP(x).

    BatchNorm throughout, no LayerNorm. The residual body and its MLP (1x1 ConvBN -> DW 3x3 -> ReLU6 -> 1x1 ConvBN)
    are TopFormer's, shared in :class:`lessons.layers.BNTransformerBlock`; only the attention is SeaFormer's.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        attn_ratio: float = 2.0,
        act_layer: ActLayer = nn.ReLU6,
        drop_path: float = 0.0,
        attn_stride: int = 1,
        detail: bool = True,
        axial: bool = True,
    ) -> None:
        attn = SeaAttention(dim, key_dim, num_heads, attn_ratio, act_layer, stride=attn_stride, detail=detail,
                            axial=axial)
        super().__init__(attn, dim, mlp_ratio, act_layer, drop_path)


# --------------------------------------------------------------------------------------------------------------------
# The network (official SeaFormer backbone; configs local_configs/seaformer/*.py and seaformer-cls/seaformer.py)
# --------------------------------------------------------------------------------------------------------------------

MV2Row = tuple[int, int, int, int]  # kernel k, expansion t, output channels c, stride s (official cfg rows)


@dataclass(frozen=True)
class SeaFormerConfig:
    """A SeaFormer variant, as the official configs write it.

    ``stages`` are the MobileNetV2 stages cfg1..cfg5 (the stem is a 3x3 stride-2 conv before cfg1); the SEA
    transformer stages follow the *last* ``len(depths)`` MobileNetV2 stages, with widths ``embed_dims``.
    ``head_*`` describe the LightHead: one fusion block per transformer stage, widths ``head_embed_dims``.
    ``sea_detail`` / ``sea_axial``: the SEA block ablation switches (see :class:`SeaAttention`); both on in every
    official variant.
    """

    name: str
    stages: tuple[tuple[MV2Row, ...], ...]
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    key_dims: tuple[int, ...]
    num_heads: int
    head_embed_dims: tuple[int, ...]
    mlp_ratios: tuple[float, ...] = (2.0, 4.0)  # SeaFormer defaults; Large overrides
    attn_ratio: float = 2.0  # dv = 2 dk (official attn_ratios=2)
    stem_channels: int = 16
    detail_stage: int = 1  # cfg2's output (1/8) is the head's detail map (official `if i == 1`)
    sea_detail: bool = True  # ablation: False drops every SEA block's detail-enhancement branch
    sea_axial: bool = True  # ablation: False drops every SEA block's squeeze-axial branch

    def __post_init__(self) -> None:
        _check_branches(self.sea_detail, self.sea_axial)
        n_trans = len(self.depths)
        if not self.stages or any(not stage for stage in self.stages):
            raise ValueError("a SeaFormer needs at least one MobileNetV2 stage, each with at least one row")
        if not (len(self.embed_dims) == len(self.key_dims) == len(self.mlp_ratios) == n_trans):
            raise ValueError(
                f"embed_dims {self.embed_dims}, key_dims {self.key_dims} and mlp_ratios {self.mlp_ratios} need one "
                f"entry per transformer stage ({n_trans})"
            )
        if n_trans > len(self.stages) - self.detail_stage - 1:
            raise ValueError(f"{n_trans} transformer stages do not fit after the detail stage {self.detail_stage}")
        for i, dim in enumerate(self.embed_dims):
            out_chs = self.stages[len(self.stages) - n_trans + i][-1][2]
            if dim != out_chs:
                raise ValueError(f"embed_dims[{i}]={dim} must equal the channels of the stage it follows ({out_chs})")
        if len(self.head_embed_dims) != n_trans:
            raise ValueError(f"head_embed_dims needs one width per transformer stage ({n_trans})")

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of each MobileNetV2 stage."""
        return tuple(stage[-1][2] for stage in self.stages)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Output stride of each MobileNetV2 stage: the stem's 2 times the strides of every row so far."""
        strides, stride = [], 2
        for stage in self.stages:
            for row in stage:
                stride *= row[3]
            strides.append(stride)
        return tuple(strides)

    @property
    def total_stride(self) -> int:
        """The stride of the coarsest feature map (64 for every official variant)."""
        return self.stage_strides[-1]


SEAFORMER_CONFIGS: dict[str, SeaFormerConfig] = {
    "tiny": SeaFormerConfig(
        "tiny",
        stages=(
            ((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)),
            ((5, 3, 32, 2), (5, 3, 32, 1)),
            ((3, 3, 64, 2), (3, 3, 64, 1)),
            ((5, 3, 128, 2),),
            ((3, 6, 160, 2),),
        ),
        embed_dims=(128, 160), depths=(2, 2), key_dims=(16, 24), num_heads=4, head_embed_dims=(64, 96),
    ),
    "small": SeaFormerConfig(
        "small",
        stages=(
            ((3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)),
            ((5, 3, 48, 2), (5, 3, 48, 1)),
            ((3, 3, 96, 2), (3, 3, 96, 1)),
            ((5, 4, 160, 2),),
            ((3, 6, 192, 2),),
        ),
        embed_dims=(160, 192), depths=(3, 3), key_dims=(16, 24), num_heads=6, head_embed_dims=(96, 128),
    ),
    "base": SeaFormerConfig(
        "base",
        stages=(
            ((3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)),
            ((5, 3, 64, 2), (5, 3, 64, 1)),
            ((3, 3, 128, 2), (3, 3, 128, 1)),
            ((5, 4, 192, 2),),
            ((3, 6, 256, 2),),
        ),
        embed_dims=(192, 256), depths=(4, 4), key_dims=(16, 24), num_heads=8, head_embed_dims=(128, 160),
    ),
    "large": SeaFormerConfig(
        "large",
        stages=(
            ((3, 3, 32, 1), (3, 4, 64, 2), (3, 4, 64, 1)),
            ((5, 4, 128, 2), (5, 4, 128, 1)),
            ((3, 4, 192, 2), (3, 4, 192, 1)),
            ((5, 4, 256, 2),),
            ((3, 6, 320, 2),),
        ),
        embed_dims=(192, 256, 320), depths=(3, 3, 3), key_dims=(16, 20, 24), num_heads=8,
        head_embed_dims=(128, 160, 192), mlp_ratios=(2.0, 4.0, 6.0), stem_channels=32,
    ),
}


def mv2_stage(rows: Sequence[MV2Row], in_chs: int, act_layer: ActLayer = nn.ReLU) -> nn.Sequential:
    """A stack of MobileNetV2 blocks from official ``[k, t, c, s]`` rows (``StackedMV2Block``, ReLU activations)."""
    return nn.Sequential(*stack_rows(rows, in_chs, functools.partial(mobilenetv2_block, act_layer=act_layer)))


def sea_transformer_stages(
    config, act_layer: ActLayer, drop_path_rate: float, attn_stride: int = 1
) -> nn.ModuleList:
    """One stack of :class:`SeaFormerBlock` per entry of ``config.embed_dims`` (official ``SeaFormer.__init__``).

    Shared by SeaFormer and PP-MobileSeg's StrideFormer, which differ only in the convolutional stages around these
    stacks and in ``attn_stride`` (StrideFormer attends at half resolution). Drop-path rates rise linearly within
    each stack, as the official ``linspace(0, rate, depth)``.
    """
    return nn.ModuleList(
        nn.Sequential(*[
            SeaFormerBlock(dim, key_dim, config.num_heads, mlp_ratio, config.attn_ratio, act_layer, rate,
                           attn_stride=attn_stride, detail=getattr(config, "sea_detail", True),
                           axial=getattr(config, "sea_axial", True))
            for rate in drop_path_rates(drop_path_rate, depth)
        ])
        for dim, depth, key_dim, mlp_ratio in zip(config.embed_dims, config.depths, config.key_dims, config.mlp_ratios)
    )


def run_pyramid(
    x: torch.Tensor, stem: nn.Module, stages: nn.ModuleList, transformers: nn.ModuleList, detail_stage: int
) -> list[torch.Tensor]:
    """Stem, then each conv stage; the last ``len(transformers)`` stages are followed by their SEA stack.

    Returns [the detail map (output of ``detail_stage``), the output of every SEA stack] (official ``forward``).
    """
    first_transformer_stage = len(stages) - len(transformers)
    outs = []
    x = stem(x)
    for i, stage in enumerate(stages):
        x = stage(x)
        if i == detail_stage:
            outs.append(x)
        if i >= first_transformer_stage:
            x = transformers[i - first_transformer_stage](x)
            outs.append(x)
    return outs


class SeaFormer(ImageClassifier):
    """The SeaFormer backbone, with the official ImageNet classifier (average pool + linear) when ``num_classes``.

    stem (3x3 s2 conv, ReLU) -> MobileNetV2 stages cfg1..cfg5 (strides 1/4, 1/8, 1/16, 1/32, 1/64) -> SEA
    transformer stages after the last ``len(depths)`` of them (1/32 and 1/64; Large also 1/16).
    :meth:`forward_intermediates` returns what the segmentation head reads (official ``SeaFormer.forward`` of
    seaformer-seg): [the 1/8 detail map, the output of every transformer stage], described by ``feature_info``.
    """

    classifier_path = "fc"

    def __init__(
        self, config: SeaFormerConfig, num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
        act_layer: ActLayer = nn.ReLU6,
    ) -> None:
        super().__init__()
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier)")
        check_count("in_chans", in_chans)
        self.config = config
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.total_stride = config.total_stride  # the smallest input side the network accepts
        self.stem = ConvNormAct(in_chans, config.stem_channels, 3, stride=2, act_layer=nn.ReLU)
        self.stages, self.num_features = row_stages(config.stages, config.stem_channels, mobilenetv2_block)
        self.transformers = sea_transformer_stages(config, act_layer, drop_path_rate)
        first = len(config.stages) - len(config.depths)
        strides = config.stage_strides
        self.feature_info = [
            FeatureInfo(config.stage_channels[config.detail_stage], strides[config.detail_stage],
                        f"stages.{config.detail_stage}"),
            *(FeatureInfo(dim, strides[first + i], f"transformers.{i}") for i, dim in enumerate(config.embed_dims)),
        ]
        init_mobile_weights(self)
        # seaformer-cls/seaformer.py: AdaptiveAvgPool2d(1) then Linear(channels[-1], classes); nothing in between.
        # Built after the trunk's init, so a seed gives the same trunk with or without a classifier.
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        init_mobile_weights(self.fc)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[detail map at 1/8, output of each transformer stage] (official seaformer-seg ``SeaFormer.forward``)."""
        check_image_batch(x, self.in_chans, self.total_stride)
        return run_pyramid(x, self.stem, self.stages, self.transformers, self.config.detail_stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (1/64)."""
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)


class FusionBlock(nn.Module):
    """LightHead's fusion (the paper's light segmentation head, official ``Fusion_block``).

    out = BN(Conv1x1(local)) * up(gate(BN(Conv1x1(global)))).

    The coarse global map becomes a gate in [0, 1] (hard-sigmoid in SeaFormer's code), is upsampled to the detail
    map's size and multiplies it. Unlike TopFormer's injection there is no additive term.
    """

    def __init__(self, local_chs: int, global_chs: int, embed_dim: int, gate: ActLayer = HardSigmoid) -> None:
        super().__init__()
        self.local_embedding = ConvBN(local_chs, embed_dim)
        self.global_act = ConvBN(global_chs, embed_dim)
        self.gate = gate()

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        gate = self.gate(self.global_act(x_global))
        return self.local_embedding(x_local) * resize_to(gate, x_local.shape[-2:])


def check_head_features(features: Sequence[torch.Tensor], in_channels: Sequence[int]) -> None:
    """Raise unless ``features`` are one map per entry of ``in_channels``, each with that many channels."""
    if len(features) != len(in_channels):
        raise ValueError(f"LightHead expects {len(in_channels)} feature maps, got {len(features)}")
    for i, (feature, chs) in enumerate(zip(features, in_channels)):
        if feature.shape[1] != chs:
            raise ValueError(f"feature {i} has {feature.shape[1]} channels, LightHead expects {chs}")


torch.fx.wrap("check_head_features")


class LightHead(nn.Module):
    """SeaFormer's light segmentation head (official ``LightHead``).

    Fuse the global maps into the 1/8 detail map one after another (coarse context gates fine detail), then a 1x1
    conv + BN + ReLU (depthwise for every official variant, ``is_dw=True``), dropout 0.1 and a 1x1 classifier.
    Logits come out at 1/8 of the input.
    """

    def __init__(
        self, in_channels: Sequence[int], embed_dims: Sequence[int], num_classes: int, is_dw: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(embed_dims) + 1:
            raise ValueError(
                f"LightHead needs one input per fusion plus the detail map: {len(in_channels)} inputs for "
                f"{len(embed_dims)} fusions"
            )
        check_count("num_classes", num_classes)
        self.in_channels = tuple(in_channels)
        self.fusions = nn.ModuleList()
        local_chs = in_channels[0]
        for global_chs, embed_dim in zip(in_channels[1:], embed_dims):
            self.fusions.append(FusionBlock(local_chs, global_chs, embed_dim))
            local_chs = embed_dim
        self.channels = local_chs
        self.linear_fuse = ConvNormAct(local_chs, local_chs, 1, groups=local_chs if is_dw else 1, act_layer=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(local_chs, num_classes, 1)
        init_mmseg_head(self)  # mmseg initialises decode heads itself: the official LightHead inherits that

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        check_head_features(features, self.in_channels)
        x = features[0]
        for fusion, x_global in zip(self.fusions, features[1:]):
            x = fusion(x, x_global)
        return self.classifier(self.dropout(self.linear_fuse(x)))


class SeaFormerSeg(Segmenter):
    """SeaFormer for semantic segmentation: the backbone (no classifier) + :class:`LightHead` (ADE20K: 150 classes).

    ``forward_features`` is the backbone's :meth:`SeaFormer.forward_intermediates` (the 1/8 detail map and every
    transformer output); ``forward_head`` fuses them into logits at 1/8; ``forward`` resizes those (bilinear) to the
    input size, as mmseg's ``EncoderDecoder`` does at inference.
    """

    def __init__(
        self, config: SeaFormerConfig, num_classes: int = 150, in_chans: int = 3, drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.backbone = SeaFormer(config, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate)
        self.feature_info = [info._replace(module=f"backbone.{info.module}") for info in self.backbone.feature_info]
        self.logits_stride = self.feature_info[0].stride  # the head works at the detail map's resolution
        self.head = LightHead([info.channels for info in self.feature_info], config.head_embed_dims, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[detail map at 1/8, output of each transformer stage]: the maps the head reads."""
        return self.backbone.forward_intermediates(x)

    def forward_head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at 1/8 of the input, [B, num_classes, H/8, W/8]."""
        return self.head(features)


def _config(variant: str) -> SeaFormerConfig:
    if variant not in SEAFORMER_CONFIGS:
        raise ValueError(f"unknown SeaFormer variant {variant!r}; choose from {sorted(SEAFORMER_CONFIGS)}")
    return SEAFORMER_CONFIGS[variant]


def create_seaformer_seg(variant: str, **kwargs) -> SeaFormerSeg:
    """SeaFormer-``variant`` with the LightHead (``tiny``, ``small``, ``base``, ``large``)."""
    return SeaFormerSeg(_config(variant), **kwargs)


def create_seaformer_cls(variant: str, **kwargs) -> SeaFormer:
    """SeaFormer-``variant`` for ImageNet classification."""
    return SeaFormer(_config(variant), **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (fudan-zvg/SeaFormer): mmseg segmentation checkpoints and seaformer-cls ImageNet ones
# --------------------------------------------------------------------------------------------------------------------


def _conv_bn_rules(official: str, ours: str, conv: str = "c") -> list[tuple[str, str]]:
    """Rules for one conv + BN pair: the official ``Conv2d_BN`` names its conv ``c`` (mmcv's ``ConvModule``:
    ``conv``), ours is ``conv``; the BN keeps its entries (weight, bias, running statistics)."""
    official = re.escape(official)
    return [
        (rf"{official}\.{conv}\.weight", f"{ours}.conv.weight"),
        (rf"{official}\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)", rf"{ours}.bn.\1"),
    ]


# Sea_Attention / Block / Mlp name -> ours, inside one transformer block (official seaformer.py, both repos alike)
_SEA_BLOCK_CONV_BN = {
    "attn.to_q": "attn.to_q", "attn.to_k": "attn.to_k", "attn.to_v": "attn.to_v",
    "attn.dwconv": "attn.detail_dw", "attn.pwconv": "attn.detail_pw",  # the detail-enhancement branch
    "attn.proj_encode_row.1": "attn.proj_row.1", "attn.proj_encode_column.1": "attn.proj_col.1",
    "attn.proj.1": "attn.proj.1",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_SEA_BLOCK_POS_EMBED = {
    "pos_emb_rowq": "pos_embed_row_q", "pos_emb_rowk": "pos_embed_row_k",
    "pos_emb_columnq": "pos_embed_col_q", "pos_emb_columnk": "pos_embed_col_k",
}


def seaformer_backbone_rules(backbone: SeaFormer, official: str = "", ours: str = "") -> list[tuple[str, str]]:
    """Renaming rules from the official ``SeaFormer`` backbone's keys (prefix ``official``) to ``backbone``'s
    (prefix ``ours``), built from ``backbone``'s own configuration, one literal rule per tensor role.

    Official layout: ``smb{i}`` is MobileNetV2 stage i (1-based; ``smb1.stem_block.0`` is the stem), its rows are
    ``layer{j}`` with an ``nn.Sequential`` ``conv`` of [expand, act, depthwise, act, project] (indices 0, 2, 4), or
    [depthwise, act, project] (0, 2) when the row's expansion is 1; ``trans{i}.transformer_blocks.{j}`` are the SEA
    blocks. Which index is which conv is read from *our* block (does it have an expansion conv?), so a checkpoint of
    a variant with other expansions fails on a name, not later on a shape.
    """
    rules = _conv_bn_rules(f"{official}smb1.stem_block.0", f"{ours}stem")
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage):
            has_expand = isinstance(block.expand, ConvNormAct)
            roles = ("expand", "depthwise", "project") if has_expand else ("depthwise", "project")
            for index, role in zip((0, 2, 4), roles):
                theirs = f"{official}smb{i + 1}.layer{j + 1}.conv.{index}"
                rules += _conv_bn_rules(theirs, f"{ours}stages.{i}.{j}.{role}")
    for i, stack in enumerate(backbone.transformers):
        for j in range(len(stack)):
            theirs, mine = f"{official}trans{i + 1}.transformer_blocks.{j}", f"{ours}transformers.{i}.{j}"
            for name, our_name in _SEA_BLOCK_CONV_BN.items():
                rules += _conv_bn_rules(f"{theirs}.{name}", f"{mine}.{our_name}")
            for name, our_name in _SEA_BLOCK_POS_EMBED.items():
                rules.append((re.escape(f"{theirs}.attn.{name}.pos_embed"), f"{mine}.attn.{our_name}.pos_embed"))
            rules.append((rf"{re.escape(theirs)}\.mlp\.dwconv\.(weight|bias)", rf"{mine}.mlp.dwconv.\1"))
    return rules


def _official_name(model: nn.Module) -> str:
    info = getattr(model, "info", None)
    return f"{info.name} ({info.official})" if info is not None and info.official else f"SeaFormer-{model.config.name}"


@register_official_converter(SeaFormerSeg)
def convert_seaformer_seg_checkpoint(state_dict: dict[str, torch.Tensor], model: SeaFormerSeg) -> dict:
    """An official seaformer-seg (mmseg) checkpoint -> ``model``'s state dict.

    mmseg wraps the model as ``EncoderDecoder``: ``backbone.*`` is the SeaFormer backbone, ``decode_head.*`` the
    LightHead, whose ``fuse{i}`` (1-based) are our ``head.fusions.{i-1}`` (``local_embedding`` is the detail map's
    1x1 ConvModule, ``global_act`` the gate's), ``linear_fuse`` the depthwise 1x1 ConvModule and ``conv_seg`` the
    classifier. Only names change; every tensor keeps its layout.
    """
    if any(key.startswith(("smb1.", "linear.")) for key in state_dict):
        raise ValueError(
            "this is an ImageNet (seaformer-cls) checkpoint: load it into a classifier such as "
            f"seaformer_{model.config.name}_cls, not into a segmentation model"
        )
    rules = seaformer_backbone_rules(model.backbone, "backbone.", "backbone.")
    for i in range(len(model.head.fusions)):
        for branch in ("local_embedding", "global_act"):
            rules += _conv_bn_rules(f"decode_head.fuse{i + 1}.{branch}", f"head.fusions.{i}.{branch}", conv="conv")
    rules += _conv_bn_rules("decode_head.linear_fuse", "head.linear_fuse", conv="conv")
    rules.append((r"decode_head\.conv_seg\.(weight|bias)", r"head.classifier.\1"))
    return rename_by_rules(state_dict, rules, _official_name(model))


@register_official_converter(SeaFormer)
def convert_seaformer_cls_checkpoint(state_dict: dict[str, torch.Tensor], model: SeaFormer) -> dict:
    """An official seaformer-cls (timm) ImageNet checkpoint -> ``model``'s state dict.

    The classifier is the same backbone with no prefix (``smb*``, ``trans*``) plus ``linear`` (our ``fc``); the
    pooling has no parameters. Only names change.
    """
    if any(key.startswith(("backbone.", "decode_head.")) for key in state_dict):
        raise ValueError(
            "this is a segmentation (seaformer-seg, mmseg) checkpoint: load it into a segmentation model such as "
            f"seaformer_{model.config.name}, not into an ImageNet classifier"
        )
    rules = seaformer_backbone_rules(model, "", "")
    rules.append((r"linear\.(weight|bias)", r"fc.\1"))
    return rename_by_rules(state_dict, rules, _official_name(model))


# --------------------------------------------------------------------------------------------------------------------
# Named variants
# --------------------------------------------------------------------------------------------------------------------


# Normalisation: seaformer-seg's local_configs/_base_/datasets/ade20k.py has img_norm_cfg mean=[123.675, 116.28,
# 103.53], std=[58.395, 57.12, 57.375] on 0..255 RGB (to_rgb=True): ImageNet's mean and std. seaformer-cls trains with
# timm 0.3.2's train.py, and its models set no default_cfg, so timm's ImageNet defaults apply there too.
# size_divisor 1: the network runs on any side >= 64 (its total stride); the official test pipeline's
# ResizeToMultiple(size_divisor=32) is a preprocessing choice, not something the network needs.
_SEG = ade20k_segmenter("seaformer")
_CLS = imagenet_classifier("seaformer")
_SEG_CONFIG = "fudan-zvg/SeaFormer seaformer-seg/local_configs/seaformer/seaformer_{}_512x512_160k_2x8_ade20k.py"
_CLS_MODEL = "fudan-zvg/SeaFormer seaformer-cls/seaformer.py SeaFormer_{}"


@register_model(**_SEG, official=_SEG_CONFIG.format("tiny"))
def seaformer_tiny(**kwargs) -> SeaFormerSeg:
    """SeaFormer-Tiny + LightHead for ADE20K."""
    return create_seaformer_seg("tiny", **kwargs)


@register_model(**_SEG, official=_SEG_CONFIG.format("small"))
def seaformer_small(**kwargs) -> SeaFormerSeg:
    """SeaFormer-Small + LightHead for ADE20K."""
    return create_seaformer_seg("small", **kwargs)


@register_model(**_SEG, official=_SEG_CONFIG.format("base"))
def seaformer_base(**kwargs) -> SeaFormerSeg:
    """SeaFormer-Base + LightHead for ADE20K."""
    return create_seaformer_seg("base", **kwargs)


@register_model(**_SEG, official=_SEG_CONFIG.format("large"))
def seaformer_large(**kwargs) -> SeaFormerSeg:
    """SeaFormer-Large + LightHead for ADE20K (a third transformer stage, at 1/16)."""
    return create_seaformer_seg("large", **kwargs)


@register_model(**_CLS, official=_CLS_MODEL.format("T"))
def seaformer_tiny_cls(**kwargs) -> SeaFormer:
    """SeaFormer-Tiny ImageNet classifier."""
    return create_seaformer_cls("tiny", **kwargs)


@register_model(**_CLS, official=_CLS_MODEL.format("S"))
def seaformer_small_cls(**kwargs) -> SeaFormer:
    """SeaFormer-Small ImageNet classifier."""
    return create_seaformer_cls("small", **kwargs)


@register_model(**_CLS, official=_CLS_MODEL.format("B"))
def seaformer_base_cls(**kwargs) -> SeaFormer:
    """SeaFormer-Base ImageNet classifier."""
    return create_seaformer_cls("base", **kwargs)


@register_model(**_CLS, official=_CLS_MODEL.format("L"))
def seaformer_large_cls(**kwargs) -> SeaFormer:
    """SeaFormer-Large ImageNet classifier."""
    return create_seaformer_cls("large", **kwargs)
