"""Counting what papers report: parameters, FLOPs/MACs, latency.

FLOPs are counted exactly with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device. Two reasons:
the meta device allocates nothing, so a 70M-parameter model at 512x512 is counted in milliseconds; and on the CPU
``FlopCounterMode`` counts 0 for a fused ``F.scaled_dot_product_attention`` (the CPU kernel has no FLOP formula),
while on ``meta`` the same call is decomposed into matrix multiplies that are counted.

What is counted: 2 FLOPs per multiply-add in convolutions and matrix multiplies (attention included); norms,
activations, pooling, interpolation and biases are not. Papers that say "FLOPs" usually mean multiply-adds (MACs),
so ``count_macs = count_flops / 2`` is the number to compare with them.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

InputSize = Sequence[int]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every element of every parameter tensor; works on ``meta`` models too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def params_by_part(model: nn.Module) -> dict[str, int]:
    """Parameters of each top-level child of ``model`` (``stem``, ``stages``, ``head`` ...), plus its own."""
    parts = {name: count_params(child) for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        parts["(own parameters)"] = own
    return parts


def _check_input_size(input_size: InputSize) -> tuple[int, ...]:
    size = tuple(input_size)
    if len(size) == 3:  # (C, H, W): a batch of one, as papers count
        size = (1, *size)
    if len(size) != 4 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"input_size must be (C, H, W) or (B, C, H, W) of positive ints, got {input_size!r}")
    return size


def _on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (or the model itself if it already is)."""
    # Buffers too: a module with no parameters but a CPU buffer (a fixed mask, a position table) must still be moved.
    if all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())):
        return model
    return copy.deepcopy(model).to("meta")


def _run_counter(model: nn.Module, input_size: InputSize) -> FlopCounterMode:
    size = _check_input_size(input_size)
    meta_model = _on_meta(model)
    was_training = meta_model.training
    meta_model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(size, device="meta"))
    meta_model.train(was_training)
    return counter


def count_flops(model: nn.Module, input_size: InputSize) -> int:
    """Exact FLOPs of one forward pass at ``input_size`` ((C, H, W) means a batch of one); 2 per multiply-add."""
    return int(_run_counter(model, input_size).get_total_flops())


def count_macs(model: nn.Module, input_size: InputSize) -> int:
    """Multiply-accumulates of one forward pass: FLOPs / 2, the unit most papers call "FLOPs"."""
    return count_flops(model, input_size) // 2


def _flops_inside(counts: dict[str, int], prefix: str) -> int:
    """FLOPs spent while the module named ``prefix`` or any module under it ran.

    A container the parent only iterates over (``for stage in self.stages``) is never called, so it has no entry of
    its own: its called descendants are summed instead, the outermost ones only (a module's count already includes
    the modules it calls).
    """
    inside = [key for key in counts if key == prefix or key.startswith(prefix + ".")]
    outermost = [key for key in inside if not any(key.startswith(other + ".") for other in inside)]
    return sum(counts[key] for key in outermost)


def flops_by_part(model: nn.Module, input_size: InputSize) -> dict[str, int]:
    """FLOPs spent in each top-level child of ``model``; the remainder (if any) under ``"(elsewhere)"``."""
    counter = _run_counter(model, input_size)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(_on_meta(model)).__name__
    parts = {name: int(_flops_inside(counts, f"{root}.{name}")) for name, _ in model.named_children()}
    rest = int(counter.get_total_flops()) - sum(parts.values())
    if rest:
        parts["(elsewhere)"] = rest
    return parts


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass: the median over many timed blocks, and the spread between quartiles."""

    median_ms: float
    iqr_ms: float
    runs: int

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f} ms, {self.runs} runs)"


def _torch_benchmark() -> ModuleType:
    """``torch.utils.benchmark``, imported on first use rather than with ``lessons``.

    Importing it imports ``torch.utils.cpp_extension``, which on a machine with a CUDA compiler but no GPU logs a
    warning carrying a time stamp and a process id. Imported at the top of this module, that line landed in the
    first cell of every chapter and differed on every run, so nbval could never reproduce it.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_size: InputSize,
    warmup: int = 3,
    min_run_time: float = 1.0,
    num_threads: int | None = None,
) -> Latency:
    """Time ``model`` on a random input: warm up, then ``torch.utils.benchmark`` picks how many runs fit.

    Honest timing means: evaluation mode, no autograd, warm-up runs (first calls allocate and pick kernels),
    many runs, and the median rather than the mean (one slow run from a busy machine moves the mean, not the median).
    """
    size = _check_input_size(input_size)
    model.eval()
    x = torch.randn(size)
    for _ in range(warmup):
        model(x)
    timer = _torch_benchmark().Timer(
        stmt="model(x)", globals={"model": model, "x": x}, num_threads=num_threads or torch.get_num_threads()
    )
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(measurement.median * 1e3, measurement.iqr * 1e3, len(measurement.times))


@torch.no_grad()
def compare_latency(
    models: Mapping[str, nn.Module], input_size: InputSize, rounds: int = 5, warmup: int = 2, per_round: int = 3
) -> dict[str, Latency]:
    """Time several models *interleaved* in one run, so a machine that slows down slows every model alike.

    Each round times every model ``per_round`` times; the result per model is the median over all its runs.
    Ratios between the results are what a chapter should quote: absolute milliseconds depend on the machine.
    """
    if not models:
        raise ValueError("compare_latency needs at least one model")
    size = _check_input_size(input_size)
    x = torch.randn(size)
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(x)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(per_round):
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, ts in times.items():
        quartiles = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = Latency(statistics.median(ts), quartiles[2] - quartiles[0], len(ts))
    return out


def macs_by_operator(model: nn.Module, input_size: InputSize) -> dict[str, int]:
    """Exact multiply-adds of one forward pass, split by the aten operator that performs them (largest first).

    In this book's models ``convolution`` is every convolution, ``addmm`` and ``mm`` are the linear layers (PyTorch
    runs a linear layer as ``mm`` when it has no bias or its input is not contiguous) and ``bmm`` is the pair of
    matrix products inside attention, QK^T and (softmax)V, which have no parameters. The split shows what share of a
    model's cost is attention itself, and it is what tools that count from parameter shapes (torchinfo) miss. The
    values sum to :func:`count_macs` (every counted operator does an even number of FLOPs: 2 per multiply-add).
    """
    by_op = _run_counter(model, input_size).get_flop_counts().get("Global", {})
    ordered = sorted(by_op.items(), key=lambda item: -item[1])
    return {str(op).removeprefix("aten."): int(flops) // 2 for op, flops in ordered}


# --------------------------------------------------------------------------------------------------------------------
# MACs as fvcore counts them (the tool behind PoolFormer's README numbers)
# --------------------------------------------------------------------------------------------------------------------

_functional = torch.nn.functional
# fvcore.nn.FlopCountAnalysis's default handles (fvcore/nn/flop_count.py, _DEFAULT_SUPPORTED_OPS and jit_handles.py):
# MACs per element of the input (norms, adaptive pooling) or of the output (upsampling).
_FVCORE_NORMS = {  # function -> position of its `weight` argument; norm_flop_counter: 5 per element, 4 without weight
    _functional.group_norm: 2, _functional.layer_norm: 2, _functional.instance_norm: 3,
}
_FVCORE_UPSAMPLE_MACS = {"nearest": 1, "bilinear": 4}  # upsample_nearest2d / upsample_bilinear2d, per output element


def _argument(args: tuple, kwargs: dict, position: int, name: str, default: object = None) -> object:
    return kwargs[name] if name in kwargs else (args[position] if len(args) > position else default)


class _FvcoreExtraOps(torch.overrides.TorchFunctionMode):
    """Counts, at the ``torch.nn.functional`` level, the operations besides matmuls that fvcore's defaults count."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's protocol)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside this call, so nested functions are not counted twice
        if func in _FVCORE_NORMS:
            has_weight = _argument(args, kwargs, _FVCORE_NORMS[func], "weight") is not None
            self.macs += args[0].numel() * (5 if has_weight else 4)
        elif func is _functional.batch_norm:  # batchnorm_flop_jit in inference: 2 per element, 1 without weight
            has_weight = _argument(args, kwargs, 3, "weight") is not None
            self.macs += args[0].numel() * (2 if has_weight else 1)
        elif func is _functional.adaptive_avg_pool2d:  # 1 per input element
            self.macs += args[0].numel()
        elif func is _functional.interpolate:
            self.macs += out.numel() * _FVCORE_UPSAMPLE_MACS.get(_argument(args, kwargs, 3, "mode", "nearest"), 0)
        return out


def count_macs_fvcore(model: nn.Module, input_size: InputSize) -> int:
    """Multiply-adds by fvcore's rule (``FlopCountAnalysis`` defaults), the counter PoolFormer's README used.

    fvcore (facebookresearch/fvcore, ``fvcore/nn/flop_count.py``) counts one per multiply-add of convolutions,
    linear layers and matrix multiplies, as :func:`count_macs` does, and *also*: 5 per element for every
    GroupNorm/LayerNorm/InstanceNorm with a weight (4 without), 2 per element for an inference BatchNorm (1 without),
    1 per input element of adaptive average pooling, 1 (nearest) or 4 (bilinear) per output element of upsampling.
    It counts nothing for activations, element-wise arithmetic, softmax, ``avg_pool2d`` or ``mean``.

    Two differences from running fvcore itself, on purpose: attention is counted as its two matrix multiplies even
    when the code calls the fused ``F.scaled_dot_product_attention`` (fvcore's tracer counts 0 for it, but counts
    the two matmuls that the papers' official code writes out); and a norm is seen only when it goes through
    ``torch.nn.functional`` (a norm written out with ``mean``/``pow`` is invisible to fvcore too).
    Counted on the meta device like :func:`count_flops`; the result is ``count_macs`` plus those extra operations.
    """
    size = _check_input_size(input_size)
    meta_model = _on_meta(model)
    was_training = meta_model.training
    meta_model.eval()
    extra = _FvcoreExtraOps()
    counter = FlopCounterMode(display=False)
    with counter, extra, torch.no_grad():
        meta_model(torch.empty(size, device="meta"))
    meta_model.train(was_training)
    return int(counter.get_total_flops()) // 2 + extra.macs
