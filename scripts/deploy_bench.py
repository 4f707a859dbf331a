"""From notebook to device: ONNX export, ONNX Runtime latency, int8 quantization and VIM, measured on one CPU core.
The data behind book/deployment.ipynb.

    OMP_NUM_THREADS=1 python scripts/deploy_bench.py --out book/data/deployment.json

    # on a CPU with VNNI (book/data/deployment_vnni*.json): int8 with 7- and 8-bit weights, every miniature
    # compiled from an empty inductor cache, int8 at full size and layer by layer
    OMP_NUM_THREADS=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python scripts/deploy_bench.py --parts miniatures \
        --weight-bits 7 --compile all --out book/data/deployment_vnni.json
    OMP_NUM_THREADS=1 python scripts/deploy_bench.py --parts miniatures --weight-bits 8 --no-compile \
        --out book/data/deployment_vnni_8bit_weights.json
    OMP_NUM_THREADS=1 python scripts/deploy_bench.py --parts int8_full_size --weight-bits 7 \
        --out book/data/deployment_vnni_int8_512.json
    OMP_NUM_THREADS=1 python scripts/deploy_bench.py --parts int8_full_size --weight-bits 8 \
        --out book/data/deployment_vnni_int8_512_8bit_weights.json
    OMP_NUM_THREADS=1 python scripts/deploy_bench.py --parts int8_layers \
        --out book/data/deployment_vnni_int8_layers.json

Three parts by default and two on request (``--parts``), each timed interleaved (``lessons.measure.compare_latency``:
every backend of a model once per round, so a machine that slows down slows them alike; ratios are read round by
round with ``paired_ratio``):

* ``miniatures``: the trained miniature of every family (first seed of one variant of its experiment, committed
  under book/data/experiments/). Eager PyTorch, ``torch.compile`` (default inductor backend), ONNX Runtime float32,
  and ONNX Runtime int8: dynamic quantization of the linear layers (``MatMul``/``Gemm``), static QDQ quantization of
  the convolutions calibrated on training-set images, and both. For each: file size, latency at batch 1, largest
  distance of its outputs from eager on test images, and the test metric (top-1 or mIoU) on the experiment's whole
  test set.
* ``paper_models``: full-size models (random weights, seeded: latency does not depend on the weights) at the input
  size the phone latencies of PaddleSeg's PP-MobileSeg README were taken at (512 x 512, 150 classes, the label map:
  logits, upsample, argmax). Eager against ONNX Runtime float32; the phone's milliseconds are in ``PHONE_MS`` with
  their source, and the chapter compares ratios between models, never absolute times.
* ``int8_full_size`` (not run by default): int8 where arithmetic, not overhead, should dominate: three full-size
  segmenters' logits (``FULL_SIZE_INT8``, no ending: the ending stays float) at 512 x 512, float32 against the
  three int8 graphs in ONNX Runtime. Random weights and ``FULL_SIZE_CALIBRATION`` random calibration images: the
  times do not depend on the values, the outputs' drift from float is recorded only as a check against saturation.
* ``int8_layers`` (not run by default): single convolutions (``INT8_LAYERS``: dense 1x1 and 3x3, depthwise 3x3)
  at sizes a full-size segmenter has at 512 x 512, float32 against static int8 with 7- and with 8-bit weights, all
  timed interleaved: which kinds of layer int8 speeds up on this CPU. Random weights and inputs (calibrated on two
  random inputs); the drift from float is recorded.
* ``vim``: the ending alone (150 x 64 x 64 logits to a 512 x 512 label map) in ONNX Runtime, interpolate-then-argmax
  against VIM, as the number of classes present changes; and on the trained PP-MobileSeg miniature's own logits.

By default two miniatures are compiled (``COMPILED``: MobileViT's and TopFormer's, one classifier and one
segmenter): a cold ``torch.compile`` took about four minutes for the micro MobileViT alone on the first machine, so
compiling all six would have tripled that run. ``--compile all`` (or a list of families) compiles more; the time of
each first compiled call is recorded as ``compile_s``, and whether inductor's on-disk cache held anything at the
start, since a warm cache turns minutes into seconds.

``--weight-bits`` picks int8's weight range (``lessons.deploy``: 7 bits by default, against the 16-bit saturation
of x86 CPUs without VNNI; 8 where the CPU accumulates in 32 bits). The CPU's int8-relevant feature flags
(``lessons.measure.cpu_flags``: VNNI, AMX) are recorded with the machine.
Every timed sample is kept. The checkpoints' SHA-256 and the models' parameter counts are recorded beside the
numbers; ``tests/test_deployment.py`` fails when they no longer match the code (run this script again then).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import lessons
from lessons import deploy
from lessons import pp_mobileseg as pms
from lessons.experiments import EXPERIMENTS, ROOT, load_trained, results_path
from lessons.data import make_datasets
from lessons.measure import compare_latency, cpu_flags, cpu_name, model_params, paired_ratio
from lessons.train import _normalise, confusion_matrix, segmentation_metrics

# family -> (experiment, variant): the trained miniature of each family (first seed, committed checkpoint)
MINIATURES: dict[str, tuple[str, str]] = {
    "poolformer": ("poolformer_token_mixers_48", "pooling3"),
    "mobilevit": ("mobilevit_patch_sizes_128", "config_a_222"),
    "topformer": ("topformer_ablations", "paper"),
    "seaformer": ("seaformer_ablations", "sea_full"),
    "pp_mobileseg": ("pp_mobileseg_ablations", "aam"),
    "hrvit": ("hrvit_ablations", "paper"),
}
COMPILED = ("mobilevit", "topformer")  # torch.compile takes ~4 min per miniature here: one classifier, one segmenter
NO_ONNX_OPTIMIZER = {"hrvit"}  # the onnxscript optimizer takes ~8 min on HRViT here, ~30 s without it
CALIBRATION_IMAGES = 64  # training-set images for static quantization's ranges (batch 1, the exported shape)
PARITY_IMAGES = 16  # test images on which each graph's output is compared with eager

# PaddleSeg configs/pp_mobileseg/README.md, "Compare with SOTA on ADE20Ks": PaddleLite on a Xiaomi 9 (Snapdragon
# 855), one thread, 512 x 512 input, final argmax included (the output is the label map). PP-MobileSeg's rows use VIM.
PHONE_SOURCE = ("PaddleSeg configs/pp_mobileseg/README.md, table 'Compare with SOTA on ADE20Ks' (Xiaomi 9, "
                "Snapdragon 855, PaddleLite, 1 thread, 512x512, argmax included)")
PHONE_MS: dict[str, float] = {
    "topformer_tiny": 490.3, "seaformer_tiny": 459.0, "pp_mobileseg_tiny+vim": 215.3,
    "topformer_base": 480.6, "seaformer_base": 465.4, "pp_mobileseg_base+vim": 265.5,
}
# The same README's ablation rows: SeaFormer-Base 465.6 ms, with VIM 234.6 ms (the paper: "49.5%" lower).
PHONE_VIM_SOURCE = "PaddleSeg configs/pp_mobileseg/README.md, ablation rows 'baseline' and '+VIM' (SeaFormer-Base)"
PHONE_VIM_MS = {"seaformer_base": 465.6, "seaformer_base+vim": 234.6}
# Timed beside the phone's models, for VIM's saving on the whole model as the paper measures it (with and without).
PAPER_VIM_EXTRA = ("seaformer_base+vim", "pp_mobileseg_base")
PAPER_SIDE, PAPER_CLASSES = 512, 150
VIM = "+vim"
VIM_PRESENT = (1, 5, 15, 50, 150)  # classes present of 150, for the ending alone
FULL_SIZE_INT8 = ("topformer_base", "seaformer_base", "pp_mobileseg_base")
FULL_SIZE_CALIBRATION = 4  # random images: ranges for the static graph, whose speed does not depend on them
# name -> (channels, side of the square map, kernel, groups): the kinds of convolution in the book's segmenters
INT8_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "conv1x1_128ch_64px": (128, 64, 1, 1),
    "conv3x3_64ch_64px": (64, 64, 3, 1),
    "depthwise3x3_128ch_64px": (128, 64, 3, 128),
}
PARTS = ("miniatures", "paper_models", "vim", "int8_full_size", "int8_layers")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint_of(experiment: str, variant: str) -> Path:
    results = json.loads(results_path(experiment).read_text())
    exp = EXPERIMENTS[experiment]
    return ROOT / results["runs"][variant][str(exp.seeds[0])]["checkpoint"]


def miniature_data(experiment: str):
    exp = EXPERIMENTS[experiment]
    return make_datasets(**exp.dataset)


@torch.no_grad()
def test_metric(run, dataset, task: str, limit: int | None = None) -> float:
    """top-1 (classification) or mIoU (segmentation) of ``run`` (image batch of 1 -> logits) on the test set."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    correct, confusion = 0, torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.long)
    for i in range(n):
        image, target = dataset.batch([i])
        pred = run(_normalise(image, dataset)).argmax(1)
        if task == "classification":
            correct += int((pred == target).sum())
        else:
            confusion += confusion_matrix(pred, target, dataset.num_classes)
    return correct / n if task == "classification" else segmentation_metrics(confusion)["miou"]


def latency_row(timed: dict, reference: str) -> dict:
    out = {}
    for name, latency in timed.items():
        row = {"median_ms": round(latency.median_ms, 4), "iqr_ms": round(latency.iqr_ms, 4),
               "samples_ms": [round(t, 4) for t in latency.samples_ms]}
        if name != reference:
            q1, median, q3 = paired_ratio(latency, timed[reference])
            row["ratio_to_" + reference] = [round(q1, 4), round(median, 4), round(q3, 4)]
        out[name] = row
    return out


def quantized_graphs(float_path: Path, stem: Path, calibration: list[torch.Tensor],
                     weight_bits: int) -> dict[str, Path]:
    """The float graph and its three int8 versions, by backend name: dynamic int8 of the linear layers, static int8
    of the convolutions (calibrated on ``calibration``), and both; written next to ``stem`` (``stem.dyn.onnx`` ...)."""
    static = deploy.quantize_conv_static(float_path, stem.with_name(f"{stem.name}.static.onnx"), calibration,
                                         weight_bits)
    return {
        "onnxruntime": float_path,
        "int8_dynamic": deploy.quantize_linear_dynamic(float_path, stem.with_name(f"{stem.name}.dyn.onnx"),
                                                       weight_bits),
        "int8_static": static,
        "int8_both": deploy.quantize_linear_dynamic(static, stem.with_name(f"{stem.name}.both.onnx"), weight_bits),
    }


def bench_miniature(family: str, work: Path, rounds: int, per_round: int, compile_: bool,
                    weight_bits: int = 7) -> dict:
    experiment, variant = MINIATURES[family]
    exp = EXPERIMENTS[experiment]
    task = exp.recipe.task
    train_set, test_set = miniature_data(experiment)
    model = load_trained(experiment, variant)
    side = exp.dataset["size"]
    shape = (1, 3, side, side)
    example = _normalise(test_set.batch([0])[0], test_set)
    began = time.perf_counter()
    float_path = deploy.export_onnx(model, example, work / f"{family}.onnx", optimize=family not in NO_ONNX_OPTIMIZER)
    export_s = time.perf_counter() - began
    calibration = [_normalise(train_set.batch([i])[0], train_set) for i in range(CALIBRATION_IMAGES)]
    paths = quantized_graphs(float_path, work / family, calibration, weight_bits)
    runners: dict[str, nn.Module] = {"eager": model}
    if compile_:
        compiled = torch.compile(model)
        began = time.perf_counter()
        with torch.no_grad():
            compiled(example)
        compile_s = time.perf_counter() - began
        runners["compiled"] = compiled
    runners.update({name: deploy.OnnxRuntimeModel(path) for name, path in paths.items()})
    timed = compare_latency(runners, shape, rounds=rounds, per_round=per_round, warmup=3)
    parity_images = [_normalise(test_set.batch([i])[0], test_set) for i in range(PARITY_IMAGES)]
    with torch.no_grad():
        eager_out = [model(x) for x in parity_images]
        backends = {}
        for name, runner in runners.items():
            entry = {"max_abs_diff_from_eager": max(deploy.max_abs_diff(runner(x), e)
                                                    for x, e in zip(parity_images, eager_out))}
            if name in paths:
                entry["bytes"] = deploy.file_size(paths[name])
                entry["weights_by_type"] = deploy.weights_by_type(paths[name])
            if name != "compiled":
                entry["test_metric"] = test_metric(runner, test_set, task)
            backends[name] = entry
    scale = max(float(e.abs().max()) for e in eager_out)
    for name, row in latency_row(timed, "eager").items():
        backends[name].update(row)
    checkpoint = checkpoint_of(experiment, variant)
    return {
        "family": family, "experiment": experiment, "variant": variant, "task": task,
        "metric": "top1" if task == "classification" else "miou", "input_size": list(shape),
        "test_images": len(test_set), "calibration_images": CALIBRATION_IMAGES, "parity_images": PARITY_IMAGES,
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint": str(checkpoint.relative_to(ROOT)), "checkpoint_sha256": sha256(checkpoint),
        "onnx_optimizer": family not in NO_ONNX_OPTIMIZER, "export_s": round(export_s, 1),
        **({"compile_s": round(compile_s, 1)} if compile_ else {}),
        "eager_output_max_abs": scale, "backends": backends,
    }


def bench_paper_models(work: Path, rounds: int, per_round: int) -> dict:
    torch.manual_seed(0)
    names = [*PHONE_MS, *PAPER_VIM_EXTRA]
    runners, rows = {}, {}
    shape = (1, 3, PAPER_SIDE, PAPER_SIDE)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for name in tqdm(names, desc="export at 512"):
        base = name.removesuffix(VIM)
        kwargs = {"upsample": "interpolate"} if base.startswith("pp_mobileseg") else {}
        torch.manual_seed(0)
        model = deploy.LabelMap(lessons.create_model(base, num_classes=PAPER_CLASSES, **kwargs),
                               "vim" if name.endswith(VIM) else "interpolate").eval()
        began = time.perf_counter()
        path = deploy.export_onnx(model, example, work / f"{name}.onnx")
        rows[name] = {"params": model_params(base, num_classes=PAPER_CLASSES),
                      "export_s": round(time.perf_counter() - began, 1), "phone_ms": PHONE_MS.get(name)}
        ort_model = deploy.OnnxRuntimeModel(path)
        with torch.no_grad():
            rows[name]["onnx_label_agreement"] = float((ort_model(example) == model(example)).double().mean())
        runners[name + "@eager"], runners[name + "@onnxruntime"] = model, ort_model
    timed = compare_latency(runners, shape, rounds=rounds, per_round=per_round, warmup=1, progress=True)
    for name in names:
        for backend in ("eager", "onnxruntime"):
            latency = timed[f"{name}@{backend}"]
            rows[name][backend] = {"median_ms": round(latency.median_ms, 3), "iqr_ms": round(latency.iqr_ms, 3),
                                   "samples_ms": [round(t, 3) for t in latency.samples_ms]}
    return {"input_size": list(shape), "num_classes": PAPER_CLASSES, "phone_source": PHONE_SOURCE,
            "phone_vim_source": PHONE_VIM_SOURCE, "phone_vim_ms": PHONE_VIM_MS, "models": rows}


class Logits(nn.Module):
    """A segmenter's ``forward_logits`` alone (low-resolution logits, no ending), as a module to export."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter.forward_logits(x)


def bench_int8_full_size(work: Path, rounds: int, weight_bits: int) -> dict:
    shape = (1, 3, PAPER_SIDE, PAPER_SIDE)
    images = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(FULL_SIZE_CALIBRATION + 1)]
    example, calibration = images[0], images[1:]
    rows = {}
    for name in tqdm(FULL_SIZE_INT8, desc="int8 at 512"):
        torch.manual_seed(0)
        kwargs = {"upsample": "interpolate"} if name.startswith("pp_mobileseg") else {}
        model = Logits(lessons.create_model(name, num_classes=PAPER_CLASSES, **kwargs)).eval()
        float_path = deploy.export_onnx(model, example, work / f"{name}.logits.onnx")
        paths = quantized_graphs(float_path, work / name, calibration, weight_bits)
        runners = {g: deploy.OnnxRuntimeModel(path) for g, path in paths.items()}
        with torch.no_grad():
            reference = runners["onnxruntime"](example)
        timed = compare_latency(runners, shape, rounds=rounds, per_round=1, warmup=1)
        backends = latency_row(timed, "onnxruntime")
        for g, path in paths.items():
            backends[g].update({"bytes": deploy.file_size(path), "weights_by_type": deploy.weights_by_type(path),
                                "max_abs_diff_from_float": deploy.max_abs_diff(runners[g](example), reference)})
        rows[name] = {"params": model_params(name, num_classes=PAPER_CLASSES),
                      "float_output_max_abs": float(reference.abs().max()), "backends": backends}
    return {"input_size": list(shape), "num_classes": PAPER_CLASSES, "calibration_images": FULL_SIZE_CALIBRATION,
            "models": rows}


def bench_int8_layers(work: Path, rounds: int, per_round: int) -> dict:
    rows = {}
    for name, (channels, side, kernel, groups) in tqdm(INT8_LAYERS.items(), desc="int8 layers"):
        torch.manual_seed(0)
        layer = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=groups).eval()
        shape = (1, channels, side, side)
        inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(3)]
        float_path = deploy.export_onnx(layer, inputs[0], work / f"{name}.onnx")
        paths = {"onnxruntime": float_path}
        for bits in deploy.WEIGHT_BITS:
            paths[f"int8_static_{bits}bit"] = deploy.quantize_conv_static(float_path, work / f"{name}.{bits}.onnx",
                                                                         inputs[1:], bits)
        runners = {g: deploy.OnnxRuntimeModel(path) for g, path in paths.items()}
        with torch.no_grad():
            reference = layer(inputs[0])
        timed = compare_latency(runners, shape, rounds=rounds, per_round=per_round, warmup=3)
        backends = latency_row(timed, "onnxruntime")
        for g, runner in runners.items():
            backends[g]["max_abs_diff_from_eager"] = deploy.max_abs_diff(runner(inputs[0]), reference)
        rows[name] = {"channels": channels, "side": side, "kernel": kernel, "groups": groups,
                      "multiply_adds": channels * channels // groups * kernel * kernel * side * side,
                      "eager_output_max_abs": float(reference.abs().max()), "backends": backends}
    return {"calibration_inputs": 2, "layers": rows}


def logits_with_classes(n: int, seed: int = 0) -> torch.Tensor:
    """150 x 64 x 64 random logits in which exactly ``n`` classes win some pixel (each pixel one of them, +8)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(1, PAPER_CLASSES, 64, 64, generator=g)
    classes = torch.randperm(PAPER_CLASSES, generator=g)[:n]
    owner = classes[torch.randint(0, n, (64, 64), generator=g)]
    out[0].scatter_add_(0, owner[None], torch.full((1, 64, 64), 8.0))
    return out


def bench_vim(work: Path, rounds: int, per_round: int) -> dict:
    logits = {n: logits_with_classes(n) for n in VIM_PRESENT}
    size = (PAPER_SIDE, PAPER_SIDE)
    sessions = {name: deploy.ort_session(deploy.export_onnx(deploy.SegmentationEnding(ending, size), logits[150],
                                                            work / f"{name}_ending.onnx"))
                for name, ending in (("plain", "interpolate"), ("vim", "vim"))}
    rows = []
    for n in tqdm(VIM_PRESENT, desc="VIM, classes present"):
        x = logits[n].numpy()
        outs = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in sessions.items()}
        reference = pms.valid_interpolate(logits[n], (PAPER_SIDE, PAPER_SIDE)).numpy()
        times = {k: [] for k in sessions}
        for _ in range(2):
            for k, s in sessions.items():
                s.run(None, {s.get_inputs()[0].name: x})
        for _ in range(rounds):
            for k, s in sessions.items():
                for _ in range(per_round):
                    began = time.perf_counter()
                    s.run(None, {s.get_inputs()[0].name: x})
                    times[k].append((time.perf_counter() - began) * 1e3)
        rows.append({"present": n, "vim_agrees_with_lessons_vim": float((outs["vim"] == reference).mean()),
                     "vim_agrees_with_plain": float((outs["vim"] == outs["plain"]).mean()),
                     **{k: {"median_ms": round(float(torch.tensor(v).median()), 3),
                            "samples_ms": [round(t, 3) for t in v]} for k, v in times.items()}})
    return {"logits_shape": [1, PAPER_CLASSES, 64, 64], "output_side": PAPER_SIDE, "rows": rows,
            "trained_miniature": bench_vim_trained(work, rounds)}


def bench_vim_trained(work: Path, rounds: int, per_group: int = 10) -> dict:
    """The two endings in ONNX Runtime on the trained PP-MobileSeg miniature's own logits (6 classes, 4 x 4 -> 64 x 64),
    scenes grouped by how many classes their low-resolution argmax holds: median time over up to ``per_group``
    scenes of each group, and the share of pixels where VIM's labels equal the plain ending's."""
    experiment, variant = MINIATURES["pp_mobileseg"]
    _, test_set = miniature_data(experiment)
    model = load_trained(experiment, variant)
    images, _ = test_set.batch(list(range(len(test_set))))
    with torch.no_grad():
        logits = model.forward_logits(_normalise(images, test_set))
    side = images.shape[-1]
    sessions = {name: deploy.ort_session(deploy.export_onnx(deploy.SegmentationEnding(ending, (side, side)),
                                                            logits[:1], work / f"mini_{name}_ending.onnx"))
                for name, ending in (("plain", "interpolate"), ("vim", "vim"))}
    groups: dict[int, list[torch.Tensor]] = {}
    for one in logits.split(1):
        groups.setdefault(pms.present_classes(one).numel(), []).append(one)
    rows = []
    for n, scenes in sorted(groups.items()):
        times = {k: [] for k in sessions}
        agree = []
        for scene in scenes[:per_group]:
            x = scene.numpy()
            outs = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in sessions.items()}
            agree.append(float((outs["vim"] == outs["plain"]).mean()))
            per_scene = {k: [] for k in sessions}
            for _ in range(rounds):
                for k, s in sessions.items():
                    began = time.perf_counter()
                    s.run(None, {s.get_inputs()[0].name: x})
                    per_scene[k].append((time.perf_counter() - began) * 1e3)
            for k in sessions:
                times[k].append(float(torch.tensor(per_scene[k]).median()))
        rows.append({"present": n, "scenes": len(scenes), "timed_scenes": min(per_group, len(scenes)),
                     "vim_agrees_with_plain": sum(agree) / len(agree),
                     **{k: {"median_ms": round(float(torch.tensor(v).median()), 4)} for k, v in times.items()}})
    return {"experiment": experiment, "variant": variant, "logits_shape": list(logits.shape[1:]),
            "output_side": side, "rows": rows}


def inductor_cache_state() -> dict:
    """Where torch.compile's on-disk cache is and whether it held anything: a warm cache makes ``compile_s`` seconds
    where a cold one takes minutes."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    path = Path(cache_dir())
    return {"dir": str(path), "held_files_at_start": path.is_dir() and any(p.is_file() for p in path.rglob("*"))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``compiled`` added: the families that will be compiled, in ``MINIATURES``' order
    (``tests/test_deployment.py`` parses each record's command with it, to check the settings it recorded)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON file to write")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per model")
    parser.add_argument("--per-round", type=int, default=3, help="timed passes of each backend per round (miniatures)")
    parser.add_argument("--paper-rounds", type=int, default=5, help="interleaved rounds of the 512 x 512 models")
    parser.add_argument("--only", nargs="*", default=None, choices=list(MINIATURES), help="these miniatures only")
    parser.add_argument("--compile", nargs="+", default=list(COMPILED), choices=[*MINIATURES, "all"],
                        help=f"miniatures to torch.compile ('all': every family; default {' '.join(COMPILED)})")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--weight-bits", type=int, default=7, choices=deploy.WEIGHT_BITS,
                        help="bits of the int8 weights' range: 7 (reduce_range, default) or 8")
    parser.add_argument("--parts", nargs="*", default=["miniatures", "paper_models", "vim"], choices=PARTS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.per_round, args.paper_rounds) < 1:
        parser.error("--rounds, --per-round and --paper-rounds must be positive")
    args.compiled = [] if args.no_compile else [f for f in MINIATURES if f in args.compile or "all" in args.compile]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compiled = args.compiled

    import onnx
    import onnxruntime
    import onnxscript

    torch.manual_seed(0)
    torch.set_num_threads(1)
    began = time.perf_counter()
    load = os.getloadavg()
    result = {
        "command": "python scripts/deploy_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
                    "load_average_at_start": [round(v, 2) for v in load]},
        "software": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__},
        "settings": {"threads": 1, "batch": 1, "rounds": args.rounds, "per_round": args.per_round,
                     "paper_rounds": args.paper_rounds, "parts": list(args.parts), "weight_bits": args.weight_bits,
                     "compiled": compiled},
    }
    if compiled and "miniatures" in args.parts:
        result["settings"]["inductor_cache"] = inductor_cache_state()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if "miniatures" in args.parts:
            families = args.only or list(MINIATURES)
            result["miniatures"] = [
                bench_miniature(f, work, args.rounds, args.per_round, f in compiled, args.weight_bits)
                for f in tqdm(families, desc="miniatures")]
        if "paper_models" in args.parts:
            result["paper_models"] = bench_paper_models(work, args.paper_rounds, 1)
        if "vim" in args.parts:
            result["vim"] = bench_vim(work, args.paper_rounds, 1)
        if "int8_layers" in args.parts:
            result["int8_layers"] = bench_int8_layers(work, args.rounds, args.per_round)
        if "int8_full_size" in args.parts:
            result["int8_full_size"] = bench_int8_full_size(work, args.paper_rounds, args.weight_bits)
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - began, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
