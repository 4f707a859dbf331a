"""Tests of the data sets that cannot rot (lessons.data): determinism, balance, sizes, the world's geometry."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from lessons.data import (
    BEACON_COLOURS, PALETTE, SCENE_CLASSES, SHAPE_KINDS, Digits, SceneWorld, ShapesWorld, make_datasets,
)

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


# --------------------------------------------------------------------------------------------------------------------
# SceneWorld (segmentation with a context rule and fine detail)
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes() -> tuple[SceneWorld, torch.Tensor, torch.Tensor]:
    world = SceneWorld(400, 64, seed=0)
    images, labels = world.batch(list(range(400)))
    return world, images, labels


def test_scene_world_same_seed_same_bytes_in_any_batch_and_another_seed_another_world(scenes):
    world, images, labels = scenes
    again_images, again_labels = SceneWorld(400, 64, seed=0).batch([7, 3, 250])
    assert torch.equal(again_images, images[[7, 3, 250]]) and torch.equal(again_labels, labels[[7, 3, 250]])
    alone_image, alone_label = world[3]
    assert torch.equal(alone_image, images[3]) and torch.equal(alone_label, labels[3])
    other_images, _ = SceneWorld(400, 64, seed=1).batch([3])
    assert not torch.equal(other_images[0], images[3])
    assert images.shape == (400, 3, 64, 64) and labels.shape == (400, 64, 64) and labels.dtype == torch.long
    assert images.min() >= 0 and images.max() <= 1
    assert labels.min() >= 0 and labels.max() < SceneWorld.num_classes == len(SCENE_CLASSES) == 6


def test_scene_kinds_are_exactly_balanced_and_every_image_holds_a_beacon_and_disks(scenes):
    world, _, labels = scenes
    assert int(world.kind.sum()) == 200  # 400 images, half of each kind
    present = torch.stack([(labels == c).flatten(1).any(1) for c in range(6)], 1)
    assert present[:, 3].all()  # a beacon in every image
    assert (present[:, 4] | present[:, 5]).all()  # disks in every image ...
    assert not (present[:, 4] & present[:, 5]).any()  # ... of one context class only: the scene's
    assert present[:, 1].float().mean() > 0.95 and present[:, 2].float().mean() > 0.95  # wires and dots nearly always


def test_disk_class_is_given_by_the_beacon_colour_alone(scenes):
    world, images, labels = scenes
    for c, kind in ((4, 0), (5, 1)):  # disks are class 4 in red-beacon scenes, 5 in blue-beacon scenes
        has = (labels == c).flatten(1).any(1)
        assert torch.equal(has, world.kind == kind)
    beacon = (labels == 3).unsqueeze(1)
    mean_colour = (images * beacon).sum((2, 3)) / beacon.sum((2, 3))
    red_scene = world.kind == 0
    assert (mean_colour[red_scene, 0] > mean_colour[red_scene, 2] + 0.4).all()
    assert (mean_colour[~red_scene, 2] > mean_colour[~red_scene, 0] + 0.4).all()


def test_flipping_the_scene_kind_changes_only_the_beacon_pixels_and_swaps_the_disk_class():
    world = SceneWorld(50, 64, seed=3)
    images, labels = world.batch(list(range(50)))
    world.kind = 1 - world.kind
    world.beacon_colour = world.beacon_colour + (torch.tensor(BEACON_COLOURS)[world.kind]
                                                 - torch.tensor(BEACON_COLOURS)[1 - world.kind])
    flipped_images, flipped_labels = world.batch(list(range(50)))
    beacon = (labels == 3).unsqueeze(1).expand_as(images)
    assert torch.equal(flipped_images[~beacon], images[~beacon])  # disks look exactly the same ...
    assert not torch.equal(flipped_images[beacon], images[beacon])
    swapped = torch.where(labels == 4, 5, torch.where(labels == 5, 4, labels))
    assert torch.equal(flipped_labels, swapped)  # ... and their class follows the far-away beacon


def test_the_cue_is_far_from_every_disk(scenes):
    world, _, _ = scenes
    distance = (world.beacon_centre[:, None, :] - world.disk_centre).norm(dim=-1)
    assert distance.min() >= 0.22 and distance.mean() > 0.45  # as the docstring states
    # the beacon and the disks sit in opposite halves
    beacon_left = world.beacon_centre[:, 0] < 0.5
    assert torch.equal((world.disk_centre[..., 0] < 0.5).all(1), ~beacon_left)


def test_wires_are_one_or_two_pixels_wide_and_dots_two_or_three():
    world = SceneWorld(20, 64, seed=0, n_disks=1, n_wires=1, n_dots=0)
    world.wire_angle.zero_()  # horizontal wires: count the rows each wire covers in one column
    _, labels = world.batch(list(range(20)))
    rows = (labels == 1).sum(1)  # [B, W]: wire pixels per column
    covered = rows[rows > 0]
    assert covered.min() >= 1 and covered.max() <= 2
    dots = SceneWorld(40, 64, seed=0, n_wires=0, n_dots=1)
    _, labels = dots.batch(list(range(40)))
    per_image = (labels == 2).flatten(1).sum(1)
    # a dot of side s in [2, 3) pixels covers 2 or 3 pixel centres along each axis: 4 to 9 pixels, unless the
    # beacon (drawn last) covers it
    free = ((dots.dot_centre[:, 0] - dots.beacon_centre).abs().max(1).values > dots.BEACON_HALF + 2 / 64)
    assert free.sum() >= 30
    assert ((per_image[free] >= 4) & (per_image[free] <= 9)).all() and (per_image <= 9).all()


def test_scene_pixel_shares_are_the_stated_ones():
    _, labels = SceneWorld(1000, 64, seed=0).batch(list(range(1000)))
    share = 100 * torch.bincount(labels.flatten(), minlength=6).double() / labels.numel()
    stated = [(84, 91), (2.5, 5), (0.4, 0.8), (3.0, 3.5), (1.8, 3.0), (1.8, 3.0)]  # the class docstring's ranges
    for c, (low, high) in enumerate(stated):
        assert low <= share[c] <= high, (SCENE_CLASSES[c], float(share[c]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n=0), "n must be"),
        (dict(size=16), "at least 32"),
        (dict(n_disks=0), "n_disks"),
        (dict(n_wires=9), "n_wires"),
        (dict(n_dots=1.5), "n_dots"),
        (dict(wire_width=5.0), "wire_width"),
        (dict(dot_size=(3.0, 2.0)), "dot_size"),
        (dict(noise=-0.1), "noise"),
    ],
)
def test_scene_world_rejects_bad_arguments_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SceneWorld(**kwargs)


def test_make_datasets_knows_the_scenes():
    train, test = make_datasets("scenes", size=64, n_train=10, n_test=5)
    assert isinstance(train, SceneWorld) and len(train) == 10 and len(test) == 5
    assert test.seed != train.seed
    with pytest.raises(TypeError):
        make_datasets("scenes", n_train=10, n_test=5, colours=3)
