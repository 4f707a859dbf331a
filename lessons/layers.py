"""Building blocks shared by every family in the book.

One place for each idea: a block that two families use lives here, and the family modules import it.
The foundations chapter builds each of these from scratch and checks it against this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ActLayer = Callable[[], nn.Module]


# --------------------------------------------------------------------------------------------------------------------
# Primitives: the arithmetic every block is made of
# --------------------------------------------------------------------------------------------------------------------


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without losing more than 10% (MobileNetV2's rule).

    Source: the official MobileNetV2/MobileNetV3 code (``_make_divisible``), used by cvnets, timm and TopFormer.
    Hardware likes channel counts that are multiples of 8.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:  # never round down by more than 10%
        new_value += divisor
    return new_value


def conv2d_as_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """A convolution written as unfold -> matrix multiply -> fold (im2col), equal to ``F.conv2d`` (groups=1).

    ``unfold`` copies every k x k window into a column; one matrix multiply with the flattened kernels then computes
    every output pixel at once; reshaping the result is the "fold" back into a feature map.
    """
    batch, in_chs, height, width = x.shape
    out_chs, kernel_in_chs, kh, kw = weight.shape
    if kernel_in_chs != in_chs:
        raise ValueError(f"weight expects {kernel_in_chs} input channels but x has {in_chs}")
    out_h = (height + 2 * padding - kh) // stride + 1
    out_w = (width + 2 * padding - kw) // stride + 1
    columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # [B, C*kh*kw, L]
    out = weight.reshape(out_chs, -1) @ columns  # [B, out_chs, L]
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(batch, out_chs, out_h, out_w)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Scaled dot-product attention, softmax(q k^T * scale) v (Vaswani et al. 2017, Eq. 1), written out.

    ``scale`` defaults to 1/sqrt(d). Equal to ``F.scaled_dot_product_attention``, which the blocks below use
    because it is faster; this explicit form is the one to read.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return weights @ v


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """ReLU6(x + 3) / 6: the piecewise-linear sigmoid of MobileNetV3 (§5.2), used as a gate by TopFormer and SeaFormer.

    Equal to ``F.hardsigmoid``; named here because the papers say "sigmoid" while their code uses this.
    """
    return F.relu6(x + 3.0) / 6.0


class HardSigmoid(nn.Module):
    """Module form of :func:`hard_sigmoid`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_sigmoid(x)


# --------------------------------------------------------------------------------------------------------------------
# Convolutional blocks
# --------------------------------------------------------------------------------------------------------------------


def check_count(name: str, value: object, minimum: int = 1, note: str = "") -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an int (not a bool) of at least ``minimum``.

    The one check behind every model's ``num_classes`` (0 allowed where it means "no classifier") and ``in_chans``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int of at least {minimum}")
        raise ValueError(f"{name} must be {kind}{note}, got {value!r}")


def _check_conv_channels(in_chs: int, out_chs: int, groups: int) -> None:
    """Clear errors for channel counts a grouped convolution cannot take."""
    for label, value in (("in_chs", in_chs), ("out_chs", out_chs), ("groups", groups)):
        check_count(label, value)
    if in_chs % groups or out_chs % groups:
        raise ValueError(f"groups={groups} must divide in_chs={in_chs} and out_chs={out_chs}")


def make_act(act_layer: ActLayer, inplace: bool = True) -> nn.Module:
    """An activation module, in place where the layer allows it (ReLU, ReLU6, SiLU, Hardswish...; not GELU).

    Why in place: an out-of-place activation writes a second feature map as large as its input, and on a CPU that
    memory traffic is what a mobile network's time goes to -- measured for MobileViT-S at batch 8, ``aten::silu``
    took 820 ms against 124 ms for timm's in-place ``aten::silu_``. It is safe after a conv or a norm, whose backward
    does not need their output; the result is bit-identical.
    """
    try:
        return act_layer(inplace=inplace)
    except TypeError:  # the layer takes no ``inplace`` (e.g. nn.GELU, nn.Identity)
        return act_layer()


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation, the unit every mobile network is built from.

    ``act_layer=None`` gives a linear (no activation) output, as in MobileNetV2's projection (§3.2, "linear
    bottlenecks"). The conv has no bias when a norm follows, because the norm's shift would cancel it.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm: bool = True,
        act_layer: ActLayer | None = nn.ReLU,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        _check_conv_channels(in_chs, out_chs, groups)
        padding = dilation * (kernel_size - 1) // 2  # "same" padding for odd kernels
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, padding, dilation=dilation, groups=groups,
            bias=(not norm) if bias is None else bias,
        )
        self.bn = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = make_act(act_layer) if act_layer is not None else nn.Identity()


class InvertedResidual(nn.Module):
    """The MobileNetV2 block ("MV2"; Sandler et al. 2018, §3.3 and Table 1).

    expand (1x1 conv, ``expand_ratio`` times wider) -> depthwise k x k conv (the only spatial mixing, stride here)
    -> project back with a *linear* 1x1 conv; a residual connection when the shape is kept. The expansion is skipped
    when ``expand_ratio == 1`` as in the official code.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        expand_ratio: float = 4.0,
        kernel_size: int = 3,
        act_layer: ActLayer = nn.ReLU6,
        hidden_chs: int | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if expand_ratio <= 0:
            raise ValueError(f"expand_ratio must be positive, got {expand_ratio!r}")
        self.use_residual = stride == 1 and in_chs == out_chs
        if expand_ratio == 1:
            hidden_chs = in_chs
            self.expand = nn.Identity()
        else:
            hidden_chs = hidden_chs or make_divisible(round(in_chs * expand_ratio), 8)
            self.expand = ConvNormAct(in_chs, hidden_chs, 1, act_layer=act_layer)
        self.depthwise = ConvNormAct(hidden_chs, hidden_chs, kernel_size, stride, groups=hidden_chs, act_layer=act_layer)
        self.project = ConvNormAct(hidden_chs, out_chs, 1, act_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


# --------------------------------------------------------------------------------------------------------------------
# Transformer blocks (tokens laid out as [batch, tokens, channels])
# --------------------------------------------------------------------------------------------------------------------


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, §3.2.2) on tokens ``[B, N, C]``.

    One linear layer makes q, k and v for every head at once; each head attends with
    softmax(q k^T / sqrt(d)) v; the heads are concatenated and projected back to ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        head_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if num_heads < 1 or dim % num_heads:
                raise ValueError(f"num_heads={num_heads} must be positive and divide dim={dim}")
            head_dim = dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        # [B, N, 3*H*D] -> three tensors of [B, H, N, D]
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """The transformer's feed-forward network: Linear -> activation -> Linear, applied to every token alike."""

    def __init__(
        self, dim: int, hidden_dim: int, act_layer: ActLayer = nn.GELU, drop: float = 0.0, out_dim: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvMlp(nn.Module):
    """The same feed-forward network on a feature map ``[B, C, H, W]``: 1x1 conv -> activation -> 1x1 conv."""

    def __init__(
        self, dim: int, hidden_dim: int, act_layer: ActLayer = nn.GELU, drop: float = 0.0, out_dim: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_dim, out_dim or dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch for a whole sample.

    Surviving samples are scaled by 1/keep so the expected output is unchanged; at evaluation it is the identity.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerScale(nn.Module):
    """A learnable per-channel scale on a residual branch, initialised small (Touvron et al. 2021, CaiT §2.1).

    ``channel_dim`` says where the channels are: -1 for tokens ``[B, N, C]``, 1 for feature maps ``[B, C, H, W]``.
    """

    def __init__(self, dim: int, init_value: float = 1e-5, channel_dim: int = -1) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == -1:
            return x * self.scale
        return scale_channels(x, self.scale, self.channel_dim)


def scale_channels(x: torch.Tensor, scale: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``x`` times the per-channel ``scale`` broadcast along dimension ``channel_dim``; one call in FX graphs, whose
    tracer cannot build the view's shape from a symbolic ``x.ndim``."""
    shape = [1] * x.ndim
    shape[channel_dim] = -1
    return x * scale.view(shape)


torch.fx.wrap("scale_channels")


class TransformerEncoderLayer(nn.Module):
    """A pre-norm transformer layer (ViT, Dosovitskiy et al. 2021, Eq. 2-3).

    x = x + Attention(LayerNorm(x)); x = x + MLP(LayerNorm(x)). Tokens are ``[B, N, C]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        act_layer: ActLayer = nn.GELU,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_rates(total: float, depth: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``total`` over ``depth`` blocks (DeiT, timm, PoolFormer)."""
    if depth < 1:
        return []
    if depth == 1:
        return [0.0]
    return [total * i / (depth - 1) for i in range(depth)]


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Spatial size after a conv or pool: floor((size + 2*padding - kernel) / stride) + 1."""
    return math.floor((size + 2 * padding - kernel_size) / stride) + 1


# --------------------------------------------------------------------------------------------------------------------
# BatchNorm-based blocks of the mobile segmentation transformers (TopFormer, SeaFormer, PP-MobileSeg)
# --------------------------------------------------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d, *no* activation: the official ``Conv2d_BN`` of TopFormer and SeaFormer.

    Source: hustvl/TopFormer ``mmseg/models/backbones/topformer.py`` (``Conv2d_BN``; same class in fudan-zvg/SeaFormer).
    These models use BatchNorm instead of LayerNorm even inside the transformer, so every linear map is a 1x1 conv
    followed by a BN that folds into the conv at inference time. ``bn_weight_init=0`` starts the BN's scale at zero,
    as the official code does for the last projection of a residual branch: the branch then outputs zero at
    initialisation and the block starts as the identity.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        _check_conv_channels(in_chs, out_chs, groups)
        padding = dilation * (kernel_size - 1) // 2  # "same" padding for odd kernels, as the official pad=ks//2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation, groups=groups,
                              bias=False)  # the BN's shift would cancel a bias
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class DepthwiseConvMlp(nn.Module):
    """The feed-forward network of TopFormer/SeaFormer on a feature map: 1x1 ConvBN -> depthwise 3x3 conv (with
    bias) -> activation -> 1x1 ConvBN.

    Source: hustvl/TopFormer ``topformer.py`` (``Mlp``; the same in SeaFormer's ``seaformer.py``). Compared with
    :class:`ConvMlp`, the depthwise 3x3 conv between the two 1x1 convs lets the "MLP" mix neighbouring tokens, which
    gives the transformer a sense of position without positional embeddings.
    """

    def __init__(
        self, dim: int, hidden_dim: int, act_layer: ActLayer = nn.ReLU6, drop: float = 0.0, out_dim: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = ConvBN(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias=True)  # official: bias=True
        self.act = act_layer()
        self.fc2 = ConvBN(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of a feature map ``[B, C, H, W]`` to ``size = (H', W')`` (``align_corners=False``).

    Source: the ``F.interpolate(..., mode='bilinear', align_corners=False)`` calls with which TopFormer's injection
    module, SeaFormer's fusion block and their heads bring a coarse map to a finer one (mmseg's ``resize``).
    Resizing to the same size returns the input values unchanged.
    """
    size = tuple(size)
    # The sizes go to interpolate as they come (ints, or symbolic sizes under torch.export and tracing): turning
    # them into Python ints here would bake one input size into every traced or exported graph.
    if len(size) != 2 or any(isinstance(s, int) and s < 1 for s in size):
        raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int = 1, multiple_of: int = 1) -> None:
    """Raise a clear error unless ``x`` is a float image batch ``[B, in_chans, H, W]`` with H, W >= ``min_size``
    and multiples of ``multiple_of``.

    Every model in the book calls this first, so a wrong channel count or a 3-D tensor fails with a message that
    says what was expected, not deep inside a convolution. ``min_size`` is a network's total stride where smaller
    inputs would be computed mostly from zero padding (SeaFormer, PP-MobileSeg); ``multiple_of`` is the stride a
    network needs its input to divide into exactly (HRViT's fusion layers upsample coarse branches onto fine ones).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a batch [B, C, H, W], got a tensor of shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point image, got dtype {x.dtype}")
    if min(x.shape[-2:]) < max(min_size, 1):
        if min_size <= 1:
            raise ValueError(f"height and width must be at least 1, got {tuple(x.shape[-2:])}")
        raise ValueError(
            f"input {x.shape[-2]}x{x.shape[-1]} is smaller than the network's total stride {min_size}; "
            f"height and width must be at least {min_size}"
        )
    if multiple_of > 1 and (x.shape[-2] % multiple_of or x.shape[-1] % multiple_of):
        raise ValueError(
            f"input {x.shape[-2]}x{x.shape[-1]}: height and width must be multiples of {multiple_of}, e.g. "
            f"{multiple_of * max(1, x.shape[-2] // multiple_of)}x{multiple_of * max(1, x.shape[-1] // multiple_of)}"
        )


# --------------------------------------------------------------------------------------------------------------------
# Shared by TopFormer, SeaFormer and PP-MobileSeg: the official weight init, MobileNet stages built from config rows,
# and the BatchNorm transformer block (attention + depthwise-conv MLP, each a residual branch with drop path)
# --------------------------------------------------------------------------------------------------------------------


def init_mobile_weights(model: nn.Module) -> None:
    """The official ``init_weights`` of TopFormer and SeaFormer (and PaddleSeg's port of them), line for line.

    Conv weights ~ N(0, sqrt(2 / fan_out)) with fan_out = k*k*out_chs / groups (He init by the output side) and
    zero bias; BatchNorm weight 1 and bias 0; linear weights ~ N(0, 0.01) and zero bias. It resets *every* BN weight
    to 1, the zero-initialised projections of :class:`ConvBN` included, as the official code does; trained weights
    would overwrite it all.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


ConfigRow = Sequence  # one row of an official MobileNet config table, e.g. [k, t, c, s] or [k, exp, c, se, act, s]
BlockFromRow = Callable[..., nn.Module]  # make_block(in_chs, *row) -> the block that row describes


def stack_rows(
    rows: Sequence[ConfigRow], in_chs: int, make_block: BlockFromRow, channels_column: int = 2,
) -> list[nn.Module]:
    """One block per row of an official MobileNet config table, each fed the previous block's output channels.

    MobileNetV2's ``[k, t, c, s]`` rows (TopFormer, SeaFormer) and MobileNetV3's ``[k, exp, c, se, act, s]`` rows
    (PP-MobileSeg) both keep the output channels in the third column (``channels_column``). The blocks come back as
    a list, for the caller to hold in an ``nn.Sequential`` or an ``nn.ModuleList``.
    """
    blocks = []
    for row in rows:
        blocks.append(make_block(in_chs, *row))
        in_chs = row[channels_column]
    return blocks


def row_stages(
    stages: Sequence[Sequence[ConfigRow]], in_chs: int, make_block: BlockFromRow, channels_column: int = 2,
) -> tuple[nn.ModuleList, int]:
    """One ``nn.Sequential`` of :func:`stack_rows` per stage (SeaFormer's ``cfg1..cfg5``, StrideFormer's stages),
    and the channels the last stage puts out."""
    built = nn.ModuleList()
    for rows in stages:
        built.append(nn.Sequential(*stack_rows(rows, in_chs, make_block, channels_column)))
        in_chs = rows[-1][channels_column]
    return built, in_chs


def mobilenetv2_block(
    in_chs: int, kernel: int, expand: float, out_chs: int, stride: int, act_layer: ActLayer = nn.ReLU,
) -> InvertedResidual:
    """The :class:`InvertedResidual` a ``[k, t, c, s]`` row of TopFormer's and SeaFormer's configs describes.

    As their official ``InvertedResidual``: ReLU activations and a hidden width of exactly ``round(in_chs * t)``
    (not rounded to a multiple of 8).
    """
    return InvertedResidual(
        in_chs, out_chs, stride, expand, kernel, act_layer=act_layer, hidden_chs=int(round(in_chs * expand)),
    )


class BNTransformerBlock(nn.Module):
    """The transformer block of TopFormer and SeaFormer (official ``Block`` in both): no LayerNorm, a BatchNorm
    inside every projection instead.

    x = x + DropPath(attn(x)); x = x + DropPath(MLP(x)), with the MLP a :class:`DepthwiseConvMlp`. Only the
    attention differs between the families (TopFormer's full attention, SeaFormer's squeeze-enhanced axial
    attention), so it is passed in.
    """

    def __init__(
        self, attn: nn.Module, dim: int, mlp_ratio: float = 2.0, act_layer: ActLayer = nn.ReLU6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn = attn
        self.mlp = DepthwiseConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


def init_mmseg_head(head: nn.Module) -> None:
    """How mmseg initialises a decode head of TopFormer or SeaFormer (the official backbone's ``init_weights`` does
    not reach it): the last conv (``conv_seg``, the head's ``classifier``) ~ N(0, 0.01) with bias 0
    (``BaseDecodeHead``'s ``init_cfg``); every other conv is a ``ConvModule``: Kaiming normal (fan_out, ReLU), BN
    weight 1 and bias 0.
    """
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            if m is head.classifier:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------------------------
# Patch embedding: image -> tokens (the foundations chapter's transformer section)
# --------------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Image to tokens as ViT makes them (Dosovitskiy et al. 2021, §3.1, Eq. 1).

    Cut the image into non-overlapping ``patch_size x patch_size`` patches, flatten each patch and project it linearly
    to ``dim`` channels. A convolution whose kernel and stride are both the patch size applies that one projection
    to every patch; its map ``[B, dim, H/p, W/p]`` is flattened to tokens ``[B, N, dim]``, ``N = HW/p^2``, row by row.
    The sides must be multiples of the patch size (ViT crops or resizes; it does not pad).
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        check_count("in_chans", in_chans)
        check_count("dim", dim)
        check_count("patch_size", patch_size)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.proj.in_channels, multiple_of=self.patch_size)
        return self.proj(x).flatten(2).transpose(1, 2)
