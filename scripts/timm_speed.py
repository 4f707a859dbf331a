"""Are the book's models as fast as timm's? Our MobileViT and PoolFormer against timm's, same weights, same input.

    .venv/bin/python scripts/timm_speed.py --out book/data/timm_speed.json
    .venv/bin/python scripts/timm_speed.py --models mobilevit_s --batches 8 --threads 1 --modes eager   # one cell

For each model, batch size (1 and 8), thread count (1 and 2) and mode (eager, and ``torch.compile`` with its
default inductor backend) the two models are timed *in pairs*: each round runs ours then timm's, or timm's then
ours (alternating, so neither always runs on a warm cache), and records the ratio ours/timm of that round. A machine
that slows down during a round slows both alike, so the ratio is far steadier than either time; the file keeps the
median ratio, its quartiles and every round's ratio, and the median times. Before timing, the outputs are compared
(the same weights must give the same logits; the norms' weights and statistics are randomized first, so a norm
applied wrongly would show), eager and compiled, so a fast wrong model cannot pass.

Compiling is what costs time, mostly gcc building inductor's C++ kernels: one ``torch.compile`` of mobilevit_xxs at
batch 1 took 379 s on the shared AMD EPYC 2-core machine of the first grid (kept in
``book/data/timm_speed_amd_epyc_2026-12-02.json``; it timed only MobileViT-S and PoolFormer-S12 compiled), 80 s for
ours and 25 s for timm's on the 2-core Intel Xeon of the committed file (timm's second: it finds many of the same
kernels in inductor's on-disk cache, which was not emptied before the run), and the whole grid, every model eager
and compiled (``COMPILE_MODELS``, ``COMPILE_BATCHES``), under half an hour there. A part of the grid can be timed
with ``--models``, ``--compile-models``, ``--compile-batches`` and so on, and added to a file with ``--append`` (the
committed file was made in four runs: compiled mobilevit_xxs at batch 1, as a measure of the cost, then eager, then
the other compiled cells at batch 1, then batch 8; each run's command is in it). Each model is compiled once per
batch size (``dynamic=False``: static shapes, ``torch._dynamo.reset()`` between batch sizes) and timed at every
thread count. By default inductor bakes ``torch.get_num_threads()`` into its C++ kernels (``#pragma omp parallel
num_threads(N)``); the script sets inductor's ``cpp.dynamic_threads`` instead (the kernels ask OpenMP for the thread
count when they run), for both models alike, so the graph compiled at one thread count is the same at the other.
Dynamo still guards on the thread count and traces again at the first call with a new count (that call is timed
apart, as ``compile_s``); the timed rounds are checked, with dynamo's counters, to have compiled nothing.

Absolute milliseconds belong to the machine recorded in the file; the load average is recorded at the start and end
and for every cell, because other processes on the same cores widen the spread (the interleaved ratio is what stays
usable then). ``tests/test_timm_speed_data.py`` checks that the file names the models and cells this script defines,
that every pair agreed, and that the timed code has not changed since (:func:`code_fingerprint`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime
import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

# OpenMP's default is to spin while it waits for its other threads; on cores that other processes share, a spinning
# thread holds a core its partner needs, and 2-thread runs took 5x longer than 1-thread ones here (mobilevit_xxs,
# batch 1: ~980 ms against ~200 ms). Passive waiting, for both models alike, set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

MODELS = ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "poolformer_s12", "poolformer_s24")
INPUT_SIDE = {"mobilevit": 256, "poolformer": 224}  # each family at the resolution its paper reports
BATCHES = (1, 8)
THREADS = (1, 2)
MODES = ("eager", "compile")
# Compiled: every model at every batch size (the committed file's grid; see the module docstring for what it costs)
COMPILE_MODELS = MODELS
COMPILE_BATCHES = (1, 8)
MIN_ROUNDS = 5  # fewer pairs give no quartiles worth the name; the committed file uses the default
DEFAULT_ROUNDS = 15
AGREE_TOLERANCE = 1e-4  # max |ours - timm| over the logits, eager or compiled (fp32; compiled kernels reorder sums)


def randomize_norms(model: torch.nn.Module) -> None:
    """Give every norm random weights (and BatchNorm random statistics), as tests/test_timm_equivalence.py does: a
    fresh model's norms are identities, which would hide a norm applied wrongly."""
    norms = (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, norms) and getattr(module, "weight", None) is not None:
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, timm's)``, in eval mode, ours carrying timm's randomly initialised weights (seeded)."""
    import timm

    from lessons.timm_convert import from_timm

    torch.manual_seed(0)
    reference = timm.create_model(name).eval()
    randomize_norms(reference)
    return from_timm(reference).eval(), reference


# --------------------------------------------------------------------------------------------------------------------
# What the timings depend on in our code: a fingerprint that changes with the code, not with its comments
# --------------------------------------------------------------------------------------------------------------------


@functools.cache
def _module_tree(module_name: str) -> ast.Module:
    return ast.parse(Path(sys.modules[module_name].__file__).read_text())


def _normalized_source(obj: object) -> str:
    """The AST of ``obj``'s definition without docstrings: a comment, a docstring or a line break does not change
    it. (Found by name in its module's parsed file, once per file: ``inspect.getsource`` parses the file per call.)"""
    return _normalized_definition(obj.__module__, obj.__qualname__)


@functools.cache
def _normalized_definition(module_name: str, qualname: str) -> str:
    node = _module_tree(module_name)
    for part in qualname.split("."):
        node = next(n for n in node.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part)
    node = copy.deepcopy(node)
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if (
            isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
            and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            inner.body = body[1:] or [ast.Pass()]
    return ast.dump(node, annotate_fields=False)


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _ours(obj: object) -> bool:
    return getattr(obj, "__module__", "").startswith("lessons")


def code_fingerprint(name: str) -> dict:
    """Parameter count and a hash of the code our model ``name`` runs: the source (docstrings and comments left out)
    of every ``lessons`` class among its modules, their ``lessons`` base classes, and every ``lessons`` function or
    class their methods name, followed recursively. An edit elsewhere in ``lessons`` leaves it unchanged."""
    from lessons.registry import create_model

    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    seen: dict[str, object] = {}
    todo = [cls for module in model.modules() for cls in type(module).__mro__ if _ours(cls)]
    while todo:
        obj = todo.pop()
        key = f"{obj.__module__}.{obj.__qualname__}"
        if key in seen:
            continue
        seen[key] = obj
        functions = [obj] if isinstance(obj, types.FunctionType) else [
            value for value in vars(obj).values() if isinstance(value, (types.FunctionType, property))
        ]
        for function in functions:
            for fn in (function.fget, function.fset) if isinstance(function, property) else (function,):
                if fn is None:
                    continue
                for code in _code_objects(fn.__code__):
                    for ref in code.co_names:
                        target = fn.__globals__.get(ref)
                        if isinstance(target, (type, types.FunctionType)) and _ours(target):
                            todo.append(target)
    digest = hashlib.sha256()
    for key in sorted(seen):
        digest.update(key.encode() + b"\n" + _normalized_source(seen[key]).encode() + b"\n")
    return {"params": params, "code_sha256": digest.hexdigest(), "code_objects": sorted(seen)}


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------


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


def max_abs_diff(ours, theirs, x: torch.Tensor) -> float:
    with torch.inference_mode():
        return (ours(x) - theirs(x)).abs().max().item()


def dynamo_counts() -> dict:
    """Dynamo's running totals of frames compiled and graphs made; unchanged between two calls = no recompile."""
    from torch._dynamo.utils import counters

    return {"frames_ok": counters["frames"]["ok"], "unique_graphs": counters["stats"]["unique_graphs"]}


def grid(models, batches, threads, modes, compile_models, compile_batches) -> list[tuple[str, str, int, int]]:
    """The cells ``(mode, model, batch, threads)`` in the order they are timed: eager first (cheap), then compiled;
    within a mode model -> batch -> threads, so that one compiled pair serves every thread count of its batch."""
    return [
        (mode, name, batch, n) for mode in modes for name in models for batch in batches for n in threads
        if mode == "eager" or (name in compile_models and batch in compile_batches)
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL")
    parser.add_argument("--compile-models", nargs="+", default=list(COMPILE_MODELS), metavar="MODEL",
                        help="the models also timed compiled (compiling costs minutes per model and batch)")
    parser.add_argument("--compile-batches", nargs="+", type=int, default=list(COMPILE_BATCHES), metavar="BATCH",
                        help="the batch sizes also timed compiled")
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--threads", nargs="+", type=int, default=list(THREADS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), metavar="MODE")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timed pairs per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs per cell (after compiling)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    parser.add_argument("--append", action="store_true",
                        help="add this run's cells to the file --out names (same code, versions and settings)")
    args = parser.parse_args(argv)
    for option, allowed in (("models", MODELS), ("compile_models", MODELS), ("modes", MODES)):
        unknown = [m for m in getattr(args, option) if m not in allowed]
        if unknown:
            parser.error(f"--{option.replace('_', '-')}: unknown {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if any(b < 1 for b in args.batches + args.compile_batches):
        parser.error(f"batch sizes must be positive, got {args.batches} and {args.compile_batches}")
    cpus = os.cpu_count() or 1
    if any(not 1 <= t <= cpus for t in args.threads):
        parser.error(f"--threads: thread counts must be between 1 and this machine's {cpus} CPUs, got {args.threads}")
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS} (pairs per cell, for quartiles), got {args.rounds}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    for option in ("models", "compile_models", "batches", "compile_batches", "threads", "modes"):
        values = getattr(args, option)
        if len(set(values)) != len(values):
            parser.error(f"--{option.replace('_', '-')} lists a value twice: {values}")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out: folder {args.out.parent} does not exist")
    if args.append and (args.out is None or not args.out.is_file()):
        parser.error("--append needs --out naming an existing file")
    if not grid(args.models, args.batches, args.threads, args.modes, args.compile_models, args.compile_batches):
        parser.error("nothing to time: --modes compile, but no model and batch of --models and --batches is in "
                     "--compile-models and --compile-batches")
    return args


def new_record(args) -> dict:
    import timm

    return {
        "runs": [],
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
        "settings": {"rounds": args.rounds, "warmup": args.warmup, "input_side": INPUT_SIDE,
                     "compile": "torch.compile(model, dynamic=False); inductor config cpp.dynamic_threads = True",
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                     "agree_tolerance": AGREE_TOLERANCE},
        "fingerprints": {name: code_fingerprint(name) for name in MODELS},
        "cells": [],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch._inductor.config as inductor_config

    inductor_config.cpp.dynamic_threads = True  # see the module docstring: one compile serves every thread count

    record = new_record(args)
    if args.append:
        old = json.loads(args.out.read_text())
        for key in ("machine", "versions", "settings", "fingerprints"):
            if old[key] != record[key]:
                raise SystemExit(f"--append: {args.out} was made with other {key}: {old[key]} != {record[key]}")
        record = old
    done = {(c["mode"], c["model"], c["batch"], c["threads"]) for c in record["cells"]}
    cells = grid(args.models, args.batches, args.threads, args.modes, args.compile_models, args.compile_batches)
    if done & set(cells):
        raise SystemExit(f"--append: {args.out} already has the cells {sorted(done & set(cells))}")
    run = {"command": "python scripts/timm_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "loadavg_start": os.getloadavg(), "loadavg_end": None, "complete": False}
    record["runs"].append(run)

    def save() -> None:
        run["loadavg_end"] = os.getloadavg()
        if args.out is not None:
            args.out.write_text(json.dumps(record, indent=1) + "\n")

    groups = list(dict.fromkeys((mode, name, batch) for mode, name, batch, _ in cells))
    progress = tqdm(total=len(cells), desc="cells", unit="cell")
    for mode, name, batch in groups:
        ours, theirs = build_pair(name)
        side = INPUT_SIDE[name.split("_")[0]]
        torch.manual_seed(1)
        x = torch.randn(batch, 3, side, side)
        eager_diff = max_abs_diff(ours, theirs, x)
        if mode == "compile":
            torch._dynamo.reset()
            ours, theirs = torch.compile(ours, dynamic=False), torch.compile(theirs, dynamic=False)
        for _, _, _, threads in [c for c in cells if c[:3] == (mode, name, batch)]:
            torch.set_num_threads(threads)
            compile_s = None
            if mode == "compile":
                # dynamo guards on the thread count, so the first call at each count compiles (the first one in
                # full; later ones find inductor's graph in its cache, dynamic threads leaving it unchanged)
                progress.set_description(f"compiling {name} batch {batch} ({threads} thread(s))")
                compile_s = {}
                for label, model in (("ours", ours), ("timm", theirs)):
                    start = time.perf_counter()
                    with torch.inference_mode():
                        model(x)
                    compile_s[label] = round(time.perf_counter() - start, 1)
            diff = max_abs_diff(ours, theirs, x)
            progress.set_description(f"{mode} {name} batch {batch} threads {threads}")
            with torch.inference_mode():
                for _ in range(args.warmup):
                    ours(x), theirs(x)
            before, load = dynamo_counts(), os.getloadavg()[0]
            result = time_pair(ours, theirs, x, args.rounds, warmup=0)
            record["cells"].append({
                "model": name, "batch": batch, "threads": threads, "mode": mode, "input_side": side,
                "max_abs_diff_eager": eager_diff, "max_abs_diff": diff, "compile_s": compile_s,
                "recompiled_while_timing": dynamo_counts() != before,
                "loadavg_1min": [load, os.getloadavg()[0]], "run": len(record["runs"]) - 1, **result,
            })
            save()
            progress.set_postfix_str(f"last ours/timm {result['ratio_median']:.3f}")
            progress.update()
    progress.close()
    run["complete"] = True
    if args.out is None:
        run["loadavg_end"] = os.getloadavg()
        print(json.dumps(record, indent=1))
    else:
        save()
        worst = max(record["cells"], key=lambda c: c["ratio_median"])
        print(f"wrote {args.out}: {len(record['cells'])} cells, worst ours/timm {worst['ratio_median']:.3f} "
              f"({worst['model']}, batch {worst['batch']}, {worst['threads']} thread(s), {worst['mode']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
