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
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import benchmark
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
    if all(p.device.type == "meta" for p in model.parameters()):
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


def flops_by_part(model: nn.Module, input_size: InputSize) -> dict[str, int]:
    """FLOPs spent in each top-level child of ``model``; the remainder (if any) under ``"(elsewhere)"``."""
    counter = _run_counter(model, input_size)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(_on_meta(model)).__name__
    parts = {name: int(counts.get(f"{root}.{name}", 0)) for name, _ in model.named_children()}
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
    timer = benchmark.Timer(
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
