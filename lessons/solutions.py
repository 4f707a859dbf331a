"""Solutions to the chapters' coding exercises: one small function per exercise.

Each chapter shows the function's source in a collapsed "Solution" box right after its exercises, and
``tests/test_solutions.py`` both runs every function (checking its answer against an independent computation) and
compares the code shown in the chapter with the source here, so a solution cannot rot.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import lessons
from lessons import hrvit, mobilevit, pp_mobileseg
from lessons.layers import MultiHeadSelfAttention, hard_sigmoid, resize_to
from lessons.measure import count_params, macs_by_operator
from lessons.sampler import batch_size_for


# ---- Foundations ---------------------------------------------------------------------------------------------


def conv2d_grouped_as_matmul(x: torch.Tensor, weight: torch.Tensor, groups: int, padding: int = 0) -> torch.Tensor:
    """Foundations, exercise 1: a grouped convolution (stride 1) as unfold -> one batched matmul -> reshape."""
    batch, _, height, width = x.shape
    out_chs, chs_per_group, k, _ = weight.shape
    cols = F.unfold(x, k, padding=padding)  # [B, C_in*k*k, L]; rows ordered channel by channel
    cols = cols.view(batch, groups, chs_per_group * k * k, -1)  # the columns of each group of input channels
    w = weight.view(groups, out_chs // groups, chs_per_group * k * k)  # the weights of each group
    out = w @ cols  # [B, groups, C_out/groups, L]: one matmul per group, batched
    return out.reshape(batch, out_chs, height + 2 * padding - k + 1, width + 2 * padding - k + 1)


def attention_costs(tokens: int, dim: int) -> tuple[int, int]:
    """Foundations, exercise 2: multiply-adds of one attention layer on N tokens of width d.

    Returns (products, projections): QK^T and AV cost 2 N^2 d, the q, k, v and output projections 4 N d^2;
    the products cost more exactly when N > 2d.
    """
    return 2 * tokens**2 * dim, 4 * tokens * dim**2


def torchinfo_macs_every_token(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Foundations, exercise 3: torchinfo's Mult-Adds rule, with every Linear counted at every token.

    Convolutions: parameters x (batch x output pixels); Linear: parameters x tokens (every position, not only the
    output's first dimension); other modules with parameters (norms): parameters x the output's first dimension.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.Conv2d):
            total += params * output.shape[0] * output.shape[2] * output.shape[3]
        elif isinstance(module, nn.Linear):
            total += params * (output.numel() // module.out_features)
        else:
            total += params * output.shape[0]

    hooks = [m.register_forward_hook(count) for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_size))
    finally:
        for hook in hooks:
            hook.remove()
    return total


# ---- MobileViT -----------------------------------------------------------------------------------------------


def final_map_reach(patch_sizes: tuple[int, int, int], size: int = 256) -> float:
    """MobileViT, exercise 1: share of input pixels that one pixel of the last feature map depends on (gradient)."""
    torch.manual_seed(0)
    model = lessons.create_model("mobilevit_xxs", patch_sizes=patch_sizes).double().eval()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    features = model.forward_features(x)  # [1, C, size/32, size/32]
    features[0, :, 0, 0].sum().backward()  # the top-left pixel: the one farthest from most of the image
    return (x.grad.abs().sum(dim=1) > 0).double().mean().item()


def vit_attention_macs(height: int, width: int, dim: int) -> int:
    """MobileViT, exercise 2: QK^T and AV of a plain ViT on one sequence of all H*W pixels: 2 (HW)^2 d.

    MobileViT attends within P = h*w sequences of HW/P tokens: P * 2 (HW/P)^2 d = 2 (HW)^2 d / P, P times less.
    """
    return 2 * (height * width) ** 2 * dim


def pixels_per_step(anchor: int, sizes: tuple[int, ...] = (160, 192, 256, 288, 320), base_batch: int = 128) -> dict:
    """MobileViT, exercise 3: pixels in one step (per GPU) at each size, batch anchored at ``anchor``."""
    return {s: batch_size_for(s, anchor, base_batch) * s * s for s in sizes}


# ---- PoolFormer ----------------------------------------------------------------------------------------------


class MaxPoolMixer(nn.Module):
    """PoolFormer, exercise 1: max pooling as the token mixer, optionally minus its input like ``Pooling``."""

    def __init__(self, subtract: bool = True) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.subtract = subtract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x if self.subtract else self.pool(x)


def spatial_mlp_params(img_size: int = 224, strides: tuple[int, ...] = (4, 8, 16, 32)) -> list[int]:
    """PoolFormer, exercise 2: parameters of one spatial-MLP mixer per stage, (H W)^2 with H = W = img/stride."""
    return [(img_size // s) ** 4 for s in strides]


def heads_disagree(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """PoolFormer, exercise 3: the same weights under the official head (norm, then mean) and timm's (mean, then norm).

    Returns the two heads' logits for an input whose final feature map varies a lot over positions.
    """
    torch.manual_seed(seed)
    official = lessons.create_model("poolformer_s12", head_style="official", num_classes=10).eval()
    timm_style = lessons.create_model("poolformer_s12", head_style="timm", num_classes=10).eval()
    for module in official.modules():  # random norm parameters, so the two normalisations differ visibly
        if isinstance(module, nn.GroupNorm):
            nn.init.normal_(module.weight, 1.0, 0.5)
            nn.init.normal_(module.bias, 0.0, 0.5)
    timm_style.load_state_dict(official.state_dict())
    x = torch.randn(8, 3, size, size) * 3
    with torch.no_grad():
        return official(x), timm_style(x)


# ---- TopFormer -----------------------------------------------------------------------------------------------


def gate_after_upsampling(injection: nn.Module, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
    """TopFormer, exercise 3: the SIM with the hard-sigmoid applied *after* the bilinear upsampling."""
    local = injection.local_embed(x_local)
    gate = hard_sigmoid(resize_to(injection.gate_embed(x_global), x_local.shape[-2:]))
    return local * gate + resize_to(injection.global_embed(x_global), x_local.shape[-2:])


# ---- SeaFormer -----------------------------------------------------------------------------------------------


def sea_product_share(height: int, width: int, dim: int = 64, key_dim: int = 16, heads: int = 4) -> float:
    """SeaFormer, exercise 2: share of the attention products (bmm) in one SEA attention's multiply-adds."""
    from lessons.seaformer import SeaAttention

    by_op = macs_by_operator(SeaAttention(dim, key_dim, heads), (1, dim, height, width))
    return by_op.get("bmm", 0) / sum(by_op.values())


# ---- PP-MobileSeg --------------------------------------------------------------------------------------------


def vim_disagreement(scale: int = 8) -> float:
    """PP-MobileSeg, exercise 1: logits on which VIM and the usual ending disagree on most pixels.

    Class 0 is the best class at no low-resolution pixel, so VIM drops it; but it is the second best everywhere and
    the runner-up of a checkerboard whose two winners alternate, so between the pixels, where the two winners
    average out, it wins the usual ending's argmax.
    """
    logits = torch.zeros(1, 3, 4, 4)
    checker = (torch.arange(4)[:, None] + torch.arange(4)) % 2  # 0/1 checkerboard
    logits[0, 1] = 4.0 * checker  # class 1 wins on the "1" squares
    logits[0, 2] = 4.0 * (1 - checker)  # class 2 on the "0" squares
    logits[0, 0] = 3.0  # always second: never present, so VIM drops it
    size = (4 * scale, 4 * scale)
    usual = pp_mobileseg.interpolate_argmax(logits, size)
    vim = pp_mobileseg.valid_interpolate(logits, size)
    return (usual != vim).double().mean().item()


def fusion_steps() -> dict[str, int]:
    """PP-MobileSeg, exercise 2: parameters AAM and AAMSx8 add to PP-MobileSeg-Base over SeaFormer's fusion."""
    counts = {f: count_params(pp_mobileseg.pp_mobileseg_base(fusion=f)) for f in ("sea_fusion", "aam", "aam_x8")}
    return {f: counts[f] - counts["sea_fusion"] for f in ("aam", "aam_x8")}


# ---- HRViT ---------------------------------------------------------------------------------------------------


def stripe_macs_by_branch(windows: tuple[int, ...], side: int = 1024, variant: str = "b1") -> list[int]:
    """HRViT, exercise 1: multiply-adds of one attention product per branch and block, for stripe widths ``windows``."""
    channels = hrvit.make_config(variant).channels
    return [hrvit.stripe_attention_macs(c, (side // (4 * 2**i), side // (4 * 2**i)), w)
            for i, (c, w) in enumerate(zip(channels, windows))]


def des_params(channels: int, p: int) -> int:
    """HRViT, exercise 2: parameters of a DES whose Kronecker factor is ``p`` (Linear p->p and Linear C/p->C/p)."""
    if channels % p:
        raise ValueError(f"p={p} does not divide C={channels}")
    q = channels // p
    return (p * p + p) + (q * q + q)


def best_factorisation(channels: int) -> tuple[int, int]:
    """HRViT, exercise 2: the factorisation C = p * q that minimises p^2 + q^2 (the one closest to sqrt(C))."""
    pairs = [(p, channels // p) for p in range(1, channels + 1) if channels % p == 0]
    return min(pairs, key=lambda pq: pq[0] ** 2 + pq[1] ** 2)


def upward_only_fusion(channels: tuple[int, ...]) -> nn.Module:
    """HRViT, exercise 3: each branch receives only from itself and the branch just above it (down-sampling)."""
    fusion = hrvit.FusionLayer(channels, channels, dense=True)
    for i, paths in enumerate(fusion.paths):
        for j in list(paths.keys()):
            if int(j) not in (i, i - 1):
                del paths[j]
    return fusion


# ---- All families on one CPU ---------------------------------------------------------------------------------


def ending_share(num_classes: int, size: int = 512, runs: int = 7) -> float:
    """Comparison, exercise 1: share of TopFormer-Tiny's time to a label map spent upsampling and taking the argmax."""
    model = lessons.create_model("topformer_tiny", num_classes=num_classes).eval()
    x = torch.randn(1, 3, size, size)

    def median_ms(step) -> float:
        times = []
        for _ in range(runs + 1):  # the first run is a warm-up
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:]) * 1e3

    with torch.no_grad():
        logits = model.forward_logits(x)  # at the head's stride, 1/8
        network = median_ms(lambda: model.forward_logits(x))
        ending = median_ms(lambda: pp_mobileseg.interpolate_argmax(logits, (size, size)))
    return ending / (network + ending)


def closest_in_macs(rows: list[dict]) -> tuple[str, str]:
    """Comparison, exercise 3: the two classifiers of different families whose multiply-adds are closest (ratio)."""
    classifiers = [r for r in rows if r["task"] == "classification"]
    pairs = [(a, b) for a in classifiers for b in classifiers if a["family"] != b["family"] and a["macs"] <= b["macs"]]
    a, b = min(pairs, key=lambda pair: pair[1]["macs"] / pair[0]["macs"])
    return a["model"], b["model"]


def operator_shares(name: str, side: int) -> dict[str, float]:
    """Comparison, exercise 3: the share of a model's multiply-adds done by each aten operator."""
    by_op = macs_by_operator(lessons.create_model(name), (1, 3, side, side))
    return {op: macs / sum(by_op.values()) for op, macs in by_op.items()}
