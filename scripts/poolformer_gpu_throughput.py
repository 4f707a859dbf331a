"""GPU throughput of PoolFormer against the ResNets the paper's speed comparison uses (the speed comparison of the review the PoolFormer chapter cites, §5.5).

The comparison it reproduces: fp32 inference, batch 10, many timed iterations, on a GPU (the article used an
RTX 2070 Super): PoolFormer-S12 runs at about ResNet-34's speed, S24 at ResNet-50's, S36 at ResNet-101's.
This script only measures; it refuses to run without CUDA, so it can never write CPU numbers under a GPU label.

    .venv/bin/python scripts/poolformer_gpu_throughput.py --out poolformer_gpu_throughput.json

Writes a JSON object: the device, torch version, settings, and per model images/second and ms per batch
(median over ``--rounds`` interleaved rounds, so a GPU that heats up or clocks down slows every model alike).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys

import torch
import torchvision

import lessons

MODELS = {  # pairs as the paper frames them: each PoolFormer next to the ResNet of about its speed
    "poolformer_s12": lambda: lessons.create_model("poolformer_s12"),
    "resnet34": lambda: torchvision.models.resnet34(weights=None),
    "poolformer_s24": lambda: lessons.create_model("poolformer_s24"),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "poolformer_s36": lambda: lessons.create_model("poolformer_s36"),
    "resnet101": lambda: torchvision.models.resnet101(weights=None),
}


@torch.no_grad()
def batch_time_ms(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    """Mean milliseconds per forward over ``iters`` calls, timed with CUDA events (GPU time, not launch time)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        model(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON file to write")
    parser.add_argument("--batch", type=int, default=10, help="images per batch (the article: 10)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=50, help="forwards per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("poolformer_gpu_throughput: no CUDA device; nothing measured, nothing written", file=sys.stderr)
        return 2
    if min(args.batch, args.size, args.iters, args.rounds) < 1:
        parser.error("--batch, --size, --iters and --rounds must be positive")

    torch.backends.cudnn.benchmark = True  # pick the fastest kernels for this fixed shape, as benchmarks do
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as in the article, not TF32
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    models = {name: build().to(device).eval() for name, build in MODELS.items()}
    for model in models.values():  # warm-up: allocation, kernel selection
        batch_time_ms(model, x, 10)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(batch_time_ms(model, x, args.iters))

    results = {}
    for name, ts in times.items():
        ms = statistics.median(ts)
        results[name] = {"ms_per_batch": round(ms, 4), "images_per_s": round(args.batch * 1e3 / ms, 1),
                         "rounds_ms": [round(t, 4) for t in ts]}
    report = {
        "device": torch.cuda.get_device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "dtype": "float32", "tf32": False, "batch": args.batch, "input_size": args.size, "iters_per_round": args.iters,
        "rounds": args.rounds, "results": results,
        "ratios": {f"{a}/{b}": round(results[a]["ms_per_batch"] / results[b]["ms_per_batch"], 3)
                   for a, b in (("poolformer_s12", "resnet34"), ("poolformer_s24", "resnet50"),
                                ("poolformer_s36", "resnet101"))},
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
