"""CPU latency of every family's models at the papers' input sizes, one thread, batch 1: the data behind the
"all families on one CPU" page (book/comparison.ipynb).

    .venv/bin/python scripts/cpu_latency.py --out data/cpu_latency.json

The mobile papers time one image on one ARM core; this is the nearest thing CI's kind of machine can do: one x86
core, batch 1, fp32, no autograd. Models that share an input size are timed *interleaved* (``compare_latency``), so
a machine that slows down slows them alike; the medians of different groups were taken minutes apart, so only
models of one group are compared with each other. Every timed pass is kept (``samples_ms``), in round order, so two
models of a group can be compared round by round (``lessons.measure.paired_ratio``). Each segmenter is timed twice in
its group: to a label map (its ``predict``) and its network alone (``forward_logits``, ``network_*`` fields), so the
page can separate the network from the final upsample and argmax. Absolute milliseconds belong to the machine
recorded in the file; the chapter reads ratios and trends from them.

Each model's parameters and exact multiply-adds are recorded beside its time, and ``tests/test_cpu_latency_data.py``
checks them against the code: when a model changes, the data is stale and the test says to re-run this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch
from torch import nn

import lessons
from lessons.measure import compare_latency, cpu_name, model_count, model_params

# (task, input side) -> models, each at the resolution its paper reports: ImageNet at 224 (MobileViT: 256),
# ADE20K segmentation at 512 with 150 classes.
GROUPS: dict[tuple[str, int], tuple[str, ...]] = {
    ("classification", 256): ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"),
    ("classification", 224): (
        "poolformer_s12", "poolformer_s24", "topformer_tiny_cls", "topformer_small_cls", "topformer_base_cls",
        "seaformer_tiny_cls", "seaformer_small_cls", "seaformer_base_cls", "seaformer_large_cls", "hrvit_b1_cls",
    ),
    ("segmentation", 512): (
        "topformer_tiny", "topformer_small", "topformer_base", "seaformer_tiny", "seaformer_small", "seaformer_base",
        "seaformer_large", "pp_mobileseg_tiny", "pp_mobileseg_tiny+vim", "pp_mobileseg_base", "pp_mobileseg_base+vim",
        "hrvit_b1",
    ),
}
VIM = "+vim"  # the same PP-MobileSeg model, its label map made by the valid-interpolate module


class LabelMap(nn.Module):
    """Image -> label map ``[B, H, W]``, the way a segmenter is used: its ``predict`` (logits resized to the input,
    then argmax), so every segmentation row pays for the same output. PP-MobileSeg's rows without ``+vim`` are built
    with ``upsample="interpolate"``; with it, ``predict`` upsamples only the classes present (VIM, PP-MobileSeg §2.3).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)


class Logits(nn.Module):
    """Image -> logits at the head's own stride (``forward_logits``): a segmenter's network without the final
    upsample and argmax."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(x)


NETWORK = "@network"  # key suffix of a segmenter's network-only timing within its group


def build(name: str, task: str) -> nn.Module:
    """The module to time for a row of GROUPS: the classifier itself, or the segmenter wrapped to a label map."""
    model_name = name.removesuffix(VIM)
    kwargs = {"upsample": "vim" if name.endswith(VIM) else "interpolate"} if family_of(name) == "pp_mobileseg" else {}
    model = lessons.create_model(model_name, **kwargs).eval()
    return model if task == "classification" else LabelMap(model)


def family_of(name: str) -> str:
    """The chapter a row belongs to, from the registry."""
    return lessons.model_info(name.removesuffix(VIM)).family


def costs(name: str, side: int) -> tuple[int, int]:
    """(parameters, exact multiply-adds at side x side) of the model, counted on the meta device.

    Multiply-adds are those of convolutions and matrix products (``count_macs``): the final upsampling and argmax
    (and VIM's gather) are not in them, though they are in the time.
    """
    name = name.removesuffix(VIM)
    return model_params(name), model_count(name, (1, 3, side, side))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON file to write")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per group")
    parser.add_argument("--per-round", type=int, default=2, help="timed forwards of each model per round")
    parser.add_argument("--only", nargs="*", default=None, help="time only these models (names as in GROUPS)")
    args = parser.parse_args(argv)
    if min(args.rounds, args.per_round) < 1:
        parser.error("--rounds and --per-round must be positive")
    known = {name for names in GROUPS.values() for name in names}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(known)}")

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the papers time one core; one thread also keeps a shared machine's noise down
    rows = []
    for (task, side), names in GROUPS.items():
        names = tuple(n for n in names if args.only is None or n in args.only)
        if not names:
            continue
        print(f"{task} at {side}x{side}: {', '.join(names)}", file=sys.stderr)
        models = {name: build(name, task) for name in names}
        if task == "segmentation":  # the same model's network alone, interleaved with the rest (not for +vim rows)
            models.update({name + NETWORK: Logits(models[name].model) for name in names if not name.endswith(VIM)})
        timed = compare_latency(models, (1, 3, side, side), rounds=args.rounds, per_round=args.per_round,
                                progress=True)
        for name in names:
            params, macs = costs(name, side)
            row = {
                "model": name, "family": family_of(name), "vim": name.endswith(VIM), "task": task,
                "input_size": [1, 3, side, side],
                "params": params, "macs": macs, "median_ms": round(timed[name].median_ms, 3),
                "iqr_ms": round(timed[name].iqr_ms, 3), "runs": timed[name].forward_passes,
                "samples_ms": [round(t, 3) for t in timed[name].samples_ms],
            }
            network = timed.get(name + NETWORK)
            if network is not None:
                row.update({"network_median_ms": round(network.median_ms, 3),
                            "network_iqr_ms": round(network.iqr_ms, 3),
                            "network_samples_ms": [round(t, 3) for t in network.samples_ms]})
            rows.append(row)
    result = {
        "command": "python scripts/cpu_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count()},
        "software": {"python": platform.python_version(), "torch": torch.__version__},
        "settings": {"threads": 1, "batch": 1, "dtype": "float32", "rounds": args.rounds,
                     "per_round": args.per_round},
        "models": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {len(rows)} models to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
