"""Are the book's models as fast as timm's? Our MobileViT and PoolFormer against timm's, same weights, same input.

    .venv/bin/python scripts/timm_speed.py --out book/data/timm_speed.json
    .venv/bin/python scripts/timm_speed.py --models mobilevit_s --batches 8 --threads 1 --modes eager   # one cell

For each model, batch size (1 and 8), thread count (1 and 2) and mode (eager, and ``torch.compile`` with its
default inductor backend) the two models are timed *in pairs*: each round runs ours then timm's, or timm's then
ours (alternating, so neither always runs on a warm cache), and records the ratio ours/timm of that round. A machine
that slows down during a round slows both alike, so the ratio is far steadier than either time; the file keeps the
median ratio, its quartiles and every round's ratio, and the median times. Before timing, the outputs are compared
(the same weights must give the same logits), so a fast wrong model cannot pass.

Absolute milliseconds belong to the machine recorded in the file; the load average at the start and end is recorded
too, because a busy machine (other processes on the same cores) widens the spread. ``tests/test_timm_speed_data.py``
checks that the file names the models and cells this script defines and that every pair agreed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

MODELS = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "poolformer_s12", "poolformer_s24")
INPUT_SIDE = {"mobilevit": 256, "poolformer": 224}  # each family at the resolution its paper reports
BATCHES = (1, 8)
THREADS = (1, 2)
MODES = ("eager", "compile")


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, timm's)``, in eval mode, ours carrying timm's randomly initialised weights (seeded)."""
    import timm

    from lessons.timm_convert import from_timm

    torch.manual_seed(0)
    reference = timm.create_model(name).eval()
    return from_timm(reference).eval(), reference


def time_pair(ours, theirs, x: torch.Tensor, rounds: int, warmup: int) -> dict:
    """Interleaved timing; per round one forward of each, in alternating order. Times in ms."""
    with torch.inference_mode():
        for _ in range(warmup):
            ours(x), theirs(x)
        t_ours, t_theirs = [], []
        for r in range(rounds):
            pair = [(ours, t_ours), (theirs, t_theirs)]
            for model, times in (pair if r % 2 == 0 else pair[::-1]):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
    ratios = [a / b for a, b in zip(t_ours, t_theirs)]
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return {
        "ratio_median": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3, "ratios": ratios,
        "ours_ms": statistics.median(t_ours), "timm_ms": statistics.median(t_theirs), "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--threads", nargs="+", type=int, default=list(THREADS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()
    cells = []
    jobs = [(m, b, t, mode) for m in args.models for mode in args.modes for t in args.threads for b in args.batches]
    pairs: dict[str, tuple] = {}
    for name, batch, threads, mode in tqdm(jobs, desc="cells"):
        torch.set_num_threads(threads)
        if name not in pairs:
            pairs[name] = build_pair(name)
        ours, theirs = pairs[name]
        side = INPUT_SIDE[name.split("_")[0]]
        torch.manual_seed(1)
        x = torch.randn(batch, 3, side, side)
        with torch.inference_mode():
            max_diff = (ours(x) - theirs(x)).abs().max().item()
        if mode == "compile":
            torch._dynamo.reset()
            ours, theirs = torch.compile(ours), torch.compile(theirs)
        result = time_pair(ours, theirs, x, args.rounds, args.warmup)
        cells.append({"model": name, "batch": batch, "threads": threads, "mode": mode, "input_side": side,
                      "max_abs_diff": max_diff, **result})
    record = {
        "command": "python scripts/timm_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": __import__("timm").__version__},
        "cells": cells,
    }
    text = json.dumps(record, indent=1)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
        worst = max(cells, key=lambda c: c["ratio_median"])
        print(f"wrote {args.out}: {len(cells)} cells, worst ours/timm {worst['ratio_median']:.3f} "
              f"({worst['model']}, batch {worst['batch']}, {worst['threads']} thread(s), {worst['mode']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
