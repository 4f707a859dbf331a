"""One rank of the distributed test of ``lessons.sampler.MultiScaleBatchSampler`` (paper §3.2 under DDP).

Launched by ``tests/test_sampler.py`` as
``python -m torch.distributed.run --nproc_per_node=2 --master_addr 127.0.0.1 --master_port P``
``tests/ddp_sampler_worker.py``
(gloo on CPU, loopback only). Each rank trains a tiny ``DistributedDataParallel`` model for two epochs through a real
``DataLoader(batch_sampler=...)`` -- every step all-reduces gradients, so ranks with unequal step counts would hang
here -- and records, per step, the batch's size and the dataset indices it held. Rank 0 gathers all records with
``all_gather_object`` and checks them with :func:`check_records`; the verdict is broadcast and every rank exits 1
on failure, with the reasons on stderr.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections import Counter

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lessons.sampler import MultiScaleBatchSampler

N_SAMPLES = 1001  # odd, so two ranks need one padded index (DistributedSampler's rule)
BASE_BATCH = 8  # schedule at the paper's sizes: 160 -> 20, 192 -> 14, 256/288/320 -> 8
EPOCHS = (0, 1)
SEED = 0
PIXEL_STRIDE = 32  # images are stored at 1/32 of the sampled size: the test is about shapes, not pixels

# One record per step: (height, width, [dataset indices of the batch]).
StepRecord = tuple[int, int, list[int]]


class IndexImages(Dataset):
    """Dataset that takes the sampler's ``(index, height, width)`` key and returns an image of that size (scaled
    down by ``PIXEL_STRIDE``) and the index itself as the label, so the test reads back what the loader delivered."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, height, width = key
        image = torch.full((3, height // PIXEL_STRIDE, width // PIXEL_STRIDE), float(index) / self.n)
        return image, index


def check_records(
    records: list[dict[int, list[StepRecord]]],
    n_samples: int,
    sampler_kwargs: dict,
) -> list[str]:
    """Return what is wrong with the gathered per-rank, per-epoch step records (empty list: all good).

    ``records[rank][epoch]`` is that rank's list of steps. ``sampler_kwargs`` rebuilds the sampler on one process
    to compare batch sizes and index order with the distributed run.
    """
    failures: list[str] = []
    world = len(records)
    padding = math.ceil(n_samples / world) * world - n_samples
    for epoch in records[0]:
        steps = [records[rank][epoch] for rank in range(world)]
        counts = [len(s) for s in steps]
        if len(set(counts)) != 1:
            failures.append(f"epoch {epoch}: ranks yielded different numbers of batches {counts}")
            continue
        reference = MultiScaleBatchSampler(n_samples, num_replicas=world, rank=0, **sampler_kwargs)
        reference.set_epoch(epoch)
        if counts[0] != len(reference):
            failures.append(f"epoch {epoch}: {counts[0]} batches, but len(sampler) = {len(reference)}")
        table = {(h, w): b for h, w, b in reference.schedule}
        for t in range(counts[0]):
            sizes = {(steps[rank][t][0], steps[rank][t][1]) for rank in range(world)}
            if len(sizes) != 1:
                failures.append(f"epoch {epoch} step {t}: resolutions differ across ranks {sorted(sizes)}")
                continue
            (size,) = sizes
            for rank in range(world):
                got = len(steps[rank][t][2])
                # Full batches everywhere; only the last step of the epoch may hold what is left of the share.
                full_or_tail = got == table[size] or (t == counts[0] - 1 and 1 <= got < table[size])
                if not full_or_tail:
                    failures.append(f"epoch {epoch} step {t} rank {rank}: batch {got} at {size}, want {table[size]}")
        shares = [[i for step in steps[rank] for i in step[2]] for rank in range(world)]
        seen = Counter(i for share in shares for i in share)
        if set(seen) != set(range(n_samples)):
            failures.append(f"epoch {epoch}: indices do not cover the dataset ({len(set(seen))} of {n_samples} seen)")
        repeated = sum(c - 1 for c in seen.values())
        if repeated != padding:
            failures.append(f"epoch {epoch}: {repeated} repeated indices across ranks, padding allows {padding}")
        for rank in range(world):
            seed = sampler_kwargs.get("seed", 0)
            expected = DistributedSampler(range(n_samples), num_replicas=world, rank=rank, seed=seed)
            expected.set_epoch(epoch)
            if shares[rank] != list(expected):
                failures.append(f"epoch {epoch} rank {rank}: index order differs from DistributedSampler's")
    epochs = sorted(records[0])
    if len(epochs) > 1 and records[0][epochs[0]] == records[0][epochs[1]]:
        failures.append(f"epochs {epochs[0]} and {epochs[1]} gave the same batches")
    return failures


def main() -> int:
    # Rank, world size and rendezvous come from torch.distributed.run's env. The short timeout turns a collective
    # that never completes (ranks out of step) into an error within a minute instead of gloo's default 30.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them)

    dataset = IndexImages(N_SAMPLES)
    sampler_kwargs = {"base_batch_size": BASE_BATCH, "seed": SEED}
    sampler = MultiScaleBatchSampler(dataset, **sampler_kwargs)  # num_replicas / rank taken from torch.distributed
    loader = DataLoader(dataset, batch_sampler=sampler)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    problems: list[str] = []
    if (sampler.num_replicas, sampler.rank) != (world, rank):
        problems.append(f"rank {rank}: sampler took num_replicas={sampler.num_replicas}, rank={sampler.rank}")

    # Pre-flight: compare every rank's planned (h, w, b) sequence before training, so ranks out of step are reported
    # by name instead of as a collective timeout in the training loop below.
    plans = {}
    for epoch in EPOCHS:
        sampler.set_epoch(epoch)
        plans[epoch] = sampler.step_sizes()
    gathered_plans: list[tuple[list[str], dict] | None] = [None] * world
    dist.all_gather_object(gathered_plans, (problems, plans))
    # Every rank now holds the same information, so every rank takes the same decision below (no rank left waiting).
    problems = [p for rank_problems, _ in gathered_plans for p in rank_problems]
    all_plans = [rank_plans for _, rank_plans in gathered_plans]
    for epoch in EPOCHS:
        if any(p[epoch] != all_plans[0][epoch] for p in all_plans):
            counts = [len(p[epoch]) for p in all_plans]
            problems.append(f"epoch {epoch}: planned sizes differ across ranks (steps per rank {counts})")
    if problems:
        dist.destroy_process_group()
        if rank == 0:
            print("\n".join(problems), file=sys.stderr)
        return 1

    mine: dict[int, list[StepRecord]] = {}
    for epoch in EPOCHS:
        sampler.set_epoch(epoch)
        mine[epoch] = []
        for images, labels in loader:
            height, width = images.shape[-2] * PIXEL_STRIDE, images.shape[-1] * PIXEL_STRIDE
            mine[epoch].append((height, width, labels.tolist()))
            loss = model(images).square().mean()  # any loss: the point is the gradient all-reduce every step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    gathered: list[dict[int, list[StepRecord]] | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    verdict = [check_records(gathered, N_SAMPLES, sampler_kwargs) if rank == 0 else None]
    dist.broadcast_object_list(verdict, src=0)
    dist.destroy_process_group()
    if verdict[0]:
        if rank == 0:
            print("\n".join(verdict[0]), file=sys.stderr)
        return 1
    if rank == 0:
        print(f"ok: {world} ranks, {len(mine[EPOCHS[0]])} steps in epoch {EPOCHS[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
