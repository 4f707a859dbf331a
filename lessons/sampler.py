"""The MobileViT multi-scale sampler (Mehta & Rastegari, ICLR 2022, §3.2 and Fig. 5).

The paper trains on a set of resolutions S = {(H_1, W_1), ..., (H_n, W_n)} and gives each iteration t one
resolution (H_t, W_t) drawn at random, with a batch size that keeps the number of pixels per batch about fixed:

    b_t = H_n * W_n * b / (H_t * W_t)                                              (paper §3.2)

Small images get big batches, so an epoch needs fewer optimizer steps than a fixed-size sampler (Fig. 5).

What the official code does (apple/ml-cvnets, tag ``cvnets-v0.1``, ``data/sampler/utils.py::_image_batch_pairs``
and ``data/sampler/variable_batch_sampler.py``; yaml ``config/classification/mobilevit_*.yaml``, ``sampler.vbs``):

* sizes: ``np.linspace(min, max, n_scales)`` plus the base crop, each through ``make_divisible(., 32)``:
  160, 200, 240, 280, 320 (+256) -> **{160, 192, 256, 288, 320}**, the paper's S.
* batch: the anchor is the *base* crop 256 (not the largest size 320 of the paper's formula), and
  ``b_t = max(b, int(round(256 * 256 * b / (h * w), 2)))`` with b = ``train_batch_size0`` = 128 per GPU.
  Anchored at 256, the raw formula would *shrink* the batch at 288 and 320 (128 -> 101 and 81); the ``max`` clamps it
  so no resolution trains on fewer than b images. The paper's own reading (b belongs to the largest size) never
  shrinks either; cvnets v0.1 keeps b for every size >= 256. Later cvnets (v0.2+) write ``max(1, ...)`` and do let
  288/320 shrink -- this module follows v0.1, the code released with the paper.
* rounding: ``int(round(x, 2))`` rounds to two decimals and then truncates, so it is a floor for the paper's sizes:
  160 -> int(2.56 * 128 = 327.68) = 327, not 328.
* v0.1 then makes b_t divisible by the GPU count (``make_divisible(b_t, n_gpus)``), which matters for
  ``DataParallel`` where one batch is split across GPUs. Here the batch is per rank (DDP), so that step is off
  unless you pass ``batch_multiple_of`` (8 reproduces v0.1 on 8 GPUs: 160 -> 328, 192 -> 224).
* one (h, w, b_t) is drawn uniformly at random for every step, the same on every rank (cvnets seeds Python's
  ``random`` with the epoch on each rank).

This module is our own implementation of that rule with a ``DistributedSampler``-shaped interface.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .layers import make_divisible  # the MobileNet rounding rule; cvnets-v0.1 utils/math_utils.py is the same

__all__ = [
    "MultiScaleBatchSampler",
    "batch_size_for",
    "multi_scale_resolutions",
    "multi_scale_schedule",
    "standard_steps_per_epoch",
]

Resolution = tuple[int, int]


# ----------------------------------------------------------------------------------------------------------------
# Validation helpers: every public entry point checks its input and says what is allowed.
# ----------------------------------------------------------------------------------------------------------------
def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``; raise TypeError/ValueError that names the argument."""
    # bool is a subclass of int; True as a batch size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def _as_resolution(name: str, value: object) -> Resolution:
    """Normalise a size given as ``s`` (square) or ``(h, w)`` to ``(h, w)`` of positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return (_check_int(f"{name} height", value[0], 1), _check_int(f"{name} width", value[1], 1))
    side = _check_int(name, value, 1)
    return (side, side)


# ----------------------------------------------------------------------------------------------------------------
# The schedule: which sizes, and which batch at each size.
# ----------------------------------------------------------------------------------------------------------------
def multi_scale_resolutions(
    base_resolution: int = 256,
    min_resolution: int = 160,
    max_resolution: int = 320,
    n_scales: int = 5,
    divisor: int = 32,
) -> list[int]:
    """The sorted set of training sizes (one side) used by the multi-scale sampler (paper §3.2, set S).

    cvnets-v0.1 ``_image_batch_pairs``: ``n_scales`` evenly spaced sizes from ``min_resolution`` to
    ``max_resolution``, plus the base crop, each rounded by ``make_divisible(., divisor)`` and de-duplicated.
    The divisor 32 (yaml ``sampler.vbs.check_scale``) is the network's total stride, so every size gives an integer
    feature map at the last stage. Defaults are the paper's ImageNet setting and give [160, 192, 256, 288, 320].
    """
    base = _check_int("base_resolution", base_resolution, 1)
    low = _check_int("min_resolution", min_resolution, 1)
    high = _check_int("max_resolution", max_resolution, 1)
    n = _check_int("n_scales", n_scales, 1)
    div = _check_int("divisor", divisor, 1)
    if low > high:
        raise ValueError(f"min_resolution must be <= max_resolution, got min={low} > max={high}")
    # The same float grid as cvnets (numpy), so make_divisible sees exactly the values it sees there.
    sizes = [float(s) for s in np.linspace(low, high, n)] + [base]
    return sorted({make_divisible(s, div) for s in sizes})


def batch_size_for(
    resolution: int | Resolution,
    base_resolution: int | Resolution,
    base_batch: int,
    multiple_of: int = 1,
) -> int:
    """Per-GPU batch size b_t at ``resolution`` (paper §3.2, b_t = H_n W_n b / (H_t W_t), as cvnets-v0.1 computes it).

    ``b_t = max(b, int(round(H_base * W_base * b / (H_t * W_t), 2)))``, then ``make_divisible(b_t, multiple_of)``.

    * The anchor is the base crop (256 in cvnets), so sizes above it would get fewer than b images under the raw
      formula; the ``max`` keeps every batch at least b (cvnets-v0.1; v0.2+ clamp at 1 instead).
    * ``int(round(x, 2))`` truncates after rounding to two decimals: 160 px with b = 128 gives
      int(327.68) = 327 images.
    * ``multiple_of`` = GPU count reproduces v0.1's ``make_divisible(_bsz, n_gpus)``; 1 leaves b_t as is.
    """
    height, width = _as_resolution("resolution", resolution)
    base_h, base_w = _as_resolution("base_resolution", base_resolution)
    b = _check_int("base_batch", base_batch, 1)
    multiple = _check_int("multiple_of", multiple_of, 1)
    pixels_per_batch = base_h * base_w * b  # the quantity the sampler keeps (about) constant
    batch = max(b, int(round(pixels_per_batch / (height * width), 2)))
    return make_divisible(batch, multiple) if multiple > 1 else batch


def multi_scale_schedule(
    base_batch: int,
    base_resolution: int = 256,
    min_resolution: int = 160,
    max_resolution: int = 320,
    n_scales: int = 5,
    divisor: int = 32,
    multiple_of: int = 1,
) -> list[tuple[int, int, int]]:
    """The (height, width, batch) triples a step is drawn from: cvnets' ``img_batch_tuples``, square sizes.

    With the paper's setting and b = 128 per GPU: [(160, 160, 327), (192, 192, 227), (256, 256, 128),
    (288, 288, 128), (320, 320, 128)].
    """
    sizes = multi_scale_resolutions(base_resolution, min_resolution, max_resolution, n_scales, divisor)
    return [(s, s, batch_size_for(s, base_resolution, base_batch, multiple_of)) for s in sizes]


def standard_steps_per_epoch(
    n_samples: int, batch_size: int, num_replicas: int = 1, drop_last: bool = False
) -> int:
    """Optimizer steps per epoch of the standard sampler (paper Fig. 5a: ``DistributedSampler`` + fixed batch).

    Each rank gets ceil(n / R) samples (``DistributedSampler`` pads), split into batches of ``batch_size``;
    ``drop_last`` drops the short last batch as ``DataLoader(drop_last=True)`` does. This is the number to compare
    with ``len(MultiScaleBatchSampler(...))``.
    """
    n = _check_int("n_samples", n_samples, 1)
    b = _check_int("batch_size", batch_size, 1)
    replicas = _check_int("num_replicas", num_replicas, 1)
    per_rank = math.ceil(n / replicas)
    return per_rank // b if drop_last else math.ceil(per_rank / b)


# ----------------------------------------------------------------------------------------------------------------
# The sampler.
# ----------------------------------------------------------------------------------------------------------------
class MultiScaleBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batch sampler of the MobileViT multi-scale sampler (paper §3.2, Fig. 5b; cvnets-v0.1 VariableBatchSamplerDDP).

    Yields batches of ``(index, height, width)``: every item of a batch has the same size, drawn at random per step
    from :func:`multi_scale_resolutions`, and the batch holds :func:`batch_size_for` items (per rank).

    Use it as a ``batch_sampler``; the dataset receives the key and resizes::

        class MultiScaleImages(torch.utils.data.Dataset):
            def __init__(self, images):             # images: a dataset of (PIL image, label)
                self.images = images
            def __len__(self):
                return len(self.images)
            def __getitem__(self, key):             # key = (index, height, width) from the sampler
                index, height, width = key
                image, label = self.images[index]
                crop = torchvision.transforms.RandomResizedCrop((height, width))
                return torchvision.transforms.functional.to_tensor(crop(image)), label

        sampler = MultiScaleBatchSampler(dataset, base_batch_size=128)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=4)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)                # new order and new size sequence, like DistributedSampler
            for images, labels in loader: ...       # images: (b_t, 3, h_t, w_t), one size per batch

    Distributed training (``DistributedDataParallel``):

    * Indices: the permutation, padding and split are those of ``DistributedSampler(drop_last=False)`` with the same
      ``seed`` and epoch: the dataset is shuffled, padded by repeating its first indices up to a multiple of
      ``num_replicas`` (so every rank has the same share, ceil(n / R); at most R - 1 samples are seen twice per epoch),
      and rank r takes every R-th index from r. Each rank then cuts its share into consecutive batches; the last
      batch of an epoch may be short (cvnets instead fills it by wrapping around; we keep "each index of the share
      exactly once").
    * Sizes: the size sequence depends only on ``seed`` and the epoch, and every rank has the same share length,
      so **all ranks draw the same size at the same step and yield the same number of batches** -- unequal
      counts would leave DDP's gradient all-reduce waiting forever. All ranks must use the same ``seed``.
    * Batch size is per rank: b_t images on each GPU, as cvnets' ``batch_size_gpu0``; the global batch is R * b_t.

    ``shuffle=False`` keeps the index order (0, 1, 2, ...); sizes are still drawn at random, since mixing sizes is the
    point of the sampler. ``resolutions`` replaces the cvnets rule by an explicit list of sizes (ints or (h, w)).
    """

    def __init__(
        self,
        data_source: Sized | int,
        base_batch_size: int,
        base_resolution: int | Resolution = 256,
        min_resolution: int = 160,
        max_resolution: int = 320,
        n_scales: int = 5,
        divisor: int = 32,
        resolutions: Sequence[int | Resolution] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        batch_multiple_of: int = 1,
    ) -> None:
        if isinstance(data_source, int) and not isinstance(data_source, bool):
            n_samples = data_source
        elif isinstance(data_source, Sized) and not isinstance(data_source, (str, bytes)):  # a path is no dataset
            n_samples = len(data_source)
        else:
            raise TypeError(
                f"data_source must be a dataset with __len__ or an int (its length), got {type(data_source).__name__}"
            )
        if n_samples < 1:
            raise ValueError(f"data_source must hold at least 1 sample, got length {n_samples}")
        self.n_samples = n_samples
        self.base_batch_size = _check_int("base_batch_size", base_batch_size, 1)
        self.base_resolution = _as_resolution("base_resolution", base_resolution)

        if resolutions is None:
            if self.base_resolution[0] != self.base_resolution[1]:
                raise ValueError(
                    f"the cvnets size rule builds square sizes; for a non-square base_resolution "
                    f"{self.base_resolution} pass resolutions=[(h, w), ...] explicitly"
                )
            sides = multi_scale_resolutions(
                self.base_resolution[0], min_resolution, max_resolution, n_scales, divisor
            )
            sizes = [(s, s) for s in sides]
        else:
            if isinstance(resolutions, (str, bytes)) or not isinstance(resolutions, Sequence):
                raise TypeError(f"resolutions must be a sequence of ints or (h, w) pairs, got {resolutions!r}")
            if len(resolutions) == 0:
                raise ValueError("resolutions must hold at least one size, got an empty sequence")
            sizes = sorted({_as_resolution("resolutions entry", r) for r in resolutions})
        multiple = _check_int("batch_multiple_of", batch_multiple_of, 1)
        # The (h, w, b_t) table a step draws from, sorted like cvnets' img_batch_tuples.
        self.schedule: list[tuple[int, int, int]] = [
            (h, w, batch_size_for((h, w), self.base_resolution, self.base_batch_size, multiple)) for h, w in sizes
        ]

        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an int in [0, num_replicas), got {type(rank).__name__} {rank!r}")
        if not 0 <= rank < self.num_replicas:
            raise ValueError(
                f"rank must be in [0, {self.num_replicas - 1}] for num_replicas={self.num_replicas}, got {rank}"
            )
        self.rank = rank
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        self.shuffle = shuffle
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self.seed = seed
        self.epoch = 0
        # DistributedSampler's padding: every rank gets ceil(n / R) indices.
        self.samples_per_rank = math.ceil(n_samples / self.num_replicas)
        self.total_size = self.samples_per_rank * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: with ``seed`` it fixes the index permutation and the size sequence on every rank."""
        self.epoch = _check_int("epoch", epoch, 0)

    def step_sizes(self) -> list[tuple[int, int, int]]:
        """The (height, width, batch) of every step of the current epoch, the last batch cut to what is left.

        Depends only on ``seed``, the epoch and the share length, never on the rank: this is why ranks agree.
        """
        # A separate generator for sizes, seeded from (seed, epoch) through a string: Python hashes str seeds with
        # SHA-512, so the stream is the same in every process (PYTHONHASHSEED does not touch it) and independent of
        # the torch generator that shuffles the indices.
        rng = random.Random(f"multi-scale-sizes:{self.seed}:{self.epoch}")
        steps: list[tuple[int, int, int]] = []
        consumed = 0
        while consumed < self.samples_per_rank:
            height, width, batch = rng.choice(self.schedule)  # paper: "randomly sample ... at t-th iteration"
            batch = min(batch, self.samples_per_rank - consumed)
            steps.append((height, width, batch))
            consumed += batch
        return steps

    def rank_indices(self) -> list[int]:
        """This rank's share of dataset indices for the current epoch, in order (= ``DistributedSampler``'s)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)  # DistributedSampler's seeding, so the orders coincide
            indices = torch.randperm(self.n_samples, generator=generator).tolist()
        else:
            indices = list(range(self.n_samples))
        padding = self.total_size - self.n_samples
        # Repeat the head of the order to pad; the repeat handles R > n (padding longer than the dataset).
        indices += (indices * math.ceil(padding / self.n_samples))[:padding]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        share = self.rank_indices()
        start = 0
        for height, width, batch in self.step_sizes():
            yield [(index, height, width) for index in share[start : start + batch]]
            start += batch

    def __len__(self) -> int:
        """Batches (= optimizer steps) this rank yields in the current epoch; the same on every rank."""
        return len(self.step_sizes())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_samples={self.n_samples}, base_batch_size={self.base_batch_size}, "
            f"base_resolution={self.base_resolution}, schedule={self.schedule}, num_replicas={self.num_replicas}, "
            f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})"
        )
