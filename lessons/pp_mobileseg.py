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
``configs/pp_mobileseg/*.yml`` and README.md (numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from .layers import ActLayer, ConvBN, ConvNormAct, check_count, resize_to
from .registry import register_model
from .seaformer import (
    FusionBlock, check_image_batch, init_seaformer_weights, run_pyramid, sea_transformer_stages,
)

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


def mv3_stage(rows: Sequence[MV3Row], in_chs: int) -> nn.Sequential:
    """A stack of MobileNetV3 blocks from official ``[k, exp, c, se, act, s]`` rows (``StackedMV3Block``)."""
    blocks = []
    for kernel, mid_chs, out_chs, use_se, act, stride in rows:
        blocks.append(MobileNetV3Block(in_chs, mid_chs, out_chs, kernel, stride, use_se, act))
        in_chs = out_chs
    return nn.Sequential(*blocks)


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
    def total_stride(self) -> int:
        """The stride of the coarsest map the network computes: the last stage, halved again by strided attention."""
        stride = 2
        for stage in self.stages:
            for row in stage:
                stride *= row[5]
        return stride * self.attn_stride


class StrideFormer(nn.Module):
    """The StrideFormer backbone: MobileNetV3 stages, strided SEA attention on the last ones.

    :meth:`forward` returns [detail map (1/8), output of each SEA stage (1/16, 1/32 for the four-stage models)].
    """

    def __init__(
        self, config: StrideFormerConfig, in_chans: int = 3, drop_path_rate: float = 0.0,
        act_layer: ActLayer = nn.ReLU6,
    ) -> None:
        super().__init__()
        self.config = config
        self.in_chans = in_chans
        self.stem = ConvNormAct(in_chans, config.stem_channels, 3, stride=2, act_layer=nn.Hardswish)
        stages, in_chs = [], config.stem_channels
        for rows in config.stages:
            stages.append(mv3_stage(rows, in_chs))
            in_chs = rows[-1][2]
        self.stages = nn.ModuleList(stages)
        # MobileSeg_Base/Tiny pass act_layer=nn.ReLU6: it is the activation inside the SEA blocks
        self.transformers = sea_transformer_stages(config, act_layer, drop_path_rate, attn_stride=config.attn_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_image_batch(x, self.in_chans, self.config.total_stride)
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


def vim_applies(upsample: str, training: bool, num_classes: int, min_classes: int = VIM_MIN_CLASSES) -> bool:
    """The official switch: VIM only when asked for, at inference, and with at least ``min_classes`` classes."""
    return upsample == "vim" and not training and num_classes >= min_classes


class LabelPredictor(nn.Module):
    """A segmentation model + its final upsample and argmax: what PP-MobileSeg's latencies time (README footnote).

    ``upsample="vim"`` uses :func:`valid_interpolate`, but only in evaluation mode and with at least
    ``min_classes`` classes (official: 30); otherwise, and with ``upsample="interpolate"``, the plain
    :func:`interpolate_argmax`. ``model`` must have ``forward_logits`` (low-resolution logits).
    """

    def __init__(self, model: nn.Module, upsample: Literal["vim", "interpolate"] = "vim",
                 min_classes: int = VIM_MIN_CLASSES) -> None:
        super().__init__()
        if upsample not in ("vim", "interpolate"):
            raise ValueError(f"upsample must be 'vim' or 'interpolate', got {upsample!r}")
        if not hasattr(model, "forward_logits"):
            raise TypeError(f"{type(model).__name__} has no forward_logits (low-resolution logits) to upsample")
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


class PPMobileSeg(nn.Module):
    """PP-MobileSeg (paper Fig. 2): StrideFormer -> fusion (AAM) -> head -> upsample (VIM at inference).

    :meth:`forward_logits` gives low-resolution logits (1/16 with AAM, 1/8 with AAMSx8); :meth:`forward` the logits
    resized to the input (training, FLOPs); :meth:`predict` the label map, through VIM when ``upsample="vim"``,
    the model is in evaluation mode and it has at least 30 classes (official ``PPMobileSeg.forward``).
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
        init_seaformer_weights(self)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.forward_logits(x), x.shape[-2:])

    @property
    def vim_active(self) -> bool:
        return vim_applies(self.upsample, self.training, self.num_classes)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Label map [B, H, W] (int64): VIM when :attr:`vim_active`, else interpolate-then-argmax."""
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

# The README's ablation of PP-MobileSeg-Base on ADE20K (configs/pp_mobileseg/README.md): each row as a model here.
# (row, registered model, keyword arguments, README parameters in millions)
ABLATION_PATH: tuple[tuple[str, str, dict, float], ...] = (
    ("SeaFormer-Base (baseline)", "seaformer_base", {}, 8.27),
    ("+VIM", "seaformer_base", {}, 8.17),  # VIM is an inference procedure: no parameters
    ("+VIM +StrideFormer", "pp_mobileseg_base", {"fusion": "sea_fusion"}, 5.54),
    ("+VIM +StrideFormer +AAM", "pp_mobileseg_base", {}, 5.62),
)


def create_pp_mobileseg(variant: str, fusion: FusionName | None = None, **kwargs) -> PPMobileSeg:
    """PP-MobileSeg-``variant`` (``base``, ``tiny``); ``fusion`` overrides the official config's fusion module."""
    if variant not in STRIDEFORMER_CONFIGS:
        raise ValueError(f"unknown PP-MobileSeg variant {variant!r}; choose from {sorted(STRIDEFORMER_CONFIGS)}")
    config = STRIDEFORMER_CONFIGS[variant]
    if fusion is not None:
        config = replace(config, fusion=fusion)
    return PPMobileSeg(config, **kwargs)


_SEG = dict(
    family="pp_mobileseg", task="segmentation", input_size=(3, 512, 512), num_classes=150, dataset="ADE20K",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
)


@register_model(**_SEG)
def pp_mobileseg_base(**kwargs) -> PPMobileSeg:
    """PP-MobileSeg-Base (StrideFormer-Base + AAMSx8 as in the official config): README 5.62M parameters."""
    return create_pp_mobileseg("base", **kwargs)


@register_model(**_SEG)
def pp_mobileseg_base_5stage(**kwargs) -> PPMobileSeg:
    """Ablation model: StrideFormer-Base with a fifth stage (see ``STRIDEFORMER_CONFIGS['base_5stage']``)."""
    return create_pp_mobileseg("base_5stage", **kwargs)


@register_model(**_SEG)
def pp_mobileseg_tiny(**kwargs) -> PPMobileSeg:
    """PP-MobileSeg-Tiny (StrideFormer-Tiny + AAM): README 1.61M parameters (1.44M in its comparison table)."""
    return create_pp_mobileseg("tiny", **kwargs)
