"""Tests of the MobileViT multi-scale sampler (paper §3.2, Fig. 5; cvnets-v0.1 variable batch sampler)."""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lessons.sampler import (
    MultiScaleBatchSampler,
    batch_size_for,
    multi_scale_resolutions,
    multi_scale_schedule,
    standard_steps_per_epoch,
)

TESTS = Path(__file__).resolve().parent
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k training images (paper §4.1: "1.28 million")
PAPER_GPUS, PAPER_BATCH = 8, 128  # paper §4.1: 8 GPUs, effective batch 1024; cvnets yaml train_batch_size0: 128


def flatten(batches: list[list[tuple[int, int, int]]]) -> list[int]:
    return [index for batch in batches for index, _, _ in batch]


# ------------------------------------------------------------------------------------------------------------------
# The schedule
# ------------------------------------------------------------------------------------------------------------------
def test_paper_setting_gives_the_papers_resolution_set():
    # Paper §4.1: S = {(160,160), (192,192), (256,256), (288,288), (320,320)}; cvnets yaml: base 256, 160..320,
    # 5 scales, check_scale 32. linspace gives 200/240/280, which make_divisible(., 32) moves to 192/256/288.
    assert multi_scale_resolutions(256, 160, 320, 5, 32) == [160, 192, 256, 288, 320]
    assert multi_scale_resolutions() == [160, 192, 256, 288, 320]


@pytest.mark.parametrize("base, low, high, n", [(224, 128, 320, 7), (256, 160, 320, 3), (512, 256, 768, 6)])
def test_resolutions_are_multiples_of_the_divisor_and_include_the_base(base, low, high, n):
    sizes = multi_scale_resolutions(base, low, high, n, 32)
    assert sizes == sorted(set(sizes))
    assert all(s % 32 == 0 for s in sizes)
    assert base in sizes  # cvnets adds the base crop to the set
    assert len(sizes) <= n + 1
    assert min(sizes) <= low + 16 and max(sizes) >= high - 16  # rounding moves the ends by at most half a step


def test_one_scale_with_equal_ends_gives_that_size_and_the_base():
    assert multi_scale_resolutions(256, 320, 320, 1, 32) == [256, 320]


@pytest.mark.parametrize("b", [16, 32, 64, 128])
def test_batch_size_keeps_the_pixel_budget_below_the_base_size(b):
    # b_t = 256^2 b / (h w): 160 px holds 2.56 b images, 192 px holds 16/9 b; cvnets truncates (int(round(x, 2))).
    assert batch_size_for(160, 256, b) == math.floor(2.56 * b + 1e-9)
    assert batch_size_for(192, 256, b) == math.floor(16 * b / 9)
    assert batch_size_for(256, 256, b) == b
    for size in (160, 192, 256):
        pixels = batch_size_for(size, 256, b) * size * size
        assert 256 * 256 * b - size * size < pixels <= 256 * 256 * b  # within one image of the base batch's pixels


def test_batch_at_160_truncates_like_cvnets_instead_of_rounding():
    # 2.56 * 128 = 327.68: cvnets' int(round(327.68, 2)) = 327, plain round() would give 328.
    assert batch_size_for(160, 256, 128) == 327


@pytest.mark.parametrize("size", [288, 320])
def test_batch_never_drops_below_the_base_batch(size):
    # Anchored at the base 256, the raw formula shrinks the batch above it (128 -> 101 at 288, 81.92 at 320);
    # cvnets-v0.1 clamps with max(b, .) so every size trains on at least b images.
    raw = 256 * 256 * PAPER_BATCH / (size * size)
    assert raw < PAPER_BATCH
    assert batch_size_for(size, 256, PAPER_BATCH) == PAPER_BATCH


def test_multiple_of_the_gpu_count_reproduces_cvnets_v01_on_8_gpus():
    # v0.1 then applies make_divisible(b_t, n_gpus): 327 -> 328, 227 -> 224 (nearest multiples of 8).
    assert [b for _, _, b in multi_scale_schedule(PAPER_BATCH, multiple_of=8)] == [328, 224, 128, 128, 128]
    assert [b for _, _, b in multi_scale_schedule(PAPER_BATCH)] == [327, 227, 128, 128, 128]


def test_non_square_sizes_scale_the_batch_by_area():
    assert batch_size_for((128, 256), (256, 256), 10) == 20
    sampler = MultiScaleBatchSampler(100, 10, resolutions=[(128, 256), (256, 256)], num_replicas=1, rank=0)
    assert sampler.schedule == [(128, 256, 20), (256, 256, 10)]
    assert {(h, w) for batch in sampler for _, h, w in batch} <= {(128, 256), (256, 256)}


# ------------------------------------------------------------------------------------------------------------------
# One epoch on one rank
# ------------------------------------------------------------------------------------------------------------------
def test_every_index_appears_exactly_once_per_epoch_on_one_rank():
    sampler = MultiScaleBatchSampler(1000, 16, num_replicas=1, rank=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(flatten(list(sampler))) == list(range(1000))


def test_each_batch_has_one_resolution_and_its_scheduled_size():
    sampler = MultiScaleBatchSampler(2000, 16, num_replicas=1, rank=0)
    table = {(h, w): b for h, w, b in sampler.schedule}
    batches = list(sampler)
    for t, batch in enumerate(batches):
        sizes = {(h, w) for _, h, w in batch}
        assert len(sizes) == 1
        (size,) = sizes
        if t < len(batches) - 1:
            assert len(batch) == table[size]
        else:  # the last batch holds what is left of the share
            assert 1 <= len(batch) <= table[size]


def test_every_size_of_the_set_is_used_in_an_epoch():
    sampler = MultiScaleBatchSampler(20_000, 16, num_replicas=1, rank=0)
    assert {(h, w) for batch in sampler for _, h, w in batch[:1]} == {(s, s) for s in (160, 192, 256, 288, 320)}


class KeyedImages(Dataset):
    """Returns an image of the size in the key (1/32 scale), so the collate only works if a batch has one size."""

    def __len__(self) -> int:
        return 300

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, h, w = key
        return torch.zeros(3, h // 32, w // 32), index


def test_a_dataloader_stacks_each_batch_at_its_drawn_size():
    dataset = KeyedImages()
    sampler = MultiScaleBatchSampler(dataset, 8, num_replicas=1, rank=0)
    expected = sampler.step_sizes()
    loader = DataLoader(dataset, batch_sampler=sampler)
    got = [(images.shape[2] * 32, images.shape[3] * 32, images.shape[0]) for images, _ in loader]
    assert got == expected
    assert sorted(torch.cat([labels for _, labels in loader]).tolist()) == list(range(300))


@pytest.mark.parametrize("n, replicas", [(1, 1), (17, 1), (1001, 2), (1000, 3), (5, 8)])
def test_len_is_the_number_of_batches_iteration_yields(n, replicas):
    for rank in range(replicas):
        sampler = MultiScaleBatchSampler(n, 4, num_replicas=replicas, rank=rank)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            assert len(sampler) == len(list(sampler))


def test_same_epoch_gives_same_batches_and_new_epoch_gives_new_ones():
    first = MultiScaleBatchSampler(500, 8, num_replicas=1, rank=0, seed=3)
    second = MultiScaleBatchSampler(500, 8, num_replicas=1, rank=0, seed=3)
    first.set_epoch(5)
    second.set_epoch(5)
    assert list(first) == list(second)
    assert list(first) == list(first)  # iterating does not advance any hidden state
    epoch5 = list(first)
    first.set_epoch(6)
    epoch6 = list(first)
    assert flatten(epoch5) != flatten(epoch6)  # new index order
    assert [b[0][1:] for b in epoch5] != [b[0][1:] for b in epoch6]  # new size sequence
    other_seed = MultiScaleBatchSampler(500, 8, num_replicas=1, rank=0, seed=4)
    other_seed.set_epoch(5)
    assert list(other_seed) != epoch5


def test_without_shuffle_indices_keep_their_order_but_sizes_still_vary():
    sampler = MultiScaleBatchSampler(3000, 8, num_replicas=1, rank=0, shuffle=False)
    assert flatten(list(sampler)) == list(range(3000))
    assert len({batch[0][1] for batch in sampler}) > 1


# ------------------------------------------------------------------------------------------------------------------
# Several ranks (in one process: each rank is a sampler with its own rank argument)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, replicas", [(1001, 2), (1000, 3), (1000, 4), (3, 4)])
def test_ranks_split_the_dataset_like_distributed_sampler(n, replicas):
    samplers = [MultiScaleBatchSampler(n, 8, num_replicas=replicas, rank=r, seed=7) for r in range(replicas)]
    for epoch in (0, 1):
        shares = []
        for rank, sampler in enumerate(samplers):
            sampler.set_epoch(epoch)
            share = flatten(list(sampler))
            reference = DistributedSampler(range(n), num_replicas=replicas, rank=rank, seed=7)
            reference.set_epoch(epoch)
            assert share == list(reference)  # same permutation, padding and split as the standard sampler
            shares.append(share)
        seen = Counter(i for share in shares for i in share)
        assert set(seen) == set(range(n))
        padding = math.ceil(n / replicas) * replicas - n
        assert sum(c - 1 for c in seen.values()) == padding  # only the padded indices are seen twice
        assert len({len(share) for share in shares}) == 1


def test_all_ranks_draw_the_same_size_at_every_step_and_the_same_number_of_steps():
    samplers = [MultiScaleBatchSampler(1003, 8, num_replicas=4, rank=r) for r in range(4)]
    for epoch in range(4):
        per_rank = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            per_rank.append([(batch[0][1], batch[0][2], len(batch)) for batch in sampler])
        assert all(steps == per_rank[0] for steps in per_rank)


def test_rank_and_world_size_default_to_a_single_process():
    assert not torch.distributed.is_initialized()
    sampler = MultiScaleBatchSampler(10, 2)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


# ------------------------------------------------------------------------------------------------------------------
# Steps per epoch (paper Fig. 5)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, b, replicas, drop_last", [(1000, 32, 1, False), (1000, 32, 1, True), (1001, 7, 3, False),
                                                       (1001, 7, 3, True), (10, 64, 4, False)])
def test_standard_steps_per_epoch_is_what_distributed_sampler_and_dataloader_give(n, b, replicas, drop_last):
    sampler = DistributedSampler(range(n), num_replicas=replicas, rank=0)
    loader = DataLoader(range(n), batch_size=b, sampler=sampler, drop_last=drop_last)
    assert standard_steps_per_epoch(n, b, replicas, drop_last) == len(loader)


def test_multi_scale_sampler_needs_fewer_steps_per_epoch_than_the_standard_sampler():
    # Paper Fig. 5 in the paper's ImageNet setting: 8 GPUs, 128 images per GPU at 256 px.
    standard = standard_steps_per_epoch(IMAGENET_TRAIN, PAPER_BATCH, PAPER_GPUS)
    sampler = MultiScaleBatchSampler(IMAGENET_TRAIN, PAPER_BATCH, num_replicas=PAPER_GPUS, rank=0)
    mean_batch = sum(b for _, _, b in sampler.schedule) / len(sampler.schedule)  # sizes are drawn uniformly
    for epoch in range(5):
        sampler.set_epoch(epoch)
        assert len(sampler) < standard
        # about (images per rank) / (mean b_t): the saving is the mean batch over the base batch
        assert len(sampler) == pytest.approx(sampler.samples_per_rank / mean_batch, rel=0.05)


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data_source": 0}, "at least 1 sample"),
        ({"data_source": []}, "at least 1 sample"),
        ({"base_batch_size": 0}, "base_batch_size must be an int >= 1"),
        ({"base_batch_size": -4}, "base_batch_size must be an int >= 1"),
        ({"min_resolution": 0}, "min_resolution must be an int >= 1"),
        ({"max_resolution": -320}, "max_resolution must be an int >= 1"),
        ({"base_resolution": 0}, "base_resolution must be an int >= 1"),
        ({"min_resolution": 320, "max_resolution": 160}, "min_resolution must be <= max_resolution"),
        ({"n_scales": 0}, "n_scales must be an int >= 1"),
        ({"divisor": 0}, "divisor must be an int >= 1"),
        ({"resolutions": []}, "at least one size"),
        ({"resolutions": [(0, 32)]}, "height must be an int >= 1"),
        ({"resolutions": [(32, 32, 3)]}, "an int or a pair"),
        ({"base_resolution": (256, 128)}, "non-square base_resolution"),
        ({"num_replicas": 0}, "num_replicas must be an int >= 1"),
        ({"num_replicas": 2, "rank": 2}, r"rank must be in \[0, 1\]"),
        ({"num_replicas": 2, "rank": -1}, r"rank must be in \[0, 1\]"),
        ({"batch_multiple_of": 0}, "batch_multiple_of must be an int >= 1"),
    ],
)
def test_bad_sampler_arguments_raise_value_error_saying_what_is_allowed(kwargs, message):
    arguments = {"data_source": 100, "base_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiScaleBatchSampler(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data_source": "images"}, "data_source must be a dataset with __len__ or an int"),
        ({"data_source": object()}, "data_source must be a dataset with __len__ or an int"),
        ({"base_batch_size": 8.0}, "base_batch_size must be an int"),
        ({"base_batch_size": True}, "base_batch_size must be an int"),
        ({"resolutions": "160"}, "resolutions must be a sequence"),
        ({"rank": 0.5}, "rank must be an int"),
        ({"seed": "0"}, "seed must be an int"),
        ({"shuffle": 1}, "shuffle must be a bool"),
    ],
)
def test_wrongly_typed_sampler_arguments_raise_type_error(kwargs, message):
    arguments = {"data_source": 100, "base_batch_size": 8, **kwargs}
    with pytest.raises(TypeError, match=message):
        MultiScaleBatchSampler(**arguments)


def test_bad_epoch_and_helper_arguments_raise():
    sampler = MultiScaleBatchSampler(100, 8)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        sampler.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch must be an int"):
        sampler.set_epoch(1.0)
    with pytest.raises(ValueError, match="base_batch must be an int >= 1"):
        batch_size_for(160, 256, 0)
    with pytest.raises(ValueError, match="resolution must be an int >= 1"):
        batch_size_for(0, 256, 8)
    with pytest.raises(ValueError, match="min_resolution must be <= max_resolution"):
        multi_scale_resolutions(256, 400, 300)
    with pytest.raises(ValueError, match="n_samples must be an int >= 1"):
        standard_steps_per_epoch(0, 8)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        standard_steps_per_epoch(10, 0)


# ------------------------------------------------------------------------------------------------------------------
# Real distributed run: two processes, gloo on CPU, loopback only
# ------------------------------------------------------------------------------------------------------------------
def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_sampler_worker", TESTS / "ddp_sampler_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ddp_processes_agree_on_sizes_and_split_the_dataset():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # offline machines: keep gloo on the loopback interface
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(TESTS / "ddp_sampler_worker.py"),
    ]
    # A session of its own, so a hung run can be killed with both workers (and nothing else).
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # unequal step counts across ranks hang DDP's all-reduce
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"distributed run did not finish in 120 s (a hang?):\n{stderr[-6000:]}")
    # The head of stderr holds rank 0's reasons; the tail holds the launcher's summary.
    report = f"{stderr[:4000]}\n...\n{stderr[-2000:]}"
    assert launcher.returncode == 0, f"worker failed (rc={launcher.returncode}):\n{report}"
    assert "ok: 2 ranks" in stdout


def test_the_ddp_check_catches_ranks_that_disagree():
    # The worker's verdict must be able to fail: feed it records of ranks that used different seeds, and records
    # with an index missing.
    worker = _load_worker()
    kwargs = {"base_batch_size": 8, "seed": 0}

    def records(seeds: list[int], n: int = 101) -> list[dict]:
        out = []
        for rank, seed in enumerate(seeds):
            sampler = MultiScaleBatchSampler(n, 8, num_replicas=len(seeds), rank=rank, seed=seed)
            out.append({0: [(b[0][1], b[0][2], [i for i, _, _ in b]) for b in sampler]})
        return out

    assert worker.check_records(records([0, 0]), 101, kwargs) == []
    disagreeing = worker.check_records(records([0, 1]), 101, kwargs)
    assert any("differ" in f or "different numbers of batches" in f for f in disagreeing)
    missing = records([0, 0])
    missing[1][0][0][2].pop()
    assert any("do not cover" in f for f in worker.check_records(missing, 101, kwargs))
