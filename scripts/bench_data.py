"""How fast the data of lessons.data is made, next to how fast a model trains on it (one CPU thread).

    PYTHONPATH=$PWD python scripts/bench_data.py [--batch 64] [--repeats 20]

For each experiment of lessons.experiments: images per second rendered by its data set (a batch at a time, as the
trainer fetches them) and images per second trained by its slowest variant (forward, backward, AdamW step; CPU
time of this process, so other processes on the machine do not count). The ratio says how much of a training step
the data costs: far below 1 % means the world never waits for data.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from lessons.data import make_datasets
from lessons.experiments import EXPERIMENTS, build_model
from lessons.train import train


def images_per_second_rendered(dataset, batch: int, repeats: int) -> float:
    keys = [list(range(i * batch, (i + 1) * batch)) for i in range(repeats)]
    keys = [[k % len(dataset) for k in ks] for ks in keys]
    dataset.batch(keys[0])  # warm-up
    start = time.process_time()
    for ks in keys:
        dataset.batch(ks)
    return batch * repeats / (time.process_time() - start)


def images_per_second_trained(exp, variant: str, train_set, test_set, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = build_model(exp.variants[variant], train_set.num_classes, train_set.in_chans)
    stamps: list[float] = []
    images: list[int] = []  # per step: the multi-scale sampler changes the batch size

    def record(step: int, info: dict) -> None:
        stamps.append(time.process_time())
        images.append(info["size"][2])

    recipe = replace(exp.recipe_for(variant), steps=repeats + 3, batch_size=batch, warmup_steps=1, eval_every=0,
                     eval_limit=1)
    train(model, train_set, test_set, recipe, progress=False, on_step=record)
    return sum(images[3:]) / (stamps[-1] - stamps[2])  # the first steps warm up; includes fetching the batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'experiment':<26}{'data set':<22}{'rendered img/s':>16}{'trained img/s':>15}  slowest variant")
    for name, exp in EXPERIMENTS.items():
        train_set, test_set = make_datasets(**exp.dataset)
        rendered = images_per_second_rendered(train_set, args.batch, args.repeats)
        speeds = {v: images_per_second_trained(exp, v, train_set, test_set, args.batch, args.repeats // 2)
                  for v in exp.variants}
        slowest = min(speeds, key=speeds.get)
        label = f"{exp.dataset['name']}@{exp.dataset['size']}"
        print(f"{name:<26}{label:<22}{rendered:>16,.0f}{speeds[slowest]:>15,.0f}  {slowest} "
              f"(data = {100 * speeds[slowest] / rendered:.1f}% of a step)")


if __name__ == "__main__":
    main()
