"""Deployment paths (issue 17): the segmenters keep following the input size once traced or exported, and every model
goes through FX symbolic tracing and ``torch.compile(fullgraph=True)``.

A traced or exported segmenter must give the eager result at a *second* input size, of the second size: HRViT's traced
segmenter once returned a 128x128 map for a 192x192 image, because a resize target had been turned into Python ints.
The sizes here are non-square and swapped between the two calls, so a graph that mixes up height and width, or keeps
the first size anywhere, fails.

Tolerance (``close``): the traced, exported and ONNX graphs run the same float32 arithmetic as eager in another order
or with other kernels (ONNX Runtime folds BatchNorms into convolutions, for one), so they may differ from eager by
rounding only. How much rounding moves the output depends on the model and its weights (on random weights with
random BatchNorm statistics SeaFormer's logits move by ~3e-4 of their range between ONNX Runtime and eager, far
more than float32's step of 6e-8), so the bound is measured, not fixed: the model run in float64 gives the exact
result, eager float32's distance from it is this input's rounding error, and a graph may be at most 4x as far.
A graph that computed anything else (a stale size, a wrong broadcast) is off by the logits' own scale.

Cost: the whole file must add about a minute to CI on two cores, so by default each test runs for a few of the
smallest models, one per family where it can, whose code paths the other variants share (they differ in widths and
depths only): ``LESSONS_EXPORT_SWEEP=all pytest tests/test_export.py`` runs every test over every registered model
it applies to. The ONNX export (tens of seconds) runs for one model.
"""

from __future__ import annotations

import copy
import functools
import os

import pytest
import torch
from torch.export import Dim

import lessons

from helpers import one_thread_for_the_module, randomize_bn

SWEEP = os.environ.get("LESSONS_EXPORT_SWEEP") == "all"
EVERY_MODEL = lessons.list_models()
EVERY_SEGMENTER = lessons.list_models(task="segmentation")


def models(default: list[str], among: list[str] = EVERY_MODEL) -> list[str]:
    """``default`` in CI, every model of ``among`` with LESSONS_EXPORT_SWEEP=all."""
    return among if SWEEP else default


NUM_CLASSES = 5
FIXED_SIZE = {"metaformer_pppf_s12", "metaformer_ppff_s12", "metaformer_pppa_s12", "metaformer_ppaa_s12"}
# torch.export with symbolic height and width spends minutes in symbolic-shape reasoning on HRViT (the stripe windows
# pad the 1/16 and 1/32 maps to multiples of 7, and every reshape of the padded stripes is checked symbolically):
# 95 s for a one-block-per-branch HRViT-b1, two to five minutes for b1 itself on this machine, and the program it
# gives still carries a runtime guard that the stripes need padding (a 224-pixel side, whose 1/16 map of 14 needs
# none, is refused). HRViT exports with a dynamic batch at a fixed size: re-export it for another size.
# torch.jit.trace follows the size (tested below).
HRVIT = [n for n in EVERY_SEGMENTER if lessons.model_info(n).family == "hrvit"]
DYNAMIC_SIZE_EXPORT = [n for n in EVERY_SEGMENTER if n not in HRVIT]

one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


@functools.lru_cache(maxsize=4)
def build(name: str, side: int = 64) -> torch.nn.Module:
    """Model ``name`` in eval mode with 5 classes and BatchNorms that are not the identity (TopFormer's and SeaFormer's
    attention branches start with a BN weight of 0, which would hide a wrong branch)."""
    torch.manual_seed(0)
    kwargs = {"num_classes": NUM_CLASSES}
    if name in FIXED_SIZE:
        kwargs["img_size"] = side
    model = lessons.create_model(name, **kwargs).eval()
    with torch.no_grad():
        randomize_bn(model, torch.Generator().manual_seed(1))
    return model


def image(batch: int, height: int, width: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def close(actual: torch.Tensor, model: torch.nn.Module, x: torch.Tensor) -> None:
    """``actual`` (what a traced, exported or ONNX graph gave for ``x``) has the eager output's shape and is as close to
    the exact result as float32 allows: the exact result is the model run in float64, and ``actual`` may be off from it
    by at most 4x (plus one float32 step of the output's scale) the error eager float32 itself makes on this input.

    Two float32 computations in another order each stray from the exact result by rounding only; this model's own
    sensitivity to rounding (random weights, BatchNorms with random statistics) sets the scale, instead of a fixed
    tolerance that would be too loose for one model and too tight for another.
    """
    with torch.no_grad():
        eager = model(x)
        exact = copy.deepcopy(model).double()(x.double())
    assert tuple(actual.shape) == tuple(eager.shape)
    rounding = float((eager.double() - exact).abs().max())
    error = float((actual.double() - exact).abs().max())
    step = 2.0**-23 * float(exact.abs().max())
    assert error <= 4 * rounding + step, f"off by {error:.3g} from float64; eager float32 is off by {rounding:.3g}"


# Two sizes every segmenter accepts (multiples of 32 for HRViT, at least SeaFormer's total stride 64), non-square and
# swapped, so that height and width cannot be confused.
FIRST, SECOND = (64, 96), (96, 64)


@pytest.mark.parametrize(
    "name", models(["hrvit_b1", "pp_mobileseg_tiny", "seaformer_tiny", "topformer_tiny"], EVERY_SEGMENTER)
)
def test_jit_trace_follows_the_input_size(name: str) -> None:
    model = build(name)
    first, second = image(2, *FIRST), image(1, *SECOND, seed=3)
    with torch.no_grad():
        traced = torch.jit.trace(model, first, check_trace=False)
        out = traced(second)
        assert out.shape[-2:] == second.shape[-2:], "the traced segmenter kept the size it was traced at"
        close(out, model, second)
        close(traced(first), model, first)


# The smallest side at which no map inside the model is 1 x 1 (export specializes on a size of 1): 65, one more than
# the coarsest stride (TopFormer's pooled grid, SeaFormer's last stage: 64); PP-MobileSeg-Base with five stages
# has a 1/128 map inside its last stage (torch.export's guard: height <= 128 at a 128-pixel example), so 129.
SMALLEST_SIDE = {"pp_mobileseg_base_5stage": 129}


def dynamic_sizes(name: str) -> tuple[dict[int, Dim], ...]:
    """Batch, height and width all dynamic, from the model's smallest side on."""
    low = SMALLEST_SIDE.get(name, 65)
    return ({0: Dim("batch", min=1, max=64), 2: Dim("height", min=low, max=4096), 3: Dim("width", min=low, max=4096)},)


def two_sizes(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two non-square image batches, sides multiples of 64 above the smallest side, height and width swapped."""
    unit = 64 * -(-SMALLEST_SIDE.get(name, 65) // 64)  # 128, or 192 for a smallest side of 129
    return image(2, unit, unit + 64), image(3, unit + 64, unit, seed=3)


@pytest.mark.parametrize("name", models(["seaformer_tiny", "topformer_tiny"], DYNAMIC_SIZE_EXPORT))
def test_torch_export_with_dynamic_batch_height_and_width_matches_eager_at_another_size(name: str) -> None:
    model = build(name)
    first, second = two_sizes(name)
    exported = torch.export.export(model, (first,), dynamic_shapes=dynamic_sizes(name)).module()
    with torch.no_grad():
        close(exported(second), model, second)
        close(exported(first), model, first)


@pytest.mark.parametrize("name", models([], HRVIT))
def test_hrvit_exports_with_a_dynamic_batch_and_refuses_another_size(name: str) -> None:
    """HRViT's exported program is tied to the size it was exported at (see HRVIT): it must say so at another size,
    not return a map of the wrong size."""
    model = build(name)
    x = image(2, *FIRST)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: Dim("batch", min=1, max=64)},)).module()
    with torch.no_grad():
        close(exported(image(3, *FIRST, seed=3)), model, image(3, *FIRST, seed=3))
        with pytest.raises((AssertionError, RuntimeError, ValueError)):
            exported(image(1, *SECOND))


@pytest.mark.parametrize("name", models(["seaformer_tiny"], DYNAMIC_SIZE_EXPORT))
def test_onnx_export_with_dynamic_axes_runs_in_onnxruntime_at_two_sizes(name: str) -> None:
    """In CI one model (an ONNX export costs about a minute here): SeaFormer-Tiny, whose squeeze-axial attention and
    position-embedding resize are the size-dependent parts an exporter most easily gets wrong.

    Sides are multiples of 64: ONNX has no adaptive pooling, and the exporter writes TopFormer's
    ``adaptive_avg_pool2d`` onto the 1/64 grid as an AveragePool whose kernel is fixed at export time; it equals the
    adaptive pooling only while the input stays a multiple of the 64-pixel grid cell (at 192 x 224 ONNX Runtime then
    fails on a reshape). SeaFormer and PP-MobileSeg follow any size (checked at 192 x 224).
    """
    ort = pytest.importorskip("onnxruntime")
    model = build(name)
    first, second = two_sizes(name)
    program = torch.onnx.export(model, (first,), dynamo=True, dynamic_shapes=dynamic_sizes(name), verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (input_name,) = [i.name for i in session.get_inputs()]
    with torch.no_grad():
        for x in (first, second):
            close(torch.from_numpy(session.run(None, {input_name: x.numpy()})[0]), model, x)


# FX in CI: the smallest model of each family and task, and the PoolFormer hybrids whose token mixers are attention
# and a spatial MLP (other code than pooling).
@pytest.mark.parametrize("name", models([
    "hrvit_b1", "hrvit_b1_cls", "metaformer_ppaa_s12", "metaformer_ppff_s12", "mobilevit_xxs", "poolformer_s12",
    "pp_mobileseg_tiny", "seaformer_tiny", "seaformer_tiny_cls", "topformer_tiny", "topformer_tiny_cls",
]))
def test_fx_symbolic_trace_matches_eager(name: str) -> None:
    """FX (the base of torch's quantization and feature-extraction tools) traces every model; the input checks stay
    in the graph as calls (``torch.fx.wrap``), so the traced model still refuses a bad input."""
    model = build(name)
    graph = torch.fx.symbolic_trace(model)
    x = image(2, 64, 64)
    with torch.no_grad():
        close(graph(x), model, x)
    with pytest.raises(ValueError, match="input channels"):
        graph(torch.zeros(1, 4, 64, 64))


# In CI one model of each family but HRViT, whose dynamo trace alone takes a minute or more here (hrvit_b1 and
# hrvit_b1_cls compile as one graph: run the sweep).
@pytest.mark.parametrize(
    "name", models(["mobilevit_xxs", "poolformer_s12", "pp_mobileseg_tiny", "seaformer_tiny", "topformer_tiny"])
)
def test_compiles_as_one_graph(name: str) -> None:
    """``torch.compile(fullgraph=True)`` needs one graph and no break; dynamo's ``explain`` says so without compiling
    (backend-free, so the test stays fast)."""
    torch._dynamo.reset()
    model = build(name)  # a cached model: explain() leaves it as it was (no compiled wrapper is kept)
    explanation = torch._dynamo.explain(model)(image(2, 64, 64))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
