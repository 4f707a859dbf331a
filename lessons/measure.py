"""Counting what papers report: parameters, FLOPs/MACs, latency.

FLOPs are counted exactly with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device. Two reasons:
the meta device allocates nothing, so a 70M-parameter model at 512x512 is counted in under a second; and on the CPU
``FlopCounterMode`` counts 0 for a fused ``F.scaled_dot_product_attention`` (the CPU kernel has no FLOP formula),
while on ``meta`` the same call is decomposed into matrix multiplies that are counted.

What is counted: 2 FLOPs per multiply-add in convolutions and matrix multiplies (attention included); norms,
activations, pooling, interpolation and biases are not. Papers that say "FLOPs" usually mean multiply-adds (MACs),
so ``count_macs = count_flops / 2`` is the number to compare with them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

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


@contextlib.contextmanager
def on_meta(model: nn.Module, input_size: InputSize) -> Iterator[tuple[nn.Module, torch.Tensor]]:
    """The one set-up every counter here uses: ``model`` (copied to the meta device unless it is there already) in
    evaluation mode with an empty meta input of ``input_size``, under ``torch.no_grad``; the mode the model had is
    restored afterwards, whatever happens inside."""
    size = _check_input_size(input_size)
    meta = _on_meta(model)
    was_training = meta.training
    meta.eval()
    try:
        with torch.no_grad():
            yield meta, torch.empty(size, device="meta")
    finally:
        meta.train(was_training)


def _run_counter(model: nn.Module, input_size: InputSize) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    with on_meta(model, input_size) as (meta, x), counter:
        meta(x)
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


# --------------------------------------------------------------------------------------------------------------------
# Counting registered models by name (cached): what the claims, the scripts and the comparison page use
# --------------------------------------------------------------------------------------------------------------------

Counter = Callable[[nn.Module, InputSize], int]


def meta_model(name: str, **kwargs) -> nn.Module:
    """Registered model ``name`` built on the meta device, in evaluation mode: shapes and counts, no memory."""
    from .registry import create_model  # late: the registry does not need measure, measure rarely needs it

    with torch.device("meta"):
        return create_model(name, **kwargs).eval()


@functools.lru_cache(maxsize=None)
def _cached_count(counter: Counter | None, name: str, input_size: tuple[int, ...] | None, frozen: tuple) -> int:
    model = meta_model(name, **dict(frozen))
    return count_params(model) if counter is None else int(counter(model, input_size))


def model_params(name: str, **kwargs) -> int:
    """Parameters of registered model ``name`` built with ``kwargs`` (cached; counted on the meta device)."""
    return _cached_count(None, name, None, tuple(sorted(kwargs.items())))


def model_count(name: str, input_size: InputSize, counter: Counter | None = None, **kwargs) -> int:
    """``counter(model, input_size)`` for registered model ``name`` built with ``kwargs`` on the meta device (cached,
    so a claims table counts each model once). ``counter`` defaults to :func:`count_macs`; pass
    :func:`count_macs_fvcore`, or ``functools.partial(count_mmcv_flops, rules=...)`` kept in a constant, for the
    papers' own counting rules."""
    return _cached_count(counter or count_macs, name, tuple(input_size), tuple(sorted(kwargs.items())))


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass: the median over the timed samples, and the spread between quartiles.

    A *sample* is one timing: of a single forward pass (:func:`compare_latency`, ``passes_per_sample=1``) or the
    mean of a block of ``passes_per_sample`` passes (:func:`measure_latency`, whose ``torch.utils.benchmark`` times
    blocks). ``samples_ms`` keeps every sample in the order taken, so two results of one :func:`compare_latency`
    call can be compared round by round (:func:`paired_ratio`).
    """

    median_ms: float
    iqr_ms: float
    samples: int
    passes_per_sample: int = 1
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def forward_passes(self) -> int:
        """How many forward passes were timed in all."""
        return self.samples * self.passes_per_sample

    @property
    def runs(self) -> int:
        """Old name of :attr:`samples` (timed samples, which are blocks of passes for :func:`measure_latency`)."""
        return self.samples

    @property
    def relative_iqr(self) -> float:
        """The spread as a fraction of the median: a difference smaller than this is not shown by these samples."""
        return self.iqr_ms / self.median_ms

    def __str__(self) -> str:
        if self.passes_per_sample == 1:
            return f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f} ms, {self.samples} timed passes)"
        return (f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f} ms; {self.samples} timed blocks of "
                f"{self.passes_per_sample} passes, {self.forward_passes} passes)")


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return q1, statistics.median(values), q3


def paired_ratio(a: Latency, b: Latency) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``a``'s time over ``b``'s, sample by sample.

    For two results of one :func:`compare_latency` call, sample ``i`` of each was taken in the same round, so a
    machine that slows down for a while slows both sides of the ratio: its spread is smaller than the two IQRs.
    """
    if not isinstance(a, Latency) or not isinstance(b, Latency):
        raise TypeError("paired_ratio compares two lessons.measure.Latency results")
    if not a.samples_ms or len(a.samples_ms) != len(b.samples_ms):
        raise ValueError("paired_ratio needs two results of one compare_latency call (the same number of samples)")
    return _quartiles([x / y for x, y in zip(a.samples_ms, b.samples_ms)])


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
    many timed passes, and the median rather than the mean (one slow pass from a busy machine moves the mean, not
    the median). ``torch.utils.benchmark`` times *blocks* of passes and reports one mean per block, so the result
    has ``samples`` blocks of ``passes_per_sample`` passes each; its median and IQR are over the blocks.
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
    times = tuple(t * 1e3 for t in measurement.times)
    return Latency(measurement.median * 1e3, measurement.iqr * 1e3, len(times), measurement.number_per_run, times)


@torch.no_grad()
def compare_latency(
    models: Mapping[str, nn.Module], input_size: InputSize, rounds: int = 5, warmup: int = 2, per_round: int = 3,
    progress: bool = False,
) -> dict[str, Latency]:
    """Time several models *interleaved* in one run, so a machine that slows down slows every model alike.

    Each round times every model ``per_round`` times, one forward pass per sample; the result per model is the
    median over all its ``rounds * per_round`` samples. Compare two models with :func:`paired_ratio`.
    Ratios between the results are what a chapter should quote: absolute milliseconds depend on the machine.
    ``progress=True`` shows a tqdm bar over the rounds (for long benchmarks run from a script).
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
    for _ in tqdm(range(rounds), desc="rounds", disable=not progress):
        for name, model in models.items():
            for _ in range(per_round):
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, ts in times.items():
        q1, median, q3 = _quartiles(ts)
        out[name] = Latency(median, q3 - q1, len(ts), 1, tuple(ts))
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
    extra = _FvcoreExtraOps()
    counter = FlopCounterMode(display=False)
    with on_meta(model, input_size) as (meta, x), counter, extra:
        meta(x)
    return int(counter.get_total_flops()) // 2 + extra.macs


# --------------------------------------------------------------------------------------------------------------------
# FLOPs as mmcv counts them (``get_model_complexity_info``: the tool behind TopFormer's, SeaFormer's, HRViT's READMEs)
# --------------------------------------------------------------------------------------------------------------------

ModuleRule = Callable[[nn.Module, tuple, torch.Tensor], int]


def _mmcv_conv(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """mmcv ``conv_flops_counter_hook``: multiply-adds (once, not twice), plus one add per output for a bias."""
    per_position = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    positions = output.shape[0] * math.prod(output.shape[2:])
    return per_position * positions + (m.out_channels * positions if m.bias is not None else 0)


def _mmcv_linear(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """mmcv ``linear_flops_counter_hook``: multiply-adds; the bias is not counted."""
    return inputs[0].numel() * output.shape[-1]


def _mmcv_norm(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """mmcv ``norm_flops_counter_hook``: one per input element, two with an affine (scale and shift)."""
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return inputs[0].numel() * (2 if affine else 1)


def _elements_out(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    return output.numel()


def _elements_in(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    return inputs[0].numel()


# mmcv 1.x ``mmcv/cnn/utils/flops_counter.py`` ``get_modules_mapping`` (the 2-D part this book's models use):
# kind -> (module types, rule). ReLU-type activations and upsampling count one per output element, pooling one per
# input element.
MMCV_KINDS: dict[str, tuple[tuple[type[nn.Module], ...], ModuleRule]] = {
    "conv": ((nn.Conv2d,), _mmcv_conv),
    "batchnorm": ((nn.BatchNorm1d, nn.BatchNorm2d), _mmcv_norm),
    "relu": ((nn.ReLU, nn.ReLU6, nn.LeakyReLU), _elements_out),
    "pool": ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d), _elements_in),
    "linear": ((nn.Linear,), _mmcv_linear),
    "layernorm": ((nn.LayerNorm, nn.GroupNorm), _mmcv_norm),
    "upsample": ((nn.Upsample,), _elements_out),
}


@dataclass(frozen=True)
class MmcvRules:
    """Which modules an mmcv-style module-hook count charges. The defaults are mmcv 1.x itself.

    Args:
        exact_types: match a module's type exactly, as mmcv does (``type(m) in mapping``), so a subclass of
            ``nn.Conv2d`` counts 0; ``False`` matches with ``isinstance`` (the kinds are tried in the order of
            :data:`MMCV_KINDS`).
        kinds: the kinds of :data:`MMCV_KINDS` counted. TopFormer's reconstruction leaves out ``"layernorm"`` and
            ``"upsample"`` (its models have neither as a module, so the totals do not depend on it).
        extra_types: more module types per kind, e.g. TopFormer's ``HardSigmoid`` module as a ``"relu"`` (the
            official code builds its h_sigmoid from ``nn.ReLU6``, which mmcv counts).
        extra_kinds: kind -> (module type, rule) for work mmcv *never sees* but a README may have added by hand
            (HRViT's attention products). Matched with ``isinstance``, recorded per kind, and left out of
            :meth:`MmcvFlopCounter.total` unless asked for with ``extra_counts``.
    """

    exact_types: bool = True
    kinds: tuple[str, ...] = tuple(MMCV_KINDS)
    extra_types: Mapping[str, tuple[type[nn.Module], ...]] = field(default_factory=dict)
    extra_kinds: Mapping[str, tuple[type[nn.Module], ModuleRule]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.kinds, *self.extra_types) if k not in MMCV_KINDS]
        if unknown:
            raise ValueError(f"unknown mmcv kinds {unknown}; known: {list(MMCV_KINDS)}")
        clash = [k for k in self.extra_kinds if k in MMCV_KINDS]
        if clash:
            raise ValueError(f"extra_kinds must not reuse mmcv's kinds {clash}; pick another name")

    def rule_for(self, module: nn.Module) -> tuple[str, ModuleRule] | None:
        """(kind, rule) that charges ``module``, or None if this rule set counts it 0."""
        for kind in MMCV_KINDS:
            if kind not in self.kinds:
                continue
            types, rule = MMCV_KINDS[kind]
            types = types + tuple(self.extra_types.get(kind, ()))
            if (type(module) in types) if self.exact_types else isinstance(module, types):
                return kind, rule
        for kind, (module_type, rule) in self.extra_kinds.items():
            if isinstance(module, module_type):
                return kind, rule
        return None


class MmcvFlopCounter:
    """Count FLOPs the way mmcv's module-hook counter does (mmcv 1.x ``get_model_complexity_info``, run by the
    official ``tools/get_flops.py`` of TopFormer, SeaFormer and HRViT), for every forward pass run inside
    ``with MmcvFlopCounter(model, rules) as counter:``; recorded per kind (``by_kind``) and per top-level child of
    ``model`` (``by_part``; the root's own modules under ``"(own modules)"``).

    mmcv hooks *modules* only: anything done with functions -- the attention matmuls, ``interpolate``,
    ``adaptive_avg_pool2d``, the additions -- counts 0. Only shapes are read, so it runs on the meta device and
    inside ``FlopCounterMode`` (one forward pass can feed both).
    """

    def __init__(self, model: nn.Module, rules: MmcvRules = MmcvRules()) -> None:
        if not isinstance(rules, MmcvRules):
            raise TypeError(f"rules must be a lessons.measure.MmcvRules, got {type(rules).__name__}")
        self.model, self.rules = model, rules
        self.by_kind: dict[str, int] = {}
        self.by_part: dict[str, int] = {name: 0 for name, _ in model.named_children()}
        self._handles: list = []

    def total(self, count_batchnorm: bool = True, extra_counts: Mapping[str, int] | None = None) -> int:
        """mmcv's total. ``count_batchnorm=False`` drops BatchNorm (``SyncBatchNorm`` is not in mmcv's table, so
        models trained with it report BNs as 0); ``extra_counts`` adds each named extra kind that many times (HRViT's
        README: ``{"attention_product": 1}``)."""
        extra_counts = dict(extra_counts or {})
        for kind, times in extra_counts.items():
            if kind not in self.rules.extra_kinds:
                known = list(self.rules.extra_kinds)
                raise ValueError(f"extra_counts names {kind!r}; the rules' extra kinds are {known}")
            if not isinstance(times, int) or times < 0:
                raise ValueError(f"extra_counts[{kind!r}] must be a non-negative int, got {times!r}")
        mmcv = sum(v for k, v in self.by_kind.items() if k in MMCV_KINDS)
        if not count_batchnorm:
            mmcv -= self.by_kind.get("batchnorm", 0)
        return mmcv + sum(times * self.by_kind.get(kind, 0) for kind, times in extra_counts.items())

    def __enter__(self) -> MmcvFlopCounter:
        parts = [(name, child) for name, child in self.model.named_children()]
        part_of = {id(m): name for name, child in parts for m in child.modules()}
        for module in self.model.modules():
            found = self.rules.rule_for(module)
            if found is None:
                continue
            part = part_of.get(id(module), "(own modules)")

            def hook(m: nn.Module, inputs: tuple, output: torch.Tensor, kind: str = found[0],
                     rule: ModuleRule = found[1], part: str = part) -> None:
                flops = int(rule(m, inputs, output))
                self.by_kind[kind] = self.by_kind.get(kind, 0) + flops
                if kind in MMCV_KINDS:  # parts add up to the mmcv total, as mmcv reports it
                    self.by_part[part] = self.by_part.get(part, 0) + flops

            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _run_mmcv(model: nn.Module, input_size: InputSize, rules: MmcvRules) -> tuple[MmcvFlopCounter, int]:
    with on_meta(model, input_size) as (meta, x), MmcvFlopCounter(meta, rules) as counter:
        meta(x)
    return counter, x.shape[0]


def count_mmcv_flops(
    model: nn.Module, input_size: InputSize, *, rules: MmcvRules = MmcvRules(), count_batchnorm: bool = True,
    extra_counts: Mapping[str, int] | None = None,
) -> int:
    """FLOPs of one image by mmcv's module rules (:class:`MmcvFlopCounter`), counted on the meta device; a batch
    is divided by its size, as mmcv does. ``count_batchnorm`` and ``extra_counts`` as in
    :meth:`MmcvFlopCounter.total`."""
    counter, batch = _run_mmcv(model, input_size, rules)
    return counter.total(count_batchnorm, extra_counts) // batch


def mmcv_flops_by_part(model: nn.Module, input_size: InputSize, *, rules: MmcvRules = MmcvRules()) -> dict[str, int]:
    """mmcv-rule FLOPs of one image per top-level child of ``model`` (``token_pyramid``, ``extractor``, ...)."""
    counter, batch = _run_mmcv(model, input_size, rules)
    return {part: flops // batch for part, flops in counter.by_part.items()}


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what ``platform`` knows), for benchmark records."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# x86 features that decide how ONNX Runtime's int8 kernels multiply uint8 by int8 (lessons.deploy's docstring):
# without VNNI, pairs of products are summed into 16 bits (VPMADDUBSW) and can saturate; with AVX512-VNNI or
# AVX-VNNI they go straight into 32 bits (VPDPBUSD); AMX multiplies int8 tiles. asimddp is ARM's int8 dot product.
INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_flags(names: tuple[str, ...] = INT8_CPU_FLAGS) -> dict[str, bool]:
    """Whether the CPU reports each feature flag in ``names`` (Linux's /proc/cpuinfo ``flags``, ARM's
    ``Features``), for benchmark records; an empty dict where /proc/cpuinfo cannot be read."""
    from pathlib import Path

    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a tuple of flag names, got {names!r}")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    present: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present.update(value.split())
    return {name: name in present for name in names}
