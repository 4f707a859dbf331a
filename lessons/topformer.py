"""TopFormer (Zhang et al., CVPR 2022, arXiv 2204.05525): token pyramids and semantic injection.

Mobile semantic segmentation needs global context, but attention over a 1/8-resolution map is far too expensive
for a phone. TopFormer's answer is to spend attention only where tokens are few:

1. a **Token Pyramid Module** (MobileNetV2 blocks, paper §3.1) makes tokens at 1/4, 1/8, 1/16 and 1/32;
2. every token map is **average-pooled to one small grid** (1/64 of the input) and the maps are stacked along
   channels (``PyramidPoolAgg``), so a 512x512 image gives only 8x8 = 64 tokens;
3. a small BatchNorm-based transformer, the **Scale-aware Semantics Extractor** (§3.2), attends over those tokens;
4. its output is split back per scale and **injected** into the local tokens (§3.3): ``local * hsig(global) +
   global`` (the Semantic Injection Module, SIM);
5. a light **segmentation head** sums the injected maps at 1/8 and classifies every pixel (§3.4).

The code follows the official hustvl/TopFormer (``mmseg/models/backbones/topformer.py``,
``mmseg/models/decode_heads/simple_head.py``, ``local_configs/topformer/topformer_{tiny,small,base}.py``), written
anew. Where code and paper differ the code wins, and the docstrings say so: the attention has **no** 1/sqrt(d) scale,
the "sigmoid" of the SIM is a hard-sigmoid, and the extractor's input stacks all four token scales (1/4 included)
while injection happens at 1/8, 1/16 and 1/32 only.

Input size: the official model runs on any size, and so does this one. Every stride-2 conv here has "same"
padding, so the token at output stride s has side ``ceil(H / s)``; the pooled grid is ``(H32 - 1) // (pool_stride
/ 32) + 1`` per side; injection and the head resize with bilinear interpolation. Nothing needs H or W to divide by
anything, so only inputs that cannot be images are rejected (wrong rank, wrong channel count, empty sides, integer
dtype).

Ablation knobs (the paper's ablation study; each a field of :class:`TopFormerConfig`, set through
``create_model(name, **knob)``):
``extractor_scales`` / ``extractor_input`` (which tokens feed the extractor, or the last token alone widened by a
1x1 conv), ``sim_width`` (M), ``pool_stride`` (32/64/128), ``injection`` (both branches, only the sigmoid
attention, only the semantic information), ``head`` (the paper's summing head or a concatenating head; the paper's
"Sum head" is, in its own words, the same as injecting with the semantic-information branch only, so that row of
the ablation is ``injection="sem_info"``), ``extractor_attention`` (False = "w/o MHSA": every attention of the
extractor replaced by another FFN) and ``depth`` (0 = no extractor, the paper's "w/o SASE" baseline).
The ablation rows themselves, as named overrides, are ``lessons.claims.topformer.ABLATIONS``.

The authors' checkpoints load with ``create_model(name, checkpoint=path)``: :func:`convert_official_topformer`
renames their keys to ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
from torch import nn

from .layers import (
    ConvBN,
    ConvNormAct,
    BNTransformerBlock,
    DepthwiseConvMlp,
    HardSigmoid,
    attention,
    check_count,
    check_image_batch,
    drop_path_rates,
    init_mmseg_head,
    init_mobile_weights,
    make_divisible,
    mobilenetv2_block,
    resize_to,
    stack_rows,
)
from .checkpoints import register_official_converter, rename_by_rules
from .contract import FeatureInfo, ImageClassifier, Segmenter
from .registry import ade20k_segmenter, imagenet_classifier, register_model

# FX symbolic tracing records the input check as one call (run on real tensors) instead of tracing into it.
torch.fx.wrap("check_image_batch")
torch.fx.wrap("resize_to")  # its size may be a traced shape, which FX cannot turn into a tuple

TOKEN_STRIDES = (4, 8, 16, 32)  # output strides of the four pyramid tokens (official `embed_out_indice`)
INJECTION_MODES = ("both", "sigmoid_attn", "sem_info")
HEAD_TYPES = ("simple", "concat")
EXTRACTOR_INPUTS = ("stack", "last")

# --------------------------------------------------------------------------------------------------------------------
# 1. Token Pyramid Module (paper §3.1): MobileNetV2 blocks produce tokens at 1/4, 1/8, 1/16, 1/32
# --------------------------------------------------------------------------------------------------------------------


class TokenPyramid(nn.Module):
    """Stem (3x3 conv, stride 2, BN, ReLU) then one MobileNetV2 block per row ``[k, t, c, s]`` (paper §3.1).

    Source: ``TokenPyramidModule`` in the official ``topformer.py``; rows from ``local_configs/topformer/*.py``.
    The blocks use ReLU (not ReLU6) and an expansion width of exactly ``round(c_in * t)``, as the official code.
    ``forward`` returns the outputs of the rows listed in ``token_rows``: the token pyramid, finest first.
    """

    def __init__(
        self,
        rows: Sequence[Sequence[int]],
        token_rows: Sequence[int],
        in_chans: int = 3,
        stem_chs: int = 16,
    ) -> None:
        super().__init__()
        self.token_rows = tuple(token_rows)
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2, act_layer=nn.ReLU)
        self.blocks = nn.ModuleList(stack_rows(rows, stem_chs, mobilenetv2_block))
        self.channels = tuple(rows[i][2] for i in self.token_rows)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.token_rows:
                tokens.append(x)
        return tokens


# --------------------------------------------------------------------------------------------------------------------
# 2. Pool every token map to one small grid and stack (paper §3.2, "PyramidPoolAgg")
# --------------------------------------------------------------------------------------------------------------------


def pooled_grid_size(height32: int, width32: int, stride: int) -> tuple[int, int]:
    """Side of the pooled grid from the 1/32 token's side: ``(H32 - 1) // stride + 1`` (official ``PyramidPoolAgg``).

    ``stride`` is relative to the 1/32 token: 1, 2, 4 give output strides 32, 64, 128 (the paper's s32/s64/s128).
    The formula is a ceiling division, so a 1/32 token of odd side still gets a grid cell for its last row.
    """
    return (height32 - 1) // stride + 1, (width32 - 1) // stride + 1


def adaptive_pooling_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """The ``[out_size, in_size]`` matrix whose row i averages the window ``adaptive_avg_pool2d`` gives output i.

    Adaptive pooling's window i runs from ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)`` (windows may overlap
    by one when ``out`` does not divide ``in``); row i holds ``1 / length`` there and 0 elsewhere. Pooling a map is
    then two matrix products, ``A_h @ x @ A_w^T``, which any exporter writes for a size it only knows at run time.
    ``like`` gives the dtype and device.
    """
    i = torch.arange(out_size, device=like.device)
    start = torch.div(i * in_size, out_size, rounding_mode="floor")
    end = torch.div((i + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    j = torch.arange(in_size, device=like.device)
    inside = (j >= start.unsqueeze(1)) & (j < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).unsqueeze(1).to(like.dtype)


def adaptive_avg_pool2d_by_matmul(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, size)`` as ``A_h @ x @ A_w^T`` (:func:`adaptive_pooling_matrix`): the same windows and
    means, summed in another order (equal up to float rounding).

    Used only while exporting to ONNX: ONNX has no adaptive pooling, and the exporter decomposes
    ``adaptive_avg_pool2d`` into an ``AveragePool`` whose kernel and stride it computes from the example input and
    fixes -- right only while every side stays a multiple of the 64-pixel grid cell (at 480 x 480 ONNX Runtime fails
    on a reshape, at other sizes it can return a map of the wrong size). These products keep the sizes symbolic.
    """
    rows = adaptive_pooling_matrix(x.shape[-2], size[0], x)
    cols = adaptive_pooling_matrix(x.shape[-1], size[1], x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPoolAgg(nn.Module):
    """Average-pool every token map to the grid of :func:`pooled_grid_size` and concatenate them along channels.

    Source: ``PyramidPoolAgg`` (official ``topformer.py``, ``c2t_stride=2``). Adaptive average pooling makes each
    grid cell the mean of a window of the token map; for a map whose side is a multiple of the grid's, the windows
    tile it exactly. No parameters. Under ``torch.onnx.export`` the pooling is written as matrix products instead
    (:func:`adaptive_avg_pool2d_by_matmul`), so that the ONNX graph pools correctly at every input size.
    """

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        check_count("stride", stride, note=" (2 = output stride 64)")
        self.stride = stride

    def forward(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        size = pooled_grid_size(tokens[-1].shape[-2], tokens[-1].shape[-1], self.stride)
        pool = adaptive_avg_pool2d_by_matmul if torch.onnx.is_in_onnx_export() else nn.functional.adaptive_avg_pool2d
        return torch.cat([pool(t, size) for t in tokens], dim=1)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


# --------------------------------------------------------------------------------------------------------------------
# 3. Scale-aware Semantics Extractor (paper §3.2): a transformer built from 1x1 convs and BatchNorm
# --------------------------------------------------------------------------------------------------------------------


class BNAttention(nn.Module):
    """Multi-head self-attention on a feature map, with 1x1 conv + BN projections (official ``Attention``).

    q and k have ``key_dim`` (16) channels per head, v has ``attn_ratio * key_dim`` (32): keys are cheap because they
    only score, values carry the content. The scores are ``softmax(q k^T)`` **without** the 1/sqrt(key_dim) scale:
    the official code (``mmseg/models/backbones/topformer.py``, ``Attention``) defines ``self.scale`` but never
    applies it, and so neither does this block.
    The heads are joined, passed through ReLU6 and projected back by a 1x1 conv + BN whose scale starts at 0.
    """

    def __init__(
        self, dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: float = 2.0,
        act_layer: Callable[[], nn.Module] = nn.ReLU6,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = int(attn_ratio * key_dim)
        self.to_q = ConvBN(dim, num_heads * key_dim)
        self.to_k = ConvBN(dim, num_heads * key_dim)
        self.to_v = ConvBN(dim, num_heads * self.value_dim)
        # bn_weight_init=0 as the official Conv2d_BN call: the branch starts switched off. The official init_weights()
        # resets nn.BatchNorm2d weights to 1, but the official configs build SyncBN (not a BatchNorm2d subclass), so
        # their models keep this zero; the book's models keep it too (see _TopFormerTrunk.init_weights).
        self.proj = nn.Sequential(act_layer(), ConvBN(num_heads * self.value_dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        tokens = height * width

        def heads(t: torch.Tensor, d: int) -> torch.Tensor:  # [B, h*d, H, W] -> [B, h, N, d]
            return t.reshape(batch, self.num_heads, d, tokens).transpose(-2, -1)

        q = heads(self.to_q(x), self.key_dim)
        k = heads(self.to_k(x), self.key_dim)
        v = heads(self.to_v(x), self.value_dim)
        out = attention(q, k, v, scale=1.0)  # softmax(q k^T) v: the official code applies no 1/sqrt(d) scale
        out = out.transpose(-2, -1).reshape(batch, self.num_heads * self.value_dim, height, width)
        return self.proj(out)


class ExtractorBlock(BNTransformerBlock):
    """One transformer block of the extractor (official ``Block``): no LayerNorm, BN inside every projection.

    x = x + DropPath(Attention(x)); x = x + DropPath(MLP(x)), with the MLP = :class:`DepthwiseConvMlp` (ratio 2):
    the :class:`lessons.layers.BNTransformerBlock` SeaFormer shares, with TopFormer's full attention in it.

    ``attention=False`` is the paper's "w/o MHSA" ablation (§4.1, the semantics-extractor study): "we remove all
    MHSA modules and add more FFNs for a fair comparison" -- the attention slot holds a second
    :class:`DepthwiseConvMlp` of the same ratio, so the block is x + FFN(x), then x + FFN(x).
    """

    def __init__(
        self, dim: int, key_dim: int = 16, num_heads: int = 8, mlp_ratio: float = 2.0, attn_ratio: float = 2.0,
        drop_path: float = 0.0, act_layer: Callable[[], nn.Module] = nn.ReLU6, attention: bool = True,
    ) -> None:
        mixer = (BNAttention(dim, key_dim, num_heads, attn_ratio, act_layer) if attention
                 else DepthwiseConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer))
        super().__init__(mixer, dim, mlp_ratio, act_layer, drop_path)


class SemanticsExtractor(nn.Module):
    """The Scale-aware Semantics Extractor (paper §3.2): ``depth`` blocks over the pooled tokens, then a split.

    Source: ``BasicLayer`` + the ``split`` in ``Topformer.forward`` (official ``topformer.py``). The input is the
    stack of pooled tokens (``dim = sum(channels)``); the output, split back along channels into one tensor per
    scale, is the "global semantics" of that scale. With ``in_chs`` different from ``sum(channels)`` a 1x1 conv + BN
    first widens the input (the paper's "last token only" ablation). ``depth=0`` leaves the tokens as they
    are (the paper's "w/o SASE" baseline); ``attention=False`` replaces every block's attention by a second FFN
    (the paper's "w/o MHSA" row, see :class:`ExtractorBlock`).
    """

    def __init__(
        self, channels: Sequence[int], depth: int = 4, key_dim: int = 16, num_heads: int = 8,
        mlp_ratio: float = 2.0, attn_ratio: float = 2.0, drop_path_rate: float = 0.0, in_chs: int | None = None,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        dim = sum(self.channels)
        in_chs = dim if in_chs is None else in_chs
        self.input_proj = ConvBN(in_chs, dim) if in_chs != dim else nn.Identity()
        rates = drop_path_rates(drop_path_rate, depth)  # linspace(0, rate, depth), as the official dpr
        self.blocks = nn.Sequential(*[
            ExtractorBlock(dim, key_dim, num_heads, mlp_ratio, attn_ratio, rates[i], attention=attention)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = self.blocks(self.input_proj(x)).split(self.channels, dim=1)
        return [parts[i] for i in range(len(self.channels))]  # indexed, not list(): FX cannot iterate a traced split


# --------------------------------------------------------------------------------------------------------------------
# 4. Semantic Injection Module (paper §3.3, Eq. 3-5)
# --------------------------------------------------------------------------------------------------------------------


class InjectionParts(NamedTuple):
    """What each branch of a :class:`SemanticInjection` computed (``None`` for a branch the mode does not have)."""

    local: torch.Tensor  # BN(Conv1x1(x_local)), at the local token's resolution
    gate: torch.Tensor | None  # up(hsig(BN(Conv1x1(x_global)))): "SigmoidAttn", values in [0, 1]
    semantics: torch.Tensor | None  # up(BN(Conv1x1(x_global))): "SemInfo"
    out: torch.Tensor


class SemanticInjection(nn.Module):
    """Inject a scale's global semantics into its local tokens (paper §3.3; official ``InjectionMultiSum``).

    ``mode="both"`` (the paper's SIM): out = local * up(hsig(BN(Conv(g)))) + up(BN(Conv(g))), with
    local = BN(Conv(x_local)); every conv is 1x1 to ``out_chs`` (the SIM width M). The gate is a hard-sigmoid
    ``ReLU6(x + 3) / 6`` (official ``h_sigmoid``) applied *before* the bilinear upsampling, as the official code.
    ``mode="sigmoid_attn"``: out = local * gate (official ``FuseBlockMulti``); ``mode="sem_info"``: out = local +
    semantics (official ``FuseBlockSum``) -- the two halves the paper's ablation study compares.
    """

    def __init__(self, in_chs: int, out_chs: int, mode: str = "both") -> None:
        super().__init__()
        if mode not in INJECTION_MODES:
            raise ValueError(f"unknown injection mode {mode!r}; choose one of {INJECTION_MODES}")
        self.mode = mode
        self.local_embed = ConvBN(in_chs, out_chs)
        self.gate_embed = ConvBN(in_chs, out_chs) if mode in ("both", "sigmoid_attn") else None
        self.gate_act = HardSigmoid()  # a module (official h_sigmoid), so module-hook FLOP counters see it
        self.global_embed = ConvBN(in_chs, out_chs) if mode in ("both", "sem_info") else None

    def parts(self, x_local: torch.Tensor, x_global: torch.Tensor) -> InjectionParts:
        """Every branch's output, for looking inside; ``forward`` returns ``parts(...).out``."""
        size = x_local.shape[-2:]
        local = self.local_embed(x_local)
        gate = semantics = None
        out = local
        if self.gate_embed is not None:
            gate = resize_to(self.gate_act(self.gate_embed(x_global)), size)
            out = out * gate
        if self.global_embed is not None:
            semantics = resize_to(self.global_embed(x_global), size)
            out = out + semantics
        return InjectionParts(local, gate, semantics, out)

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        return self.parts(x_local, x_global).out


class MultiScaleInjection(nn.ModuleList):
    """One :class:`SemanticInjection` per injection scale, called together: (local, global) pairs -> injected maps.

    (A ``ModuleList`` that is also called, so that counters which attribute FLOPs to called modules see it.)
    """

    def forward(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        if len(pairs) != len(self):
            raise ValueError(f"expected {len(self)} (local, global) pairs, got {len(pairs)}")
        return [sim(local, glob) for sim, (local, glob) in zip(self, pairs)]


# --------------------------------------------------------------------------------------------------------------------
# 5. Segmentation heads (paper §3.4 and the head ablation)
# --------------------------------------------------------------------------------------------------------------------


class SegmentationHead(nn.Module):
    """The paper's head (official ``SimpleHead``): resize the injected maps to the finest one (1/8), **sum** them,
    1x1 conv + BN + ReLU (depthwise for Tiny, ``is_dw=True``), dropout 0.1, 1x1 classifier. Logits at 1/8.
    """

    def __init__(self, width: int, num_classes: int, depthwise: bool = False, drop_rate: float = 0.1) -> None:
        super().__init__()
        self.fuse = ConvNormAct(width, width, 1, groups=width if depthwise else 1, act_layer=nn.ReLU)
        self.dropout = nn.Dropout2d(drop_rate)  # mmseg BaseDecodeHead: Dropout2d(dropout_ratio=0.1)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = features[0]
        for f in features[1:]:
            x = x + resize_to(f, size)
        return self.classifier(self.dropout(self.fuse(x)))


class ConcatHead(nn.Module):
    """The "Concat head" the paper's ablation compares against: a 1x1 conv (+BN+ReLU) reduces each injected map, the
    maps are resized to the finest and **concatenated**, then the same fuse conv, dropout and classifier.

    The paper gives no reduced width; this book reduces each of the n maps to ``make_divisible(M / n)`` channels so
    that the concatenation is about as wide as the summing head's input (our choice, stated here).
    """

    def __init__(self, width: int, num_inputs: int, num_classes: int, drop_rate: float = 0.1) -> None:
        super().__init__()
        reduced = make_divisible(width / num_inputs, 8)
        self.reduce = nn.ModuleList([ConvNormAct(width, reduced, 1, act_layer=nn.ReLU) for _ in range(num_inputs)])
        self.fuse = ConvNormAct(reduced * num_inputs, width, 1, act_layer=nn.ReLU)
        self.dropout = nn.Dropout2d(drop_rate)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([resize_to(reduce(f), size) for reduce, f in zip(self.reduce, features)], dim=1)
        return self.classifier(self.dropout(self.fuse(x)))


class ClassifierHead(nn.Module):
    """The classification variant (the paper's ImageNet experiments): average-pool the global semantics, BN, linear.

    Source: the official ImageNet checkpoints' ``head.bn`` / ``head.l`` (BatchNorm1d then Linear over all
    ``sum(channels)`` semantic channels), as read by PaddleViT's ``load_pytorch_weights.py``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, num_classes) if num_classes else nn.Identity()  # 0: pooled features

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------

Row = tuple[int, int, int, int]  # MobileNetV2 row [kernel, expansion t, channels c, stride s]

# Rows from local_configs/topformer/topformer_{tiny,small,base}.py; token rows are the official `embed_out_indice`.
_TINY_ROWS: tuple[Row, ...] = (
    (3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
    (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1),
)
_SMALL_ROWS: tuple[Row, ...] = (
    (3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1), (5, 3, 48, 2), (5, 3, 48, 1),
    (3, 3, 96, 2), (3, 3, 96, 1), (5, 6, 128, 2), (5, 6, 128, 1), (3, 6, 128, 1),
)
_BASE_ROWS: tuple[Row, ...] = (
    (3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1), (5, 3, 64, 2), (5, 3, 64, 1),
    (3, 3, 128, 2), (3, 3, 128, 1), (5, 6, 160, 2), (5, 6, 160, 1), (3, 6, 160, 1),
)


@dataclass(frozen=True)
class TopFormerConfig:
    """A TopFormer variant and its ablation knobs (defaults: the official configs; knobs: the ablation study)."""

    name: str
    rows: tuple[Row, ...]  # token pyramid rows [k, t, c, s]
    token_rows: tuple[int, ...]  # rows whose outputs are the tokens at 1/4, 1/8, 1/16, 1/32
    num_heads: int  # 4 / 6 / 8 for Tiny / Small / Base
    sim_width: int  # M: 128 / 192 / 256
    head_depthwise: bool = False  # Tiny's head fuses with a depthwise 1x1 conv (`is_dw=True`)
    stem_chs: int = 16
    depth: int = 4  # extractor blocks (`depths=4`)
    key_dim: int = 16
    attn_ratio: float = 2.0
    mlp_ratio: float = 2.0
    pool_stride: int = 64  # output stride of the pooled grid: 32, 64 (default, c2t_stride=2) or 128
    extractor_scales: tuple[int, ...] = TOKEN_STRIDES  # tokens stacked into the extractor (official: all four)
    extractor_input: str = "stack"  # "stack" the pooled tokens, or "last": the 1/32 token widened by a 1x1 conv
    injection_scales: tuple[int, ...] = (8, 16, 32)  # where global semantics are injected (`decode_out_indices`)
    injection: str = "both"  # "both" (SIM), "sigmoid_attn" or "sem_info" (the paper's ablation study)
    head: str = "simple"  # "simple" (the paper's summing head) or "concat"
    extractor_attention: bool = True  # False: the paper's "w/o MHSA" (every attention replaced by another FFN)

    def __post_init__(self) -> None:
        if not self.rows or not all(len(r) == 4 and all(isinstance(v, int) and v > 0 for v in r) for r in self.rows):
            raise ValueError(
                f"rows must be [kernel, expansion, channels, stride] rows of positive ints, got {self.rows!r}"
            )
        if any(r[3] not in (1, 2) for r in self.rows):
            raise ValueError(f"row strides must be 1 or 2, got {[r[3] for r in self.rows]}")
        if len(self.token_rows) != 4 or not all(0 <= i < len(self.rows) for i in self.token_rows):
            raise ValueError(f"token_rows must name 4 of the {len(self.rows)} rows, got {self.token_rows!r}")
        strides = self.token_strides_of_rows()
        if strides != TOKEN_STRIDES:
            raise ValueError(f"token_rows {self.token_rows} give output strides {strides}, expected {TOKEN_STRIDES}")
        for label, value in (("num_heads", self.num_heads), ("sim_width", self.sim_width),
                             ("key_dim", self.key_dim), ("stem_chs", self.stem_chs)):
            check_count(label, value)
        check_count("depth", self.depth, minimum=0, note=" (0 = no extractor)")
        if self.attn_ratio <= 0 or self.mlp_ratio <= 0:
            raise ValueError(f"attn_ratio and mlp_ratio must be positive, got {self.attn_ratio!r}, {self.mlp_ratio!r}")
        if not isinstance(self.pool_stride, int) or self.pool_stride < 32 or self.pool_stride % 32:
            raise ValueError(
                f"pool_stride must be a multiple of 32 (the 1/32 token is pooled further): 32, 64 or 128 in the "
                f"paper, got {self.pool_stride!r}"
            )
        _check_scales("extractor_scales", self.extractor_scales, TOKEN_STRIDES)
        _check_scales("injection_scales", self.injection_scales, self.extractor_scales)
        if self.extractor_input not in EXTRACTOR_INPUTS:
            raise ValueError(f"unknown extractor_input {self.extractor_input!r}; choose one of {EXTRACTOR_INPUTS}")
        if self.injection not in INJECTION_MODES:
            raise ValueError(f"unknown injection {self.injection!r}; choose one of {INJECTION_MODES}")
        if not isinstance(self.extractor_attention, bool):
            raise TypeError(f"extractor_attention must be a bool, got {self.extractor_attention!r}")
        if self.head not in HEAD_TYPES:
            raise ValueError(
                f"unknown head {self.head!r}; choose one of {HEAD_TYPES} (the paper's 'Sum head' is injection="
                "'sem_info' with the 'simple' head)"
            )

    def token_strides_of_rows(self) -> tuple[int, ...]:
        stride, strides = 2, []  # the stem halves the input
        for i, row in enumerate(self.rows):
            stride *= row[3]
            if i in self.token_rows:
                strides.append(stride)
        return tuple(strides)

    @property
    def token_channels(self) -> tuple[int, ...]:
        """Channels of the tokens at 1/4, 1/8, 1/16, 1/32 (Tiny: 16, 32, 64, 96)."""
        return tuple(self.rows[i][2] for i in self.token_rows)

    @property
    def extractor_channels(self) -> tuple[int, ...]:
        return tuple(c for s, c in zip(TOKEN_STRIDES, self.token_channels) if s in self.extractor_scales)

    @property
    def embed_dim(self) -> int:
        """Width of the extractor: the sum of the stacked tokens' channels (Tiny: 208)."""
        return sum(self.extractor_channels)


def _check_scales(label: str, scales: Sequence[int], allowed: Sequence[int]) -> None:
    scales = tuple(scales)
    if not scales or any(s not in allowed for s in scales) or list(scales) != sorted(set(scales)):
        raise ValueError(
            f"{label} must be a non-empty increasing subset of {tuple(allowed)} (output strides), got {scales!r}"
        )


TOPFORMER_CONFIGS: dict[str, TopFormerConfig] = {
    "tiny": TopFormerConfig("tiny", _TINY_ROWS, (2, 4, 6, 8), num_heads=4, sim_width=128, head_depthwise=True),
    "small": TopFormerConfig("small", _SMALL_ROWS, (2, 4, 6, 9), num_heads=6, sim_width=192),
    "base": TopFormerConfig("base", _BASE_ROWS, (2, 4, 6, 9), num_heads=8, sim_width=256),
}


class _TopFormerTrunk(nn.Module):
    """Token pyramid -> pooled stack -> semantics extractor, shared by the segmentation and classification models.

    Its parts are submodules a reader can call one by one: ``token_pyramid(x)`` gives the four tokens,
    ``pool(tokens)`` the stacked grid, ``extractor(grid)`` the global semantics split per scale.
    """

    def __init__(self, config: TopFormerConfig, in_chans: int, drop_path_rate: float) -> None:
        super().__init__()
        check_count("in_chans", in_chans)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.config = config
        self.in_chans = in_chans
        self.token_pyramid = TokenPyramid(config.rows, config.token_rows, in_chans, config.stem_chs)
        self.pool = PyramidPoolAgg(config.pool_stride // 32)
        in_chs = config.token_channels[-1] if config.extractor_input == "last" else None
        self.extractor = SemanticsExtractor(
            config.extractor_channels, config.depth, config.key_dim, config.num_heads, config.mlp_ratio,
            config.attn_ratio, drop_path_rate, in_chs=in_chs, attention=config.extractor_attention,
        )

    def init_weights(self) -> None:
        """The official initialisation as the official configs run it: :func:`init_mobile_weights` (convs
        N(0, sqrt(2 / fan_out)), BN 1 and 0), except that each attention projection's BN keeps its zero scale.
        The official ``init_weights`` resets only ``nn.BatchNorm2d`` layers, and the configs build ``SyncBN``, which
        is not one, so ``Conv2d_BN(bn_weight_init=0)`` survives there: every attention branch starts switched off.
        """
        init_mobile_weights(self)
        for block in self.extractor.blocks:
            if isinstance(block.attn, BNAttention):  # the "w/o MHSA" ablation has an FFN there instead
                nn.init.zeros_(block.attn.proj[1].bn.weight)

    def _tokens_and_semantics(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The four tokens (strides 4, 8, 16, 32) and the extractor's semantics (one per extractor scale)."""
        check_image_batch(x, self.in_chans)
        tokens = self.token_pyramid(x)
        if self.config.extractor_input == "last":  # ablation: the 1/32 token alone, widened by a 1x1 conv
            stacked = self.pool([tokens[-1]])
        else:
            stacked = self.pool([t for s, t in zip(TOKEN_STRIDES, tokens) if s in self.config.extractor_scales])
        return tokens, self.extractor(stacked)


class TopFormer(_TopFormerTrunk, Segmenter):
    """TopFormer for semantic segmentation (paper Fig. 2), a :class:`lessons.contract.Segmenter`.

    Parts, in order: ``token_pyramid``, ``pool`` (no parameters), ``extractor``, ``injection`` (one SIM per injection
    scale), ``head``. ``forward_features`` returns the injected maps (``feature_info``: M channels at strides 8, 16,
    32), ``forward_head`` the logits at 1/8 (``logits_stride``), ``forward`` those logits resized to the input.
    """

    def __init__(
        self, config: TopFormerConfig, num_classes: int = 150, in_chans: int = 3, drop_path_rate: float = 0.1,
        drop_rate: float = 0.1,
    ) -> None:
        check_count("num_classes", num_classes, note=" (150 for ADE20K)")
        super().__init__(config, in_chans, drop_path_rate)
        self.num_classes = num_classes
        chs = dict(zip(TOKEN_STRIDES, config.token_channels))
        self.injection = MultiScaleInjection([
            SemanticInjection(chs[s], config.sim_width, config.injection) for s in config.injection_scales
        ])
        if config.head == "simple":
            self.head = SegmentationHead(config.sim_width, num_classes, config.head_depthwise, drop_rate)
        else:
            self.head = ConcatHead(config.sim_width, len(config.injection_scales), num_classes, drop_rate)
        self.feature_info = [
            FeatureInfo(config.sim_width, s, f"injection.{i}") for i, s in enumerate(config.injection_scales)
        ]
        self.logits_stride = min(config.injection_scales)
        self.init_weights()
        init_mmseg_head(self.head)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The injected maps, finest first (Tiny at 512x512: [B, 128, 64, 64], [B, 128, 32, 32], [B, 128, 16, 16])."""
        tokens, semantics = self._tokens_and_semantics(x)
        local = dict(zip(TOKEN_STRIDES, tokens))
        glob = dict(zip(self.config.extractor_scales, semantics))
        return self.injection([(local[s], glob[s]) for s in self.config.injection_scales])

    def forward_head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(features)


class TopFormerClassifier(_TopFormerTrunk, ImageClassifier):
    """TopFormer for ImageNet (the paper's ImageNet pretraining), a :class:`lessons.contract.ImageClassifier`: the
    same trunk, then pool + BN + linear on the global semantics (``classifier_path = "head.fc"``).

    At 224x224 the tokens are pooled to the 1/32 grid (7x7) rather than 1/64 (the ImageNet configs of PaddleViT's
    port of the official weights: ``C2T_STRIDE: 1``); there is no injection and no segmentation head.
    ``forward_intermediates`` returns the four tokens and then the semantics ``forward_features`` returns.
    """

    classifier_path = "head.fc"

    def __init__(self, config: TopFormerConfig, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.1) -> None:
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier, pooled features)")
        super().__init__(config, in_chans, drop_path_rate)
        self.num_classes = num_classes
        self.num_features = config.embed_dim
        # The trunk is initialised before the head exists, so that its random weights do not depend on num_classes
        # (a Linear draws random numbers when it is built; num_classes=0 builds none).
        self.init_weights()
        self.head = ClassifierHead(config.embed_dim, num_classes)
        init_mobile_weights(self.head)  # BN 1 and 0, Linear ~ N(0, 0.01)
        self.feature_info = [
            FeatureInfo(c, s, f"token_pyramid.blocks.{row}")
            for c, s, row in zip(config.token_channels, TOKEN_STRIDES, config.token_rows)
        ] + [FeatureInfo(config.embed_dim, config.pool_stride, "extractor")]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The global semantics of every scale, stacked again: [B, embed_dim, h, w]."""
        return torch.cat(self._tokens_and_semantics(x)[1], dim=1)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tokens at strides 4, 8, 16, 32, then the stacked semantics (stride ``pool_stride``)."""
        tokens, semantics = self._tokens_and_semantics(x)
        return [*tokens, torch.cat(semantics, dim=1)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (hustvl/TopFormer): a checkpoint filter from their names to ours
# --------------------------------------------------------------------------------------------------------------------


def _pyramid_rules(config: TopFormerConfig, official: str) -> list[tuple[str, str]]:
    """Rules for the official ``TokenPyramidModule`` under the prefix ``official`` (``backbone.tpm`` or ``tpm``).

    The official ``InvertedResidual`` is one ``nn.Sequential`` named ``conv``: [expand 1x1, act, depthwise, act,
    project 1x1] when its expansion t is not 1, [depthwise, act, project] when it is (row 1). So the index of a conv
    says its role only together with the row's t, which the config knows; every ``Conv2d_BN`` names its conv ``c``.
    """
    p = re.escape(official)
    rules = [(rf"{p}\.stem\.0\.c\.(weight)", r"token_pyramid.stem.conv.\1"),
             (rf"{p}\.stem\.0\.bn\.(\w+)", r"token_pyramid.stem.bn.\1")]
    for i, (_, expand, _, _) in enumerate(config.rows):
        roles = ("depthwise", "project") if expand == 1 else ("expand", "depthwise", "project")
        for position, role in zip(range(0, 2 * len(roles), 2), roles):  # odd positions are the activations
            theirs, ours = rf"{p}\.layer{i + 1}\.conv\.{position}", f"token_pyramid.blocks.{i}.{role}"
            rules += [(rf"{theirs}\.c\.(weight)", rf"{ours}.conv.\1"), (rf"{theirs}\.bn\.(\w+)", rf"{ours}.bn.\1")]
    return rules


def _extractor_rules(official: str) -> list[tuple[str, str]]:
    """Rules for the official ``BasicLayer`` (``trans``): our block layout, with ``Conv2d_BN``'s ``c`` -> ``conv``."""
    p = re.escape(official) + r"\.transformer_blocks\.(\d+)"
    return [
        (rf"{p}\.attn\.(to_q|to_k|to_v|proj\.1)\.c\.(weight)", r"extractor.blocks.\1.attn.\2.conv.\3"),
        (rf"{p}\.attn\.(to_q|to_k|to_v|proj\.1)\.bn\.(\w+)", r"extractor.blocks.\1.attn.\2.bn.\3"),
        (rf"{p}\.mlp\.(fc1|fc2)\.c\.(weight)", r"extractor.blocks.\1.mlp.\2.conv.\3"),
        (rf"{p}\.mlp\.(fc1|fc2)\.bn\.(\w+)", r"extractor.blocks.\1.mlp.\2.bn.\3"),
        (rf"{p}\.mlp\.dwconv\.(weight|bias)", r"extractor.blocks.\1.mlp.dwconv.\2"),
    ]


# Official InjectionMultiSum branch -> ours: local_embedding is BN(Conv(x_local)); global_act is the branch that goes
# through h_sigmoid (the gate); global_embedding is the semantics added after the product.
_SIM_ROLES = {"local_embedding": "local_embed", "global_act": "gate_embed", "global_embedding": "global_embed"}


def _official_name(model: nn.Module) -> str:
    info = getattr(model, "info", None)
    return f"{info.name} ({info.official})" if info is not None else f"TopFormer-{model.config.name}"


@register_official_converter(TopFormer, TopFormerClassifier)
def convert_official_topformer(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """hustvl/TopFormer checkpoints -> this book's names (a "checkpoint filter").

    - :class:`TopFormer`: the mmseg ADE20K checkpoints of the README (``backbone.tpm``, ``backbone.trans``,
      ``backbone.SIM.{1,2,3}``, ``decode_head.linear_fuse`` / ``conv_seg``). The official ``SIM`` list has one slot
      per token scale (slot 0, the 1/4 scale, is an empty ``nn.Identity``), ours one per injection scale.
    - :class:`TopFormerClassifier`: the ImageNet checkpoints ``topformer-{T,S,B}-224-*.pth`` the README links
      (``tpm``, ``trans``, ``head.bn`` (BatchNorm1d), ``head.l`` (Linear)); the authors did not release the
      classification code, so this layout is the one PaddleViT's conversion script loads them into strictly.

    Keys are renamed by role (rules built from the variant's config); nothing changes layout. A checkpoint of the other
    task, of another variant or of another family raises ``ValueError``.
    """
    config = model.config
    expected = _official_name(model)
    is_segmentation = any(k.startswith(("backbone.", "decode_head.")) for k in state_dict)
    if isinstance(model, TopFormerClassifier):
        if is_segmentation:
            raise ValueError(
                f"this is an mmseg segmentation checkpoint (keys 'backbone.*', 'decode_head.*'); {expected} expects "
                "the ImageNet classifier checkpoint (keys 'tpm.*', 'trans.*', 'head.*'). Load it into the "
                f"segmenter {model.info.name.removesuffix('_cls') if hasattr(model, 'info') else 'topformer_*'}."
            )
        rules = _pyramid_rules(config, "tpm") + _extractor_rules("trans") + [
            (r"head\.bn\.(\w+)", r"head.norm.\1"),
            (r"head\.l\.(weight|bias)", r"head.fc.\1"),
        ]
        return rename_by_rules(state_dict, rules, expected)
    if not is_segmentation and any(k.startswith("tpm.") for k in state_dict):
        raise ValueError(
            f"this is the ImageNet classifier checkpoint (keys 'tpm.*', 'head.l.*'), not a segmentation one; "
            f"{expected} expects an mmseg checkpoint ('backbone.*', 'decode_head.*'). Load it into the '_cls' model; "
            "to start segmentation training from it, as the official init_cfg does, copy the trunk: "
            "seg.token_pyramid.load_state_dict(cls.token_pyramid.state_dict()) and the same for extractor."
        )
    sim_slot = {TOKEN_STRIDES.index(s): i for i, s in enumerate(config.injection_scales)}
    sim_rules = [
        (rf"backbone\.SIM\.{slot}\.{theirs}\.(conv|bn)\.(\w+)", rf"injection.{ours_index}.{ours}.\1.\2")
        for slot, ours_index in sim_slot.items() for theirs, ours in _SIM_ROLES.items()
    ]
    rules = _pyramid_rules(config, "backbone.tpm") + _extractor_rules("backbone.trans") + sim_rules + [
        (r"decode_head\.linear_fuse\.(conv|bn)\.(\w+)", r"head.fuse.\1.\2"),
        (r"decode_head\.conv_seg\.(weight|bias)", r"head.classifier.\1"),
    ]
    return rename_by_rules(state_dict, rules, expected)


# --------------------------------------------------------------------------------------------------------------------
# Named variants
# --------------------------------------------------------------------------------------------------------------------

_CONFIG_FIELDS = {f.name for f in fields(TopFormerConfig)} - {"name", "rows", "token_rows"}


def _split_overrides(kwargs: dict) -> tuple[dict, dict]:
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    for key in ("extractor_scales", "injection_scales"):
        if key in knobs:
            knobs[key] = tuple(knobs[key])
    return knobs, kwargs


def _create(variant: str, **kwargs) -> TopFormer:
    knobs, kwargs = _split_overrides(kwargs)
    return TopFormer(replace(TOPFORMER_CONFIGS[variant], **knobs), **kwargs)


def _create_cls(variant: str, **kwargs) -> TopFormerClassifier:
    # ImageNet at 224: pool to the 1/32 grid (PaddleViT port of the official cls configs, C2T_STRIDE: 1)
    kwargs.setdefault("pool_stride", 32)
    knobs, kwargs = _split_overrides(kwargs)
    return TopFormerClassifier(replace(TOPFORMER_CONFIGS[variant], **knobs), **kwargs)


# Normalisation: ImageNet mean/std for both tasks. mmseg's img_norm_cfg in local_configs/_base_/datasets/ade20k.py
# is mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375] on 0-255 RGB, i.e. the ImageNet values on [0, 1];
# the classification code is not released, and PaddleViT's port evaluates the weights with ImageNet mean/std.
# size_divisor 1: the model runs on any size (the official test pipeline's ResizeToMultiple(32) is a choice of the
# data pipeline, not a need of the network).
_SEG = ade20k_segmenter("topformer")
_CLS = imagenet_classifier("topformer")
_SEG_CONFIG = "hustvl/TopFormer local_configs/topformer/topformer_{}_512x512_160k_2x8_ade20k.py"
_CLS_CHECKPOINT = (
    "hustvl/TopFormer README, ImageNet checkpoint {} (classification code not released; head layout from "
    "BR-IDL/PaddleViT image_classification/TopFormer)"
)


@register_model(**_SEG, official=_SEG_CONFIG.format("tiny"))
def topformer_tiny(**kwargs) -> TopFormer:
    """TopFormer-Tiny for ADE20K (150 classes)."""
    return _create("tiny", **kwargs)


@register_model(**_SEG, official=_SEG_CONFIG.format("small"))
def topformer_small(**kwargs) -> TopFormer:
    """TopFormer-Small for ADE20K (150 classes)."""
    return _create("small", **kwargs)


@register_model(**_SEG, official=_SEG_CONFIG.format("base"))
def topformer_base(**kwargs) -> TopFormer:
    """TopFormer-Base for ADE20K (150 classes)."""
    return _create("base", **kwargs)


@register_model(**_CLS, official=_CLS_CHECKPOINT.format("topformer-T-224-66.2.pth"))
def topformer_tiny_cls(**kwargs) -> TopFormerClassifier:
    """TopFormer-Tiny for ImageNet-1k at 224x224: the backbone the segmenter is initialised from."""
    return _create_cls("tiny", **kwargs)


@register_model(**_CLS, official=_CLS_CHECKPOINT.format("topformer-S-224-72.3.pth"))
def topformer_small_cls(**kwargs) -> TopFormerClassifier:
    """TopFormer-Small for ImageNet-1k at 224x224."""
    return _create_cls("small", **kwargs)


@register_model(**_CLS, official=_CLS_CHECKPOINT.format("topformer-B-224-75.3.pth"))
def topformer_base_cls(**kwargs) -> TopFormerClassifier:
    """TopFormer-Base for ImageNet-1k at 224x224."""
    return _create_cls("base", **kwargs)
