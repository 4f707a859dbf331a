"""One trainer for the whole book: a small loop for classification and segmentation, on one CPU core or many GPUs.

What the loop does, step by step (``train``):

1. build batches from a *batch sampler* -- a ``DistributedSampler`` cut into batches, or MobileViT's
   :class:`~lessons.sampler.MultiScaleBatchSampler` (a new resolution and batch size each step) -- and fetch them
   with ``dataset.batch(keys)`` (the data sets of :mod:`lessons.data` render a whole batch at once);
2. forward, cross-entropy (optional label smoothing; ``ignore_index`` for segmentation, where ``model(x)`` gives
   logits at the input size), backward, AdamW step with a learning rate from linear warm-up + cosine decay;
3. every ``eval_every`` steps: top-1 (classification) or pixel accuracy and mIoU from a confusion matrix
   (segmentation) on the test set; the learning curve is kept in ``history``;
4. optionally save a checkpoint; :func:`train` with ``resume=True`` continues from it and ends with the same weights as
   a run that never stopped (the data order is a function of the step, and the RNG state is saved).

Distributed. The same file runs unchanged under ``torchrun --nproc_per_node=N``: :func:`setup_distributed` reads the
launcher's environment, joins the process group (gloo on CPU, NCCL on GPU) and the model is wrapped in
``DistributedDataParallel``. ``TrainConfig.batch_size`` is the *global* batch: each of the R ranks gets
``batch_size / R`` images per step, so R processes and one process see the same images per step and (up to float
summation order) reach the same weights. BatchNorm statistics are per rank unless ``sync_bn=True``.

Determinism on CPU: the model's initial weights come from the caller (seed before building it); the data order from
``seed`` and the step; dropout / drop-path from ``torch.manual_seed(seed)`` set here (and restored on resume).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from .sampler import MultiScaleBatchSampler

__all__ = [
    "TrainConfig", "TrainResult", "train", "evaluate", "lr_at", "setup_distributed", "confusion_matrix",
    "segmentation_metrics", "resolve_device",
]


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. ``batch_size`` is global (split over ranks); ``steps`` counts optimizer steps.

    ``multi_scale``: None for one resolution, or the sizes (ints) MobileViT's sampler draws from, with the batch
    anchored at ``base_resolution`` (the data set's size if None): b_t = batch * base^2 / size^2 (never below batch).
    """

    steps: int = 100
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    min_lr: float = 1e-5
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    task: str = "classification"  # or "segmentation"
    ignore_index: int = 255
    eval_every: int = 0  # 0: only at the end
    eval_batch_size: int = 256
    eval_limit: int | None = None  # evaluate on the first N test images only (smoke runs)
    log_every: int = 1
    multi_scale: tuple[int, ...] | None = None
    base_resolution: int | None = None
    sync_bn: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {self.task!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.multi_scale is not None:
            object.__setattr__(self, "multi_scale", tuple(int(s) for s in self.multi_scale))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics, the learning curve and the wall time (of this process)."""

    metrics: dict[str, float]
    history: dict[str, list] = field(default_factory=dict)
    wall_s: float = 0.0
    steps: int = 0


# --------------------------------------------------------------------------------------------------------------------
# Devices and processes
# --------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU if CUDA is available, else the CPU; ``"cuda"`` means ``cuda:LOCAL_RANK`` under torchrun."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); return ``(rank, world_size)``.

    gloo on CPU, NCCL on GPU. Without torchrun (or with one process) nothing is started and ``(0, 1)`` is returned.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------------------------


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``lr``, then cosine down to ``min_lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only; none on biases, norms, layer scales, embeddings (1-D)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("pos_embed") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------------


def _batch_sampler(dataset, config: TrainConfig, rank: int, world: int):
    """The batch sampler of one rank: ``DistributedSampler`` cut into batches, or the multi-scale sampler."""
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes {world}")
    per_rank = config.batch_size // world
    if config.multi_scale is not None:
        base = config.base_resolution or dataset.size[0]
        return MultiScaleBatchSampler(
            dataset, per_rank, base_resolution=base, resolutions=list(config.multi_scale), num_replicas=world,
            rank=rank, seed=config.seed,
        )
    return _FixedBatches(DistributedSampler(dataset, num_replicas=world, rank=rank, seed=config.seed), per_rank)


class _FixedBatches:
    """``DistributedSampler`` cut into batches of ``batch_size`` (short last batch dropped, so every step is full)."""

    def __init__(self, sampler: DistributedSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        if len(sampler) < batch_size:
            raise ValueError(f"the data set gives each rank {len(sampler)} images, fewer than one batch ({batch_size})")

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        indices = list(self.sampler)
        for i in range(len(self)):
            yield indices[i * self.batch_size:(i + 1) * self.batch_size]


def _batches(batch_sampler, start_step: int = 0):
    """Endless batches of keys, epoch after epoch; the first ``start_step`` are skipped without fetching any data."""
    epoch, step = 0, 0
    while True:
        batch_sampler.set_epoch(epoch)
        for keys in batch_sampler:
            if step >= start_step:
                yield keys
            step += 1
        epoch += 1


def _fetch(dataset, keys) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "batch"):
        return dataset.batch(keys)
    items = [dataset[k] for k in keys]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def _normalise(images: torch.Tensor, dataset) -> torch.Tensor:
    mean = torch.tensor(getattr(dataset, "mean", (0.0,) * images.shape[1]), device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(getattr(dataset, "std", (1.0,) * images.shape[1]), device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
                     ) -> torch.Tensor:
    """``[num_classes, num_classes]`` counts, rows = true class, columns = predicted; ``ignore_index`` dropped."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy and mIoU (mean over the classes that occur in targets or predictions) of a confusion matrix."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    total = confusion.sum()
    return {
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "miou": float((tp[present] / union[present]).mean()) if present.any() else float("nan"),
    }


@torch.no_grad()
def evaluate(model: nn.Module, dataset, config: TrainConfig, device: torch.device, num_classes: int | None = None,
             rank: int = 0, world: int = 1, size: int | None = None) -> dict[str, float]:
    """Top-1 and loss (classification) or pixel accuracy and mIoU (segmentation) on ``dataset``.

    ``size``: evaluate at ``size x size`` instead of the data set's own size. Under DDP each rank evaluates every
    R-th image (no padding) and the counts are summed over ranks.
    """
    model = _unwrap(model)  # no DDP forward here: ranks may hold one batch more or less than each other
    model.eval()
    n = len(dataset) if config.eval_limit is None else min(config.eval_limit, len(dataset))
    mine = [i if size is None else (i, size, size) for i in range(rank, n, world)]
    num_classes = num_classes or dataset.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), config.eval_batch_size):
        images, targets = _fetch(dataset, mine[start:start + config.eval_batch_size])
        images, targets = _normalise(images.to(device), dataset), targets.to(device)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, targets, ignore_index=config.ignore_index, reduction="sum").double()
        confusion += confusion_matrix(logits.argmax(1), targets, num_classes, config.ignore_index)
    if world > 1:
        dist.all_reduce(confusion)
        dist.all_reduce(loss_sum)
    model.train()
    counted = confusion.sum().item()
    metrics = {"loss": float(loss_sum / max(counted, 1))}
    if config.task == "classification":
        metrics["top1"] = float(confusion.diag().sum() / max(counted, 1))
    else:
        metrics.update(segmentation_metrics(confusion.cpu()))
    return metrics


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------


def _save(path: Path, model, optimizer, step: int, history: dict, config: TrainConfig) -> None:
    state = {
        "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "history": history, "config": config.to_dict(), "rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    train_set,
    test_set,
    config: TrainConfig,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` for ``config.steps`` steps; return final test metrics and the learning curve.

    ``checkpoint``: a file to save to every ``checkpoint_every`` steps and at the end (rank 0 writes); with
    ``resume=True`` training continues from it if it exists. ``stop_after``: stop (after saving) once that many steps
    are done -- a deliberate interruption, for tests. ``on_step(step, record)`` sees every step's record (rank-local).
    ``history``: ``step``, ``loss``, ``lr``, ``size`` (h, w, per-rank batch) per logged step, and ``eval`` records.
    """
    device = resolve_device(device)
    rank, world = setup_distributed(device)
    torch.manual_seed(config.seed)
    model = model.to(device)
    if config.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.999))
    history: dict[str, list] = {"step": [], "loss": [], "lr": [], "size": [], "eval": []}
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if resume and path is not None and path.exists():
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        torch.set_rng_state(state["rng"])
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    num_classes = getattr(test_set, "num_classes", None) or getattr(train_set, "num_classes")
    batches = _batches(_batch_sampler(train_set, config, rank, world), start)
    last = config.steps if stop_after is None else min(config.steps, stop_after)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.steps, initial=start, desc="train", leave=False, dynamic_ncols=True)
    began = time.perf_counter()
    model.train()
    for step in range(start, last):
        keys = next(batches)
        images, targets = _fetch(train_set, keys)
        images, targets = _normalise(images.to(device), train_set), targets.to(device)
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing,
                               ignore_index=config.ignore_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        record = {"step": step + 1, "loss": loss.item(), "lr": lr, "size": [*images.shape[-2:], images.shape[0]]}
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            for key in ("step", "loss", "lr", "size"):
                history[key].append(record[key])
        if on_step is not None:
            on_step(step + 1, record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
        done = step + 1
        if config.eval_every and done % config.eval_every == 0 and done < config.steps:
            history["eval"].append({"step": done, **evaluate(model, test_set, config, device, num_classes, rank,
                                                             world)})
        if path is not None and rank == 0 and checkpoint_every and done % checkpoint_every == 0:
            _save(path, model, optimizer, done, history, config)
    if bar is not None:
        bar.close()
    done = max(start, last)
    if path is not None and rank == 0 and done > start:
        _save(path, model, optimizer, done, history, config)
    if world > 1:
        dist.barrier()
    wall = time.perf_counter() - began
    if done < config.steps:  # interrupted on purpose: no final evaluation
        return TrainResult({}, history, wall, done)
    metrics = evaluate(model, test_set, config, device, num_classes, rank, world)
    history["eval"].append({"step": done, **metrics})
    return TrainResult(metrics, history, wall, done)

