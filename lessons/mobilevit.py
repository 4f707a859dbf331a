"""MobileViT (Mehta & Rastegari, ICLR 2022, arXiv 2110.02178): a transformer used as a convolution.

A MobileViT block sees a feature map the way a convolution does, but mixes information globally: it unfolds the map
into non-overlapping p x p patches, lets each pixel position attend to the same position in every other patch, and
folds the result back. Stacked between MobileNetV2 blocks it gives a light network with a global receptive field.

Configurations follow the official cvnets config (``cvnets/models/classification/config/mobilevit.py``) and timm's
``mobilevit_xxs/xs/s``; :func:`checkpoint_filter_timm` copies timm's weights into this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import register_official_converter, rename_by_rules
from .contract import FeatureInfo, ImageClassifier
from .layers import (
    ConvNormAct, InvertedResidual, TransformerEncoderLayer, check_count, check_image_batch, drop_path_rates,
)
from .registry import NO_NORMALIZATION, imagenet_classifier, register_model
from .timm_convert import register_timm_converter, rename_keys

# FX symbolic tracing records the input check as one call (run on real tensors) instead of tracing into it.
torch.fx.wrap("check_image_batch")

# --------------------------------------------------------------------------------------------------------------------
# Unfold and fold (paper §3.1, Fig. 1b): a feature map <-> P sequences of N patches
# --------------------------------------------------------------------------------------------------------------------


def unfold_patches(x: torch.Tensor, patch_h: int, patch_w: int) -> torch.Tensor:
    """[B, d, H, W] -> [B*P, N, d] with P = patch_h*patch_w pixels per patch and N = HW/P patches (paper §3.1).

    Sequence ``p`` holds pixel position ``p`` of every patch, so attention over a sequence mixes pixels that sit at
    the same place in different patches: X_U in R^{P x N x d}. H and W must be multiples of the patch size.
    """
    batch, dim, height, width = x.shape
    if height % patch_h or width % patch_w:
        raise ValueError(f"feature map {height}x{width} is not a multiple of the patch size {patch_h}x{patch_w}")
    n_h, n_w = height // patch_h, width // patch_w
    x = x.reshape(batch, dim, n_h, patch_h, n_w, patch_w)
    # -> [B, patch_h, patch_w, n_h, n_w, d]: pixel position first, then patch index, then channels
    x = x.permute(0, 3, 5, 2, 4, 1)
    return x.reshape(batch * patch_h * patch_w, n_h * n_w, dim)


def fold_patches(x: torch.Tensor, batch: int, height: int, width: int, patch_h: int, patch_w: int) -> torch.Tensor:
    """The inverse of :func:`unfold_patches`: [B*P, N, d] -> [B, d, H, W] (paper §3.1, "fold")."""
    n_h, n_w = height // patch_h, width // patch_w
    dim = x.shape[-1]
    x = x.reshape(batch, patch_h, patch_w, n_h, n_w, dim)
    x = x.permute(0, 5, 3, 1, 4, 2)  # -> [B, d, n_h, patch_h, n_w, patch_w]
    return x.reshape(batch, dim, height, width)


def resize_to_patch_multiple(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``x`` resized (bilinear) up to the next multiple of ``patch`` in height and width; unchanged if it is one.

    The official code resizes rather than pads, so attention needs no mask.
    """
    height, width = x.shape[-2:]
    new_h, new_w = math.ceil(height / patch) * patch, math.ceil(width / patch) * patch
    if (new_h, new_w) == (height, width):
        return x
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def resize_back(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized (bilinear) back to the height and width of ``like``; unchanged if it has them already."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


# FX symbolic tracing keeps these as one call each: whether to resize, and the patch grid, are decided in Python from
# the map's shape, which FX's symbolic shapes cannot answer.
for _name in ("resize_to_patch_multiple", "resize_back", "unfold_patches", "fold_patches"):
    torch.fx.wrap(_name)


class MobileViTBlock(nn.Module):
    """The MobileViT block (paper §3.1, Fig. 1b).

    local representation: n x n conv (C -> C) then 1x1 conv (C -> d, linear)
    global representation: unfold into patches, L transformer layers across patches, LayerNorm, fold
    fusion: 1x1 conv (d -> C), concatenate with the block's input, n x n conv (2C -> C).

    A feature map whose sides are not multiples of the patch size is resized (bilinear) up to the next multiple
    before unfolding and back after folding, as the official code does.
    """

    def __init__(
        self,
        channels: int,
        transformer_dim: int,
        depth: int,
        patch_size: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        act_layer: type[nn.Module] = nn.SiLU,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        check_count("patch_size", patch_size)
        if transformer_dim % num_heads:
            raise ValueError(f"transformer_dim={transformer_dim} must be divisible by num_heads={num_heads}")
        self.patch_size = patch_size
        self.local_rep = ConvNormAct(channels, channels, kernel_size, act_layer=act_layer)
        self.to_tokens = nn.Conv2d(channels, transformer_dim, 1, bias=False)
        self.transformer = nn.Sequential(*[
            TransformerEncoderLayer(
                transformer_dim, num_heads, mlp_ratio, qkv_bias=True, act_layer=act_layer,
                attn_drop=attn_drop, drop=drop, drop_path=drop_path,
            )
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(transformer_dim)
        self.from_tokens = ConvNormAct(transformer_dim, channels, 1, act_layer=act_layer)
        self.fusion = ConvNormAct(2 * channels, channels, kernel_size, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.to_tokens(self.local_rep(x))

        p = self.patch_size
        patched = resize_to_patch_multiple(y, p)
        batch, _, new_h, new_w = patched.shape
        tokens = self.norm(self.transformer(unfold_patches(patched, p, p)))
        folded = resize_back(fold_patches(tokens, batch, new_h, new_w, p, p), y)
        return self.fusion(torch.cat((shortcut, self.from_tokens(folded)), dim=1))


# --------------------------------------------------------------------------------------------------------------------
# The network (paper Table 4 / Fig. 1b; official config/mobilevit.py)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MobileViTConfig:
    """A MobileViT variant. Stages 1-2 are MV2 blocks; stages 3-5 are one strided MV2 block + a MobileViT block."""

    name: str
    mv2_expansion: float  # 2 for XXS, 4 otherwise (cvnets config/mobilevit.py)
    mv2_channels: tuple[int, int]  # outputs of stage 1 (one block) and stage 2 (three blocks)
    vit_channels: tuple[int, int, int]  # C of stages 3, 4, 5 (32x32, 16x16, 8x8 at 256x256 input)
    transformer_dims: tuple[int, int, int]  # d of the MobileViT block in stages 3, 4, 5
    final_channels: int  # the 1x1 conv before pooling: min(4 * C5, 960) in cvnets
    transformer_depths: tuple[int, int, int] = (2, 4, 3)  # L (paper Fig. 1b)
    patch_sizes: tuple[int, int, int] = (2, 2, 2)  # h = w = 2 (paper §3.1); (8, 4, 2) is the paper's config-B
    stem_channels: int = 16
    num_heads: int = 4  # cvnets yaml `number_heads: 4`
    mlp_ratio: float = 2.0  # ffn_dim = 2 d
    stage2_blocks: int = 3

    def __post_init__(self) -> None:
        for label, values, length in (
            ("mv2_channels", self.mv2_channels, 2), ("vit_channels", self.vit_channels, 3),
            ("transformer_dims", self.transformer_dims, 3), ("transformer_depths", self.transformer_depths, 3),
            ("patch_sizes", self.patch_sizes, 3),
        ):
            if len(values) != length or not all(isinstance(v, int) and v > 0 for v in values):
                raise ValueError(f"{label} must be {length} positive ints, got {values!r}")
        for dim in self.transformer_dims:
            if dim % self.num_heads:
                raise ValueError(f"transformer dim {dim} is not divisible by num_heads={self.num_heads}")
        if self.mv2_expansion <= 0:
            raise ValueError(f"mv2_expansion must be positive, got {self.mv2_expansion!r}")


MOBILEVIT_CONFIGS: dict[str, MobileViTConfig] = {
    "xxs": MobileViTConfig("xxs", 2.0, (16, 24), (48, 64, 80), (64, 80, 96), 320),
    "xs": MobileViTConfig("xs", 4.0, (32, 48), (64, 80, 96), (96, 120, 144), 384),
    "s": MobileViTConfig("s", 4.0, (32, 64), (96, 128, 160), (144, 192, 240), 640),
}


class MobileViT(ImageClassifier):
    """MobileViT for image classification: stem, five stages (output strides 2 .. 32), 1x1 conv, pool, linear.

    Any input size works: a stage map whose sides are not multiples of the patch size is resized inside the block.
    """

    classifier_path = "fc"

    def __init__(
        self, config: MobileViTConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier)")
        check_count("in_chans", in_chans)
        self.config = config
        self.in_chans = in_chans
        self.num_classes = num_classes
        act = nn.SiLU  # Swish everywhere (paper §3.1)

        def mv2(cin: int, cout: int, stride: int) -> InvertedResidual:
            return InvertedResidual(cin, cout, stride, config.mv2_expansion, act_layer=act)

        self.stem = ConvNormAct(in_chans, config.stem_channels, 3, stride=2, act_layer=act)
        c1, c2 = config.mv2_channels
        stages: list[nn.Module] = [
            nn.Sequential(mv2(config.stem_channels, c1, 1)),
            nn.Sequential(mv2(c1, c2, 2), *[mv2(c2, c2, 1) for _ in range(config.stage2_blocks - 1)]),
        ]
        in_chs = c2
        # stochastic depth rising linearly over the three MobileViT blocks (0 by default, as in timm)
        rates = drop_path_rates(drop_path_rate, 3)
        for chs, dim, depth, patch, rate in zip(
            config.vit_channels, config.transformer_dims, config.transformer_depths, config.patch_sizes, rates
        ):
            vit = MobileViTBlock(
                chs, dim, depth, patch, config.num_heads, config.mlp_ratio, act_layer=act, drop_path=rate
            )
            stages.append(nn.Sequential(mv2(in_chs, chs, 2), vit))
            in_chs = chs
        self.stages = nn.Sequential(*stages)
        stage_channels = (c1, c2, *config.vit_channels)
        self.feature_info = [
            FeatureInfo(chs, 2 ** (i + 1), f"stages.{i}") for i, chs in enumerate(stage_channels)
        ]
        self.final_conv = ConvNormAct(in_chs, config.final_channels, 1, act_layer=act)
        self.num_features = config.final_channels
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(config.final_channels, num_classes) if num_classes else nn.Identity()

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (``feature_info``): output strides 2, 4, 8, 16, 32 (stem included in the first)."""
        check_image_batch(x, self.in_chans)
        outs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: image -> final feature map [B, final_channels, H/32, W/32]."""
        check_image_batch(x, self.in_chans)
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, linear classifier."""
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


def _create(variant: str, patch_sizes: tuple[int, int, int] | None = None, **kwargs) -> MobileViT:
    config = MOBILEVIT_CONFIGS[variant]
    if patch_sizes is not None:
        config = replace(config, patch_sizes=tuple(patch_sizes))
    return MobileViT(config, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Weights from timm (ByobNet layout) -> ours
# --------------------------------------------------------------------------------------------------------------------

_TIMM_RENAMES = (
    ("conv1_1x1.", "expand."),
    ("conv2_kxk.", "depthwise."),
    ("conv3_1x1.", "project."),
    ("conv_kxk.", "local_rep."),
    ("conv_1x1.", "to_tokens."),
    ("conv_proj.", "from_tokens."),
    ("conv_fusion.", "fusion."),
    ("head.fc.", "fc."),
)


def checkpoint_filter_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm ``mobilevit_*`` weights to this module's names; the tensors themselves are unchanged."""
    return rename_keys(state_dict, _TIMM_RENAMES)


register_timm_converter(("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"), checkpoint_filter_timm)


# --------------------------------------------------------------------------------------------------------------------
# The authors' checkpoints (apple/ml-cvnets: mobilevit_xxs.pt, mobilevit_xs.pt, mobilevit_s.pt) -> ours
# --------------------------------------------------------------------------------------------------------------------

# cvnets wraps every conv in ConvLayer2d (``block.conv``, ``block.norm``, ``block.act``) and names a MobileNetV2
# block's convs ``exp_1x1``, ``conv_3x3``, ``red_1x1`` (cvnets/layers/conv_layer.py, cvnets/modules/mobilenetv2.py).
_CVNETS_CONV = (r"block\.conv\.weight", "conv.weight")
_CVNETS_BN = (r"block\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"bn.\1")
_CVNETS_MV2 = {"exp_1x1": "expand", "conv_3x3": "depthwise", "red_1x1": "project"}
# A TransformerEncoder (cvnets/modules/transformer.py): pre_norm_mha = (LayerNorm, MultiHeadAttention, Dropout),
# pre_norm_ffn = (LayerNorm, Linear, act, Dropout, Linear, Dropout). The attention's qkv_proj is [q; k; v], each
# split into heads in order, as ours (cvnets/layers/multi_head_attention.py); timm's cvnets-derived MobileCLIP
# filter (timm/models/vision_transformer_hybrid.py, _convert_mobileclip) maps these names the same way.
_CVNETS_TRANSFORMER = {
    r"pre_norm_mha\.0": "norm1", r"pre_norm_mha\.1\.qkv_proj": "attn.qkv", r"pre_norm_mha\.1\.out_proj": "attn.proj",
    r"pre_norm_ffn\.0": "norm2", r"pre_norm_ffn\.1": "mlp.fc1", r"pre_norm_ffn\.4": "mlp.fc2",
}


def _cvnets_conv_rules(official: str, ours: str) -> list[tuple[str, str]]:
    """A cvnets ConvLayer2d (conv + BatchNorm) named ``official`` -> our ConvNormAct named ``ours``."""
    return [(rf"{official}\.{pattern}", f"{ours}.{replacement}") for pattern, replacement in (_CVNETS_CONV, _CVNETS_BN)]


def _cvnets_rules(config: MobileViTConfig) -> list[tuple[str, str]]:
    rules = _cvnets_conv_rules(r"conv_1", "stem") + _cvnets_conv_rules(r"conv_1x1_exp", "final_conv")
    rules.append((r"classifier\.fc\.(weight|bias)", r"fc.\1"))
    # layer_1 .. layer_5 are our stages 0 .. 4; in layer_3 .. layer_5, block 0 is the strided MV2, block 1 the
    # MobileViT block.
    mv2_blocks = (1, config.stage2_blocks, 1, 1, 1)
    for stage, blocks in enumerate(mv2_blocks):
        for block in range(blocks):
            for official, ours in _CVNETS_MV2.items():
                rules += _cvnets_conv_rules(rf"layer_{stage + 1}\.{block}\.block\.{official}",
                                            f"stages.{stage}.{block}.{ours}")
    for stage, depth in zip((2, 3, 4), config.transformer_depths):
        official, ours = rf"layer_{stage + 1}\.1", f"stages.{stage}.1"
        rules += _cvnets_conv_rules(rf"{official}\.local_rep\.conv_3x3", f"{ours}.local_rep")
        rules.append((rf"{official}\.local_rep\.conv_1x1\.block\.conv\.weight", f"{ours}.to_tokens.weight"))
        for pattern, replacement in _CVNETS_TRANSFORMER.items():
            rules.append((rf"{official}\.global_rep\.(\d+)\.{pattern}\.(weight|bias)",
                          rf"{ours}.transformer.\1.{replacement}.\2"))
        # global_rep ends with a LayerNorm after the ``depth`` encoder layers
        rules.append((rf"{official}\.global_rep\.{depth}\.(weight|bias)", rf"{ours}.norm.\1"))
        rules += _cvnets_conv_rules(rf"{official}\.conv_proj", f"{ours}.from_tokens")
        rules += _cvnets_conv_rules(rf"{official}\.fusion", f"{ours}.fusion")
    return rules


@register_official_converter(MobileViT)
def checkpoint_filter_cvnets(state_dict: dict[str, torch.Tensor], model: MobileViT) -> dict[str, torch.Tensor]:
    """Rename the authors' MobileViT checkpoint (apple/ml-cvnets ``cvnets/models/classification/mobilevit.py``) to
    this module's names; the tensors are unchanged (cvnets' linear layers store [out, in] like ``nn.Linear``)."""
    return rename_by_rules(state_dict, _cvnets_rules(model.config), f"mobilevit_{model.config.name} (apple/ml-cvnets)")


# --------------------------------------------------------------------------------------------------------------------
# Named variants
# --------------------------------------------------------------------------------------------------------------------


# ml-cvnets feeds images in [0, 1] without normalising them (timm's pretrained_cfg for mobilevit_*: mean 0, std 1);
# any input size works (the block resizes maps that are not multiples of the patch), so size_divisor is 1.
_CLS = imagenet_classifier("mobilevit", input_size=(3, 256, 256), mean=NO_NORMALIZATION[0], std=NO_NORMALIZATION[1])
_OFFICIAL = "apple/ml-cvnets config/classification/imagenet/mobilevit.yaml with model.classification.mit.mode: {}"


@register_model(**_CLS, official=_OFFICIAL.format("xx_small"))
def mobilevit_xxs(**kwargs) -> MobileViT:
    """MobileViT-XXS: the smallest width, MV2 expansion 2 (cvnets mode ``xx_small``)."""
    return _create("xxs", **kwargs)


@register_model(**_CLS, official=_OFFICIAL.format("x_small"))
def mobilevit_xs(**kwargs) -> MobileViT:
    """MobileViT-XS: MV2 expansion 4 (cvnets mode ``x_small``)."""
    return _create("xs", **kwargs)


@register_model(**_CLS, official=_OFFICIAL.format("small"))
def mobilevit_s(**kwargs) -> MobileViT:
    """MobileViT-S: the widest (cvnets mode ``small``)."""
    return _create("s", **kwargs)
