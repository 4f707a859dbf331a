"""PP-MobileSeg (Tang et al., 2023, arXiv 2304.05152): StrideFormer, the Aggregated Attention Module and VIM.

Three changes to SeaFormer, each aimed at a phone's CPU:

* **StrideFormer**: a *four*-stage MobileNetV3 backbone (SE blocks, hard-swish) instead of SeaFormer's five-stage
  MobileNetV2 one, with SEA attention on the last two stages run *strided*: a depthwise stride-2 conv first, so the
  attention works on a quarter of the pixels, then a bilinear upsample back.
* **AAM** (Aggregated Attention Module): the 1/8, 1/16 and 1/32 features each cast a "vote" (a sigmoid gate); the
  product of the votes filters the detail features, and the most semantic (1/32) features are added back.
* **VIM** (Valid Interpolate Module): at inference, upsample only the classes that win somewhere in the low-resolution
  prediction. The final interpolation of 150 logit maps to 512 x 512 and the argmax over them were more than half of
  the model's latency on the phone (paper §2.3, Fig. 3).

Official code (PaddlePaddle/PaddleSeg): ``paddleseg/models/backbones/strideformer.py`` (StrideFormer, AAM,
``MobileSeg_Base``/``MobileSeg_Tiny``), ``paddleseg/models/pp_mobileseg.py`` (head, VIM),
``configs/pp_mobileseg/*.yml`` and README.md (numbers). :func:`convert_official_pp_mobileseg` maps the released
``.pdparams`` checkpoints onto these modules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from .checkpoints import StateDict, register_official_converter, rename_by_rules
from .contract import FeatureInfo, Segmenter
from .layers import (
    ActLayer, ConvBN, ConvNormAct, check_count, check_image_batch, init_mobile_weights, resize_to, row_stages,
)
from .registry import ade20k_segmenter, register_model
from .seaformer import FusionBlock, run_pyramid, sea_transformer_stages

# FX symbolic tracing records the input check as one call (run on real tensors) instead of tracing into it.
torch.fx.wrap("check_image_batch")
torch.fx.wrap("resize_to")  # its size may be a traced shape, which FX cannot turn into a tuple

# --------------------------------------------------------------------------------------------------------------------
# MobileNetV3 blocks (Howard et al. 2019, §5; PaddleSeg ``ResidualUnit`` and ``SEModule``)
# --------------------------------------------------------------------------------------------------------------------


def paddle_hardsigmoid(x: torch.Tensor, slope: float = 0.2, offset: float = 0.5) -> torch.Tensor:
    """clip(slope * x + offset, 0, 1): Paddle's ``Hardsigmoid(slope=0.2, offset=0.5)``, the SE gate of PP-MobileSeg.

    Not torch's ``F.hardsigmoid`` (slope 1/6, the MobileNetV3 paper's ReLU6(x+3)/6): PaddleSeg's ``SEModule`` builds
    ``Hardsigmoid(slope=0.2, offset=0.5)`` (the mmseg port keeps slope 0.2), so it saturates at |x| = 2.5, not 3.
    """
    return (slope * x + offset).clamp(0.0, 1.0)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as PaddleSeg's MobileNetV3 writes it (``SEModule``, reduction 4).

    Average-pool to one value per channel, 1x1 conv (C -> C/4, bias) -> ReLU -> 1x1 conv (C/4 -> C, bias) ->
    hard-sigmoid with slope 0.2, and scale the input's channels by the result.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"channels={channels} is too small for reduction {reduction}")
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * paddle_hardsigmoid(scale)


MV3Row = tuple[int, int, int, bool, str, int]  # kernel, expanded channels, output channels, SE?, activation, stride
_ACTIVATIONS: dict[str, ActLayer] = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


class MobileNetV3Block(nn.Module):
    """MobileNetV3's bottleneck (paper Fig. 4; PaddleSeg ``ResidualUnit``).

    1x1 expand (always, even when the width does not change, unlike MobileNetV2's t = 1 rows) -> depthwise k x k
    (the stride) -> optional squeeze-excite -> linear 1x1 projection; a residual when the shape is kept.
    """

    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, kernel_size: int, stride: int, use_se: bool, act: str,
    ) -> None:
        super().__init__()
        if act not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose from {sorted(_ACTIVATIONS)}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        act_layer = _ACTIVATIONS[act]
        self.use_residual = stride == 1 and in_chs == out_chs
        self.expand = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer)
        self.depthwise = ConvNormAct(mid_chs, mid_chs, kernel_size, stride, groups=mid_chs, act_layer=act_layer)
        self.se = SqueezeExcite(mid_chs) if use_se else nn.Identity()
        self.project = ConvNormAct(mid_chs, out_chs, 1, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


def mobilenetv3_block(
    in_chs: int, kernel: int, mid_chs: int, out_chs: int, use_se: bool, act: str, stride: int,
) -> MobileNetV3Block:
    """The :class:`MobileNetV3Block` an official ``[k, exp, c, se, act, s]`` row describes (``StackedMV3Block``)."""
    return MobileNetV3Block(in_chs, mid_chs, out_chs, kernel, stride, use_se, act)


# --------------------------------------------------------------------------------------------------------------------
# Fusion: the Aggregated Attention Module (paper §2.2, Eq. 1)
# --------------------------------------------------------------------------------------------------------------------

GateName = Literal["sigmoid", "relu6"]
_GATES: dict[str, ActLayer] = {"sigmoid": nn.Sigmoid, "relu6": nn.ReLU6}


def _gate_layer(gate: str) -> ActLayer:
    if gate not in _GATES:
        raise ValueError(f"unknown AAM gate {gate!r}; choose from {sorted(_GATES)}")
    return _GATES[gate]


class AggregatedAttention(nn.Module):
    """AAM, ``inj_type='AAM'`` (PaddleSeg ``InjectionMultiSumallmultiallsum``; paper §2.2, Eq. 1), output at 1/16.

    The three features f1 = x8 (bilinearly halved to 1/16), f2 = x16, f3 = x32 (computed at 1/32, upsampled) each
    give an embedding e_i = BN(Conv1x1(f_i)) and a vote a_i = gate(BN(Conv1x1(f_i))):

        out = a1 * a2 * a3 * (e1 + e2) + e3

    The product of the votes is the "ensemble vote" that filters the detail; e3, the features with the largest
    receptive field, is added back whole. ``gate="sigmoid"`` is the paper's wording and PaddleSeg's code since the
    2023-08 fix (#3443, ``nn.Sigmoid()`` hard-coded); the first release passed the backbone's ``act_layer``
    (ReLU6) instead. The gate has no parameters, so parameter counts do not depend on it.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, gate: GateName = "sigmoid") -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"AAM fuses three features (1/8, 1/16, 1/32), got in_channels={tuple(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.embeddings = nn.ModuleList(ConvBN(c, out_channels) for c in in_channels)
        self.vote_embeddings = nn.ModuleList(ConvBN(c, out_channels) for c in in_channels)
        self.gate = _gate_layer(gate)()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_features(features, self.in_channels, "AAM")
        x8, x16, x32 = features
        size = ((x8.shape[-2]) // 2, (x8.shape[-1]) // 2)  # Paddle's scale_factor=0.5 rounds down
        f1 = resize_to(x8, size)
        f2 = resize_to(x16, size)
        e1, e2 = self.embeddings[0](f1), self.embeddings[1](f2)
        a1, a2 = self.gate(self.vote_embeddings[0](f1)), self.gate(self.vote_embeddings[1](f2))
        a3 = resize_to(self.gate(self.vote_embeddings[2](x32)), size)
        e3 = resize_to(self.embeddings[2](x32), size)
        return a1 * a2 * a3 * (e1 + e2) + e3


class AggregatedAttentionX8(nn.Module):
    """AAM's lighter 1/8 form, ``inj_type='AAMSx8'`` (PaddleSeg ``InjectionMultiSumallmultiallsumSimpx8``).

    Used by the official PP-MobileSeg-Base config (``pp_mobileseg_base_ade20k_512x512_80k.yml``) and named in its
    README latency log ("MV3_4stage_AAMSx8"). Output at 1/8, four 1x1 ConvBNs instead of six:

        out = a2 * a3 * e1 + e3      (e1 from x8; a2 from x16; a3, e3 from x32; all at 1/8)
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, gate: GateName = "sigmoid") -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"AAM fuses three features (1/8, 1/16, 1/32), got in_channels={tuple(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.embedding_x8 = ConvBN(in_channels[0], out_channels)
        self.vote_embedding_x16 = ConvBN(in_channels[1], out_channels)
        self.vote_embedding_x32 = ConvBN(in_channels[2], out_channels)
        self.embedding_x32 = ConvBN(in_channels[2], out_channels)
        self.gate = _gate_layer(gate)()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_features(features, self.in_channels, "AAMSx8")
        x8, x16, x32 = features
        size = x8.shape[-2:]
        e1 = self.embedding_x8(x8)
        a2 = self.gate(self.vote_embedding_x16(resize_to(x16, size)))
        a3 = resize_to(self.gate(self.vote_embedding_x32(x32)), size)
        e3 = resize_to(self.embedding_x32(x32), size)
        return a2 * a3 * e1 + e3


class SeaFusion(nn.Module):
    """SeaFormer's fusion chain (``inj_type='origin'``): the ablation's "+StrideFormer" row, before AAM.

    The StrideFormer version of SeaFormer's LightHead fusion: ``detail = BN(Conv(detail)) * up(gate(BN(Conv(g))))``
    for g = x16 then x32, widths ``dims`` (official default (128, 160), the SeaFormer-Base head's widths). PaddleSeg's
    gate is ``nn.Sigmoid`` here (SeaFormer's own is hard-sigmoid); it has no parameters.
    """

    def __init__(self, in_channels: Sequence[int], dims: Sequence[int] = (128, 160)) -> None:
        super().__init__()
        if len(in_channels) != len(dims) + 1:
            raise ValueError(f"{len(dims)} fusions need {len(dims) + 1} inputs, got in_channels={tuple(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.fusions = nn.ModuleList()
        local_chs = in_channels[0]
        for global_chs, dim in zip(in_channels[1:], dims):
            self.fusions.append(FusionBlock(local_chs, global_chs, dim, gate=nn.Sigmoid))
            local_chs = dim

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_features(features, self.in_channels, "SeaFusion")
        x = features[0]
        for fusion, x_global in zip(self.fusions, features[1:]):
            x = fusion(x, x_global)
        return x


def _check_features(features: Sequence[torch.Tensor], in_channels: tuple[int, ...], name: str) -> None:
    if len(features) != len(in_channels):
        raise ValueError(f"{name} expects {len(in_channels)} feature maps, got {len(features)}")
    for i, (feature, chs) in enumerate(zip(features, in_channels)):
        if feature.ndim != 4 or feature.shape[1] != chs:
            raise ValueError(f"{name} input {i} must be [B, {chs}, H, W], got shape {tuple(feature.shape)}")


torch.fx.wrap("_check_features")


# --------------------------------------------------------------------------------------------------------------------
# StrideFormer (paper §2.1; ``StrideFormer``, ``MobileSeg_Base``/``MobileSeg_Tiny``)
# --------------------------------------------------------------------------------------------------------------------

FusionName = Literal["aam", "aam_x8", "sea_fusion"]


@dataclass(frozen=True)
class StrideFormerConfig:
    """A StrideFormer + fusion variant, as ``MobileSeg_Base``/``MobileSeg_Tiny`` and the yml configs write it.

    ``stages`` are MobileNetV3 stages (the stem, 3x3 s2 conv + hard-swish to ``stem_channels``, comes first); SEA
    stages (strided by ``attn_stride``) follow the last ``len(depths)`` of them. ``fusion`` picks AAM (``"aam"``,
    1/16), its 1/8 form (``"aam_x8"``) or SeaFormer's fusion chain (``"sea_fusion"``, the ablation before AAM).
    """

    name: str
    stages: tuple[tuple[MV3Row, ...], ...]
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: int
    fusion: FusionName = "aam"
    key_dims: tuple[int, ...] = (16, 24)
    mlp_ratios: tuple[float, ...] = (2.0, 4.0)
    attn_ratio: float = 2.0
    attn_stride: int = 2  # official stride_attention=True
    stem_channels: int = 16
    detail_stage: int = 1  # the second stage's output (1/8) is the detail feature (official `if i == 1`)
    fusion_channels: int = 256  # AAM embedding width (paper §2.4; official out_channels=256)
    sea_fusion_dims: tuple[int, ...] = (128, 160)  # official StrideFormer default `dims`

    def __post_init__(self) -> None:
        n_trans = len(self.depths)
        if not (len(self.embed_dims) == len(self.key_dims) == len(self.mlp_ratios) == n_trans):
            raise ValueError("embed_dims, key_dims and mlp_ratios need one entry per SEA stage")
        if n_trans > len(self.stages) - self.detail_stage - 1:
            raise ValueError(f"{n_trans} SEA stages do not fit after the detail stage {self.detail_stage}")
        for i, dim in enumerate(self.embed_dims):
            out_chs = self.stages[len(self.stages) - n_trans + i][-1][2]
            if dim != out_chs:
                raise ValueError(f"embed_dims[{i}]={dim} must equal the channels of the stage it follows ({out_chs})")
        if self.fusion not in ("aam", "aam_x8", "sea_fusion"):
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from 'aam', 'aam_x8', 'sea_fusion'")
        if self.fusion != "sea_fusion" and n_trans != 2:
            raise ValueError(f"AAM fuses the detail map and exactly two SEA stages, got {n_trans} SEA stages")
        if self.attn_stride not in (1, 2):
            raise ValueError(f"attn_stride must be 1 or 2, got {self.attn_stride!r}")

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the fused features: the detail map, then each SEA stage (``out_feat_chs``)."""
        return (self.stages[self.detail_stage][-1][2], *self.embed_dims)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """The stride of each MobileNetV3 stage's output (the stem halves first): (4, 8, 16, 32) for base and tiny."""
        strides, stride = [], 2
        for stage in self.stages:
            for row in stage:
                stride *= row[5]
            strides.append(stride)
        return tuple(strides)

    @property
    def feature_strides(self) -> tuple[int, ...]:
        """Strides of the fused features: the detail map, then each SEA stage (the stage it follows)."""
        n_trans = len(self.depths)
        return (self.stage_strides[self.detail_stage], *self.stage_strides[len(self.stages) - n_trans:])

    @property
    def total_stride(self) -> int:
        """The stride of the coarsest map the network computes: the last stage, halved again by strided attention."""
        return self.stage_strides[-1] * self.attn_stride

    @property
    def logits_stride(self) -> int:
        """Stride of the fused map, hence of the logits: AAM halves the 1/8 detail map; AAMSx8 and SeaFormer's
        fusion chain keep it."""
        detail = self.feature_strides[0]
        return 2 * detail if self.fusion == "aam" else detail


class StrideFormer(nn.Module):
    """The StrideFormer backbone: MobileNetV3 stages, strided SEA attention on the last ones.

    :meth:`forward` returns [detail map (1/8), output of each SEA stage (1/16, 1/32 for the four-stage models)].
    Inputs must be at least as large as the coarsest feature map's stride (32; 64 for the five-stage ablation model),
    so that map has at least one pixel; any size above works (strided attention upsamples back to its input's size).
    """

    def __init__(
        self, config: StrideFormerConfig, in_chans: int = 3, drop_path_rate: float = 0.0,
        act_layer: ActLayer = nn.ReLU6,
    ) -> None:
        super().__init__()
        self.config = config
        self.in_chans = in_chans
        self.stem = ConvNormAct(in_chans, config.stem_channels, 3, stride=2, act_layer=nn.Hardswish)
        self.stages, _ = row_stages(config.stages, config.stem_channels, mobilenetv3_block)
        # MobileSeg_Base/Tiny pass act_layer=nn.ReLU6: it is the activation inside the SEA blocks
        self.transformers = sea_transformer_stages(config, act_layer, drop_path_rate, attn_stride=config.attn_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image_batch(x, self.in_chans, min_size=self.config.feature_strides[-1])
        return run_pyramid(x, self.stem, self.stages, self.transformers, self.config.detail_stage)


class PPMobileSegHead(nn.Module):
    """The head (paper §2.2, "a simple segmentation head after TopFormer"; official ``PPMobileSegHead``).

    1x1 conv + BN + ReLU (depthwise, ``head_use_dw=True``) -> Dropout2d(0.1) -> 1x1 conv to the classes.
    """

    def __init__(self, in_channels: int, num_classes: int, use_dw: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        check_count("num_classes", num_classes)
        self.linear_fuse = ConvNormAct(in_channels, in_channels, 1, groups=in_channels if use_dw else 1,
                                       act_layer=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.linear_fuse(x)))


# --------------------------------------------------------------------------------------------------------------------
# VIM: the Valid Interpolate Module (paper §2.3, Fig. 2; ``PPMobileSeg.forward`` with upsample='vim')
# --------------------------------------------------------------------------------------------------------------------

VIM_MIN_CLASSES = 30  # paper §2.3 and pp_mobileseg.py: VIM is off below 30 classes (too little channel redundancy)


def interpolate_argmax(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The plain ending: bilinear upsample of every class's logits to ``size``, then argmax -> labels [B, H, W]."""
    return resize_to(logits, size).argmax(dim=1)


def present_classes(logits: torch.Tensor) -> torch.Tensor:
    """The classes that win at least one pixel of the low-resolution prediction (in the whole batch), sorted."""
    if logits.ndim != 4:
        raise ValueError(f"expected logits [B, K, h, w], got shape {tuple(logits.shape)}")
    return torch.unique(logits.argmax(dim=1))


def interpolate_classes(logits: torch.Tensor, classes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Upsample only the logit maps of ``classes``, argmax among them, map the winners back to class ids.

    ``classes`` must be a non-empty 1-D integer tensor of distinct ids in [0, K).
    """
    if logits.ndim != 4:
        raise ValueError(f"expected logits [B, K, h, w], got shape {tuple(logits.shape)}")
    if not isinstance(classes, torch.Tensor) or classes.ndim != 1 or classes.is_floating_point() \
            or classes.dtype == torch.bool:
        raise ValueError(f"classes must be a 1-D integer tensor of class ids, got {classes!r}")
    if classes.numel() == 0:
        raise ValueError("classes is empty: VIM needs at least one class to interpolate")
    num_classes = logits.shape[1]
    if int(classes.min()) < 0 or int(classes.max()) >= num_classes:
        raise ValueError(f"class ids must lie in [0, {num_classes}), got {classes.tolist()}")
    if torch.unique(classes).numel() != classes.numel():
        raise ValueError(f"class ids must be distinct, got {classes.tolist()}")
    classes = classes.to(torch.long)
    selected = logits.index_select(1, classes)  # [B, n, h, w]: the "valid" channels only
    winners = resize_to(selected, size).argmax(dim=1)  # index into `classes`
    return classes[winners]  # back to class ids (the official loop `pred_retrieve[pred == i] = labelset[i]`)


def valid_interpolate(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """VIM: argmax + unique on the low-resolution logits, index-select those channels, interpolate, argmax, map back.

    Equal to :func:`interpolate_argmax` whenever no absent class would win after interpolation, in particular when
    every class is present; it can differ where a class that wins nowhere at low resolution wins between pixels.
    """
    return interpolate_classes(logits, present_classes(logits), size)


def predict_labels(logits: torch.Tensor, size: Sequence[int], use_vim: bool) -> torch.Tensor:
    """Label map [B, H, W] from low-resolution logits: VIM if ``use_vim``, else interpolate-then-argmax."""
    return valid_interpolate(logits, size) if use_vim else interpolate_argmax(logits, size)


def vim_agreement_by_classes(logits: torch.Tensor, size: Sequence[int]) -> dict[int, tuple[int, float]]:
    """VIM against interpolate-then-argmax, one image at a time, grouped by how many classes the image's
    low-resolution argmax holds: ``{classes present: (images, percent of their pixels where the labels agree)}``.

    VIM upsamples only the present classes, so a pixel can differ only where an absent class would have won after
    interpolation; with every class present the two are equal.
    """
    if logits.ndim != 4:
        raise ValueError(f"expected logits [B, K, h, w], got shape {tuple(logits.shape)}")
    counts: dict[int, list[float]] = {}
    for one in logits.split(1):
        n_present = present_classes(one).numel()
        agree = (valid_interpolate(one, size) == interpolate_argmax(one, size)).double().mean().item()
        counts.setdefault(n_present, []).append(agree)
    return {n: (len(a), 100.0 * sum(a) / len(a)) for n, a in sorted(counts.items())}


def vim_applies(upsample: str, training: bool, num_classes: int, min_classes: int = VIM_MIN_CLASSES) -> bool:
    """The official switch: VIM only when asked for, at inference, and with at least ``min_classes`` classes."""
    return upsample == "vim" and not training and num_classes >= min_classes


class LabelPredictor(nn.Module):
    """A segmenter + its final upsample and argmax: what PP-MobileSeg's latencies time (README footnote).

    Wraps any :class:`~lessons.contract.Segmenter` (it reads ``forward_logits`` and ``num_classes``, which every
    segmenter has), so TopFormer, SeaFormer or HRViT can be timed with VIM too. ``upsample="vim"`` uses
    :func:`valid_interpolate`, but only in evaluation mode and with at least ``min_classes`` classes (official: 30);
    otherwise, and with ``upsample="interpolate"``, the plain :func:`interpolate_argmax`.
    """

    def __init__(self, model: nn.Module, upsample: Literal["vim", "interpolate"] = "vim",
                 min_classes: int = VIM_MIN_CLASSES) -> None:
        super().__init__()
        if upsample not in ("vim", "interpolate"):
            raise ValueError(f"upsample must be 'vim' or 'interpolate', got {upsample!r}")
        for needed in ("forward_logits", "num_classes"):
            if not hasattr(model, needed):
                raise TypeError(
                    f"{type(model).__name__} has no {needed}: LabelPredictor wraps a segmenter "
                    "(lessons.contract.Segmenter: low-resolution logits from forward_logits, and num_classes)"
                )
        self.model = model
        self.upsample = upsample
        self.min_classes = min_classes

    @property
    def vim_active(self) -> bool:
        return vim_applies(self.upsample, self.training, self.model.num_classes, self.min_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return predict_labels(self.model.forward_logits(x), x.shape[-2:], self.vim_active)


# --------------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------------


class PPMobileSeg(Segmenter):
    """PP-MobileSeg (paper Fig. 2): StrideFormer -> fusion (AAM) -> head -> upsample (VIM at inference).

    The contract (:class:`~lessons.contract.Segmenter`): :meth:`forward_features` gives the StrideFormer's outputs
    (1/8 detail map, then each SEA stage; ``feature_info``), :meth:`forward_head` fuses them and classifies, giving
    logits at ``logits_stride`` (16 with AAM, 8 with AAMSx8), ``forward`` the logits resized to the input (training,
    FLOPs, ``torch.export``), and :meth:`predict` the label map, through VIM when ``upsample="vim"``, the model is in
    evaluation mode and it has at least 30 classes (official ``PPMobileSeg.forward``).

    Official layout differs in one place: PaddleSeg keeps AAM inside the backbone (``backbone.inj_module``); here it
    is ``fusion``, between the backbone and the head, so the backbone's outputs are the features the contract names.
    """

    def __init__(
        self, config: StrideFormerConfig, num_classes: int = 150, in_chans: int = 3,
        upsample: Literal["vim", "interpolate"] = "vim", gate: GateName = "sigmoid", drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if upsample not in ("vim", "interpolate"):
            raise ValueError(f"upsample must be 'vim' or 'interpolate', got {upsample!r}")
        self.config = config
        self.num_classes = num_classes
        self.upsample = upsample
        self.backbone = StrideFormer(config, in_chans, drop_path_rate)
        n_trans = len(config.depths)
        modules = (f"backbone.stages.{config.detail_stage}", *(f"backbone.transformers.{i}" for i in range(n_trans)))
        self.feature_info = [
            FeatureInfo(chs, stride, module)
            for chs, stride, module in zip(config.feature_channels, config.feature_strides, modules)
        ]
        self.logits_stride = config.logits_stride
        if config.fusion == "aam":
            self.fusion: nn.Module = AggregatedAttention(config.feature_channels, config.fusion_channels, gate)
            fused_chs = config.fusion_channels
        elif config.fusion == "aam_x8":
            self.fusion = AggregatedAttentionX8(config.feature_channels, config.fusion_channels, gate)
            fused_chs = config.fusion_channels
        else:
            self.fusion = SeaFusion(config.feature_channels, config.sea_fusion_dims)
            fused_chs = config.sea_fusion_dims[-1]
        self.head = PPMobileSegHead(fused_chs, num_classes)
        # PaddleSeg trains from Paddle's default He-normal init; the book uses the He-normal scheme SeaFormer's code
        # writes out (fan_out instead of fan_in), so a seeded random model predicts varied classes
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[detail map at 1/8, output of each SEA stage] (official ``StrideFormer.forward`` before ``inj_module``)."""
        return self.backbone(x)

    def forward_head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse (AAM) and classify: logits at ``logits_stride``."""
        return self.head(self.fusion(features))

    @property
    def vim_active(self) -> bool:
        return vim_applies(self.upsample, self.training, self.num_classes)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Label map [B, H, W] (int64): VIM when :attr:`vim_active`, else interpolate-then-argmax.

        VIM's set of present classes depends on the data, so it lives here, not in ``forward`` (which
        ``torch.export`` traces).
        """
        return predict_labels(self.forward_logits(x), x.shape[-2:], self.vim_active)


# --------------------------------------------------------------------------------------------------------------------
# Configurations (strideformer.py MobileSeg_Base / MobileSeg_Tiny; configs/pp_mobileseg/*.yml)
# --------------------------------------------------------------------------------------------------------------------

STRIDEFORMER_CONFIGS: dict[str, StrideFormerConfig] = {
    "base": StrideFormerConfig(
        "base",
        stages=(
            ((3, 16, 16, True, "relu", 1), (3, 64, 32, False, "relu", 2), (3, 96, 32, False, "relu", 1)),
            ((5, 128, 64, True, "hardswish", 2), (5, 240, 64, True, "hardswish", 1)),
            ((5, 384, 128, True, "hardswish", 2), (5, 384, 128, True, "hardswish", 1)),
            ((5, 768, 192, True, "hardswish", 2), (5, 768, 192, True, "hardswish", 1)),
        ),
        embed_dims=(128, 192), depths=(3, 3), num_heads=8,
        fusion="aam_x8",  # pp_mobileseg_base_ade20k_512x512_80k.yml: inj_type AAMSx8
    ),
    "tiny": StrideFormerConfig(
        "tiny",
        stages=(
            ((3, 16, 16, True, "relu", 1), (3, 64, 32, False, "relu", 2), (3, 48, 24, False, "relu", 1)),
            ((5, 96, 32, True, "hardswish", 2), (5, 96, 32, True, "hardswish", 1)),
            ((5, 160, 64, True, "hardswish", 2), (5, 160, 64, True, "hardswish", 1)),
            ((3, 384, 128, True, "hardswish", 2), (3, 384, 128, True, "hardswish", 1)),
        ),
        embed_dims=(64, 128), depths=(2, 2), num_heads=4,
        fusion="aam",  # pp_mobileseg_tiny_ade20k_512x512_80k.yml: inj_type AAM
    ),
}


# The paper's claim "four stages cut the parameter overhead by 32.19%" (§3.3) compares four and five stages. This is
# StrideFormer-Base with a fifth stage: SeaFormer-Base's last stage ([k=3, t=6, c=256, s=2]) written as a
# MobileNetV3 row like StrideFormer's others (expanded width 6 x 192, SE, hard-swish), SEA attention on the last two
# stages (1/32 and 1/64, widths 192 and 256) and SeaFormer's fusion, as in the ablation's "+StrideFormer" row.
STRIDEFORMER_CONFIGS["base_5stage"] = replace(
    STRIDEFORMER_CONFIGS["base"],
    name="base_5stage",
    stages=STRIDEFORMER_CONFIGS["base"].stages + (((3, 6 * 192, 256, True, "hardswish", 2),),),
    embed_dims=(192, 256),
    fusion="sea_fusion",
)

def create_pp_mobileseg(variant: str, fusion: FusionName | None = None, **kwargs) -> PPMobileSeg:
    """PP-MobileSeg-``variant`` (``base``, ``tiny``); ``fusion`` overrides the official config's fusion module."""
    if variant not in STRIDEFORMER_CONFIGS:
        raise ValueError(f"unknown PP-MobileSeg variant {variant!r}; choose from {sorted(STRIDEFORMER_CONFIGS)}")
    config = STRIDEFORMER_CONFIGS[variant]
    if fusion is not None:
        config = replace(config, fusion=fusion)
    return PPMobileSeg(config, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (PaddleSeg .pdparams, read without Paddle by lessons.checkpoints.read_pdparams)
# --------------------------------------------------------------------------------------------------------------------

# Counters that Paddle's FLOP counter (``paddle.flops``) registers on every layer and a checkpoint saved afterwards
# keeps: the op and parameter counts and the shapes it saw. They are not weights; the converter drops them by name.
PADDLE_COUNTERS = r".+\.(total_ops|total_params|input_shape|output_shape)"

_LEAF = r"(weight|bias|_mean|_variance)"  # a Paddle Conv2D/BatchNorm tensor; renamed to torch's in the second pass
_PADDLE_LEAVES: tuple[tuple[str, str], ...] = (
    (r"(.+)\._mean", r"\1.running_mean"),  # Paddle's BatchNorm statistics
    (r"(.+)\._variance", r"\1.running_var"),
    (r"(.+\.(?:weight|bias|pos_embed))", r"\1"),
)
_MV3_PARTS = {"expand_conv": "expand", "bottleneck_conv": "depthwise", "linear_conv": "project"}  # ResidualUnit
# Sea_Attention's Conv2DBN layers (``c``, ``bn``) -> SeaAttention's ConvBN layers (``conv``, ``bn``)
_SEA_CONV_BN = {
    "attn.to_q": "attn.to_q", "attn.to_k": "attn.to_k", "attn.to_v": "attn.to_v",
    "attn.dwconv": "attn.detail_dw", "attn.pwconv": "attn.detail_pw", "attn.proj.1": "attn.proj.1",
    "attn.proj_encode_row.1": "attn.proj_row.1", "attn.proj_encode_column.1": "attn.proj_col.1",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_SEA_POS_EMBED = {"rowq": "row_q", "rowk": "row_k", "columnq": "col_q", "columnk": "col_k"}
# The fusion module's ConvBNAct layers (``conv``, ``bn``): official inj_module lists -> ours, per inj_type.
_FUSION_LAYERS: dict[str, dict[str, str]] = {
    "aam": {  # InjectionMultiSumallmultiallsum: one embedding and one vote per input (x8, x16, x32)
        **{f"backbone.inj_module.embedding_list.{i}": f"fusion.embeddings.{i}" for i in range(3)},
        **{f"backbone.inj_module.act_embedding_list.{i}": f"fusion.vote_embeddings.{i}" for i in range(3)},
    },
    "aam_x8": {  # InjectionMultiSumallmultiallsumSimpx8: embeddings of x8 and x32 (i != 1), votes of x16 and x32
        "backbone.inj_module.embedding_list.0": "fusion.embedding_x8",
        "backbone.inj_module.embedding_list.1": "fusion.embedding_x32",
        "backbone.inj_module.act_embedding_list.0": "fusion.vote_embedding_x16",
        "backbone.inj_module.act_embedding_list.1": "fusion.vote_embedding_x32",
    },
    "sea_fusion": {  # inj_type 'origin': Fusion_block fuse1, fuse2
        f"backbone.fuse{i + 1}.{part}": f"fusion.fusions.{i}.{part}"
        for i in range(2) for part in ("local_embedding", "global_act")
    },
}
_INJ_TYPES = {"aam": "AAM", "aam_x8": "AAMSx8", "sea_fusion": "origin"}
_INJ_MODELS = {
    "aam": "PP-MobileSeg-Tiny, pp_mobileseg_tiny", "aam_x8": "PP-MobileSeg-Base, pp_mobileseg_base",
    "sea_fusion": "the ablation without AAM, pp_mobileseg_base(fusion='sea_fusion')",
}


def _checkpoint_fusion(keys: Sequence[str]) -> str | None:
    """Which fusion a PaddleSeg PP-MobileSeg checkpoint was trained with, read from its key names."""
    if any(k.startswith("backbone.fuse1.") for k in keys):
        return "sea_fusion"
    if any(k.startswith("backbone.inj_module.embedding_list.2.") for k in keys):
        return "aam"
    if any(k.startswith("backbone.inj_module.") for k in keys):
        return "aam_x8"
    return None


def official_rules(config: StrideFormerConfig) -> list[tuple[str, str]]:
    """Renaming rules, PaddleSeg's ``PPMobileSeg`` -> ours, for a model built from ``config`` (by role, per layer).

    Paddle layer names keep their last part (``weight``, ``bias``, ``_mean``, ``_variance``) here; the second pass
    (:data:`_PADDLE_LEAVES`) gives BatchNorm statistics torch's names.
    """
    rules = [
        (r"backbone\.smb1\.conv\.c\.weight", "backbone.stem.conv.weight"),  # the stem lives in StackedMV3Block 1
        (rf"backbone\.smb1\.conv\.bn\.{_LEAF}", r"backbone.stem.bn.\1"),
    ]
    for i in range(len(config.stages)):  # smb1..smbN -> stages.0..N-1
        for theirs, ours in _MV3_PARTS.items():
            rules.append((rf"backbone\.smb{i + 1}\.blocks\.(\d+)\.{theirs}\.c\.weight",
                          rf"backbone.stages.{i}.\1.{ours}.conv.weight"))
            rules.append((rf"backbone\.smb{i + 1}\.blocks\.(\d+)\.{theirs}\.bn\.{_LEAF}",
                          rf"backbone.stages.{i}.\1.{ours}.bn.\2"))
        for theirs, ours in (("conv1", "reduce"), ("conv2", "expand")):  # SEModule: squeeze, then excite
            rules.append((rf"backbone\.smb{i + 1}\.blocks\.(\d+)\.mid_se\.{theirs}\.(weight|bias)",
                          rf"backbone.stages.{i}.\1.se.{ours}.\2"))
    for t in range(len(config.depths)):  # trans1..transM -> transformers.0..M-1
        theirs_block = rf"backbone\.trans{t + 1}\.transformer_blocks\.(\d+)"
        ours_block = rf"backbone.transformers.{t}.\1"
        for theirs, ours in _SEA_CONV_BN.items():
            name = theirs.replace(".", r"\.")
            rules.append((rf"{theirs_block}\.{name}\.c\.weight", rf"{ours_block}.{ours}.conv.weight"))
            rules.append((rf"{theirs_block}\.{name}\.bn\.{_LEAF}", rf"{ours_block}.{ours}.bn.\2"))
        for theirs, ours in _SEA_POS_EMBED.items():
            rules.append((rf"{theirs_block}\.attn\.pos_emb_{theirs}\.pos_embed",
                          rf"{ours_block}.attn.pos_embed_{ours}.pos_embed"))
        # strided attention: stride_conv = [depthwise Conv2D with bias, BatchNorm2D] -> downsample
        rules.append((rf"{theirs_block}\.attn\.stride_conv\.0\.(weight|bias)", rf"{ours_block}.attn.downsample.0.\2"))
        rules.append((rf"{theirs_block}\.attn\.stride_conv\.1\.{_LEAF}", rf"{ours_block}.attn.downsample.1.\2"))
        rules.append((rf"{theirs_block}\.mlp\.dwconv\.(weight|bias)", rf"{ours_block}.mlp.dwconv.\2"))
    for theirs, ours in _FUSION_LAYERS[config.fusion].items():
        name = theirs.replace(".", r"\.")
        rules.append((rf"{name}\.conv\.weight", f"{ours}.conv.weight"))
        rules.append((rf"{name}\.bn\.{_LEAF}", rf"{ours}.bn.\1"))
    rules += [
        (r"decode_head\.linear_fuse\.conv\.weight", "head.linear_fuse.conv.weight"),
        (rf"decode_head\.linear_fuse\.bn\.{_LEAF}", r"head.linear_fuse.bn.\1"),
        (r"decode_head\.conv_seg\.(weight|bias)", r"head.classifier.\1"),
    ]
    return rules


@register_official_converter(PPMobileSeg)
def convert_official_pp_mobileseg(state_dict: StateDict, model: PPMobileSeg) -> StateDict:
    """A PaddleSeg PP-MobileSeg checkpoint (``model.pdparams`` from configs/pp_mobileseg/README.md) -> our keys.

    1. Drop the FLOP counter's entries (:data:`PADDLE_COUNTERS`).
    2. Check the checkpoint's fusion (its ``inj_type``) is the model's: Base is AAMSx8, Tiny AAM.
    3. Rename by role (:func:`official_rules`), then Paddle's BatchNorm statistics ``_mean``/``_variance`` to
       ``running_mean``/``running_var``.
    4. Add ``num_batches_tracked`` (zero) to every BatchNorm: Paddle does not count batches.

    Nothing is transposed: PP-MobileSeg has no Linear layer (every projection is a 1x1 Conv2D, whose weight Paddle
    stores ``[out, in, kh, kw]`` as torch does), and its positional embeddings are ``[1, C, 16]`` in both.
    """
    counters = re.compile(PADDLE_COUNTERS)
    weights = {k: v for k, v in state_dict.items() if not counters.fullmatch(k)}
    found = _checkpoint_fusion(list(weights))
    if found is not None and found != model.config.fusion:
        raise ValueError(
            f"this checkpoint's fusion is inj_type {_INJ_TYPES[found]!r} ({_INJ_MODELS[found]}), but the model "
            f"uses {_INJ_TYPES[model.config.fusion]!r} ({_INJ_MODELS[model.config.fusion]}): build the matching model"
        )
    renamed = rename_by_rules(weights, official_rules(model.config), "PaddleSeg PP-MobileSeg")
    out = rename_by_rules(renamed, _PADDLE_LEAVES, "PaddleSeg PP-MobileSeg")
    for key in [k for k in out if k.endswith(".running_mean")]:
        out[key.removesuffix("running_mean") + "num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Named variants
# --------------------------------------------------------------------------------------------------------------------

# configs/pp_mobileseg/pp_mobileseg_base_ade20k_512x512_80k.yml (Tiny inherits it): Normalize with ImageNet's mean and
# std, on RGB images scaled to [0, 1] (PaddleSeg's Normalize divides by 255; its *default* would be 0.5, 0.5).
# Any input side of at least 32 runs (strided attention and AAM resize to their inputs' sizes): size_divisor 1. The
# val pipeline rounds sides to multiples of 32 (`Resize: size_divisor: 32`), a choice of the pipeline, not a need.
_SEG = ade20k_segmenter("pp_mobileseg")
_CONFIGS = "PaddlePaddle/PaddleSeg configs/pp_mobileseg"


@register_model(
    **_SEG, official=f"{_CONFIGS}/pp_mobileseg_base_ade20k_512x512_80k.yml (MobileSeg_Base, inj_type AAMSx8)",
)
def pp_mobileseg_base(**kwargs) -> PPMobileSeg:
    """PP-MobileSeg-Base: StrideFormer-Base + AAMSx8, as in the official config."""
    return create_pp_mobileseg("base", **kwargs)


@register_model(
    **_SEG,
    official="none: the book's own construction (MobileSeg_Base with a fifth stage) for the paper's four- vs "
             "five-stage ablation (§3.3); no official config or checkpoint",
)
def pp_mobileseg_base_5stage(**kwargs) -> PPMobileSeg:
    """Ablation model: StrideFormer-Base with a fifth stage (see ``STRIDEFORMER_CONFIGS['base_5stage']``)."""
    return create_pp_mobileseg("base_5stage", **kwargs)


@register_model(**_SEG, official=f"{_CONFIGS}/pp_mobileseg_tiny_ade20k_512x512_80k.yml (MobileSeg_Tiny, inj_type AAM)")
def pp_mobileseg_tiny(**kwargs) -> PPMobileSeg:
    """PP-MobileSeg-Tiny: StrideFormer-Tiny + AAM, as in the official config."""
    return create_pp_mobileseg("tiny", **kwargs)
