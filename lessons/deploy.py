"""From notebook to device: export a model to ONNX, run it in ONNX Runtime, and quantize it to int8 after training.

The path a mobile model takes out of PyTorch, in four steps, each a small function here:

1. :func:`export_onnx`: ``torch.onnx.export(..., dynamo=True)`` traces the model with ``torch.export`` and writes
   an ONNX graph (operators and weights, no Python). ``optimize=False`` skips the onnxscript optimizer (constant
   folding, pattern rewrites): on HRViT-b1 that optimizer took about eight minutes on a 2-core AMD EPYC, and
   still about five (dynamic sizes) on a faster Intel Xeon; without it the export takes under a minute, and ONNX Runtime applies its own graph optimizations at load time anyway.
2. :func:`ort_session` / :class:`OnnxRuntimeModel`: an ONNX Runtime session with a fixed number of threads (the
   papers time one phone core, so the book times one thread), wrapped as a module that takes and returns torch
   tensors, so :func:`lessons.measure.compare_latency` can time it interleaved with the eager and compiled model.
3. :func:`quantize_linear_dynamic`: post-training int8 quantization of the matrix multiplies (``MatMul``/``Gemm``:
   the linear layers) with ONNX Runtime's *dynamic* quantization: weights stored as int8 with one scale each, the
   activations' scale computed from each input as it arrives, so no calibration data is needed.
   A segmenter's ending goes into the graph too (:class:`LabelMap`): the phones' latencies include it.
   :func:`exportable_vim` is PP-MobileSeg's VIM written so that it exports: its set of classes has a size known only
   at run time, which ONNX's ``NonZero`` gives.
4. :func:`quantize_conv_static`: int8 quantization of the convolutions with *static* quantization (QDQ format):
   the activations' scales are fixed in advance from the ranges seen on calibration images
   (:class:`ImageCalibrationReader`, training-set images, never the test set), weights per output channel.

:func:`file_size` gives a model's size on disk, the number a phone's download and memory see.

Weights are quantized to **7 bits** (``reduce_range=True``, steps of max|w| / 63), not 8. On x86 processors without
the VNNI instructions ONNX Runtime multiplies uint8 activations by int8 weights with ``VPMADDUBSW``, which adds
pairs of products into a 16-bit integer: 255 x 127 x 2 = 64,770 does not fit in 32,767, and the sum saturates.
On this book's machine that moved a 1x1 convolution's output by 0.54 where rounding allows 0.03
(``tests/test_deployment.py`` derives the bound); with 7-bit weights a pair stays below 255 x 64 x 2 = 32,640.
ONNX Runtime's documentation recommends exactly this on such machines; a phone's ARM kernels do not need it.
``weight_bits=8`` (``reduce_range=False``) uses all 8 bits, for CPUs whose integer dot products accumulate in 32 bits
(VNNI, :func:`lessons.measure.cpu_flags`): whether they are then correct is measured, not assumed
(``scripts/deploy_bench.py --weight-bits 8``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "export_onnx", "ort_session", "OnnxRuntimeModel", "ImageCalibrationReader", "quantize_linear_dynamic",
    "quantize_conv_static", "file_size", "weights_by_type", "max_abs_diff", "exportable_vim", "LabelMap",
    "SegmentationEnding",
]

ENDINGS = ("interpolate", "vim")
WEIGHT_BITS = (7, 8)  # 7: reduce_range=True, safe against x86's 16-bit saturation; 8: every bit (VNNI, ARM)

PathLike = str | os.PathLike


def _check_image_batch(x: object, name: str = "example") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor image batch [B, C, H, W], got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float image batch [B, C, H, W], got shape {tuple(x.shape)} of {x.dtype}")
    return x


def _check_onnx_path(path: PathLike, must_exist: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a path to an .onnx file, got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"an ONNX model's file name ends in .onnx, got {path.name!r}")
    if must_exist and not path.is_file():
        raise ValueError(f"no ONNX model at {path}: export one first (lessons.deploy.export_onnx)")
    return path


def export_onnx(model: nn.Module, example: torch.Tensor, path: PathLike, optimize: bool = True) -> Path:
    """Export ``model`` (in evaluation mode) to ONNX at ``path`` for inputs of ``example``'s shape; returns the path.

    The graph is exported for the example's exact shape (batch, height and width fixed): the deployment case, one
    camera resolution, and the one that every family here exports at (``tests/test_export.py`` checks the dynamic
    sizes). ``optimize=False`` skips onnxscript's optimizer (see the module's docstring: HRViT).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    example = _check_image_batch(example)
    path = _check_onnx_path(path, must_exist=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = {m: m.training for m in model.modules()}  # restored one by one: a wrapper's mode is not its parts'
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(model, (example,), dynamo=True, optimize=optimize, verbose=False)
        program.save(str(path))
    finally:
        for module, training in modes.items():
            module.training = training
    _strip_debug_info(path)
    return path


def _strip_debug_info(path: Path) -> None:
    """Drop what the exporter records for debugging: every node's PyTorch stack trace, module path and name in its
    ``metadata_props`` and ``doc_string``. It serves a developer reading the graph, not a phone running it, and it
    would otherwise be a third of a miniature's file (and vanish from the quantized files, making them look smaller
    than their weights make them)."""
    import onnx

    model = onnx.load(str(path))

    def strip(graph) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    strip(attribute.g)
                for sub in attribute.graphs:
                    strip(sub)

    strip(model.graph)
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""
    del model.graph.value_info[:]  # intermediate shapes: recomputed by ONNX Runtime at load time
    onnx.save(model, str(path))


def ort_session(path: PathLike, threads: int = 1):
    """An ONNX Runtime CPU session for the model at ``path`` running on ``threads`` threads (all graph
    optimizations on: ONNX Runtime folds BatchNorms into convolutions and fuses what it can when it loads)."""
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    path = _check_onnx_path(path, must_exist=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the quantized graphs otherwise log a warning per fused node
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session used like the PyTorch model it came from: torch tensor in, torch tensor out.

    A module (with no parameters) so that code written for models, ``compare_latency`` among it, times it the same
    way as the eager and compiled model. The conversion to and from NumPy shares memory (no copy).
    """

    def __init__(self, path: PathLike, threads: int = 1) -> None:
        super().__init__()
        self.path = _check_onnx_path(path, must_exist=True)
        self.session = ort_session(self.path, threads)
        (self.input_name,) = [i.name for i in self.session.get_inputs()]
        self.input_shape = tuple(self.session.get_inputs()[0].shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_image_batch(x, "input")
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"this graph was exported for inputs of shape {self.input_shape}, got {tuple(x.shape)}: "
                             "export it again at the new size")
        (out,) = self.session.run(None, {self.input_name: x.detach().contiguous().numpy()})
        return torch.from_numpy(out)


class ImageCalibrationReader:
    """Feeds calibration images to ONNX Runtime's static quantizer, one batch at a time.

    Implements ``onnxruntime.quantization.CalibrationDataReader``'s protocol (``get_next`` returns one input dict,
    ``None`` when done). ``batches``: float image batches already normalised as the model expects, every one of the
    shape the graph was exported for.
    """

    def __init__(self, input_name: str, batches: Iterable[torch.Tensor]) -> None:
        if not isinstance(input_name, str) or not input_name:
            raise ValueError(f"input_name must be the graph's input name, got {input_name!r}")
        self.input_name = input_name
        self.batches = [_check_image_batch(b, "calibration batch").detach().numpy() for b in batches]
        if not self.batches:
            raise ValueError("no calibration batches: static quantization needs images to measure ranges on")
        self._next = 0

    def get_next(self) -> dict | None:
        if self._next == len(self.batches):
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def exportable_vim(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """VIM (:func:`lessons.pp_mobileseg.valid_interpolate`) in a form ``torch.export`` and ONNX accept.

    ``torch.unique`` becomes a mask of the classes that win somewhere, and ``nonzero`` of it: a sorted list of class
    ids whose length is known only at run time (ONNX ``NonZero``). ``torch._check`` tells the exporter the bounds of
    that length (one class at least, all at most), so no guard on the data is needed. The argument checks of
    ``interpolate_classes`` are left out: they read the data (``int(classes.min())``), which a trace cannot.
    """
    from .layers import resize_to

    winners = logits.argmax(dim=1)  # [B, h, w]
    present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    present = present.index_fill(0, winners.flatten(), True)
    classes = present.nonzero().squeeze(1)  # sorted, as torch.unique returns them
    torch._check(classes.numel() >= 1)
    torch._check(classes.numel() <= logits.shape[1])
    selected = logits.index_select(1, classes)  # only the present classes' maps ...
    return classes[resize_to(selected, size).argmax(dim=1)]  # ... are upsampled; winners mapped back to class ids


def _end(logits: torch.Tensor, size: Sequence[int], ending: str) -> torch.Tensor:
    from .pp_mobileseg import interpolate_argmax

    return exportable_vim(logits, size) if ending == "vim" else interpolate_argmax(logits, size)


def _check_ending(ending: object) -> str:
    if ending not in ENDINGS:
        raise ValueError(f"ending must be one of {ENDINGS}, got {ending!r}")
    return ending


class LabelMap(nn.Module):
    """Image -> label map [B, H, W]: a segmenter's ``forward_logits``, then its ending in the same graph:
    ``"interpolate"`` (every class upsampled to the image's size, argmax) or ``"vim"`` (:func:`exportable_vim`).
    What the papers' phone latencies time ("the final argmax included")."""

    def __init__(self, segmenter: nn.Module, ending: str = "interpolate") -> None:
        super().__init__()
        if not hasattr(segmenter, "forward_logits"):
            raise TypeError(f"{type(segmenter).__name__} has no forward_logits: LabelMap wraps a segmenter "
                            "(lessons.contract.Segmenter)")
        self.segmenter, self.ending = segmenter, _check_ending(ending)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _end(self.segmenter.forward_logits(x), x.shape[-2:], self.ending)


class SegmentationEnding(nn.Module):
    """Low-resolution logits -> label map of ``size``: the ending alone, to time it apart from the network."""

    def __init__(self, ending: str, size: Sequence[int]) -> None:
        super().__init__()
        self.ending, self.size = _check_ending(ending), tuple(size)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return _end(logits, self.size, self.ending)


def _check_weight_bits(weight_bits: object) -> bool:
    """``reduce_range`` for ONNX Runtime's quantizers: True for 7-bit weights, False for 8."""
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, got {weight_bits!r}")
    return weight_bits == 7


def _pre_processed(src: Path, work: Path) -> Path:
    """ONNX Runtime's recommended step before quantization: shape inference and graph optimization (BatchNorms
    folded into the convolutions, so that the quantized weights are the folded ones)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "pre.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize_linear_dynamic(src: PathLike, dst: PathLike, weight_bits: int = 7) -> Path:
    """int8 weights for the matrix multiplies (``MatMul``, ``Gemm``), activations quantized on the fly: dynamic
    post-training quantization, no calibration. Other operators (convolutions, norms, softmax) stay float32.
    Weights use 7 of their 8 bits by default (see the module's docstring: x86 saturation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    reduce_range = _check_weight_bits(weight_bits)
    src, dst = _check_onnx_path(src, must_exist=True), _check_onnx_path(dst, must_exist=False)
    with tempfile.TemporaryDirectory() as work:
        quantize_dynamic(_pre_processed(src, Path(work)), dst, op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8, reduce_range=reduce_range)
    _strip_debug_info(dst)
    return dst


def quantize_conv_static(src: PathLike, dst: PathLike, calibration: Sequence[torch.Tensor],
                         weight_bits: int = 7) -> Path:
    """int8 convolutions with static post-training quantization (QDQ): activation ranges measured on the
    ``calibration`` batches (min-max), unsigned 8-bit activations and signed weights (by default 7 of 8 bits used,
    see the module's docstring) with one scale per output channel (ONNX Runtime's recommended pairing on x86).
    Other operators stay float32."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    reduce_range = _check_weight_bits(weight_bits)
    src, dst = _check_onnx_path(src, must_exist=True), _check_onnx_path(dst, must_exist=False)
    if isinstance(calibration, torch.Tensor):
        raise TypeError("calibration must be a sequence of image batches (a list of [B, C, H, W] tensors)")
    input_name = ort_session(src).get_inputs()[0].name
    reader = ImageCalibrationReader(input_name, calibration)
    with tempfile.TemporaryDirectory() as work:
        quantize_static(_pre_processed(src, Path(work)), dst, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    _strip_debug_info(dst)
    return dst


def weights_by_type(path: PathLike) -> dict[str, int]:
    """How many stored numbers (initializer elements) of each type the graph at ``path`` holds, e.g.
    ``{"FLOAT": 5520, "INT8": 202174, ...}``: what quantization turned into int8 and what stayed float."""
    import onnx

    model = onnx.load(str(_check_onnx_path(path, must_exist=True)))
    counts: dict[str, int] = {}
    for tensor in model.graph.initializer:
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        numel = 1
        for d in tensor.dims:
            numel *= d
        counts[kind] = counts.get(kind, 0) + numel
    return dict(sorted(counts.items()))


def file_size(path: PathLike) -> int:
    """Bytes on disk of the model at ``path`` (weights and graph)."""
    return _check_onnx_path(path, must_exist=True).stat().st_size


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest element-wise distance between two outputs of the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"outputs of different shapes cannot be compared: {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max())
