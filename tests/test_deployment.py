"""From notebook to device: the committed benchmark (book/data/deployment.json) still describes the code, int8
quantization stays within a derived distance of float, and lessons.deploy refuses bad input clearly.

Timings cannot be re-checked here (they belong to the machine that took them); what they were measured *on* can:
the checkpoints' SHA-256, the parameter counts, the list of models, the ONNX Runtime version. When one changes, the
data is stale and a test says to run ``scripts/deploy_bench.py`` again.

The quantization bound (``int8_error_bound``) is derived, not tuned. An int8 matrix product y = W x computes
W' x' exactly (integer accumulation) from x' = x + e_x and W' = W + e_W, where rounding to the nearest of 256 levels
puts each element within half a step: |e_x| <= s_x / 2, |e_W| <= s_W / 2. So
|y' - y|_i <= sum_j |W_ij| s_x / 2 + |x_j| s_W / 2 + s_x s_W / 4, with s_x = (max(x, 0) - min(x, 0)) / 255 for the
activations (asymmetric uint8, the range always holding 0) and s_W = max|W| / 63 (symmetric, 7 of the 8 bits used
against x86's saturation, see lessons.deploy; per tensor, or per output channel: the per-tensor step is the
larger, so it bounds both). With all 8 bits (s_W = max|W| / 127) the static test's error was 0.54 against a bound of
0.03: the saturation, not rounding. Static quantization also rounds the
layer's output to its calibrated step, half an output step more. Float rounding is far below these terms (1e-6 of
the output's scale is allowed for it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lessons import deploy
from lessons.data import make_datasets
from lessons.experiments import EXPERIMENTS, build_model
from lessons.measure import model_params

from helpers import load_script, one_thread_for_the_module

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data" / "deployment.json"
ort = pytest.importorskip("onnxruntime")


SCRIPT = load_script("deploy_bench")
RECORD = json.loads(DATA.read_text())
one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


# ------------------------------------------------------------------------------------------------------------------
# The data
# ------------------------------------------------------------------------------------------------------------------


def test_the_data_covers_exactly_what_the_script_measures():
    assert [row["family"] for row in RECORD["miniatures"]] == list(SCRIPT.MINIATURES)
    for row in RECORD["miniatures"]:
        assert (row["experiment"], row["variant"]) == SCRIPT.MINIATURES[row["family"]]
        compiled = row["family"] in RECORD["settings"]["compiled"]
        assert set(row["backends"]) == {"eager", "onnxruntime", "int8_dynamic", "int8_static", "int8_both",
                                        *(["compiled"] if compiled else [])}, row["family"]
    assert RECORD["settings"]["compiled"] == list(SCRIPT.COMPILED)
    assert list(RECORD["paper_models"]["models"]) == [*SCRIPT.PHONE_MS, *SCRIPT.PAPER_VIM_EXTRA]
    assert {n: m["phone_ms"] for n, m in RECORD["paper_models"]["models"].items() if n in SCRIPT.PHONE_MS} \
        == SCRIPT.PHONE_MS
    assert [row["present"] for row in RECORD["vim"]["rows"]] == list(SCRIPT.VIM_PRESENT)


def test_the_data_says_how_it_was_made():
    assert RECORD["command"].startswith("python scripts/deploy_bench.py")
    assert RECORD["settings"]["threads"] == 1 and RECORD["settings"]["batch"] == 1
    assert RECORD["machine"]["cpu"] and RECORD["machine"]["load_average_at_start"]
    runs = RECORD["settings"]["rounds"] * RECORD["settings"]["per_round"]
    for row in RECORD["miniatures"]:
        for name, backend in row["backends"].items():
            assert len(backend["samples_ms"]) == runs and backend["median_ms"] > 0, (row["family"], name)


def test_the_data_was_made_with_the_installed_onnxruntime():
    assert RECORD["software"]["onnxruntime"] == ort.__version__, (
        f"the benchmark used onnxruntime {RECORD['software']['onnxruntime']}, {ort.__version__} is installed: "
        f"run `{RECORD['command']}` again"
    )


@pytest.mark.parametrize("row", RECORD["miniatures"], ids=[row["family"] for row in RECORD["miniatures"]])
def test_the_miniatures_are_the_committed_checkpoints(row):
    assert SCRIPT.sha256(ROOT / row["checkpoint"]) == row["checkpoint_sha256"], (
        f"{row['checkpoint']} changed since the benchmark: run `{RECORD['command']}` again"
    )
    assert row["checkpoint"] == str(SCRIPT.checkpoint_of(row["experiment"], row["variant"]).relative_to(ROOT))
    exp = EXPERIMENTS[row["experiment"]]
    train_set, _ = make_datasets(**{**exp.dataset, "n_train": 1, "n_test": 1})
    with torch.device("meta"):
        model = build_model(exp.variants[row["variant"]], train_set.num_classes, train_set.in_chans)
    assert sum(p.numel() for p in model.parameters()) == row["params"], row["family"]


def test_the_paper_models_have_the_recorded_parameters():
    for name, row in RECORD["paper_models"]["models"].items():
        assert model_params(name.removesuffix("+vim"), num_classes=150) == row["params"], name


def test_the_exported_graphs_computed_what_eager_computes():
    """Float ONNX Runtime against eager on the miniatures: rounding only (1e-4 of the logits' scale); the labels of
    the full-size models' graphs agree with eager on almost every pixel (ties between random models' logits aside)."""
    for row in RECORD["miniatures"]:
        assert row["backends"]["onnxruntime"]["max_abs_diff_from_eager"] <= 1e-4 * row["eager_output_max_abs"]
        assert row["backends"]["onnxruntime"]["test_metric"] == pytest.approx(row["backends"]["eager"]["test_metric"],
                                                                               abs=1e-3)
    for name, row in RECORD["paper_models"]["models"].items():
        assert row["onnx_label_agreement"] > 0.99, name


# ------------------------------------------------------------------------------------------------------------------
# int8 quantization within a derived distance of float
# ------------------------------------------------------------------------------------------------------------------


def int8_error_bound(weight: torch.Tensor, x: torch.Tensor, out_step: float = 0.0) -> float:
    """Largest possible |int8 - float| of y = W x + b over the rows of ``x`` (see the module's docstring); with an
    ``out_step`` (static quantization) the bias is int32 at step s_x s_W, half a step more, and the output is
    rounded to ``out_step``."""
    s_x = float(x.clamp(min=0).max() - x.clamp(max=0).min()) / 255
    s_w = float(weight.abs().max()) / 63  # 7-bit weights (lessons.deploy's docstring)
    per_output = (weight.abs().sum(1) * s_x / 2)[None] + (x.abs() @ torch.full_like(weight.T, s_w / 2)) \
        + weight.shape[1] * s_x * s_w / 4
    static_terms = (s_x * s_w + out_step) / 2 if out_step else 0.0
    return float(per_output.max()) + static_terms


def save_graph(path: Path, nodes: list, weights: dict[str, torch.Tensor], out_shape: list[int]) -> Path:
    """A one-layer ONNX graph written with ``onnx.helper`` (an export through ``torch.onnx`` takes seconds each:
    ``tests/test_export.py`` covers the exporter, the chapter runs ``deploy.export_onnx`` live)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w.detach().numpy(), name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx_save(model, path)
    return path


def onnx_save(model, path: Path) -> None:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory):
    """A linear layer (on the flattened image) and a 1x1 convolution (a linear layer over the channels at every
    pixel), as ONNX graphs, and the PyTorch modules they compute."""
    from onnx import helper

    work = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(1), nn.Linear(3 * 4 * 4, 10)).eval()
    conv = nn.Conv2d(3, 8, 1).eval()
    x = torch.randn(1, 3, 4, 4)
    linear_path = save_graph(work / "linear.onnx", [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight_t"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["y"]),
    ], {"weight_t": linear[1].weight.T.contiguous(), "bias": linear[1].bias}, [1, 10])
    conv_path = save_graph(work / "conv.onnx", [helper.make_node("Conv", ["x", "weight", "bias"], ["y"])],
                           {"weight": conv.weight, "bias": conv.bias}, [1, 8, 4, 4])
    with torch.no_grad():  # the graphs compute the modules
        assert deploy.max_abs_diff(deploy.OnnxRuntimeModel(linear_path)(x), linear(x)) < 1e-6
        assert deploy.max_abs_diff(deploy.OnnxRuntimeModel(conv_path)(x), conv(x)) < 1e-6
    return {"linear": (linear, linear_path), "conv": (conv, conv_path), "work": work, "x": x}


def test_dynamic_int8_of_a_linear_layer_stays_within_the_rounding_bound(tiny_graphs):
    linear, path = tiny_graphs["linear"]
    quantized = deploy.quantize_linear_dynamic(path, tiny_graphs["work"] / "linear.int8.onnx")
    stored = deploy.weights_by_type(quantized)  # the weights are int8 now (and one int8 zero point)
    assert stored["INT8"] >= linear[1].weight.numel() > stored["FLOAT"]
    assert deploy.file_size(quantized) < deploy.file_size(path)
    for seed in range(3):
        x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        with torch.no_grad():
            exact = linear(x)
        error = deploy.max_abs_diff(deploy.OnnxRuntimeModel(quantized)(x), exact)
        bound = int8_error_bound(linear[1].weight.detach(), x.flatten(1)) + 1e-6 * float(exact.abs().max())
        assert 0 < error <= bound, (error, bound)


def test_static_int8_of_a_convolution_stays_within_the_rounding_bound(tiny_graphs):
    """Calibrated on the very image it is tested on, so the activation steps are those the bound assumes."""
    conv, path = tiny_graphs["conv"]
    x = tiny_graphs["x"]
    quantized = deploy.quantize_conv_static(path, tiny_graphs["work"] / "conv.int8.onnx", [x])
    stored = deploy.weights_by_type(quantized)  # int8 weights (and one int8 zero point per output channel)
    assert stored["INT8"] >= conv.weight.numel() > stored["FLOAT"]
    with torch.no_grad():
        exact = conv(x)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3)  # a 1x1 conv is W x at every pixel
    weight = conv.weight.detach().reshape(8, 3)
    out_step = float(exact.clamp(min=0).max() - exact.clamp(max=0).min()) / 255
    bound = int8_error_bound(weight, pixels, out_step) + 1e-6 * float(exact.abs().max())
    error = deploy.max_abs_diff(deploy.OnnxRuntimeModel(quantized)(x), exact)
    assert 0 < error <= bound, (error, bound)


# ------------------------------------------------------------------------------------------------------------------
# Clear errors
# ------------------------------------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_message(tiny_graphs, tmp_path):
    conv, path = tiny_graphs["conv"]
    with pytest.raises(TypeError, match="torch.nn.Module"):
        deploy.export_onnx(lambda x: x, tiny_graphs["x"], tmp_path / "f.onnx")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        deploy.export_onnx(conv, torch.zeros(3, 4, 4), tmp_path / "f.onnx")
    with pytest.raises(ValueError, match=r"ends in \.onnx"):
        deploy.export_onnx(conv, tiny_graphs["x"], tmp_path / "f.pt")
    with pytest.raises(ValueError, match="no ONNX model"):
        deploy.ort_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="positive int"):
        deploy.ort_session(path, threads=0)
    with pytest.raises(ValueError, match="export it again"):
        deploy.OnnxRuntimeModel(path)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no calibration batches"):
        deploy.ImageCalibrationReader("input", [])
    with pytest.raises(TypeError, match="sequence of image batches"):
        deploy.quantize_conv_static(path, tmp_path / "q.onnx", tiny_graphs["x"])
    with pytest.raises(ValueError, match="different shapes"):
        deploy.max_abs_diff(torch.zeros(2), torch.zeros(3))


def test_the_script_refuses_empty_runs(tmp_path):
    with pytest.raises(SystemExit):
        SCRIPT.main(["--out", str(tmp_path / "x.json"), "--rounds", "0"])
    assert not (tmp_path / "x.json").exists()
