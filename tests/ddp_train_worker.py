"""One rank of the distributed test of ``lessons.train`` (DistributedDataParallel on gloo, CPU, loopback).

Launched by ``tests/test_train.py`` as
``python -m torch.distributed.run --nproc_per_node=2 --master_addr 127.0.0.1 --master_port P``
``tests/ddp_train_worker.py OUT``.
It runs the unchanged :func:`lessons.train.train` twice, as any script under ``torchrun`` would:

1. the fixed-resolution recipe of :func:`recipe` on the model of :func:`tiny_model`; rank 0 saves the final weights
   to ``OUT/ddp_weights.pt`` (the test compares them with one process trained on the same global batch);
2. the same with MobileViT's multi-scale sampler; every rank's per-step (height, width, batch) is gathered and rank 0
   writes them to ``OUT/multi_scale_sizes.json`` (the test checks the ranks stayed in step).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from lessons.data import ShapesWorld
from lessons.poolformer import MetaFormer, MetaFormerConfig
from lessons.train import TrainConfig, train

GLOBAL_BATCH = 8
MULTI_SCALE = (24, 32, 40)


def tiny_model() -> MetaFormer:
    """A tiny MetaFormer: GroupNorm only (no BatchNorm, whose statistics would be per rank), seeded."""
    torch.manual_seed(0)
    config = MetaFormerConfig("tiny", (1, 1, 1, 1), (8, 8, 16, 16), mixers=("pooling",) * 4)
    return MetaFormer(config, num_classes=2)


def data() -> tuple[ShapesWorld, ShapesWorld]:
    return ShapesWorld(64, 32, seed=0), ShapesWorld(16, 32, seed=1)


def recipe(**changes) -> TrainConfig:
    base = TrainConfig(steps=6, batch_size=GLOBAL_BATCH, lr=1e-3, weight_decay=0.05, warmup_steps=2, seed=0,
                       eval_batch_size=8)
    return replace(base, **changes)


def main(out: Path) -> None:
    train_set, test_set = data()
    model = tiny_model()
    result = train(model, train_set, test_set, recipe(), progress=False)  # trains ``model`` in place
    # ``train`` joined the process group torchrun describes
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    if rank == 0:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "ddp_weights.pt")
        (out / "ddp_metrics.json").write_text(json.dumps(result.metrics))

    sizes = train(tiny_model(), train_set, test_set, recipe(multi_scale=MULTI_SCALE, steps=10), progress=False)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, sizes.history["size"])
    if rank == 0:
        (out / "multi_scale_sizes.json").write_text(json.dumps(gathered))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
