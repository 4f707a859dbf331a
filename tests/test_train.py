"""Tests of the one trainer (lessons.train): schedule, metrics, determinism, resume, segmentation, DDP on gloo."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lessons.data import ShapesWorld
from lessons.sampler import MultiScaleBatchSampler
from lessons.train import TrainConfig, confusion_matrix, lr_at, segmentation_metrics, train

from helpers import one_thread_for_the_module

TESTS = Path(__file__).resolve().parent


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_train_worker", TESTS / "ddp_train_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


# One intra-op thread: these models are tiny, and on a shared machine extra threads only spin.
one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


# --------------------------------------------------------------------------------------------------------------------
# Schedule and metrics
# --------------------------------------------------------------------------------------------------------------------
def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    config = TrainConfig(steps=110, lr=1e-3, warmup_steps=10, min_lr=1e-5)
    assert [lr_at(s, config) for s in range(3)] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert lr_at(9, config) == pytest.approx(1e-3)  # the last warm-up step reaches the peak
    assert lr_at(10, config) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(60, config) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # half-way: the mean of peak and floor
    assert lr_at(110, config) == pytest.approx(1e-5)
    assert all(lr_at(s, config) >= lr_at(s + 1, config) for s in range(10, 110))


def test_confusion_matrix_pixel_accuracy_and_miou_with_an_ignored_label():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    confusion = confusion_matrix(pred, target, 3, ignore_index=255)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: true class; the 255 pixels are gone
    metrics = segmentation_metrics(confusion)
    assert metrics["pixel_acc"] == pytest.approx(4 / 6)
    # IoU per class: 0: 1 / (2 + 2 - 1) = 1/3; 1: 2 / (2 + 3 - 2) = 2/3; 2: 1 / (2 + 1 - 1) = 1/2
    assert metrics["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_classes_absent_from_targets_and_predictions_do_not_count_in_miou():
    confusion = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 5)
    assert segmentation_metrics(confusion) == {"pixel_acc": 1.0, "miou": 1.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"warmup_steps": 20, "steps": 10}, "warmup_steps"),
    ({"task": "detection"}, "task must be"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
])
def test_bad_recipes_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Training on one process
# --------------------------------------------------------------------------------------------------------------------
def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_on_cpu():
    train_set, test_set = worker.data()
    config = worker.recipe(steps=12, label_smoothing=0.1, eval_every=6)
    models = [worker.tiny_model(), worker.tiny_model()]
    results = [train(m, train_set, test_set, config, progress=False) for m in models]
    for key, value in _weights(models[0]).items():
        assert torch.equal(value, models[1].state_dict()[key]), key
    assert results[0].history == results[1].history
    history = results[0].history
    assert history["step"] == list(range(1, 13)) and [e["step"] for e in history["eval"]] == [6, 12]
    assert set(results[0].metrics) == {"loss", "top1"}
    assert all(math.isfinite(loss) for loss in history["loss"])


def test_resuming_from_a_checkpoint_gives_the_same_final_weights_as_not_stopping(tmp_path):
    train_set, test_set = worker.data()
    config = worker.recipe(steps=8, eval_every=4)
    straight = worker.tiny_model()
    expected = train(straight, train_set, test_set, config, progress=False)

    stopped = worker.tiny_model()
    path = tmp_path / "run.pt"
    partial = train(stopped, train_set, test_set, config, checkpoint=path, stop_after=5, progress=False)
    assert partial.steps == 5 and partial.metrics == {}
    resumed_model = worker.tiny_model()  # a fresh process would build the model from scratch
    resumed = train(resumed_model, train_set, test_set, config, checkpoint=path, resume=True, progress=False)
    for key, value in _weights(straight).items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert resumed.history == expected.history
    assert resumed.metrics == expected.metrics


class TinySegmenter(nn.Module):
    """Two convs and a 1x1 classifier: logits at the input size, as every segmenter's forward gives."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_segmentation_training_reports_pixel_accuracy_and_miou_and_honours_ignore_index():
    train_set = ShapesWorld(32, 16, seed=0, task="segmentation")
    test_set = ShapesWorld(8, 16, seed=1, task="segmentation")
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1, task="segmentation", ignore_index=255)
    torch.manual_seed(0)
    result = train(TinySegmenter(train_set.num_classes), train_set, test_set, config, progress=False)
    assert set(result.metrics) == {"loss", "pixel_acc", "miou"}
    assert 0 <= result.metrics["miou"] <= 1 and 0 <= result.metrics["pixel_acc"] <= 1

    class AllIgnored(ShapesWorld):
        def render(self, indices, size):
            images, labels = super().render(indices, size)
            return images, torch.full_like(labels, 255)

    ignored = AllIgnored(8, 16, seed=1, task="segmentation")
    torch.manual_seed(0)
    blind = train(TinySegmenter(train_set.num_classes), train_set, ignored, config, progress=False)
    assert math.isnan(blind.metrics["pixel_acc"])  # nothing left to count: every pixel carried the ignore label


def test_multi_scale_training_follows_the_sampler_sizes():
    train_set, test_set = worker.data()
    config = worker.recipe(multi_scale=worker.MULTI_SCALE, steps=10)
    result = train(worker.tiny_model(), train_set, test_set, config, progress=False)
    sampler = MultiScaleBatchSampler(train_set, config.batch_size, base_resolution=32,
                                     resolutions=list(worker.MULTI_SCALE), num_replicas=1, rank=0, seed=0)
    expected = []
    epoch = 0
    while len(expected) < 10:
        sampler.set_epoch(epoch)
        expected += [[h, w, b] for h, w, b in sampler.step_sizes()]
        epoch += 1
    assert result.history["size"] == expected[:10]
    assert len({h for h, _, _ in result.history["size"]}) > 1


# --------------------------------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo, loopback) against one
# --------------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Tolerance: the two runs add the same per-image gradients in a different order (two half-batch means averaged by
# all-reduce vs one full-batch mean), so they differ by float32 rounding, ~1e-7 relative per step; six AdamW steps
# of lr <= 1e-3 keep the weights within 1e-5 of each other.
DDP_ATOL = 1e-5


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(TESTS / "ddp_train_worker.py"), str(out)]
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"distributed training did not finish in 180 s (a hang?):\n{stderr[-6000:]}")
    report = f"{stderr[:4000]}\n...\n{stderr[-2000:]}"
    assert launcher.returncode == 0, f"worker failed (rc={launcher.returncode}):\n{report}"
    return out


def test_two_processes_reach_the_weights_of_one_process_with_the_same_global_batch(ddp_run):
    train_set, test_set = worker.data()
    single = worker.tiny_model()
    result = train(single, train_set, test_set, worker.recipe(), progress=False)
    ddp = torch.load(ddp_run / "ddp_weights.pt")
    assert set(ddp) == set(single.state_dict())
    start = worker.tiny_model().state_dict()
    moved = max((single.state_dict()[k] - start[k]).abs().max().item() for k in ddp)
    assert moved > 1e-4  # training changed the weights far more than the tolerance
    worst = max((single.state_dict()[k] - ddp[k]).abs().max().item() for k in ddp)
    assert worst < DDP_ATOL, f"largest weight difference {worst:.2e} between 1 and 2 processes"
    metrics = json.loads((ddp_run / "ddp_metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(result.metrics["top1"])  # evaluation split over ranks, counts summed


def test_multi_scale_sizes_stay_in_step_across_ranks_during_training(ddp_run):
    per_rank = json.loads((ddp_run / "multi_scale_sizes.json").read_text())
    assert len(per_rank) == 2 and len(per_rank[0]) == 10
    assert per_rank[0] == per_rank[1]
    assert len({h for h, _, _ in per_rank[0]}) > 1  # the resolution did change during training
    sampler = MultiScaleBatchSampler(64, worker.GLOBAL_BATCH // 2, base_resolution=32,
                                     resolutions=list(worker.MULTI_SCALE), num_replicas=2, rank=1, seed=0)
    assert [tuple(s) for s in per_rank[1][:len(sampler)]] == sampler.step_sizes()
