"""Experiments as code, results as data: named ablations, trained by :mod:`lessons.train`, written to JSON.

An experiment is a function decorated with :func:`experiment` whose **docstring is its hypothesis**, written (and
committed) before the experiment is run, citing the paper it tests; it returns an :class:`Experiment`: a data set, a
list of model variants (plain data: a family and its micro configuration), a training recipe and seeds.

    python -m lessons.experiments list
    python -m lessons.experiments run NAME [--seeds 0 1 2] [--device cpu] [--steps N] [--out DIR]

``run`` trains every variant x seed that the results file does not hold yet (finished runs are skipped, so an
interrupted run resumes), with a progress bar, and writes ``book/data/experiments/NAME.json`` after every run: per
variant and seed the learning curve and final metrics, plus the command, git commit, package versions, machine and
wall time of that run, and the hash of the definition (:func:`definition_hash`). ``--steps`` (a shorter run, e.g. to
time one) writes to ``_build/experiments/`` (git-ignored) instead, with ``"partial": true``: partial runs are never
book results.

:func:`is_stale` tells whether a committed results file still matches the code's definition (a test fails otherwise):
change a hypothesis, a variant or the recipe and the results must be produced again.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .data import make_datasets
from .train import TrainConfig, evaluate, resolve_device, train

__all__ = [
    "Experiment", "EXPERIMENTS", "experiment", "build_model", "definition", "definition_hash", "is_stale",
    "stale_results", "run_experiment", "results_path", "RESULTS_DIR", "PARTIAL_DIR", "load_trained", "segment",
    "class_iou", "class_metrics", "SEGMENTER_FAMILIES",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "book" / "data" / "experiments"
PARTIAL_DIR = ROOT / "_build" / "experiments"  # ignored by git: partial runs are never book results


@dataclass(frozen=True)
class Experiment:
    """One experiment: ``variants`` (name -> model spec, see :func:`build_model`) x ``seeds``, trained by ``recipe``.

    ``dataset``: keyword arguments of :func:`lessons.data.make_datasets`. ``variant_recipes``: per-variant changes to
    the recipe (e.g. the multi-scale sampler). ``eval_sizes``: extra test resolutions evaluated after training
    (``top1@SIZE``). ``name`` and ``hypothesis`` come from the decorated function.

    Careful: the definition is hashed (:func:`definition_hash`); any edit, even to the docstring, makes committed
    results stale -- that is the point: a hypothesis cannot be edited after its results without the test noticing.
    """

    dataset: dict
    variants: dict[str, dict]
    recipe: TrainConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    variant_recipes: dict[str, dict] = field(default_factory=dict)
    eval_sizes: tuple[int, ...] = ()
    name: str = ""
    hypothesis: str = ""

    def recipe_for(self, variant: str) -> TrainConfig:
        return replace(self.recipe, **self.variant_recipes.get(variant, {}))


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(fn: Callable[[], Experiment]) -> Callable[[], Experiment]:
    """Register ``fn()`` under ``fn.__name__``, with ``fn.__doc__`` as its hypothesis (required)."""
    if not fn.__doc__ or not fn.__doc__.strip():
        raise ValueError(f"experiment {fn.__name__} needs its hypothesis in its docstring")
    EXPERIMENTS[fn.__name__] = replace(fn(), name=fn.__name__, hypothesis=inspect.cleandoc(fn.__doc__))
    return fn


# --------------------------------------------------------------------------------------------------------------------
# Models from plain data
# --------------------------------------------------------------------------------------------------------------------


def _tuples(value):
    """JSON lists back to the (nested) tuples the config dataclasses hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# families whose models output [B, classes, H, W] logits
SEGMENTER_FAMILIES = ("topformer", "seaformer", "pp_mobileseg", "hrvit")


def build_model(spec: dict, num_classes: int, in_chans: int = 3) -> nn.Module:
    """A model from a spec: ``{"family": ..., ...fields...}``, the family one of "metaformer", "mobilevit",
    "topformer", "seaformer", "pp_mobileseg", "hrvit".

    metaformer: the fields of :class:`lessons.poolformer.MetaFormerConfig`, plus ``stem``: ``"overlap"`` (the
    official 7x7 stride-4 conv, neighbouring patches overlap by 3 pixels) or ``"patch"`` (each token a linear map of
    its own 4x4 pixels and nothing else: ``PixelUnshuffle(4)`` then a 1x1 conv, ViT's non-overlapping patch
    embedding; same token grid). mobilevit: the fields of :class:`lessons.mobilevit.MobileViTConfig`.

    The segmenters (logits at the input's size): topformer: the fields of
    :class:`lessons.topformer.TopFormerConfig` (ablation knobs included) for a :class:`lessons.topformer.TopFormer`;
    seaformer: the fields of :class:`lessons.seaformer.SeaFormerConfig` (``sea_detail``, ``sea_axial`` included) for
    a :class:`lessons.seaformer.SeaFormerSeg`; pp_mobileseg: the fields of
    :class:`lessons.pp_mobileseg.StrideFormerConfig` (``fusion``: ``"aam"`` or SeaFormer's ``"sea_fusion"``) for a
    :class:`lessons.pp_mobileseg.PPMobileSeg`; hrvit: the fields of :class:`lessons.hrvit.HRViTConfig` (``name``
    included; ``shared_kv``, ``mix_cfn``, ``dense_fusion`` and the other switches) for a
    :class:`lessons.hrvit.HRViTSegmentation`, plus ``head_channels`` (the SegFormer head's width, default the b1/b2
    256) and ``drop_rate`` (default 0.1). All take ``drop_path_rate`` (default 0: the micro runs are short) and
    TopFormer ``drop_rate`` (its head's dropout, default the official 0.1, as SeaFormer's LightHead keeps it) beside
    the config. A new segmenter family is one more branch here that builds a :class:`lessons.contract.Segmenter`
    from plain data.
    """
    spec = dict(spec)
    family = spec.pop("family")
    if family == "metaformer":
        from .poolformer import MetaFormer, MetaFormerConfig
        stem = spec.pop("stem", "overlap")
        config = MetaFormerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        model = MetaFormer(config, num_classes=num_classes, in_chans=in_chans)
        if stem == "patch":
            model.stem = nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(in_chans * 16, config.dims[0], 1))
        elif stem != "overlap":
            raise ValueError(f"unknown stem {stem!r}; allowed: 'overlap', 'patch'")
        return model
    if family == "mobilevit":
        from .mobilevit import MobileViT, MobileViTConfig
        config = MobileViTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        return MobileViT(config, num_classes=num_classes, in_chans=in_chans)
    if family == "topformer":
        from .topformer import TopFormer, TopFormerConfig
        extra = {k: spec.pop(k) for k in ("drop_path_rate", "drop_rate") if k in spec}
        config = TopFormerConfig(**{k: _tuples(v) for k, v in spec.items()})
        return TopFormer(config, num_classes=num_classes, in_chans=in_chans,
                         **{"drop_path_rate": 0.0, "drop_rate": 0.1, **extra})
    if family == "seaformer":
        from .seaformer import SeaFormerConfig, SeaFormerSeg
        drop_path_rate = spec.pop("drop_path_rate", 0.0)
        config = SeaFormerConfig(**{k: _tuples(v) for k, v in spec.items()})
        return SeaFormerSeg(config, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate)
    if family == "pp_mobileseg":
        from .pp_mobileseg import PPMobileSeg, StrideFormerConfig
        drop_path_rate = spec.pop("drop_path_rate", 0.0)
        config = StrideFormerConfig(**{k: _tuples(v) for k, v in spec.items()})
        return PPMobileSeg(config, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate)
    if family == "hrvit":
        from .hrvit import HRViTConfig, HRViTSegmentation
        extra = {k: spec.pop(k) for k in ("head_channels", "drop_rate", "drop_path_rate") if k in spec}
        config = HRViTConfig(**{k: _tuples(v) for k, v in spec.items()})
        return HRViTSegmentation(config, num_classes=num_classes, in_chans=in_chans,
                                 **{"head_channels": 256, "drop_rate": 0.1, "drop_path_rate": 0.0, **extra})
    raise ValueError(f"unknown model family {family!r}; known: 'metaformer', 'mobilevit', 'topformer', 'seaformer', "
                     "'pp_mobileseg', 'hrvit'")


# --------------------------------------------------------------------------------------------------------------------
# Definitions, hashes, staleness
# --------------------------------------------------------------------------------------------------------------------


def definition(exp: Experiment) -> dict:
    """The experiment as plain JSON data (what the hash covers): hypothesis, data, variants, recipes, seeds."""
    data = asdict(exp)
    data["recipe"] = exp.recipe.to_dict()
    return json.loads(json.dumps(data, sort_keys=True))  # tuples -> lists, as the JSON file will hold them


def definition_hash(exp: Experiment | str) -> str:
    exp = EXPERIMENTS[exp] if isinstance(exp, str) else exp
    text = json.dumps(definition(exp), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def results_path(name: str, directory: Path | str = RESULTS_DIR) -> Path:
    return Path(directory) / f"{name}.json"


def is_stale(name: str, path: Path | str | None = None) -> bool:
    """True if the results file of ``name`` was made from another definition than the code's (or one that is gone)."""
    path = Path(path) if path is not None else results_path(name)
    stored = json.loads(path.read_text())
    if name not in EXPERIMENTS:
        return True
    return stored.get("definition_hash") != definition_hash(name)


def stale_results(directory: Path | str = RESULTS_DIR) -> list[str]:
    """Names of the results files in ``directory`` that no longer match their experiment's definition."""
    return sorted(p.stem for p in Path(directory).glob("*.json") if is_stale(p.stem, p))


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _provenance(device: torch.device, commit: str) -> dict:
    import numpy
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import sklearn
        versions["scikit-learn"] = sklearn.__version__
    except ImportError:  # pragma: no cover
        pass
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    program = "python -m lessons.experiments" if Path(sys.argv[0]).name == "experiments.py" else Path(sys.argv[0]).name
    return {"command": " ".join([program, *sys.argv[1:]]), "git_commit": commit,
            "versions": versions, "machine": machine}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


MAX_CHECKPOINT_BYTES = 2 * 1024 * 1024  # small enough to commit: the chapters show these models' predictions


def _save_checkpoint(model: torch.nn.Module, path: Path) -> str:
    """Save the trained weights of a variant's first seed (what a chapter shows predictions of) and return the path
    relative to the repository when it is inside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_CHECKPOINT_BYTES:,} a committed "
                         "checkpoint may have: make the micro model smaller")
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_experiment(
    name: str,
    seeds: Sequence[int] | None = None,
    device: str = "cpu",
    steps: int | None = None,
    out_dir: Path | str | None = None,
    smoke: bool = False,
    progress: bool = True,
    variants: Sequence[str] | None = None,
) -> dict:
    """Train the variants x seeds of ``name`` that the results file lacks; return the results (also written to disk).

    ``steps`` shortens the recipe (a partial run: written under ``_build/experiments`` unless ``out_dir`` says
    otherwise). ``smoke``: 2 steps on a batch of 4, 8 test images, tiny data sets -- only to keep the code path alive.
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    exp = EXPERIMENTS[name]
    commit = _git_commit()  # the code this process imported: taken now, not after hours of training
    seeds = tuple(exp.seeds if seeds is None else seeds)
    names = list(exp.variants) if variants is None else list(variants)
    partial = smoke or steps is not None
    if out_dir is None:
        out_dir = PARTIAL_DIR if partial else RESULTS_DIR
    suffix = "" if not partial else (".smoke" if smoke else f".steps{steps}")
    path = Path(out_dir) / f"{name}{suffix}.json"
    digest = definition_hash(exp)
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("definition_hash") != digest:  # a changed definition invalidates every stored run
        results = {"runs": {}}
    results.update(name=name, hypothesis=exp.hypothesis, definition=definition(exp), definition_hash=digest,
                   partial=partial)
    device = resolve_device(device)
    dataset_kwargs = dict(exp.dataset)
    if smoke:
        dataset_kwargs.update(n_train=64, n_test=16)
    train_set, test_set = make_datasets(**dataset_kwargs)
    todo = [(v, s) for v in names for s in seeds if str(s) not in results["runs"].get(v, {})]
    outer = None
    if progress:
        from tqdm.auto import tqdm
        outer = tqdm(total=len(names) * len(seeds), initial=len(names) * len(seeds) - len(todo), desc=name)
    for variant, seed in todo:
        recipe = replace(exp.recipe_for(variant), seed=seed)
        if smoke:
            recipe = replace(recipe, steps=2, batch_size=4, warmup_steps=1, eval_every=0, eval_limit=8, log_every=1)
        elif steps is not None:
            recipe = replace(recipe, steps=steps, warmup_steps=min(recipe.warmup_steps, steps),
                             eval_every=min(recipe.eval_every, steps))
        torch.manual_seed(seed)
        model = build_model(exp.variants[variant], train_set.num_classes, train_set.in_chans)
        params = sum(p.numel() for p in model.parameters())
        began = time.perf_counter()
        result = train(model, train_set, test_set, recipe, device=device, progress=progress)
        metrics = dict(result.metrics)
        if recipe.task == "segmentation":
            metrics.update(class_metrics(model, test_set, recipe, device))
        for size in exp.eval_sizes:
            extra = evaluate(model, test_set, recipe, device, size=size)
            metrics.update({f"{k}@{size}": v for k, v in extra.items()})
        run = {"metrics": metrics, "history": result.history, "params": params, "steps": result.steps,
               "recipe": recipe.to_dict(), "wall_s": round(time.perf_counter() - began, 2),
               **_provenance(device, commit)}
        if seed == exp.seeds[0] and not smoke:
            run["checkpoint"] = _save_checkpoint(model, Path(out_dir) / name / f"{variant}{suffix}.pt")
        results["runs"].setdefault(variant, {})[str(seed)] = run
        _write(path, results)
        if outer is not None:
            outer.update(1)
            outer.set_postfix(last=f"{variant}/{seed}", **{k: f"{v:.3f}" for k, v in metrics.items() if "@" not in k})
    if outer is not None:
        outer.close()
    _write(path, results)
    results["path"] = str(path)
    return results


def load_trained(name: str, variant: str, directory: Path | str = RESULTS_DIR) -> nn.Module:
    """The committed first-seed model of ``variant`` in experiment ``name``, in eval mode (what a chapter shows)."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    exp = EXPERIMENTS[name]
    if variant not in exp.variants:
        raise KeyError(f"{name} has no variant {variant!r}; variants: {', '.join(exp.variants)}")
    results = json.loads(results_path(name, directory).read_text())
    relative = results["runs"][variant][str(exp.seeds[0])]["checkpoint"]
    path = Path(relative) if Path(relative).is_absolute() else ROOT / relative
    train_set, _ = make_datasets(**{**exp.dataset, "n_train": 1, "n_test": 1})
    model = build_model(exp.variants[variant], train_set.num_classes, train_set.in_chans)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return model.eval()


@torch.no_grad()
def segment(model: nn.Module, dataset, indices: Sequence[int], batch_size: int = 100) -> tuple[torch.Tensor, ...]:
    """``(images, targets, predicted labels)`` of ``dataset[indices]``: images in [0, 1], labels ``[N, H, W]``."""
    from .train import _normalise

    model.eval()
    images, targets = dataset.batch(list(indices))
    preds = torch.cat([model(_normalise(images[i:i + batch_size], dataset)).argmax(1)
                       for i in range(0, len(images), batch_size)])
    return images, targets, preds


@torch.no_grad()
def class_metrics(model: nn.Module, dataset, recipe: TrainConfig, device: torch.device | str = "cpu"
                  ) -> dict[str, float]:
    """Final per-class IoU of a segmenter on ``dataset`` (the images the trainer evaluates: ``recipe.eval_limit``):
    ``iou.<class name>`` for every class (names from ``dataset.class_names``, else the class index), and the mean
    IoU of each group in ``dataset.metric_groups`` (e.g. SceneWorld's ``context_iou``: the two classes only the
    far-away cue tells apart)."""
    from .train import _fetch, _normalise, confusion_matrix

    model.eval()
    n = len(dataset) if recipe.eval_limit is None else min(recipe.eval_limit, len(dataset))
    confusion = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.long)
    for start in range(0, n, recipe.eval_batch_size):
        images, targets = _fetch(dataset, list(range(start, min(n, start + recipe.eval_batch_size))))
        logits = model(_normalise(images.to(device), dataset))
        confusion += confusion_matrix(logits.argmax(1).cpu(), targets, dataset.num_classes, recipe.ignore_index)
    model.train()
    confusion = confusion.double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    iou = (confusion.diag() / union.clamp(min=1)).tolist()  # a class absent from targets and predictions: 0
    names = getattr(dataset, "class_names", [str(k) for k in range(dataset.num_classes)])
    metrics = {f"iou.{name}": value for name, value in zip(names, iou)}
    for group, classes in getattr(dataset, "metric_groups", {}).items():
        metrics[group] = sum(iou[c] for c in classes) / len(classes)
    return metrics


def class_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IoU of every class (``nan`` where a class is neither in the targets nor predicted), from one confusion matrix."""
    from .train import confusion_matrix

    confusion = confusion_matrix(pred, target, num_classes).double()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    return torch.where(union > 0, confusion.diag() / union.clamp(min=1), torch.full_like(union, float("nan")))


# --------------------------------------------------------------------------------------------------------------------
# The classification ablations (hypotheses written before any run)
# --------------------------------------------------------------------------------------------------------------------

# A micro MetaFormer: four stages as in the paper (strides 4, 8, 16, 32 -> 8, 4, 2, 1 tokens a side at 32x32),
# narrow and shallow so that one run fits in about three minutes of one CPU core.
_MICRO_METAFORMER = {"family": "metaformer", "name": "micro", "depths": [1, 1, 2, 1], "dims": [16, 32, 64, 64],
                     "attn_head_dim": 16, "img_size": 32}

# A micro MobileViT: the paper's layout (stem, 2 MV2 stages, 3 MV2 + MobileViT stages; strides 2 .. 32) with one
# transformer layer per MobileViT block and narrow widths.
_MICRO_MOBILEVIT = {"family": "mobilevit", "name": "micro", "mv2_expansion": 2.0, "mv2_channels": [16, 24],
                    "vit_channels": [32, 48, 64], "transformer_dims": [32, 48, 64], "final_channels": 128,
                    "transformer_depths": [1, 1, 1], "stem_channels": 8, "num_heads": 4, "stage2_blocks": 1}


def _metaformer(**changes) -> dict:
    return {**_MICRO_METAFORMER, **changes}


def _mobilevit(**changes) -> dict:
    return {**_MICRO_MOBILEVIT, **changes}


def _patch_size_variants() -> dict[str, dict]:
    """The paper's two patch settings (§4.3, Fig. 8) in the micro MobileViT: config-A (2, 2, 2), config-B (8, 4, 2)."""
    return {"config_a_222": _mobilevit(patch_sizes=[2, 2, 2]), "config_b_842": _mobilevit(patch_sizes=[8, 4, 2])}


_WORLD = {"name": "shapes_colour", "seed": 0, "n_train": 200_000, "n_test": 2_000, "n_colours": 2,
          "radius": [0.12, 0.2]}


@experiment
def poolformer_token_mixers() -> Experiment:
    """MetaFormer token-mixer ablation in miniature (Yu et al., CVPR 2022, "MetaFormer is Actually What You Need for
    Vision", §4.4 and the ablation table on ImageNet: identity mixer 74.3% vs pooling 77.2% for S12; pool sizes 3,
    5, 7 alike; the hybrid [pool, pool, attention, attention] best at 81.0%).

    Setting: the same micro MetaFormer (depths 1-1-2-1, widths 16-32-64-64, 8x8 tokens in stage 1 at 32x32) on the
    procedural ShapesWorld, task "same colour or not" for two shapes in opposite halves of a 32x32 image (two palette
    colours, radius 0.12-0.2 of the image; :mod:`lessons.data` proves the label needs tokens that see both shapes).
    The token mixer of every stage is identity, 3x3 pooling, attention or a spatial MLP; pooling also with pool
    sizes 5 and 7; the paper's best hybrid (pooling in stages 1-2, attention in 3-4). Attention gets a learned
    position embedding before its first attention stage, as the official hybrids do (``metaformer.py``
    ``AddPositionEmb``). And pooling behind a
    non-overlapping patch embedding (each token a linear map of its own 4x4 pixels, ViT-style) instead of the
    official overlapping 7x7/4 stem. Learning curves are evaluated every 250 steps: the comparison is final top-1
    *and* how many steps each variant needs to leave chance (the label is XOR-like, so training sits on a plateau
    at 50% before it finds the relation).

    Pilot, before these hypotheses were written (seed 0, this world, 1,000-image test set): the identity mixer left
    the plateau by step 300 and reached 100% test top-1; attention in every stage was still at 50% at step 1,600
    without a position embedding and at step 800 with one (training loss 0.693 throughout: a plateau, not NaN).

    Hypotheses:
    1. The MetaFormer structure carries the result, as in the paper: at 32x32 the strided downsampling convs reach
       across the whole image by stage 3 (2x2 map), so every variant, identity included, can reach ~100%; the mixer
       changes *when* the plateau is left more than where training ends.
    2. Parameter-free mixers (identity, pooling of any size) leave the plateau earliest; attention and the spatial
       MLP, which must first learn their mixing weights from a signal that is zero on average on the plateau, leave
       it latest and with the largest spread over seeds (some seeds may not leave it within the budget).
    3. Pool sizes 3, 5 and 7 end alike (as on ImageNet).
    4. The hybrid (pooling early, attention late) behaves like pooling, not like attention everywhere.
    5. The non-overlapping patch embedding ends as well as the overlapping stem on this colour task (colour needs
       no shape detail) and is no slower to leave the plateau.
    """
    variants = {
        "identity": _metaformer(mixers=["identity"] * 4),
        "pooling3": _metaformer(mixers=["pooling"] * 4, pool_size=3),
        "pooling5": _metaformer(mixers=["pooling"] * 4, pool_size=5),
        "pooling7": _metaformer(mixers=["pooling"] * 4, pool_size=7),
        "attention": _metaformer(mixers=["attention"] * 4, pos_embed=[True, False, False, False]),
        "spatial_mlp": _metaformer(mixers=["spatial_mlp"] * 4),
        "hybrid_ppaa": _metaformer(mixers=["pooling", "pooling", "attention", "attention"],
                                   pos_embed=[False, False, True, False]),
        "pooling3_patch_stem": _metaformer(mixers=["pooling"] * 4, pool_size=3, stem="patch"),
    }
    recipe = TrainConfig(steps=3000, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_steps=150,
                         label_smoothing=0.1, eval_every=250, eval_batch_size=500, log_every=10)
    return Experiment(dataset={**_WORLD, "size": 32}, variants=variants, recipe=recipe)


@experiment
def mobilevit_patch_sizes() -> Experiment:
    """MobileViT patch sizes in miniature (Mehta & Rastegari, ICLR 2022, §4.3 and Fig. 8: config-A, patches
    (2, 2, 2) in the three MobileViT stages, is more accurate; config-B, (8, 4, 2), is faster because each
    attention sees fewer tokens).

    Setting: the same micro MobileViT (one transformer layer per MobileViT block) on the procedural ShapesWorld at
    64x64, the world of ``poolformer_token_mixers`` ("same colour or not"; the MobileViT stages then work on 8x8,
    4x4 and 2x2 maps). Pilot (config-A, seed 0, 500 test images): 100% test top-1 at step 100 on this colour task;
    on the harder same-kind task (:class:`lessons.data.ShapesWorld`, ``task="same_kind"``) still at chance at step
    300. So the colour task is used, and the measure is the learning curve, evaluated every 25 steps: steps to
    leave the 50% plateau and to reach 95%, as well as the final top-1. Note the scale: at 64x64, patches (8, 4, 2)
    cover each stage's whole map, so every pixel's attention has exactly one token (its own) -- config-B keeps the
    local convolutions and the transformer's MLPs but loses all global mixing, where in the paper at 256x256 it still
    attends over a 4x4 grid of patches. It is the extreme of the paper's trade-off.

    Hypotheses, written after that pilot and before any run of the set:
    1. Both configurations end near 100%; config-A (2, 2, 2) leaves the 50% plateau of this XOR-like label and
       reaches 95% in fewer steps than config-B (8, 4, 2): config-B has no global mixing inside its MobileViT blocks
       here, only through the strided convolutions (which, as in the MetaFormer, do reach across the image by the
       last stage).
    2. config-B is faster per step on the CPU (attention over 1 token instead of 16, 4 and 1).
    """
    variants = _patch_size_variants()
    recipe = TrainConfig(steps=400, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_steps=20,
                         label_smoothing=0.1, eval_every=25, eval_batch_size=500, log_every=5)
    return Experiment(dataset={**_WORLD, "size": 64, "n_train": 60_000, "n_test": 1_000},
                      variants=variants, recipe=recipe)


@experiment
def mobilevit_multi_scale() -> Experiment:
    """MobileViT's multi-scale sampler vs one resolution in miniature (Mehta & Rastegari, ICLR 2022, §3.2 and
    Fig. 5: training on sizes {160, 192, 256, 288, 320} with b_t = b * 256^2 / size^2 per step improves accuracy
    and needs fewer optimizer steps per epoch than one 256x256 resolution).

    Setting: the micro MobileViT, patches (2, 2, 2), on scikit-learn's real digits (1,438 training images; a small
    real set is where the sampler's variety of scales can act as augmentation -- the procedural world is unlimited,
    so nothing there to regularise). Not piloted. Base 64x64; the multi-scale set is the paper's scaled by 64/256
    and rounded to multiples of 8: {40, 48, 64, 72, 80} (the batch at 40 px is 2.56x the base batch of 64, at 48 px
    1.78x).
    Both runs take the same number of optimizer steps; the multi-scale run therefore sees more images for about the
    same number of pixels per step. Test top-1 is measured at 64 (the base) and at 40, 48, 80 and 96.

    Hypotheses, written before any run:
    1. At the base resolution the multi-scale model is at least as accurate as the single-resolution one.
    2. Away from the base resolution (40, 48, 80, 96) the multi-scale model is clearly more accurate: it has seen
       those scales, the single-resolution model has not (96 is outside both training sets and tests extrapolation).
    """
    variants = {"single_64": _mobilevit(), "multi_scale": _mobilevit()}
    recipe = TrainConfig(steps=700, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_steps=35,
                         label_smoothing=0.1, eval_every=100, eval_batch_size=500, log_every=5)
    return Experiment(dataset={"name": "digits", "size": 64, "seed": 0}, variants=variants, recipe=recipe,
                      variant_recipes={"multi_scale": {"multi_scale": (40, 48, 64, 72, 80), "base_resolution": 64}},
                      eval_sizes=(40, 48, 80, 96))


# The second attempt (issue 12): the first world was too easy for the question. At 32x32 every mixer of
# ``poolformer_token_mixers`` had left chance by its first evaluation (step 250) and ended at 100%, and at 64x64
# config-B of ``mobilevit_patch_sizes`` had one token per attention. The same scene at a larger size puts the two
# shapes more tokens apart, so a model must carry the relation further before the strided convolutions bring the
# shapes together; and evaluations every 25 steps resolve *when* each variant leaves chance.

_WORLD_48 = {**_WORLD, "size": 48, "n_train": 60_000, "n_test": 500}


@experiment
def poolformer_token_mixers_48() -> Experiment:
    """MetaFormer token-mixer ablation in miniature, second attempt: a larger picture, learning curves every 25
    steps (Yu et al., CVPR 2022, "MetaFormer is Actually What You Need for Vision", §4.4 and its ablation table on
    ImageNet-1K with PoolFormer-S12 as the base: identity mixer 74.3%, global random matrix 75.8%, pooling 77.2%,
    hybrid [Pool, Pool, Attention, Attention] 81.0%).

    Why a second attempt. In ``poolformer_token_mixers`` (32x32) every mixer had left the 50% plateau by the first
    evaluation at step 250 and all ended at 100%, so nothing separated the mixers. Here the same scene (two shapes
    in opposite halves, "same colour or not", two palette colours, radius 0.12-0.2 of the picture) is drawn at
    48x48: the stage maps are 12x12, 6x6, 3x3 and 2x2 tokens instead of 8, 4, 2, 1, so the shapes sit further apart
    in tokens and the strided convolutions bring them together only in the last stages, while a global mixer (the
    random matrix, attention, the spatial MLP) joins them in stage 1. A test set of 500 pictures is evaluated every
    25 steps; the measure is when each variant leaves chance (first evaluation at >= 60%) as well as the final
    top-1.

    Variants (the micro MetaFormer of the first attempt, depths 1-1-2-1, widths 16-32-64-64, built for 48x48): the
    token mixer of every stage is identity; a frozen random matrix (``lessons.poolformer.RandomMixing``: a softmax
    of uniform noise over all tokens of the stage, drawn at initialisation and never trained, as the official
    ``RandomMixing`` of sail-sg/metaformer); 3x3 pooling; attention with a learned position embedding before stage
    1; a spatial MLP; the hybrid [Pool, Pool, Attention, Attention] (position embedding before stage 3); and 3x3
    pooling behind a non-overlapping patch embedding, ``PixelUnshuffle(4)`` then a 1x1 conv: each token is a linear
    map of its own 4x4 pixels and nothing else (ViT's patch embedding), instead of the official overlapping 7x7
    stride-4 stem. This is not a "1x1 pixel embedding" (one token per pixel): the token grid is the same 12x12 as the
    official stem's; as far as we could check, the paper's ablation table does not vary the embedding (the paper
    text was not reachable here; the official code has no such variant), so this variant asks our own question
    (does the overlap of the stem, itself a small token mixer, matter?) and has no paper number. Pool sizes 5 and
    7 are left out to fit the budget (the first attempt found them alike at 32x32).

    Pilots, before these hypotheses were written (seed 0, 300 steps, batch 64, 500 test pictures, evaluated every
    25 steps): at 48x48 with 4 colours and radius 0.06-0.1, pooling stayed at 50% throughout; with 2 colours and
    radius 0.08-0.12, pooling, identity, the random matrix and attention all stayed at 50% for 300 steps; with
    this world (2 colours, radius 0.12-0.2) pooling reached 51.6% at step 275 and identity 50.8% at step 300 --
    the plateau lasts about 300 steps, so the set trains 600 steps with a 50-step warm-up.

    Hypotheses, written after those pilots and before any run of the set:
    1. The global mixers leave chance first: the random matrix, attention and the spatial MLP connect the two shapes
       in stage 1, where identity and pooling must wait for the strided convolutions of stages 3-4. Order of the
       steps to leave chance: {random, spatial MLP, attention} < pooling <= identity.
    2. Pooling leaves chance no later than identity and ends at least as high (paper: 77.2% vs 74.3%), but at this
       scale the gap is small: a 3x3 window per block widens the reach by only a token or two.
    3. The frozen random matrix leaves chance earlier than identity and ends at least as high (paper: 75.8% vs
       74.3%): even untrained, global mixing lets stage 1 see both shapes. Against pooling (paper: pooling 1.4
       points better) we expect the reverse order here: the random matrix leaves chance earlier, since the task
       is a global relation, not ImageNet's mostly local evidence.
    4. The hybrid leaves chance no earlier than pooling (its first two stages are pooling; attention only starts on
       the 3x3 map, where the convolutions already nearly reach across) and ends at least as high.
    5. The non-overlapping patch embedding leaves chance no earlier than the overlapping stem and ends no higher:
       its tokens see only their own 4x4 pixels.
    Some seeds may not leave chance within 600 steps; they count with the step budget (a lower bound).
    """
    variants = {
        "identity": _metaformer(mixers=["identity"] * 4, img_size=48),
        "random": _metaformer(mixers=["random"] * 4, img_size=48),
        "pooling3": _metaformer(mixers=["pooling"] * 4, pool_size=3, img_size=48),
        "attention": _metaformer(mixers=["attention"] * 4, pos_embed=[True, False, False, False], img_size=48),
        "spatial_mlp": _metaformer(mixers=["spatial_mlp"] * 4, img_size=48),
        "hybrid_ppaa": _metaformer(mixers=["pooling", "pooling", "attention", "attention"],
                                   pos_embed=[False, False, True, False], img_size=48),
        "pooling3_patch4_stem": _metaformer(mixers=["pooling"] * 4, pool_size=3, stem="patch", img_size=48),
    }
    recipe = TrainConfig(steps=600, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_steps=50,
                         label_smoothing=0.1, eval_every=25, eval_batch_size=500, log_every=5)
    return Experiment(dataset=_WORLD_48, variants=variants, recipe=recipe)


@experiment
def mobilevit_patch_sizes_128() -> Experiment:
    """MobileViT patch sizes in miniature, second attempt: 128x128, where config-B still attends across patches
    (Mehta & Rastegari, ICLR 2022, §4.3 and Fig. 8: config-A, patches (2, 2, 2) in the three MobileViT stages, is
    more accurate; config-B, (8, 4, 2), is faster because each attention sees fewer tokens).

    Why a second attempt. In ``mobilevit_patch_sizes`` (64x64) the MobileViT stages worked on 8x8, 4x4 and 2x2 maps,
    so config-B's patches covered each whole map and every attention had one token: config-B had no global mixing
    at all, and both configurations reached 100% by step 50. At 128x128 the maps are 16x16, 8x8 and 4x4: config-B's
    patches (8, 4, 2) cut each map into a 2x2 grid, so each pixel attends over 4 tokens (the same pixel of the 4
    patches, spanning the whole map), against 64, 16 and 4 tokens for config-A -- the structure of the paper's
    256x256 setting (where config-B attends over 4x4 grids), at half its scale.

    Setting: the micro MobileViT of the first attempt (one transformer layer per MobileViT block), the scene of the
    other miniature experiments ("same colour or not" for two shapes in opposite halves, 2 palette colours, radius
    0.12-0.2 of the picture: a relation between two places far apart) at 128x128; batch 32 (a step at 128x128
    costs about 8x one at 64x64 with batch 64 halved), 150 steps, evaluated every 25 steps on 400 test pictures.
    Pilot, before these hypotheses were written (config-A, seed 0, batch 32, 500 test pictures): 50.0% at step 25,
    66.8% at step 50, 100% at steps 75 and 100, about 1 s per step on one shared core. Config-B was not piloted.

    Hypotheses, written after that pilot and before any run of the set:
    1. Both configurations leave chance and end near 100% within 150 steps; since both now mix globally inside the
       MobileViT blocks, they learn alike (steps to 95% and final top-1 within two standard errors). The paper's
       small accuracy gap of config-A (Fig. 8) needs ImageNet's fine detail; a two-colour relation does not.
    2. Config-B is faster per training step on the CPU (attention over 4 tokens instead of 64, 16 and 4), but by
       little: attention is a small share of the micro model's multiply-adds, and the shared machine's load moves
       wall times by tens of percent, so the difference may not exceed two standard errors.
    """
    variants = _patch_size_variants()
    recipe = TrainConfig(steps=150, batch_size=32, lr=2e-3, weight_decay=0.05, warmup_steps=10,
                         label_smoothing=0.1, eval_every=25, eval_batch_size=200, log_every=5)
    return Experiment(dataset={**_WORLD, "size": 128, "n_train": 20_000, "n_test": 400},
                      variants=variants, recipe=recipe)


# --------------------------------------------------------------------------------------------------------------------
# The segmentation ablations (hypotheses written after one pilot run each, before any run of the sets)
# --------------------------------------------------------------------------------------------------------------------

# The segmentation world (lessons.data.SceneWorld: 6 classes; a far-away beacon decides the disks' class; 1-2 px
# wires and 2-3 px dots) at 64x64: a training set of 100,000 scenes (no image is seen twice in these budgets) and
# 400 test scenes from another seed.
_SCENES = {"name": "scenes", "size": 64, "seed": 0, "n_train": 100_000, "n_test": 400}

# A micro TopFormer: the paper's layout (stem, MobileNetV2 token pyramid with tokens at 1/4, 1/8, 1/16, 1/32, pooled
# and stacked, a BatchNorm transformer extractor, SIM injection at 1/8, 1/16, 1/32, the summing head) with one row
# per token (Tiny has two), widths 16-24-32-48 (Tiny 16-32-64-96), 2 extractor blocks (Tiny 4) of 4 heads with
# key_dim 8 (Tiny 16), SIM width M = 32 (Tiny 128), and the paper's smallest pooling stride, s32 (its
# pooling-stride ablation; the default s64 would leave one token at 64x64): the extractor attends over 2x2 tokens.
_MICRO_TOPFORMER = {
    "family": "topformer", "name": "micro",
    "rows": [[3, 1, 8, 1], [3, 4, 16, 2], [5, 3, 24, 2], [3, 3, 32, 2], [5, 4, 48, 2]],
    "token_rows": [1, 2, 3, 4], "num_heads": 4, "key_dim": 8, "sim_width": 32, "stem_chs": 8, "depth": 2,
    "pool_stride": 32,
}

# A micro SeaFormer: the paper's layout shifted one octave finer so that its SEA stages have rows and columns to
# squeeze at 64x64: stem, MobileNetV2 stages to 1/4, 1/8 (the head's detail map), 1/16 and 1/32, one SEA block
# after each of the last two (Tiny: stages to 1/64, two blocks each after 1/32 and 1/64), widths 8-16-24-32-48,
# 2 heads of key_dim 8, LightHead fusion widths 24 and 32. The SEA blocks work on 4x4 and 2x2 maps.
_MICRO_SEAFORMER = {
    "family": "seaformer", "name": "micro", "stem_channels": 8,
    "stages": [[[3, 1, 8, 1], [3, 4, 16, 2]], [[5, 3, 24, 2]], [[3, 3, 32, 2]], [[5, 4, 48, 2]]],
    "embed_dims": [32, 48], "depths": [1, 1], "key_dims": [8, 8], "num_heads": 2, "head_embed_dims": [24, 32],
}


# A micro PP-MobileSeg: StrideFormer's layout (stem, MobileNetV3 stages to 1/4, 1/8 (the detail map), 1/16 and
# 1/32, one strided SEA block after each of the last two; Tiny: two each) with widths 8-16-24-32-48 (Tiny
# 16-32-64-128 after the stem), 2 heads of key_dim 8 (Tiny 4 heads, key_dims 16 and 24), AAM width 32 (Tiny 256) or
# SeaFormer's fusion chain with widths 24 and 32. The SEA blocks attend over 2x2 and 1x1 maps (strided attention);
# AAM gives logits at 1/16 (4x4 at 64x64), SeaFormer's fusion at 1/8 (8x8), as in the paper.
_MICRO_PP_MOBILESEG = {
    "family": "pp_mobileseg", "name": "micro", "stem_channels": 8,
    "stages": [[[3, 16, 8, False, "relu", 1], [3, 32, 16, False, "relu", 2]], [[3, 48, 24, False, "relu", 2]],
               [[5, 72, 32, True, "hardswish", 2]], [[3, 128, 48, True, "hardswish", 2]]],
    "embed_dims": [32, 48], "depths": [1, 1], "num_heads": 2, "key_dims": [8, 8], "fusion_channels": 32,
    "sea_fusion_dims": [24, 32],
}


def _pp_mobileseg(**changes) -> dict:
    return {**_MICRO_PP_MOBILESEG, **changes}


def _topformer(**changes) -> dict:
    return {**_MICRO_TOPFORMER, **changes}


def _seaformer(**changes) -> dict:
    return {**_MICRO_SEAFORMER, **changes}


def _segmentation_recipe(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, lr=5e-3, weight_decay=0.01, warmup_steps=40, task="segmentation",
                       eval_every=200, eval_batch_size=200, log_every=10)


@experiment
def topformer_ablations() -> Experiment:
    """TopFormer's ablation study in miniature (Zhang et al., CVPR 2022, arXiv 2204.05525, §4.1 "Ablation study" on
    ADE20K; its tables' numbers were not found in any text source available to this book, so only the directions
    its text states are tested): (a) the token pyramid stacked as the extractor's input beats the last token alone
    (widened by a 1x1 conv to the same channels); (b) the extractor's multi-head self-attention helps -- removing it
    and adding FFNs in its place loses mIoU; (c) the Semantic Injection Module with both branches (SigmoidAttn and
    SemInfo) beats either alone; (d) the paper's head (sum of the injected maps) beats the Concat head (and the Sum
    head, which is injection with SemInfo only -- row (c)).

    Setting: the micro TopFormer (``_MICRO_TOPFORMER``: widths 16-24-32-48, 2 extractor blocks, M = 32, pooling
    stride 32) on SceneWorld at 64x64 (:class:`lessons.data.SceneWorld`), 800 steps of batch 16, AdamW lr 5e-3,
    test mIoU on 400 scenes every 200 steps; at the end also per-class IoU, ``context_iou`` (the mean IoU of the
    two disk classes, which only the far-away beacon separates) and ``detail_iou`` (wires and dots). Baseline
    ``paper``: the official layout (all four tokens stacked, both injection branches, the summing head).

    Pilot, before these hypotheses (the baseline, seed 0, 300 test scenes): at lr 2e-3 and 96x96 it still predicted
    only background after 400 steps; at lr 5e-3 and 64x64, 600 steps reached mIoU 0.49 with IoU 0.75 on the beacon,
    0.64 and 0.60 on the two disk classes (so the cue was used: guessing gives at most about 1/3) and 0 on wires and
    dots. So the recipe is lr 5e-3 at 64x64, and 800 steps.

    Hypotheses:
    1. Every variant learns the beacon and uses it: context IoU well above 1/3. At 64x64 the MobileNetV2 pyramid's
       strided convolutions alone reach across the image by 1/32, and the extractor's 2x2 grid lets any token
       mixer (attention, or the FFN's depthwise 3x3 conv) see every token, so no variant lacks global context here.
    2. Hence the extractor with and without attention end alike (the paper's direction (b) is not expected).
    3. The pyramid and the last token alone end alike: at this size the 1/32 token already summarises the scene.
    4. Injection: both branches at least as good as either alone; SemInfo alone (an additive signal) close to both;
       SigmoidAttn alone (a gate in [0, 1] that can only scale local features) the weakest on the context classes.
    5. The paper's head and the Concat head end alike.
    6. Wires and dots stay near 0 IoU for every variant: every head predicts at 1/8 (8x8 logits at 64x64) and
       upsamples, so 1-3 pixel structures are lost whatever the extractor does -- the fine-detail cost of these
       heads, the same for all rows.
    """
    variants = {
        "paper": _topformer(),
        "last_token": _topformer(extractor_input="last"),
        "no_attention": _topformer(extractor_attention=False),
        "sigmoid_attn_only": _topformer(injection="sigmoid_attn"),
        "sem_info_only": _topformer(injection="sem_info"),
        "concat_head": _topformer(head="concat"),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(800))


@experiment
def seaformer_ablations() -> Experiment:
    """SeaFormer's SEA block ablation in miniature (Wan et al., ICLR 2023, arXiv 2301.13156, §4.3 ablation of the
    SEA attention's components on ADE20K: the squeeze-axial attention and the detail enhancement each help, and the
    two together are best; the table's numbers were not found in any text source available to this book, so only
    that direction is tested).

    Setting: the micro SeaFormer (``_MICRO_SEAFORMER``: SEA blocks on 4x4 and 2x2 maps) on SceneWorld at 64x64, the
    world and recipe of ``topformer_ablations`` but 1,000 steps (see the pilot). Variants: the full SEA block;
    without the detail-enhancement branch (the block returns the squeeze-axial context alone); without the
    squeeze-axial branch (the block returns the detail branch alone: depthwise 3x3 + pointwise convs, no gate).

    Pilot, before these hypotheses (full SEA block, seed 0, lr 5e-3, 600 steps, 300 test scenes): mIoU 0.34, beacon
    IoU 0.76, but IoU 0.36 and 0.00 on the two disk classes -- every disk called "disk in a red scene": after 600
    steps the cue was not yet used (TopFormer's micro model used it by then). Hence 1,000 steps here.

    Hypotheses:
    1. The full block ends with a higher mIoU than without squeeze-axial attention: in the full block the
       squeeze-axial branch is the only part of the SEA block that mixes tokens across the map.
       Caveat written down before the runs: at 2x2 the detail branch's depthwise 3x3 conv also sees the whole map,
       and the pyramid's strided convolutions reach across 64 pixels, so the difference may be small.
    2. The full block ends with a higher mIoU than without detail enhancement, by less than hypothesis 1's gap
       (the detail branch adds local features the MobileNetV2 stages already have).
    3. Context IoU tells the variants apart more than mIoU; wires and dots stay near 0 IoU for all three (the
       LightHead predicts at 1/8).
    """
    variants = {
        "sea_full": _seaformer(),
        "no_detail": _seaformer(sea_detail=False),
        "no_axial": _seaformer(sea_axial=False),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(1000))


@experiment
def pp_mobileseg_ablations() -> Experiment:
    """PP-MobileSeg's AAM ablation in miniature (Tang et al. 2023, arXiv 2304.05152, ablation table, Base on ADE20K,
    as PaddleSeg's configs/pp_mobileseg/README.md repeats it: "+StrideFormer" (SeaFormer's fusion) 40.98 mIoU ->
    "+AAM" 41.57, +0.59): the Aggregated Attention Module fuses the detail map and both SEA stages better than
    SeaFormer's fusion chain.

    Setting: the micro PP-MobileSeg (``_MICRO_PP_MOBILESEG``: MobileNetV3 widths 8-16-24-32-48, one strided SEA
    block after the 1/16 and 1/32 stages) on SceneWorld at 64x64, the world and recipe of ``seaformer_ablations``
    but 1,500 steps (see the pilot). Variants: ``aam`` (the paper's AAM, width 32, logits at 1/16 as in Tiny) and
    ``sea_fusion`` (SeaFormer's fusion chain, widths 24 and 32, logits at 1/8: the ablation's row before AAM).
    The difference is the fusion module and, with it, the logits' stride, as in the paper's two rows.

    Pilot, before these hypotheses (``aam``, seed 0, 600 steps, 400 test scenes, 38 s on one loaded core): mIoU 0.20,
    background 0.88, beacon 0.17, the two disk classes 0.08 and 0.10 (the cue not yet used), wires and dots 0.
    Hence 1,500 steps (what fits the time left on one core: about 95 s a run).

    Hypotheses:
    1. The paper's direction (AAM above SeaFormer's fusion) is NOT expected here: AAM predicts on a 4x4 grid at
       64x64, SeaFormer's fusion on 8x8, and the scenes' disks and beacon are a few 1/16 cells wide, so AAM loses
       more boundary pixels; ``sea_fusion`` ends with the higher mean mIoU.
    2. Context IoU (the two disk classes) is not clearly better with AAM either: both fusions add the 1/32 SEA
       stage, which at 64x64 sees the whole scene.
    3. Wires and dots stay near 0 IoU for both (logits at 1/8 or 1/16).
    """
    variants = {
        "aam": _pp_mobileseg(),
        "sea_fusion": _pp_mobileseg(fusion="sea_fusion"),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(1500))


# A micro HRViT: the paper's layout (two stride-2 convs to a 1/4 stem; modules of a fusion layer then a multi-branch
# stage, adding a branch at 1/8, 1/16 and 1/32; cross-shaped stripe attention with the shared key-value, its
# parallel conv, the diversity-enhanced shortcut and MixCFN; the SegFormer head on all four branches, logits at 1/4
# upsampled to the input) with branch widths 16-32-48-64 (b1: 32-64-128-256), head_dim 8 (b1 32), MixCFN ratio 2
# (b1 4), stem 16 channels (b1 64), 5 modules of one block per branch (b1: 6 modules, up to 6 blocks on the 1/16
# branch), stripe widths 1-2-4-2 (b1 1-2-7-7: at 64x64 the branches are 16x16, 8x8, 4x4 and 2x2, so a 7-wide stripe
# would be padding; 4 and 2 span the whole map there), head width 32 (b1 256).
_MICRO_HRVIT = {
    "family": "hrvit", "name": "micro", "channels": [16, 32, 48, 64],
    "depths": [[1], [1, 1], [1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], "head_dim": 8, "mlp_ratios": [2, 2, 2, 2],
    "windows": [1, 2, 4, 2], "stem_channels": 16, "head_channels": 32,
}


def _hrvit(**changes) -> dict:
    return {**_MICRO_HRVIT, **changes}


@experiment
def hrvit_ablations() -> Experiment:
    """HRViT's ablation study in miniature (Gu et al., CVPR 2022, arXiv 2111.01236, §4 ablation study on HRViT-b1,
    its ablation table: ImageNet top-1 and Cityscapes mIoU). The paper's rows tested here: independent key and value
    instead of the shared key-value keep ImageNet accuracy but lower Cityscapes mIoU (number not given in the text);
    a plain MLP instead of MixCFN costs 0.66% top-1 and 0.11 mIoU; sparse instead of dense fusion costs 0.57% top-1
    and 0.37 mIoU. All four rows are run (none was left out: the set fits the budget at 600 steps).

    Setting: the micro HRViT (``_MICRO_HRVIT``: widths 16-32-48-64, 5 modules of one block per branch, stripes
    1-2-4-2, SegFormer head of width 32 predicting at 1/4) on SceneWorld at 64x64, the world and recipe of
    ``topformer_ablations`` but 600 steps (see the pilot). Variants: ``paper`` (shared key-value, MixCFN, dense
    fusion), ``independent_kv`` (a key projection of its own, ``shared_kv=False``), ``plain_mlp``
    (``mix_cfn=False``: Linear-GELU-Linear, no depthwise 3x3/5x5), ``sparse_fusion`` (``dense_fusion=False``: each
    branch exchanges only with its neighbouring resolutions; our reading, the text does not spell it out). Besides
    mIoU, per-class IoU, ``context_iou`` (the two disk classes) and ``detail_iou`` (wire and dot), the thin classes.

    Pilot, before these hypotheses (``paper``, seed 0, 600 steps, 400 test scenes; 96 s on one core while another
    helper trained on the other): mIoU 0.38, 0.44, 0.45 at steps 200, 400, 600 (still rising, slowly); beacon IoU
    0.92; disk IoU 0.29 and 0.32 (at or below the 1/3 of guessing: the beacon's rule not yet used); wire IoU 0.24
    and dot IoU 0.00. 600 steps keep the 12 runs within about 20 minutes of one core, so 600 it is.

    Hypotheses:
    1. Context: no variant reliably uses the far-away beacon within 600 steps (disk IoU near 1/3 or below for most
       runs, as in the pilot), so the context classes will not separate the variants.
    2. Fine detail: wire IoU well above 0 for every variant (the pilot's 0.24, where TopFormer's and SeaFormer's
       micro models, whose heads predict at 1/8, stayed near 0): the 1/4 branch and the head at 1/4 keep 1-2 px
       wires; 2-3 px dots stay near 0 for all (too few pixels per scene to be learned this soon). This compares
       across experiments (other models, other step counts), so it is a hint about the 1/4 branch, not an ablation
       of it.
    3. Shared against independent key-value: alike within two standard errors (the paper's mIoU loss has no number;
       the micro model is not short of parameters for 600 steps).
    4. MixCFN against a plain MLP: MixCFN ends higher in mIoU, most visibly in wire IoU -- on the 1/4 branch the
       attention's stripes are one pixel wide, and MixCFN's depthwise 3x3/5x5 convs are the block's local spatial
       mixing besides the parallel conv path. The paper's gap is small (0.11 mIoU), ours may be too.
    5. Dense against sparse fusion: alike (the micro model has five fusion layers and only the 1/4-1/16, 1/4-1/32
       and 1/8-1/32 paths go; the paper's loss is 0.37 mIoU).
    """
    variants = {
        "paper": _hrvit(),
        "independent_kv": _hrvit(shared_kv=False),
        "plain_mlp": _hrvit(mix_cfn=False),
        "sparse_fusion": _hrvit(dense_fusion=False),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(600))


# Issue 13, "Learning in miniature (2)": two questions the first round left open (hypotheses written before any run
# of these sets; the first round's results were known when they were written, and are cited where they inform them).


@experiment
def hrvit_high_resolution() -> Experiment:
    """What HRViT's highest-resolution (1/4) branch does for thin structures, in miniature (Gu et al., CVPR 2022,
    arXiv 2111.01236, abstract and introduction: ViTs designed for classification "generate single-scale
    low-resolution representations, which makes dense prediction tasks such as semantic segmentation challenging";
    HRViT integrates "high-resolution multi-branch architectures" to learn "spatially-precise" representations,
    keeping a 1/4 branch from the stem to the head beside the coarser ones, as HRNet does). The paper never removes
    that branch -- every HRViT has it -- so this is this book's ablation of the paper's central argument, not a
    row of its ablation table.

    Setting: the micro HRViT and the world and recipe of ``hrvit_ablations`` (SceneWorld at 64x64, 600 steps of
    batch 16, AdamW lr 5e-3, 400 test scenes). Variants: ``paper`` (``_MICRO_HRVIT`` as it is: branches at 1/4,
    1/8, 1/16, 1/32; SegFormer head on all four, logits at 1/4, i.e. 16x16 at 64x64; 256,276 parameters) and
    ``no_high_res_branch`` (``high_res_branch=False``: the stem still goes to 1/4, then its map is taken straight
    down to the 1/8 branch by the fusion layer's downward path; every module keeps only its 1/8, 1/16 and 1/32
    branches -- the first module, which holds only the 1/4 branch, goes, and with it the 1/4 branch's 5 blocks
    and its fusion paths; the head reads three maps and predicts at 1/8, 8x8 logits upsampled to 64x64; 222,572
    parameters, 13% fewer). The two differences cannot be separated here, as in the paper's design: without the
    1/4 branch there is no 1/4 map for the head to predict on. Besides mIoU, per-class IoU, ``context_iou`` (the
    two disk classes) and ``detail_iou`` (wire and dot).

    Not piloted: the ``paper`` variant is ``hrvit_ablations``' ``paper`` (mIoU 44.9 ± 0.4, wire IoU 20.9 ± 2.3,
    dot IoU 1.7 ± 1.8, beacon IoU 93.3 ± 1.5, disk IoU 29.1 ± 1.0 over seeds 0-2), trained again here under the
    same seeds so that the comparison is within one experiment. The models that predict at 1/8 in the other
    experiments reached wire IoU 0.0-0.8% (TopFormer, SeaFormer, PP-MobileSeg with SeaFormer's fusion).

    Hypotheses:
    1. Wires: the paper variant's wire IoU stays well above 0 (about 20%, as in ``hrvit_ablations``); without the
       1/4 branch it falls to near 0 (below 5% in every seed), like TopFormer's and SeaFormer's micro models at
       1/8: an 8x8 grid of logits, bilinearly upsampled, cannot place a 1-2 px wire.
    2. Dots (2-3 px): near 0 for both (the paper variant's 1.7 ± 1.8 was already near 0 after 600 steps).
    3. mIoU: the paper variant is higher by more than two standard errors, by at least the wires' share (a wire
       IoU drop of ~20 points is ~3.5 points of a 6-class mean) and by some more from coarser boundaries of the
       beacon and the disks at 1/8.
    4. Context: neither variant reliably uses the far-away beacon within 600 steps (disk IoU near 1/3 or below),
       so context IoU does not separate them; the beacon itself (large, bright) stays above 85% IoU for both.
    5. Cost: without the 1/4 branch a training step is faster (its 16x16 maps are the largest the model has).
    """
    variants = {
        "paper": _hrvit(),
        "no_high_res_branch": _hrvit(high_res_branch=False),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(600))


@experiment
def pp_mobileseg_aam_x8() -> Experiment:
    """PP-MobileSeg's AAM ablation in miniature, the fairer comparison: AAM at 1/8 against SeaFormer's fusion (Tang et
    al. 2023, arXiv 2304.05152, ablation table, Base on ADE20K, as PaddleSeg's configs/pp_mobileseg/README.md
    repeats it: "+StrideFormer" (SeaFormer's fusion) 40.98 mIoU -> "+AAM" 41.57, +0.59; the Base model of that row
    is configured with ``inj_type: AAMSx8``, AAM's 1/8 form, in pp_mobileseg_base_ade20k_512x512_80k.yml).

    Why a second comparison. ``pp_mobileseg_ablations`` put AAM (``inj_type: AAM``, as in Tiny) at 1/16 against
    SeaFormer's fusion at 1/8: AAM 27.2 ± 0.1 mIoU, SeaFormer's fusion 53.3 ± 0.5, and no AAM run learned the
    beacon's rule -- a comparison of the logits' stride as much as of the fusion. Here both fuse and predict at 1/8:
    ``aam_x8`` (``fusion="aam_x8"``, :class:`lessons.pp_mobileseg.AggregatedAttentionX8`: out = a2 * a3 * e1 + e3,
    width 32; 87,056 parameters) against ``sea_fusion`` (the same variant as ``pp_mobileseg_ablations``: two
    sigmoid-gated fusion blocks, widths 24 and 32; 85,808 parameters). Same micro model (``_MICRO_PP_MOBILESEG``),
    world and recipe (SceneWorld at 64x64, 1,500 steps). Not piloted: the recipe is fixed by the first comparison.

    Hypotheses:
    1. With the stride equal, AAMSx8 learns the beacon and the context rule as SeaFormer's fusion did (disk IoU
       well above 1/3 in most seeds): its e3 term adds the 1/32 SEA stage, which sees the whole 64x64 scene,
       additively, where SeaFormer's fusion only gates the detail map with it.
    2. mIoU: the two fusions end alike within two standard errors -- the paper's +0.59 on ADE20K is small, and
       seed spread here is about half a point; so the paper's direction is not expected to be shown by the 2-SE
       rule, and the 26-point gap of ``pp_mobileseg_ablations`` disappears (it was the stride).
    3. Wires and dots stay near 0 IoU for both (logits at 1/8).
    """
    variants = {
        "aam_x8": _pp_mobileseg(fusion="aam_x8"),
        "sea_fusion": _pp_mobileseg(fusion="sea_fusion"),
    }
    return Experiment(dataset=_SCENES, variants=variants, recipe=_segmentation_recipe(1500))


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lessons.experiments", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments, their variants and whether results exist")
    run = sub.add_parser("run", help="run (or resume) an experiment")
    run.add_argument("name")
    run.add_argument("--seeds", type=int, nargs="+", default=None)
    run.add_argument("--device", default="cpu")
    run.add_argument("--steps", type=int, default=None, 
                     help="shorter runs (partial: written under _build/, git-ignored)")
    run.add_argument("--variants", nargs="+", default=None)
    run.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, exp in EXPERIMENTS.items():
            path = results_path(name)
            state = ("stale" if is_stale(name) else "results") if path.exists() else "not run"
            first = exp.hypothesis.splitlines()[0]
            print(f"{name} [{state}] {len(exp.variants)} variants x {len(exp.seeds)} seeds, "
                  f"{exp.recipe.steps} steps: {first}")
            print(f"    variants: {', '.join(exp.variants)}")
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    results = run_experiment(args.name, args.seeds, args.device, args.steps, args.out, variants=args.variants)
    for variant, runs in results["runs"].items():
        for seed, run in runs.items():
            print(variant, seed, {k: round(v, 4) for k, v in run["metrics"].items()}, f"{run['wall_s']} s")
    print("written:", results["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
