"""Tests of the data sets that cannot rot (lessons.data): determinism, balance, sizes, the world's geometry."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from lessons.data import PALETTE, SHAPE_KINDS, Digits, ShapesWorld, make_datasets

from helpers import one_thread_for_the_module


# One intra-op thread: these models are tiny, and on a shared machine extra threads only spin.
one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)

# --------------------------------------------------------------------------------------------------------------------
# Digits (scikit-learn's bundled 8x8 images)
# --------------------------------------------------------------------------------------------------------------------


def test_digits_split_is_fixed_by_the_seed_disjoint_and_complete():
    train, test = Digits("train", seed=0), Digits("test", seed=0)
    assert len(train) + len(test) == 1797
    assert torch.equal(Digits("train", seed=0).images, train.images)  # same seed, same bytes
    assert not torch.equal(Digits("train", seed=1).images, train.images)
    # disjoint: no test image is also a training image (the 8x8 arrays, compared as rows)
    seen = {tuple(row.tolist()) for row in train.images.flatten(1)}
    assert sum(tuple(row.tolist()) in seen for row in test.images.flatten(1)) <= 5  # sklearn holds a few duplicates


def test_digits_split_is_stratified_so_every_class_is_in_both_halves_in_proportion():
    train, test = Digits("train"), Digits("test")
    train_counts, test_counts = Counter(train.labels.tolist()), Counter(test.labels.tolist())
    for c in range(10):
        total = train_counts[c] + test_counts[c]
        assert test_counts[c] == round(0.2 * total)
    assert max(test_counts.values()) - min(test_counts.values()) <= 2  # sklearn's classes hold 174..183 images


def test_digits_render_at_any_size_in_three_channels_in_the_unit_range():
    data = Digits("test", size=32)
    images, labels = data.batch([0, 1, 2])
    assert images.shape == (3, 3, 32, 32) and labels.shape == (3,)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[:, 0], images[:, 2])
    image, label = data[(5, 48, 40)]  # a multi-scale key: (index, height, width)
    assert image.shape == (3, 48, 40) and label == data.labels[5]


# --------------------------------------------------------------------------------------------------------------------
# ShapesWorld (procedural)
# --------------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_and_another_seed_another_world():
    keys = list(range(0, 200, 7))
    first, second = ShapesWorld(200, seed=3).batch(keys), ShapesWorld(200, seed=3).batch(keys)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], ShapesWorld(200, seed=4).batch(keys)[0])


def test_an_image_is_the_same_alone_or_in_any_batch():
    world = ShapesWorld(50, seed=0)
    batch, labels = world.batch([3, 17, 42])
    for row, index in enumerate([3, 17, 42]):
        image, label = world[index]
        assert torch.equal(image, batch[row]) and label == labels[row]


@pytest.mark.parametrize("n", [1000, 1001])
def test_classes_are_balanced(n):
    counts = Counter(ShapesWorld(n, seed=0).same.tolist())
    assert abs(counts[0] - counts[1]) == n % 2
    assert set(counts) == {0, 1}


@pytest.mark.parametrize("task, related, free", [("same_colour", "colour_ids", "kinds"),
                                                 ("same_kind", "kinds", "colour_ids")])
def test_the_label_is_exactly_the_relation_and_the_other_attribute_is_independent_of_it(task, related, free):
    world = ShapesWorld(4000, seed=0, task=task)
    pairs, others = getattr(world, related), getattr(world, free)
    assert torch.equal((pairs[:, 0] == pairs[:, 1]).long(), world.same)
    for values in (pairs, others):
        counts = Counter(values.flatten().tolist())
        assert len(counts) == 4 and max(counts.values()) / min(counts.values()) < 1.15
    # the free attribute says nothing about the label: "same" is as frequent among its equal pairs as overall
    equal_free = others[:, 0] == others[:, 1]
    assert abs(world.same[equal_free].float().mean().item() - 0.5) < 0.06
    # both sides of the image hold both values of a pair equally often (no position shortcut)
    assert abs((pairs[:, 0] < pairs[:, 1]).float().mean() - (pairs[:, 0] > pairs[:, 1]).float().mean()) < 0.05


def test_colours_come_from_the_palette():
    world = ShapesWorld(500, seed=0)
    distance = (world.colour - torch.tensor(PALETTE)[world.colour_ids]).abs().max()
    assert distance <= 0.04 + 1e-6


def test_segmentation_maps_agree_with_the_relation_label_and_shapes_are_far_apart():
    pictures = ShapesWorld(64, size=48, seed=5, task="same_kind")
    maps = ShapesWorld(64, size=48, seed=5, task="segmentation")
    images, same = pictures.batch(list(range(64)))
    images2, labels = maps.batch(list(range(64)))
    assert torch.equal(images, images2)  # same pictures, other targets
    assert labels.shape == (64, 48, 48) and labels.min() == 0 and labels.max() <= len(SHAPE_KINDS)
    for label_map, is_same in zip(labels, same):
        left, right = label_map[:, :24], label_map[:, 24:]
        left_kinds, right_kinds = set(left.unique().tolist()) - {0}, set(right.unique().tolist()) - {0}
        assert len(left_kinds) == 1 and len(right_kinds) == 1  # one shape in each half
        assert (left_kinds == right_kinds) == bool(is_same)
        columns = label_map.ne(0).any(0).nonzero().flatten()
        left_edge = columns[columns < 24].max()
        right_edge = columns[columns >= 24].min()
        assert right_edge - left_edge >= 0.05 * 48  # >= 0.06 of the width lies between the shapes


def test_the_world_renders_the_same_scene_at_any_resolution():
    world = ShapesWorld(8, seed=0, task="segmentation", size=32)
    _, small = world.batch([(i, 32, 32) for i in range(8)])
    _, large = world.batch([(i, 128, 128) for i in range(8)])
    downsampled = large[:, 2::4, 2::4]  # the pixel centres of the 32x32 grid, on the 128x128 grid
    assert (downsampled == small).float().mean() > 0.97  # equal up to pixels on the shapes' edges


def test_a_batch_must_have_one_size_and_indices_must_exist():
    world = ShapesWorld(10)
    with pytest.raises(ValueError, match="one image size"):
        world.batch([(0, 32, 32), (1, 64, 64)])
    with pytest.raises(IndexError):
        world.batch([10])
    with pytest.raises(ValueError, match="task must be"):
        ShapesWorld(10, task="count")


def test_a_dataloader_stacks_batches_through_getitems():
    world = ShapesWorld(20, size=16)
    images, labels = next(iter(DataLoader(world, batch_size=5)))
    assert images.shape == (5, 3, 16, 16) and torch.equal(images, world.batch(list(range(5)))[0])
    assert torch.equal(labels, world.same[:5])


def test_make_datasets_names_and_a_test_set_from_another_seed():
    train, test = make_datasets("shapes_colour", size=32, n_train=100, n_test=20)
    assert make_datasets("shapes_kind", n_train=10, n_test=10)[0].task == "same_kind"
    assert (len(train), len(test), train.num_classes) == (100, 20, 2)
    assert not torch.equal(train.centre[:20], test.centre)
    seg_train, _ = make_datasets("shapes_seg", n_train=10, n_test=10)
    assert seg_train.num_classes == 1 + len(SHAPE_KINDS)
    digits_train, digits_test = make_datasets("digits")
    assert digits_train.num_classes == 10 and len(digits_test) == 359
    with pytest.raises(ValueError, match="unknown data set"):
        make_datasets("imagenet")
