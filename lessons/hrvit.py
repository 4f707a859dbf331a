"""HRViT (Gu et al., "Multi-Scale High-Resolution Vision Transformer for Semantic Segmentation", CVPR 2022,
arXiv 2111.01236): a vision transformer that keeps a high-resolution branch alive from start to end.

A sequential ViT halves its resolution stage after stage, so fine detail has to be recovered by the decoder. HRViT
takes HRNet's layout instead: branches at 1/4, 1/8, 1/16 and 1/32 of the input run *in parallel*, a new
lower-resolution branch is added at modules 2, 3 and 5, and before every module a fusion layer lets each branch
read from all the others. To afford transformers at 1/4 resolution, every block is made cheap:

- HRViTAttn, cross-shaped window attention (half the heads on horizontal stripes, half on vertical ones, as in
  CSWin) whose key *is* its value (one projection less), plus a depthwise-conv path on V, a Hardswish, a BatchNorm;
- a diversity-enhanced shortcut (DES): a nonlinear shortcut whose C x C projection is Kronecker-factored into
  p x p and C/p x C/p matrices;
- MixCFN, a feed-forward network with 3x3 and 5x5 depthwise convolutions on the two halves of its channels;
- a patch embedding made of a 1x1 conv and a depthwise 3x3 conv, and a dense all-to-all fusion layer.

Configurations and every detail follow the official code (facebookresearch/HRViT, ``models/hrvit.py`` for
ImageNet, ``segmentation/mmseg/models/backbones/hrvit.py`` and ``decode_heads/segformer_head.py`` for ADE20K,
``segmentation/configs/hrvit/*.py``); the code here is this book's own. The config dataclass carries switches for
the paper's ablation study: independent key and value, an overlapping conv patch embedding,
sparse fusion, no parallel conv path, no extra Hardswish/BN, a plain MLP instead of MixCFN, no DES -- and one of
this book's own: no 1/4 branch (``high_res_branch=False``, for the segmenter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import StateDict, register_official_converter, rename_by_rules
from .contract import FeatureInfo, ImageClassifier, Segmenter
from .layers import ConvNormAct, DropPath, Mlp, check_count, check_image_batch, drop_path_rates, resize_to
from .measure import MmcvRules
from .registry import ade20k_segmenter, imagenet_classifier, register_model

# FX symbolic tracing records the input check as one call (run on real tensors) instead of tracing into it.
torch.fx.wrap("check_image_batch")
torch.fx.wrap("resize_to")  # its size may be a traced shape, which FX cannot turn into a tuple

Size = tuple[int, int]

# The official code adds -100 (not -inf) to the attention logits of padded positions (``_generate_attn_mask``).
# Padded keys are zero vectors, so their logit is exactly -100 and their softmax weight exp(-100) ~ 4e-44 is below
# float32's resolution next to 1: the result equals a hard mask. We keep the official constant.
PAD_LOGIT = -100.0

# --------------------------------------------------------------------------------------------------------------------
# Cross-shaped window attention with shared key and value (paper: HRViTAttn; official ``HRViTAttention``)
# --------------------------------------------------------------------------------------------------------------------


def stripe_heads(channels: int, head_dim: int) -> tuple[int, int]:
    """(number of heads, channels per head) for one half (horizontal or vertical) of the attention channels.

    Official rule (``_cross_shaped_attention``): a half narrower than ``head_dim`` is one head of all its channels
    (HRViT-b1's 32-channel branch: halves of 16 channels, one head of 16); otherwise it holds
    ``channels // head_dim`` heads of ``head_dim`` channels.
    """
    if channels < head_dim:
        return 1, channels
    if channels % head_dim:
        raise ValueError(
            f"a stripe half of {channels} channels cannot be split into heads of {head_dim} channels; "
            f"use a branch width whose half is a multiple of head_dim (or smaller than it)"
        )
    return channels // head_dim, head_dim


class StripeLayout(NamedTuple):
    """How one direction's map ``[B, H, W, ...]`` is cut into stripes (sizes symbolic under torch.export).

    ``rows`` are the map's rows for horizontal stripes (its columns for vertical ones), ``cols`` the tokens across
    one row of a stripe; ``count`` stripes of ``window`` rows, the last completed with ``pad`` zero rows.
    Computed once per direction, so an exported graph computes the stripe count and padding once, too.
    """

    batch: int
    rows: int
    cols: int
    window: int
    count: int
    pad: int
    padded: bool  # whether the graph pads and masks (see stripe_layout)
    horizontal: bool

    @property
    def tokens(self) -> int:
        """Tokens in one stripe: window x cols."""
        return self.window * self.cols


def stripe_layout(batch: int, size: Size, window: int, horizontal: bool) -> StripeLayout:
    """The :class:`StripeLayout` of a ``size = (H, W)`` map for stripes of ``window`` rows (columns if vertical).

    Whether to pad: eagerly, only when the rows are not a multiple of ``window``. A stripe of one row never needs
    padding (decided from the config, so no exported graph pads the 1/4 branch). Otherwise, under torch.export,
    torch.compile with dynamic shapes and torch.jit.trace, the padding and the mask are *always* in the graph: for a
    map that needs none they pad nothing and add zeros, the same numbers. A branch on ``pad > 0`` would tie the graph
    to the example's size: torch.export added a guard, and a program exported at 256 x 320 refused 224 x 224, whose
    1/16 map of 14 rows tiles into stripes of 7.
    """
    height, width = size
    rows, cols = (height, width) if horizontal else (width, height)
    count = (rows + window - 1) // window
    pad = count * window - rows
    padded = window > 1 and (not isinstance(pad, int) or pad > 0 or torch.jit.is_tracing())
    return StripeLayout(batch, rows, cols, window, count, pad, padded, horizontal)


def split_into_stripes(maps: torch.Tensor, layout: StripeLayout, heads: int) -> torch.Tensor:
    """Maps ``[B, H, W, P, c]`` of P projections (q and v, or q, k and v) -> ``[P, B*stripes*heads, tokens, c/heads]``.

    Horizontal stripes are ``window`` rows by the full width, tokens row after row; vertical stripes are ``window``
    columns by the full height, tokens column after column: the horizontal stripes of the transposed map, as the
    official code lays them out. One padding and one copy serve all P projections and every head.

    The number of stripes never stands alone as a dimension, always merged with the batch (``B*stripes``): under
    torch.export a dimension that may be 1 (one stripe: the 1/32 map of a 224-pixel input) makes the contiguity
    checks of every tensor that holds it add a guard that it is not 1, which would refuse such inputs. For the same
    reason ``[B, rows, ...]`` becomes ``[B*stripes, window, ...]`` by a merge then a split, never in one reshape.
    """
    batch, rows, cols, window, count, pad = layout[:6]
    parts, chs = maps.shape[-2:]
    if not layout.horizontal:
        maps = maps.transpose(1, 2)  # [B, W, H, P, c]: vertical stripes are the horizontal stripes of the transpose
    if layout.padded:
        maps = F.pad(maps, (0, 0, 0, 0, 0, 0, 0, pad))  # zero rows at the bottom (columns at the right if vertical)
    maps = maps.reshape(batch * count * window, cols, parts, chs)
    # [B*stripes, window, cols, P, heads, dim] -> [P, B*stripes, heads, window, cols, dim]: one attention per row
    maps = maps.view(batch * count, window, cols, parts, heads, chs // heads).permute(3, 0, 4, 1, 2, 5)
    return maps.reshape(parts, batch * count * heads, layout.tokens, chs // heads)


def merge_stripes(out: torch.Tensor, layout: StripeLayout, heads: int) -> torch.Tensor:
    """The inverse of :func:`split_into_stripes` for one projection: ``[B*stripes*heads, tokens, dim]`` -> map
    ``[B, H, W, heads*dim]``, the padded rows (columns) cropped.

    The crop is an ``index_select`` of the real rows: a slice of the padded map would be a view whose contiguity
    depends on whether there is padding, a question torch.export answers with a guard.
    """
    batch, rows, cols, window, count, pad = layout[:6]
    dim = out.shape[-1]
    # [B*stripes, heads, window, cols, dim] -> [B*stripes, window, cols, heads, dim] -> [B, stripes*window, cols, c]
    out = out.view(batch * count, heads, window, cols, dim).permute(0, 2, 3, 1, 4)
    out = out.reshape(batch * count * window, cols, heads * dim).view(batch, count * window, cols, heads * dim)
    if layout.padded:
        out = out.index_select(1, torch.arange(rows, device=out.device))
    return out if layout.horizontal else out.transpose(1, 2)


def padded_key_logits(layout: StripeLayout, heads: int, like: torch.Tensor) -> torch.Tensor:
    """``[B*stripes*heads, 1, tokens]``: ``PAD_LOGIT`` for every key in a padded row, 0 for the others, in the layout
    of the attention logits ``[B*stripes*heads, tokens, tokens]``.

    Key j of stripe s sits at s * tokens + j in the padded map (row after row), so it is padding exactly when that
    index reaches ``rows * cols``: only in the last stripe. Computed from two ``arange`` and no reshape, and added to
    the logits without reshaping them: a view of the logits, whose sizes are squares of the stripe's, was the
    costliest shape question torch.export asked here.
    """
    batch, rows, cols, _, count, _ = layout[:6]
    image_stripe = torch.arange(batch * count * heads, device=like.device) // heads  # B*stripes*heads, heads inner
    stripe = image_stripe - image_stripe // count * count  # "% count", which the ONNX exporter cannot take symbolic
    key = torch.arange(layout.tokens, device=like.device)
    padding = stripe.view(-1, 1, 1) * layout.tokens + key >= rows * cols
    return padding.to(like.dtype) * PAD_LOGIT


def attend_in_stripes(maps: torch.Tensor, window: int, head_dim: int, horizontal: bool = True) -> torch.Tensor:
    """Self-attention inside stripes on maps ``[B, H, W, P, c]`` of P = 2 (q and the shared key-value) or P = 3
    (q, k, v) projections of one channel half; the result is a map ``[B, H, W, c]`` (HRViTAttn).

    softmax(q k^T / sqrt(d) + mask) v within every stripe and head, d = the head's width. When the rows (columns)
    are not a multiple of ``window``, the map is zero-padded at the bottom (right), keys in padded rows get the logit
    ``PAD_LOGIT``, and the padded outputs are cropped: the official behaviour, equal to letting the last stripe be
    narrower. The official mask also covers the padded queries, whose outputs are cropped: masking the keys only
    changes no real output.
    """
    batch, height, width, parts, chs = maps.shape
    if parts not in (2, 3):
        raise ValueError(f"expected 2 (q, shared k = v) or 3 (q, k, v) projections, got {parts}")
    heads, dim = stripe_heads(chs, head_dim)
    layout = stripe_layout(batch, (height, width), window, horizontal)
    stripes = split_into_stripes(maps, layout, heads)
    q, k, v = stripes[0], stripes[1], stripes[-1]  # P = 2: k is v
    logits = torch.bmm(q * dim**-0.5, k.transpose(1, 2))
    if layout.padded:
        logits = logits + padded_key_logits(layout, heads, logits)
    out = torch.bmm(logits.softmax(dim=-1), v)
    return merge_stripes(out, layout, heads)


def stripe_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: Size, window: int, head_dim: int,
    horizontal: bool = True,
) -> torch.Tensor:
    """Self-attention inside stripes: each token attends to every token of its stripe (HRViTAttn), on tokens.

    ``q, k, v``: tokens ``[B, H*W, c]`` of one channel half (``k`` may be the very tensor ``v``: the shared key).
    Horizontal stripes are ``window`` rows by the full width; vertical stripes are ``window`` columns by the full
    height. :func:`attend_in_stripes` does the work on the maps; :class:`CrossShapedAttention` calls it directly on
    its projection, which needs no stacking.
    """
    batch, tokens, chs = q.shape
    height, width = size
    if tokens != height * width:
        raise ValueError(f"{tokens} tokens do not form a {height}x{width} map")
    projections = (q, v) if k is v else (q, k, v)
    maps = torch.stack(projections, dim=-2).view(batch, height, width, len(projections), chs)
    return attend_in_stripes(maps, window, head_dim, horizontal).reshape(batch, tokens, chs)


# FX symbolic tracing keeps the stripe attention as one call: how many heads and whether to pad are decided in
# Python from the input's shape, which FX's symbolic shapes cannot answer.
torch.fx.wrap("stripe_attention")
torch.fx.wrap("attend_in_stripes")


class CrossShapedAttention(nn.Module):
    """HRViTAttn, the paper's augmented cross-shaped local self-attention (official ``HRViTAttention``).

    Tokens ``[B, H*W, C]`` in and out.
    q, v = Linear(C -> 2C)(x) and **k = v**: one projection fewer than q/k/v attention ("sharing key-value").
    The first C/2 channels attend in horizontal stripes of ``window`` rows, the other C/2 in vertical stripes of
    ``window`` columns; the two results are concatenated. In parallel, Hardswish -> depthwise 3x3 conv on V adds a
    local path; then Hardswish -> Linear -> BatchNorm. The BN's scale and shift start at zero, so a new block's
    attention branch outputs exactly zero.

    Switches for the ablations: ``shared_kv=False`` projects an independent key (Linear C -> 3C);
    ``parallel_conv=False`` drops the conv path; ``extra_act_bn=False`` drops the Hardswish and the BatchNorm.
    """

    def __init__(
        self, dim: int, head_dim: int, window: int, shared_kv: bool = True, parallel_conv: bool = True,
        extra_act_bn: bool = True, proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even positive int (half the channels per stripe direction), got {dim!r}")
        check_count("head_dim", head_dim)
        check_count("window (stripe width)", window)
        stripe_heads(dim // 2, head_dim)  # raises if a half cannot be split into heads
        self.dim, self.head_dim, self.window, self.shared_kv = dim, head_dim, window, shared_kv
        # Official: ``to_qkv = Linear(in_dim, 2 * dim)`` -- q and v only.
        self.qkv = nn.Linear(dim, (2 if shared_kv else 3) * dim)
        self.parallel_conv = nn.Sequential(
            nn.Hardswish(), nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # depthwise, with bias (official)
        ) if parallel_conv else None
        self.act = nn.Hardswish() if extra_act_bn else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.norm = nn.BatchNorm1d(dim) if extra_act_bn else None
        if self.norm is not None:  # official: attn_bn weight and bias constant 0
            nn.init.zeros_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of tokens ``x``; with shared key-value, k is the very tensor v."""
        if self.shared_kv:
            q, v = self.qkv(x).chunk(2, dim=-1)
            return q, v, v
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return q, k, v

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        batch, tokens, _ = x.shape
        height, width = size
        qkv = self.qkv(x)
        # [B, H, W, projection (q, v or q, k, v), direction, C/2]: channels [0, C/2) of every projection attend in
        # horizontal stripes, [C/2, C) in vertical ones. Each direction takes its maps of all projections at once.
        maps = qkv.view(batch, height, width, -1, 2, self.dim // 2)
        horizontal = attend_in_stripes(maps[..., 0, :], self.window, self.head_dim, horizontal=True)
        vertical = attend_in_stripes(maps[..., 1, :], self.window, self.head_dim, horizontal=False)
        out = torch.cat([horizontal, vertical], dim=-1).view(batch, tokens, self.dim)
        if self.parallel_conv is not None:  # "embedded inverted residual" path on V: [B, H, W, 2, C/2] -> [B, C, H, W]
            v_map = maps[:, :, :, -1].permute(0, 3, 4, 1, 2).reshape(batch, self.dim, height, width)
            out = out + self.parallel_conv(v_map).flatten(2).transpose(1, 2)
        out = self.proj_drop(self.proj(self.act(out)))
        if self.norm is not None:  # BatchNorm1d over all B*N tokens
            out = self.norm(out.reshape(batch * tokens, self.dim)).reshape(batch, tokens, self.dim)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, head_dim={self.head_dim}, window={self.window}, shared_kv={self.shared_kv}"


# --------------------------------------------------------------------------------------------------------------------
# Diversity-enhanced shortcut (paper: DES; official ``DES``)
# --------------------------------------------------------------------------------------------------------------------


def kronecker_factor(dim: int) -> int:
    """The right factor p of the DES projection: p = 2^(e - e//2) with e = floor(log2(dim)) (official ``_decompose``).

    64 -> p = 8 (and 64 / p = 8); 128 -> 16 (8); 48 -> 8 (6); 240 -> 16 (15). ``dim`` must be even and divisible by p.
    """
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"the DES needs an even feature dimension, got {dim!r}")
    e = int(math.log2(dim))
    p = 2 ** (e - e // 2)
    if dim % p:
        raise ValueError(f"dim={dim} is not divisible by its Kronecker factor p={p}; the DES cannot reshape it")
    return p


class DiversityEnhancedShortcut(nn.Module):
    """DES: a nonlinear shortcut whose C x C projection is factored as a Kronecker product (official ``DES``).

    A token x in R^C is viewed as a (C/p) x p matrix X (channel c sits in row c // p, column c % p). The shortcut
    applies Linear(p -> p) to every row, a GELU, Linear(C/p -> C/p) to every column, and flattens back. Without the
    GELU this is the linear map whose matrix is the Kronecker product W_left (x) W_right: a dense C x C map costs C^2
    parameters and multiply-adds per token, this one p^2 + (C/p)^2 (plus biases) -- 128 instead of 4096 for C = 64.
    The GELU makes the shortcut nonlinear, which the paper credits with more diverse features.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or in_dim
        self.p = kronecker_factor(min(in_dim, out_dim))
        if in_dim % self.p or out_dim % self.p:
            raise ValueError(f"in_dim={in_dim} and out_dim={out_dim} must be multiples of p={self.p}")
        self.k_in, self.k_out = in_dim // self.p, out_dim // self.p
        self.proj_right = nn.Linear(self.p, self.p)  # mixes within each group of p channels
        self.act = nn.GELU()
        self.proj_left = nn.Linear(self.k_in, self.k_out)  # mixes across the C/p groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(-1, (self.k_in, self.p))  # channel c = group * p + position
        x = self.act(self.proj_right(x)).transpose(-1, -2)  # [..., p, C/p]
        return self.proj_left(x).transpose(-1, -2).flatten(-2)


# --------------------------------------------------------------------------------------------------------------------
# Mixed-scale convolutional feed-forward network (paper: MixCFN; official ``MixCFN``, ``MixConv2d``)
# --------------------------------------------------------------------------------------------------------------------


class MixConv(nn.Module):
    """Depthwise 3x3 conv on the first half of the channels, depthwise 5x5 on the second (MixConv, Tan & Le 2019)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 2 or channels % 2:
            raise ValueError(f"MixConv splits its channels in two halves; channels must be even, got {channels!r}")
        half = channels // 2
        self.conv3 = nn.Conv2d(half, half, 3, padding=1, groups=half)
        self.conv5 = nn.Conv2d(half, half, 5, padding=2, groups=half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x3, x5 = x.chunk(2, dim=1)
        return torch.cat([self.conv3(x3), self.conv5(x5)], dim=1)


class MixCFN(nn.Module):
    """MixCFN (official ``MixCFN``): Linear(C -> rC) -> MixConv (DW 3x3 || DW 5x5) -> GELU -> Linear(rC -> C) on tokens.

    The two kernel sizes give each token a multi-scale local neighbourhood inside the feed-forward network, which
    also supplies the positional information HRViT gets without position embeddings.
    """

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.conv = MixConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        batch, tokens, _ = x.shape
        x = self.fc1(x)
        x = x.transpose(1, 2).reshape(batch, -1, *size)  # tokens -> map for the convolutions
        x = self.act(self.conv(x)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(x)))


class TokenMlp(Mlp):
    """The plain MLP (``lessons.layers.Mlp``) with MixCFN's call signature: the "no MixCFN" ablation."""

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:  # noqa: ARG002 -- size unused: no convolution
        return super().forward(x)


# --------------------------------------------------------------------------------------------------------------------
# The HRViT block (official ``HRViTBlock``)
# --------------------------------------------------------------------------------------------------------------------


class HRViTBlock(nn.Module):
    """x = x + DropPath(HRViTAttn(LN(x)) + DES(x)); x = x + DropPath(MixCFN(LN(x))) on tokens ``[B, H*W, C]``.

    Note the DES reads the block's input *before* the LayerNorm, as the official code does.
    """

    def __init__(
        self, dim: int, head_dim: int, window: int, mlp_ratio: float, drop_path: float = 0.0,
        shared_kv: bool = True, parallel_conv: bool = True, extra_act_bn: bool = True, mix_cfn: bool = True,
        des: bool = True, proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = CrossShapedAttention(dim, head_dim, window, shared_kv, parallel_conv, extra_act_bn, proj_drop)
        self.des = DiversityEnhancedShortcut(dim) if des else None
        self.ffn_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = MixCFN(dim, hidden) if mix_cfn else TokenMlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        branch = self.attn(self.attn_norm(x), size)
        if self.des is not None:
            branch = branch + self.des(x)
        x = x + self.drop_path(branch)
        return x + self.drop_path(self.ffn(self.ffn_norm(x), size))


# --------------------------------------------------------------------------------------------------------------------
# Patch embeddings (paper: efficient patch embedding; official ``HRViTPatchEmbed``) and the stem (``HRViTStem``)
# --------------------------------------------------------------------------------------------------------------------


class EfficientPatchEmbed(nn.Module):
    """Conv 1x1 (C_in -> C) -> depthwise 3x3 conv (stride 1) -> LayerNorm; map ``[B, C_in, H, W]`` -> tokens.

    The paper's efficient patch embedding: the pointwise + depthwise pair costs C_in*C + 9C weights where a dense
    3x3 "overlapping" patch embedding costs 9*C_in*C. Resolution is kept: branches change resolution only in the
    fusion layers.
    """

    def __init__(self, in_chs: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chs, dim, 1), nn.Conv2d(dim, dim, 3, padding=1, groups=dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Size]:
        x = self.proj(x)
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size


class OverlapPatchEmbed(EfficientPatchEmbed):
    """The ablation's "convolution-based overlapped patch embedding": a dense 3x3 conv + LayerNorm.

    Our reading of the ablation: the same 3x3 receptive field as the efficient embedding, without factoring it into
    pointwise and depthwise convolutions (SegFormer's overlapped patch embedding at stride 1).
    """

    def __init__(self, in_chs: int, dim: int) -> None:
        super().__init__(in_chs, dim)
        self.proj = nn.Conv2d(in_chs, dim, 3, padding=1)


class HRViTStem(nn.Sequential):
    """Two [Conv 3x3 stride 2 -> BN -> ReLU] to 1/4 resolution: C_in -> C/2 -> C (official ``HRViTStem``).

    The official convs keep their bias although a BN follows; we keep it too so parameter counts match.
    """

    def __init__(self, in_chs: int, out_chs: int = 64) -> None:
        super().__init__(
            ConvNormAct(in_chs, out_chs // 2, 3, stride=2, bias=True),
            ConvNormAct(out_chs // 2, out_chs, 3, stride=2, bias=True),
        )


# --------------------------------------------------------------------------------------------------------------------
# Cross-resolution fusion (paper: fusion layer; official ``HRViTFusionBlock``)
# --------------------------------------------------------------------------------------------------------------------


def fusion_path(in_chs: int, out_chs: int, src: int, dst: int) -> nn.Module:
    """How branch ``src`` (resolution 1/(4*2^src)) reaches branch ``dst``.

    Same branch: identity. Downward (src < dst, factor s = 2^(dst-src)): depthwise conv k = s+1, stride s,
    padding s//2 -> BN -> Conv 1x1 -> BN. Upward: Conv 1x1 -> BN -> nearest-neighbour upsampling by s.
    """
    if src == dst:
        return nn.Identity()
    if src < dst:
        s = 2 ** (dst - src)
        return nn.Sequential(
            nn.Conv2d(in_chs, in_chs, s + 1, stride=s, padding=s // 2, groups=in_chs, bias=False),
            nn.BatchNorm2d(in_chs),
            nn.Conv2d(in_chs, out_chs, 1),  # official: bias=True before the BN
            nn.BatchNorm2d(out_chs),
        )
    s = 2 ** (src - dst)
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1), nn.BatchNorm2d(out_chs), nn.Upsample(scale_factor=s))


class FusionLayer(nn.Module):
    """out_i = GELU(sum_j f_ij(x_j)): every output branch reads every input branch (dense).

    ``out_channels`` may be one longer than ``in_channels``: the new, lower-resolution branch a stage adds is built
    by the same rule from the existing branches. ``dense=False`` is the ablation's sparse fusion; the paper does not
    spell it out in text we could read, and we take it as exchange between neighbouring resolutions only
    (|i - j| <= 1; HRNet itself fuses densely).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], dense: bool = True) -> None:
        super().__init__()
        in_channels, out_channels = tuple(in_channels), tuple(out_channels)
        if len(out_channels) not in (len(in_channels), len(in_channels) + 1):
            raise ValueError(
                f"a fusion layer keeps the branches or adds one: {len(in_channels)} inputs cannot give "
                f"{len(out_channels)} outputs"
            )
        if out_channels[: len(in_channels)] != in_channels:
            raise ValueError(f"existing branches keep their widths: {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels, self.dense = in_channels, out_channels, dense
        self.paths = nn.ModuleList(
            nn.ModuleDict({
                str(j): fusion_path(cin, cout, j, i)
                for j, cin in enumerate(in_channels) if dense or abs(i - j) <= 1
            })
            for i, cout in enumerate(out_channels)
        )
        self.act = nn.GELU()

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} branches, got {len(xs)}")
        outs = []
        for paths in self.paths:
            total = None
            for j, path in paths.items():
                y = path(xs[int(j)])
                total = y if total is None else total + y
            outs.append(self.act(total))
        return outs


# --------------------------------------------------------------------------------------------------------------------
# A multi-branch stage (official ``HRViTStage``)
# --------------------------------------------------------------------------------------------------------------------


class HRViTStage(nn.Module):
    """Per branch: patch embedding -> ``depths[i]`` HRViT blocks -> LayerNorm; maps in, maps out.

    Branches never talk to each other inside a stage; that is the fusion layer's job.
    """

    def __init__(
        self, in_channels: Sequence[int], channels: Sequence[int], depths: Sequence[int], head_dim: int,
        windows: Sequence[int], mlp_ratios: Sequence[float], drop_path: Sequence[float] = (),
        overlap_patch_embed: bool = False, **block_options,
    ) -> None:
        super().__init__()
        embed = OverlapPatchEmbed if overlap_patch_embed else EfficientPatchEmbed
        self.patch_embed = nn.ModuleList(embed(cin, c) for cin, c in zip(in_channels, channels))
        rates = list(drop_path) or [0.0] * max(depths)
        self.branches = nn.ModuleList(
            nn.ModuleList(
                HRViTBlock(c, head_dim, windows[i], mlp_ratios[i], rates[j], **block_options) for j in range(depth)
            )
            for i, (c, depth) in enumerate(zip(channels, depths))
        )
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in channels)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for x, embed, blocks, norm in zip(xs, self.patch_embed, self.branches, self.norms):
            tokens, size = embed(x)
            for block in blocks:
                tokens = block(tokens, size)
            tokens = norm(tokens)
            outs.append(tokens.transpose(1, 2).reshape(x.shape[0], -1, *size))
        return outs


# --------------------------------------------------------------------------------------------------------------------
# The configuration and the trunk
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HRViTConfig:
    """An HRViT variant (official ``HRViT_b*_224`` / ``hrvit_b*``) plus the ablation switches.

    ``depths[k][i]`` is the number of blocks of branch i in module k; module k has ``len(depths[k])`` branches,
    each at 1/(4*2^i) of the input with ``channels[i]`` channels. Defaults are the paper's design; each switch
    turned the other way is one ablation row.
    """

    name: str
    channels: tuple[int, ...]  # width per branch at 1/4, 1/8, 1/16, 1/32
    depths: tuple[tuple[int, ...], ...]  # blocks per branch, one tuple per module (6 in b1/b2/b3)
    head_dim: int  # heads of a branch = channels / head_dim
    mlp_ratios: tuple[float, ...]  # MixCFN expansion per branch
    windows: tuple[int, ...] = (1, 2, 7, 7)  # stripe width per branch (official ws_list)
    stem_channels: int = 64
    shared_kv: bool = True  # False: independent key projection
    overlap_patch_embed: bool = False  # True: dense 3x3 conv patch embedding
    dense_fusion: bool = True  # False: neighbour-only (sparse) fusion
    parallel_conv: bool = True  # False: no depthwise-conv path on V
    extra_act_bn: bool = True  # False: no Hardswish / BatchNorm in the attention
    mix_cfn: bool = True  # False: plain MLP feed-forward network
    des: bool = True  # False: no diversity-enhanced shortcut
    high_res_branch: bool = True  # False: no 1/4 branch; the stem's map goes down to 1/8, the head predicts at 1/8

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not isinstance(self.high_res_branch, bool):
            raise ValueError(f"high_res_branch must be True or False, got {self.high_res_branch!r}")
        if not self.high_res_branch and n < 2:
            raise ValueError("without the 1/4 branch (high_res_branch=False) the model needs a coarser branch: "
                             f"give at least two channels, got {self.channels!r}")
        for label, values in (("channels", self.channels), ("windows", self.windows)):
            if not values or not all(isinstance(v, int) and v > 0 for v in values):
                raise ValueError(f"{label} must be positive ints, got {values!r}")
        if not self.mlp_ratios or not all(r > 0 for r in self.mlp_ratios):
            raise ValueError(f"mlp_ratios must be positive numbers, got {self.mlp_ratios!r}")
        if len(self.windows) != n or len(self.mlp_ratios) != n:
            raise ValueError(
                f"one window and one mlp_ratio per branch: {n} channels but {len(self.windows)} windows and "
                f"{len(self.mlp_ratios)} mlp_ratios"
            )
        check_count("head_dim", self.head_dim)
        if not self.depths:
            raise ValueError("depths must list at least one module")
        previous = 1
        for k, module in enumerate(self.depths):
            if not module or not all(isinstance(d, int) and d >= 0 for d in module):
                raise ValueError(f"depths[{k}] must be non-negative ints, got {module!r}")
            if len(module) > n:
                raise ValueError(f"depths[{k}] has {len(module)} branches but only {n} channels are given")
            if k == 0 and len(module) != 1:
                raise ValueError(f"the first module has the one 1/4 branch the stem makes, got {module!r}")
            if len(module) - previous not in (0, 1):
                raise ValueError(f"a module keeps the branches or adds one: depths[{k}]={module!r} after {previous}")
            previous = len(module)
        if previous != n:
            raise ValueError(f"the last module has {previous} branches but {n} channels are given")
        for c, ratio in zip(self.channels, self.mlp_ratios):
            if c % 2:
                raise ValueError(f"branch width {c} must be even: half the channels go to each stripe direction")
            stripe_heads(c // 2, self.head_dim)
            if self.des:
                kronecker_factor(c)
            if self.mix_cfn and int(c * ratio) % 2:
                raise ValueError(f"MixCFN hidden width int({c} * {ratio}) must be even (two kernel halves)")

    @property
    def num_branches(self) -> int:
        return len(self.channels)

    def branch_channels(self, module: int) -> tuple[int, ...]:
        """Widths of the branches of module ``module`` (0-based)."""
        return self.channels[: len(self.depths[module])]

    @property
    def first_branch(self) -> int:
        """Index of the finest branch the model builds: 0 (the 1/4 branch), or 1 (1/8) with ``high_res_branch=False``.

        Without the 1/4 branch, each module keeps its other branches (a module left with none, like the first,
        goes), the stem's 1/4 map reaches the 1/8 branch through the fusion layer's downward path, and the
        SegFormer head reads the 1/8, 1/16 and 1/32 maps: logits at 1/8. This is this book's ablation, not the
        paper's: the paper keeps the 1/4 branch in every model.
        """
        return 0 if self.high_res_branch else 1


class StemToCoarser(nn.Module):
    """The no-1/4-branch ablation's first fusion (``high_res_branch=False``): the stem's 1/4 map goes straight to the
    branch ``level`` octaves coarser by the fusion layer's own downward path (:func:`fusion_path`: depthwise conv,
    BN, 1x1 conv, BN) and GELU -- what a fusion layer does to make a new branch, with the stem as its only input."""

    def __init__(self, in_chs: int, out_chs: int, level: int = 1) -> None:
        super().__init__()
        self.path = fusion_path(in_chs, out_chs, 0, level)
        self.act = nn.GELU()

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != 1:
            raise ValueError(f"expected the stem's one map, got {len(xs)}")
        return [self.act(self.path(xs[0]))]


class HRViTModule(nn.Module):
    """One column of the architecture: a fusion layer, then a multi-branch stage (official: the consecutive
    ``HRViTFusionBlock`` and ``HRViTStage`` in ``HRViT.features``). A list of branch maps in, one out."""

    def __init__(self, fusion: FusionLayer, stage: HRViTStage) -> None:
        super().__init__()
        self.fusion = fusion
        self.stage = stage

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.stage(self.fusion(xs))


class HRViTBackbone(nn.Module):
    """Stem, then per module a fusion layer and a multi-branch stage (official ``HRViT.features``).

    Returns the feature maps of every branch: strides 4, 8, 16, 32. Input sides must be multiples of 32 so that
    upsampling a coarse branch lands exactly on a finer one in the fusion layers (the official code needs the
    same and fails with a shape mismatch otherwise); stripe windows that do not tile a map are padded.
    """

    def __init__(self, config: HRViTConfig, in_chans: int = 3, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        check_count("in_chans", in_chans)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.config, self.in_chans = config, in_chans
        self.reduction = 4 * 2 ** (config.num_branches - 1)
        self.stem = HRViTStem(in_chans, config.stem_channels)
        # The branches built: all of them, or (high_res_branch=False) all but the 1/4 one, in every module.
        first = config.first_branch
        all_channels, windows, mlp_ratios = config.channels[first:], config.windows[first:], config.mlp_ratios[first:]
        module_depths = [d[first:] for d in config.depths if len(d) > first]
        # Stochastic depth rises linearly over the deepest branch of each module (official: sum of max(blocks)).
        rates = drop_path_rates(drop_path_rate, sum(max(d) for d in module_depths))
        options = dict(
            shared_kv=config.shared_kv, parallel_conv=config.parallel_conv, extra_act_bn=config.extra_act_bn,
            mix_cfn=config.mix_cfn, des=config.des,
        )
        layers = []
        widths: tuple[int, ...] = (config.stem_channels,)
        cursor = 0
        for k, depths in enumerate(module_depths):
            channels = all_channels[: len(depths)]
            stem_to_coarser = k == 0 and first  # no 1/4 branch: the stem's 1/4 map goes down to the 1/8 branch
            if stem_to_coarser:
                fused = channels
                fusion: nn.Module = StemToCoarser(config.stem_channels, channels[0], first)
            else:
                # The fusion keeps the incoming widths and makes a new branch (if any) at its final width directly.
                fused = widths + channels[len(widths):]
            stage = HRViTStage(
                fused, channels, depths, config.head_dim, windows, mlp_ratios,
                rates[cursor: cursor + max(depths)], config.overlap_patch_embed, **options,
            )
            if not stem_to_coarser:
                # Built after the stage, as always: the order of construction is the order of the random draws,
                # so a seed gives the same initial weights as before this switch existed (and the committed
                # experiments reproduce).
                fusion = FusionLayer(widths, fused, dense=config.dense_fusion)
            layers.append(HRViTModule(fusion, stage))
            cursor += max(depths)
            widths = channels
        self.layers = nn.ModuleList(layers)
        self.out_channels = all_channels

    @property
    def fusions(self) -> list[nn.Module]:
        return [layer.fusion for layer in self.layers]

    @property
    def stages(self) -> list[HRViTStage]:
        return [layer.stage for layer in self.layers]

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """The branch maps the backbone returns: channels, stride and the LayerNorm that ends each branch."""
        last = len(self.layers) - 1
        return [
            FeatureInfo(c, 4 * 2 ** (self.config.first_branch + i), f"layers.{last}.stage.norms.{i}")
            for i, c in enumerate(self.out_channels)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Sides must divide by the 1/32 branch's stride: the fusion layers upsample it onto the finer branches.
        check_image_batch(x, self.in_chans, multiple_of=self.reduction)
        xs = [self.stem(x)]
        for layer in self.layers:
            xs = layer(xs)
        return xs


# --------------------------------------------------------------------------------------------------------------------
# ImageNet: the HRNet-style classification head (official ``HRViTClassifier``, ``Bottleneck``)
# --------------------------------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """ResNet's bottleneck (He et al. 2016, Fig. 5): 1x1 -> 3x3 -> 1x1 (x4 channels), projected shortcut, ReLU.

    Used by HRNet's (and HRViT's) classification head to widen every branch before merging them.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int) -> None:
        super().__init__()
        out_chs = planes * self.expansion
        self.conv1 = ConvNormAct(in_chs, planes, 1)
        self.conv2 = ConvNormAct(planes, planes, 3)
        self.conv3 = ConvNormAct(planes, out_chs, 1, act_layer=None)
        self.shortcut = ConvNormAct(in_chs, out_chs, 1, act_layer=None) if in_chs != out_chs else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class HRViTClassifier(nn.Module):
    """HRNet's classification head (Wang et al., TPAMI 2020; official ``HRViTClassifier``).

    Each branch is widened by one Bottleneck to 4 x (32, 64, 128, 256) channels (fixed, whatever the backbone
    width); then, from the finest branch down, a 3x3 stride-2 conv + BN + ReLU carries the running sum to the next
    resolution where that branch is added; a 1x1 conv to 2048 channels, global average pooling, dropout, linear.
    """

    head_channels = (32, 64, 128, 256)  # official default, used by b1, b2 and b3 alike
    num_features = 2048

    def __init__(self, in_channels: Sequence[int], num_classes: int = 1000, drop_rate: float = 0.0) -> None:
        super().__init__()
        if len(in_channels) != len(self.head_channels):
            raise ValueError(f"the head takes {len(self.head_channels)} branches, got {len(in_channels)}")
        widths = [c * Bottleneck.expansion for c in self.head_channels]
        self.widen = nn.ModuleList(Bottleneck(c, h) for c, h in zip(in_channels, self.head_channels))
        self.downsample = nn.ModuleList(
            ConvNormAct(widths[i], widths[i + 1], 3, stride=2, bias=True) for i in range(len(widths) - 1)
        )
        self.final = ConvNormAct(widths[-1], self.num_features, 1, bias=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, xs: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        widened = [widen(x) for widen, x in zip(self.widen, xs)]
        y = widened[0]
        for down, w in zip(self.downsample, widened[1:]):  # from the finest branch down to 1/32
            y = w + down(y)
        y = self.drop(self.final(y).mean(dim=(2, 3)))
        return y if pre_logits else self.fc(y)


class HRViT(ImageClassifier):
    """HRViT for ImageNet classification: backbone (4 branches) + HRNet-style head (official ``HRViT``).

    ``forward_features`` and ``forward_intermediates`` both return the four branch maps (strides 4 to 32): the head
    reads all of them, so the trunk's output *is* its list of stage maps. ``num_classes=0`` leaves out the last
    linear layer: ``forward`` then returns the 2048 pooled features.
    """

    classifier_path = "head.fc"
    num_features = HRViTClassifier.num_features

    def __init__(
        self, config: HRViTConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.1,
        drop_path_rate: float = 0.0,
    ) -> None:
        # drop_rate 0.1: the official ``HRViT(head_dropout=0.1)`` default; drop_path_rate is a training flag there
        # (README: --drop-path 0.1), so it stays 0 unless asked for, as in timm.
        super().__init__()
        if not config.high_res_branch:
            raise ValueError("HRNet's classification head reads all four branches from 1/4 down; "
                             "high_res_branch=False is an ablation of the segmenter (HRViTSegmentation) only")
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier)")
        self.config, self.num_classes = config, num_classes
        self.backbone = HRViTBackbone(config, in_chans, drop_path_rate)
        self.head = HRViTClassifier(config.channels, num_classes, drop_rate)
        self.feature_info = [f._replace(module=f"backbone.{f.module}") for f in self.backbone.feature_info]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four branches (strides 4, 8, 16, 32)."""
        return self.backbone(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch maps, described by ``feature_info`` (the same maps the head reads)."""
        return self.forward_features(x)

    def forward_head(self, xs: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        return self.head(xs, pre_logits)


# --------------------------------------------------------------------------------------------------------------------
# ADE20K: the SegFormer all-MLP head (Xie et al. 2021, §3.2; HRViT's ``segformer_head.py`` with mlp_norm/act off)
# --------------------------------------------------------------------------------------------------------------------


class SegFormerHead(nn.Module):
    """Per branch a linear 1x1 conv to ``channels``; bilinear upsampling to the 1/4 map; concatenate; 1x1 conv + BN
    + ReLU; dropout; 1x1 conv to the classes.

    HRViT's configs set ``mlp_norm=False, mlp_act=False``: the per-branch convs are plain (biased) linear maps.
    """

    def __init__(
        self, in_channels: Sequence[int], channels: int = 256, num_classes: int = 150, drop_rate: float = 0.1,
    ) -> None:
        super().__init__()
        check_count("num_classes", num_classes)
        self.in_channels = tuple(in_channels)
        self.linear = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = ConvNormAct(channels * len(in_channels), channels, 1)  # mmcv ConvModule: conv (no bias), BN, ReLU
        self.drop = nn.Dropout2d(drop_rate)
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(xs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(xs)}")
        size = xs[0].shape[2:]
        ys = [resize_to(proj(x), size) for proj, x in zip(self.linear, xs)]
        return self.classify(self.drop(self.fuse(torch.cat(ys, dim=1))))


class HRViTSegmentation(Segmenter):
    """HRViT backbone + SegFormer head (official ``EncoderDecoder`` with ``hrvit_b*`` and ``SegformerHead``).

    ``forward_features`` gives the four branch maps, ``forward_head`` the logits at 1/4; ``forward`` upsamples them
    (bilinear) to the input size, as mmseg does.
    """

    logits_stride = 4

    def __init__(
        self, config: HRViTConfig, num_classes: int = 150, head_channels: int = 256, in_chans: int = 3,
        drop_rate: float = 0.1, drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.backbone = HRViTBackbone(config, in_chans, drop_path_rate)
        # The backbone's own widths: the official b2 config lists [48, 96, 192, 384] for a 240-channel third
        # branch, which cannot load; the widths the backbone makes are the only ones that run.
        self.decode_head = SegFormerHead(self.backbone.out_channels, head_channels, num_classes, drop_rate)
        self.logits_stride = self.backbone.feature_info[0].stride  # 4; 8 without the 1/4 branch
        self.feature_info = [f._replace(module=f"backbone.{f.module}") for f in self.backbone.feature_info]
        self.backbone.apply(self._init_backbone)

    @staticmethod
    def _init_backbone(m: nn.Module) -> None:
        """The official segmentation backbone's ``init_weights``: linear weights from a truncated normal (std 0.02),
        zero biases; LayerNorm and BatchNorm2d at scale 1, shift 0 (the attention's zero-initialised BatchNorm1d is
        left alone, as the official SyncBN is)."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four branches (strides 4, 8, 16, 32), what the head reads."""
        return self.backbone(x)

    def forward_head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits at the finest branch's resolution: 1/4 of the input (1/8 without the 1/4 branch)."""
        return self.decode_head(features)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (facebookresearch/HRViT): official names -> ours, by role
# --------------------------------------------------------------------------------------------------------------------


def _backbone_rules(src: str, dst: str, num_modules: int) -> list[tuple[str, str]]:
    """Renaming rules for the official trunk under prefix ``src`` (``""`` or ``"backbone."``) to ours under ``dst``.

    The official ``features`` is one ``nn.Sequential`` alternating fusion blocks (even indices) and stages (odd):
    ``features.{2k}`` is our ``layers.{k}.fusion`` and ``features.{2k+1}`` our ``layers.{k}.stage``. Inside them:

    - fusion ``blocks.{i}.{j}`` is the path from input branch j to output branch i, our ``paths.{i}.{j}`` (the
      same Sequential layout: DWConv, BN, Conv 1x1, BN going down; Conv 1x1, BN, Upsample going up);
    - attention ``to_qkv`` is our ``qkv``: one Linear(C -> 2C) whose first C outputs are q and last C are v (the
      shared key), in both codes, so the tensor is taken as it is; ``to_out.0`` is ``proj``, ``attn_bn`` is
      ``norm``; the horizontal and vertical halves of the cross-shaped attention are channel halves of these same
      tensors, not separate parameters;
    - MixCFN's ``conv.conv_3`` (3x3 on the first channel half) and ``conv.conv_5`` (5x5 on the second) are our
      ``conv.conv3`` and ``conv.conv5``;
    - the stage's ``norm.{i}`` (LayerNorm ending branch i) is our ``norms.{i}``.
    """
    p, q = src.replace(".", r"\."), dst
    rules = [
        (rf"{p}stem\.conv1\.(weight|bias)", rf"{q}stem.0.conv.\1"),
        (rf"{p}stem\.bn1\.(\w+)", rf"{q}stem.0.bn.\1"),
        (rf"{p}stem\.conv2\.(weight|bias)", rf"{q}stem.1.conv.\1"),
        (rf"{p}stem\.bn2\.(\w+)", rf"{q}stem.1.bn.\1"),
    ]
    block = r"branches\.(\d+)\.(\d+)"
    for k in range(num_modules):
        fusion, stage = rf"{p}features\.{2 * k}", rf"{p}features\.{2 * k + 1}"
        ours = f"{q}layers.{k}"
        rules += [
            (rf"{fusion}\.blocks\.(\d+)\.(\d+)\.([0-3])\.(\w+)", rf"{ours}.fusion.paths.\1.\2.\3.\4"),
            (rf"{stage}\.patch_embed\.(\d+)\.(proj\.[01]|norm)\.(weight|bias)",
             rf"{ours}.stage.patch_embed.\1.\2.\3"),
            (rf"{stage}\.{block}\.attn\.to_qkv\.(weight|bias)", rf"{ours}.stage.branches.\1.\2.attn.qkv.\3"),
            (rf"{stage}\.{block}\.attn\.to_out\.0\.(weight|bias)", rf"{ours}.stage.branches.\1.\2.attn.proj.\3"),
            (rf"{stage}\.{block}\.attn\.attn_bn\.(\w+)", rf"{ours}.stage.branches.\1.\2.attn.norm.\3"),
            (rf"{stage}\.{block}\.attn\.parallel_conv\.1\.(weight|bias)",
             rf"{ours}.stage.branches.\1.\2.attn.parallel_conv.1.\3"),
            (rf"{stage}\.{block}\.ffn\.conv\.conv_([35])\.(weight|bias)",
             rf"{ours}.stage.branches.\1.\2.ffn.conv.conv\3.\4"),
            (rf"{stage}\.{block}\.(attn_norm|ffn_norm|ffn\.fc1|ffn\.fc2|des\.proj_left|des\.proj_right)"
             r"\.(weight|bias)", rf"{ours}.stage.branches.\1.\2.\3.\4"),
            (rf"{stage}\.norm\.(\d+)\.(weight|bias)", rf"{ours}.stage.norms.\1.\2"),
        ]
    return rules


# The HRNet classification head (official ``HRViTClassifier``): ``incre_modules.{i}.0`` is the Bottleneck widening
# branch i (conv1/bn1 .. conv3/bn3, ``downsample`` its projected shortcut), ``downsamp_modules.{i}`` the stride-2
# conv from the running sum at branch i to branch i+1, ``final_layer`` the 1x1 conv to 2048, ``classifier`` the fc.
_CLS_HEAD_RULES = [
    (r"head\.incre_modules\.(\d+)\.0\.conv([123])\.weight", r"head.widen.\1.conv\2.conv.weight"),
    (r"head\.incre_modules\.(\d+)\.0\.bn([123])\.(\w+)", r"head.widen.\1.conv\2.bn.\3"),
    (r"head\.incre_modules\.(\d+)\.0\.downsample\.0\.weight", r"head.widen.\1.shortcut.conv.weight"),
    (r"head\.incre_modules\.(\d+)\.0\.downsample\.1\.(\w+)", r"head.widen.\1.shortcut.bn.\2"),
    (r"head\.downsamp_modules\.(\d+)\.0\.(weight|bias)", r"head.downsample.\1.conv.\2"),
    (r"head\.downsamp_modules\.(\d+)\.1\.(\w+)", r"head.downsample.\1.bn.\2"),
    (r"head\.final_layer\.0\.(weight|bias)", r"head.final.conv.\1"),
    (r"head\.final_layer\.1\.(\w+)", r"head.final.bn.\1"),
    (r"head\.classifier\.(weight|bias)", r"head.fc.\1"),
]

# mmseg's ``SegformerHead``: ``convs.{i}`` is the linear map of branch i (a ConvModule without norm and activation:
# a biased 1x1 conv), ``fusion_conv`` the 1x1 conv + BN over the concatenation, ``conv_seg`` the classifier.
_SEG_HEAD_RULES = [
    (r"decode_head\.convs\.(\d+)\.conv\.(weight|bias)", r"decode_head.linear.\1.\2"),
    (r"decode_head\.fusion_conv\.conv\.weight", r"decode_head.fuse.conv.weight"),
    (r"decode_head\.fusion_conv\.bn\.(\w+)", r"decode_head.fuse.bn.\1"),
    (r"decode_head\.conv_seg\.(weight|bias)", r"decode_head.classify.\1"),
]


def _without_module_prefix(state_dict: StateDict) -> StateDict:
    """A checkpoint saved from a DistributedDataParallel wrapper prefixes every key with ``module.``."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k.removeprefix("module."): v for k, v in state_dict.items()}
    return state_dict


@register_official_converter(HRViT, HRViTSegmentation)
def convert_official_checkpoint(state_dict: StateDict, model: nn.Module) -> StateDict:
    """The authors' checkpoint as a state dict of ``model`` (renamed by role; no tensor changes layout).

    ImageNet checkpoints (``models/hrvit.py``, ``HRViT_b*_224``: ``stem.*``, ``features.*``, ``head.*``) load into
    :class:`HRViT` (``hrvit_b*_cls``); ADE20K ones (mmseg's ``EncoderDecoder``: ``backbone.*``, ``decode_head.*``)
    into :class:`HRViTSegmentation` (``hrvit_b*``). Which variant it is shows in the shapes, which
    :func:`lessons.load_official` checks after renaming.
    """
    state_dict = _without_module_prefix(dict(state_dict))
    # The two kinds of HRViT checkpoint, told apart by where the trunk sits (anything else fails in the renaming).
    is_seg_checkpoint = any(k.startswith("backbone.features.") for k in state_dict)
    is_cls_checkpoint = any(k.startswith("features.") for k in state_dict)
    num_modules = len(model.config.depths)
    if isinstance(model, HRViTSegmentation):
        if is_cls_checkpoint:
            raise ValueError(
                "this is an HRViT ImageNet checkpoint (stem.*, features.*, head.*): load it into the classifier "
                "hrvit_b*_cls, not into the segmenter"
            )
        rules = _backbone_rules("backbone.", "backbone.", num_modules) + _SEG_HEAD_RULES
        source = "HRViT segmentation (mmseg EncoderDecoder with SegformerHead)"
    else:
        if is_seg_checkpoint:
            raise ValueError(
                "this is an HRViT segmentation checkpoint (backbone.*, decode_head.*): load it into the segmenter "
                "hrvit_b* (e.g. hrvit_b1), not into the classifier"
            )
        rules = _backbone_rules("", "backbone.", num_modules) + _CLS_HEAD_RULES
        source = "HRViT ImageNet classifier (models/hrvit.py)"
    return rename_by_rules(state_dict, rules, source)


# --------------------------------------------------------------------------------------------------------------------
# An mmcv-style count: what `mmcv.cnn.get_model_complexity_info` (mmseg's tools/get_flops.py) reports
# --------------------------------------------------------------------------------------------------------------------


def stripe_attention_macs(channels: int, size: Size, window: int, batch: int = 1) -> int:
    """Multiply-adds of *one* of the two attention products (q k^T or weights @ v) of a CrossShapedAttention.

    Per half (C/2 channels): ceil(rows / window) stripes of L = window x (full width) tokens, L^2 * C/2 each (and
    the same for the vertical half); padded rows are computed too, as in the official code.
    """
    height, width = size
    half = channels // 2
    horizontal = math.ceil(height / window) * (window * width) ** 2 * half
    vertical = math.ceil(width / window) * (window * height) ** 2 * half
    return batch * (horizontal + vertical)


def _attention_product_rule(m: CrossShapedAttention, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-adds of one attention product of ``m``, from the shapes of its call ``m(x, size)``."""
    return stripe_attention_macs(m.dim, inputs[1], m.window, inputs[0].shape[0])


MMCV_RULES = MmcvRules(extra_kinds={"attention_product": (CrossShapedAttention, _attention_product_rule)})
"""mmcv's own module rules (exact types, LayerNorm and Upsample counted; see :class:`lessons.measure.MmcvRules`),
plus the kind ``"attention_product"``: the multiply-adds of *one* of the two attention products of every
:class:`CrossShapedAttention`, which mmcv never sees. ``lessons.measure.count_mmcv_flops(m, size, rules=MMCV_RULES)``
is what mmseg's ``get_flops.py`` prints for a model built with plain BatchNorm; adding
``count_batchnorm=False, extra_counts={"attention_product": 1}`` is the rule that reproduces HRViT's README
(SyncBN is not in mmcv's table; the attention is counted once)."""


# --------------------------------------------------------------------------------------------------------------------
# Named variants (official ``HRViT_b1_224`` .. ``HRViT_b3_224`` and ``hrvit_b1`` .. ``hrvit_b3``)
# --------------------------------------------------------------------------------------------------------------------

_DEPTHS_B1 = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2))
_DEPTHS_B2 = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 6, 2))
_DEPTHS_B3 = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 3), (1, 1, 6, 3))

HRVIT_CONFIGS: dict[str, HRViTConfig] = {
    "b1": HRViTConfig("b1", (32, 64, 128, 256), _DEPTHS_B1, head_dim=32, mlp_ratios=(4, 4, 4, 4)),
    "b2": HRViTConfig("b2", (48, 96, 240, 384), _DEPTHS_B2, head_dim=24, mlp_ratios=(2, 3, 3, 3)),
    "b3": HRViTConfig("b3", (64, 128, 256, 512), _DEPTHS_B3, head_dim=32, mlp_ratios=(2, 2, 2, 2)),
}

# SegFormer head width per variant (segmentation/configs/hrvit/segformer_hrvit_b*_512x512_ade20k_160k.py)
SEG_HEAD_CHANNELS = {"b1": 256, "b2": 256, "b3": 768}
# Stochastic depth of the ADE20K configs (backbone ``drop_path_rate`` in segformer_hrvit_b*_512x512_ade20k_160k.py)
SEG_DROP_PATH = {"b1": 0.1, "b2": 0.2, "b3": 0.3}

_CONFIG_FIELDS = {f.name for f in fields(HRViTConfig)} - {"name"}


def make_config(variant: str, **overrides) -> HRViTConfig:
    """The config of ``variant`` ("b1", "b2", "b3") with fields replaced: ``make_config("b1", shared_kv=False)``."""
    if variant not in HRVIT_CONFIGS:
        raise ValueError(f"unknown HRViT variant {variant!r}; known: {sorted(HRVIT_CONFIGS)}")
    unknown = set(overrides) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown HRViTConfig field(s) {sorted(unknown)}; fields: {sorted(_CONFIG_FIELDS)}")
    return replace(HRVIT_CONFIGS[variant], **overrides) if overrides else HRVIT_CONFIGS[variant]


def _split(kwargs: dict) -> tuple[dict, dict]:
    config = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    return config, kwargs


def _create_cls(variant: str, **kwargs) -> HRViT:
    overrides, model_kwargs = _split(kwargs)
    return HRViT(make_config(variant, **overrides), **model_kwargs)


def _create_seg(variant: str, **kwargs) -> HRViTSegmentation:
    overrides, model_kwargs = _split(kwargs)
    model_kwargs.setdefault("head_channels", SEG_HEAD_CHANNELS[variant])
    model_kwargs.setdefault("drop_path_rate", SEG_DROP_PATH[variant])
    return HRViTSegmentation(make_config(variant, **overrides), **model_kwargs)


# Both official pipelines normalise with ImageNet's mean and std (timm's IMAGENET_DEFAULT_* in models/hrvit.py;
# mmseg's ADE20K img_norm_cfg 123.675/58.395 ...); sides must be multiples of 32 (see HRViTBackbone).
_SEG = ade20k_segmenter("hrvit", size_divisor=32)
_CLS = imagenet_classifier("hrvit", size_divisor=32)


_CLS_OFFICIAL = "facebookresearch/HRViT models/hrvit.py HRViT_{}_224"
_SEG_OFFICIAL = "facebookresearch/HRViT segmentation/configs/hrvit/segformer_hrvit_{}_512x512_ade20k_160k.py"


@register_model(**_CLS, official=_CLS_OFFICIAL.format("b1"))
def hrvit_b1_cls(**kwargs) -> HRViT:
    """HRViT-b1 for ImageNet: branches of 32, 64, 128 and 256 channels, HRNet-style head."""
    return _create_cls("b1", **kwargs)


@register_model(**_CLS, official=_CLS_OFFICIAL.format("b2"))
def hrvit_b2_cls(**kwargs) -> HRViT:
    """HRViT-b2 for ImageNet: branches of 48, 96, 240 and 384 channels, HRNet-style head."""
    return _create_cls("b2", **kwargs)


@register_model(**_CLS, official=_CLS_OFFICIAL.format("b3"))
def hrvit_b3_cls(**kwargs) -> HRViT:
    """HRViT-b3 for ImageNet: branches of 64, 128, 256 and 512 channels, HRNet-style head."""
    return _create_cls("b3", **kwargs)


@register_model(**_SEG, official=_SEG_OFFICIAL.format("b1"))
def hrvit_b1(**kwargs) -> HRViTSegmentation:
    """HRViT-b1 + SegFormer head (256 channels) for ADE20K (150 classes)."""
    return _create_seg("b1", **kwargs)


@register_model(**_SEG, official=_SEG_OFFICIAL.format("b2"))
def hrvit_b2(**kwargs) -> HRViTSegmentation:
    """HRViT-b2 + SegFormer head (256 channels) for ADE20K; decoder inputs are the backbone's widths (see
    :class:`HRViTSegmentation`)."""
    return _create_seg("b2", **kwargs)


@register_model(**_SEG, official=_SEG_OFFICIAL.format("b3"))
def hrvit_b3(**kwargs) -> HRViTSegmentation:
    """HRViT-b3 + SegFormer head (768 channels) for ADE20K (150 classes)."""
    return _create_seg("b3", **kwargs)
