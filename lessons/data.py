"""A world to learn in: small image data sets that are built in code, so nothing is ever downloaded and nothing rots.

Two sets, both deterministic (the same seed gives the same bytes) and both indexable by a sampler key that may carry
a size, ``(index, height, width)``, so MobileViT's multi-scale sampler (``lessons.sampler``) can ask for any resolution:

* :class:`Digits` -- scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes; the UCI "optical
  recognition of handwritten digits" test set, shipped inside the ``sklearn`` wheel), upsampled bilinearly to the
  requested size (32x32 by default) and repeated over 3 channels, with a fixed, seeded, class-stratified train/test
  split. The small *real* data set.

* :class:`ShapesWorld` -- a procedural world: every image holds two shapes (disk, square, ring or cross, each of
  one of four palette colours -- red, green, blue, yellow, slightly jittered -- and a random size) on a dark, noisy
  background, one in the left half of the image and one in the right half. The label asks for a *relation between
  the two*:

  ``task="same_colour"`` (2 classes): 1 if the two shapes have the same palette colour (kinds drawn independently).
  ``task="same_kind"`` (2 classes): 1 if the two shapes are of the same kind (colours drawn independently). Harder:
  the kind of a 3-5 pixel shape must be recognised first (same/different by shape is a known hard case for
  convolutional networks: Kim, Ricci & Serre 2018, "Not-so-CLEVR").
  ``task="segmentation"``: a label map, 0 = background, 1 + kind on every pixel of a shape.

  Why the "same" labels need tokens that mix globally. Think of a model whose per-position features ``f(x, pos)``
  only ever see a neighbourhood that holds at most one of the two shapes, followed by the global mean and a linear
  classifier (every classifier head of this book). Its logit difference is then ``u(A, left) + v(B, right) + c``
  (c: the background's share, independent of the label): a sum of one term per shape. Write ``M[i, j] = u(i) +
  v(j)`` for attribute values (colours or kinds) ``i`` on the left and ``j`` on the right; the label needs
  ``M[i, i] > t`` and ``M[i, j] < t`` for ``i != j``. But ``M[i, i] + M[j, j] = M[i, j] + M[j, i]`` for any sum of
  this form, so the two diagonal entries (each > t) and the two off-diagonal ones (each < t) cannot all hold:
  **no such model can be right on all four pictures (i, i), (j, j), (i, j), (j, i)**, whatever its features. Some
  feature must see both shapes at once. The shapes' centres are at least 0.4 of the image width apart (0.58 on
  average; at least a tenth of the image lies between their edges), so a few local 3x3 or pooling layers do not
  bring them together; what does is a global token mixer (attention in MobileViT, the attention or spatial-MLP
  mixers in a MetaFormer) -- or, more slowly, a deep stack of strided convolutions, whose receptive field grows with
  depth (the downsampling convs of a four-stage MetaFormer reach across a 32x32 image by stage 4, which is why even
  the identity mixer is handicapped rather than helpless here; that is the MetaFormer paper's own finding on
  ImageNet, 74.3% vs 77.2%).

  Rendering. The latent parameters of all ``n`` images (kinds, colours, centres, radii, the noise pattern) are drawn
  once, vectorised, from ``torch.Generator().manual_seed(seed)``; images are rendered on demand from them at any
  resolution by evaluating each shape's implicit function on a pixel grid, for a whole batch at once, plus one of
  256 fixed noise patterns per size (drawn once from the seed and the size; which one an image gets is a latent
  draw independent of its label). Coordinates live in [0, 1], so an image at 64x64 is the same scene as at 32x32,
  only sharper. Classes are exactly balanced (the labels are a seeded permutation of ``i % 2``).

``scripts/bench_data.py`` shows the world renders far faster than a model trains on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["Digits", "ShapesWorld", "SceneWorld", "SHAPE_KINDS", "PALETTE", "SCENE_CLASSES", "make_datasets",
           "DATASETS"]

SHAPE_KINDS = ("disk", "square", "ring", "cross")
PALETTE = ((0.95, 0.25, 0.25), (0.25, 0.9, 0.3), (0.35, 0.45, 1.0), (0.95, 0.9, 0.3))  # red, green, blue, yellow


def _split_key(key, default: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    if isinstance(key, (tuple, list)):
        if len(key) != 3:
            raise ValueError(f"a key is an index or (index, height, width), got {key!r}")
        return int(key[0]), (int(key[1]), int(key[2]))
    return int(key), default


def _group_keys(keys: Sequence, default: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """Indices of a batch and its one size (a batch from the multi-scale sampler has one size per batch)."""
    parsed = [_split_key(k, default) for k in keys]
    sizes = {size for _, size in parsed}
    if len(sizes) != 1:
        raise ValueError(f"a batch must have one image size, got {sorted(sizes)}")
    return torch.tensor([i for i, _ in parsed], dtype=torch.long), sizes.pop()


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not (isinstance(h, int) and isinstance(w, int) and h >= 8 and w >= 8):
        raise ValueError(f"image size must be >= 8 pixels a side, got {size!r}")
    return h, w


class _BatchedDataset(Dataset):
    """Common part: ``__getitem__`` for one key, ``__getitems__`` (used by DataLoader) and :meth:`batch` for many."""

    size: tuple[int, int]

    def __getitem__(self, key):
        index, size = _split_key(key, self.size)
        images, targets = self.render(torch.tensor([index]), size)
        return images[0], targets[0]

    def __getitems__(self, keys: Sequence) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images, targets = self.batch(keys)
        return list(zip(images, targets))

    def batch(self, keys: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` and targets of a list of keys, rendered together (one size per batch)."""
        indices, size = _group_keys(keys, self.size)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for a data set of {len(self)} images")
        return self.render(indices, size)

    def render(self, indices: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------------
# Digits: the small real data set
# --------------------------------------------------------------------------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - the environment has it (requirements.txt)
        raise ImportError("the digits data set ships with scikit-learn: pip install scikit-learn") from error
    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


class Digits(_BatchedDataset):
    """scikit-learn's 1,797 8x8 digits, upsampled to ``size`` and split train/test by a seeded, stratified draw.

    ``split="train"`` / ``"test"``: each class contributes ``round(test_fraction * n_class)`` images to test (the same
    for every seed's class sizes), chosen by ``torch.Generator().manual_seed(seed)``. Images are in [0, 1]
    (0 = background), 3 channels (the gray value repeated).
    """

    num_classes = 10
    in_chans = 3
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, split: str = "train", size: int | tuple[int, int] = 32, seed: int = 0,
                 test_fraction: float = 0.2) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        self.split, self.size, self.seed = split, _check_size(size), seed
        images, labels = _load_digits()
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for c in range(self.num_classes):
            members = np.flatnonzero(labels == c)
            order = members[torch.randperm(len(members), generator=generator).numpy()]
            n_test = round(test_fraction * len(members))
            chosen.append(order[:n_test] if split == "test" else order[n_test:])
        keep = np.sort(np.concatenate(chosen))
        self.images = torch.from_numpy(images[keep]).unsqueeze(1)  # [N, 1, 8, 8]
        self.labels = torch.from_numpy(labels[keep])

    def __len__(self) -> int:
        return len(self.labels)

    def render(self, indices: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        small = self.images[indices]
        big = F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)
        return big.expand(-1, 3, -1, -1).contiguous(), self.labels[indices]


# --------------------------------------------------------------------------------------------------------------------
# ShapesWorld: the procedural data set
# --------------------------------------------------------------------------------------------------------------------


class ShapesWorld(_BatchedDataset):
    """Two shapes far apart; the label is a relation between them (see the module docstring for why it is global).

    ``n`` images from ``seed``; ``size`` is the default rendering size (any size can be asked for by key).
    ``task="same_colour"``: 2 classes, 1 if both shapes have the same palette colour (the kinds are drawn
    independently); ``task="same_kind"``: 1 if both are the same kind (colours independent); both exactly balanced.
    ``task="segmentation"``: targets are ``[H, W]`` label maps with ``1 + len(SHAPE_KINDS)`` classes
    (0 = background); the pictures are those of ``task="same_kind"``.
    """

    in_chans = 3
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    TASKS = ("same_colour", "same_kind", "segmentation")

    def __init__(self, n: int = 10_000, size: int | tuple[int, int] = 32, seed: int = 0, task: str = "same_colour",
                 noise: float = 0.1, n_colours: int = 4, radius: tuple[float, float] = (0.09, 0.15)) -> None:
        if task not in self.TASKS:
            raise ValueError(f"task must be one of {self.TASKS}, got {task!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not 2 <= n_colours <= len(PALETTE):
            raise ValueError(f"n_colours must be in [2, {len(PALETTE)}], got {n_colours!r}")
        r_min, r_max = radius
        if not 0.02 <= r_min <= r_max <= 0.2:
            raise ValueError(f"radius must be (min, max) with 0.02 <= min <= max <= 0.2 image widths, got {radius!r}")
        self.n, self.size, self.seed, self.task, self.noise = n, _check_size(size), seed, task, noise
        self.num_classes = 2 if task != "segmentation" else 1 + len(SHAPE_KINDS)
        g = torch.Generator().manual_seed(seed)
        same = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]  # exactly balanced labels

        def related_pair(k: int) -> torch.Tensor:  # [n, 2]: equal where same == 1, different (uniformly) elsewhere
            first = torch.randint(0, k, (n,), generator=g)
            other = (first + torch.randint(1, k, (n,), generator=g)) % k
            return torch.stack([first, torch.where(same.bool(), first, other)], 1)

        def free_pair(k: int) -> torch.Tensor:  # [n, 2]: independent of the label
            return torch.randint(0, k, (n, 2), generator=g)

        by_colour = task == "same_colour"
        kinds = free_pair(len(SHAPE_KINDS)) if by_colour else related_pair(len(SHAPE_KINDS))
        colours = related_pair(n_colours) if by_colour else free_pair(n_colours)
        swap = (torch.rand(n, generator=g) < 0.5).view(n, 1)  # which of the pair sits on the left
        self.same = same
        self.kinds = torch.where(swap, kinds.flip(1), kinds)
        self.colour_ids = torch.where(swap, colours.flip(1), colours)
        self.radius = r_min + (r_max - r_min) * torch.rand(n, 2, generator=g)  # half-width, a fraction of the image
        # centres: x in a band of the left / right half that keeps the largest shape inside its half, >= 0.03 from
        # the middle (so >= 0.06 of the width lies between the two shapes) and >= 0.02 from the border
        low, high = r_max + 0.02, 0.5 - r_max - 0.03
        cx = low + (high - low) * torch.rand(n, 2, generator=g)
        cx = torch.stack([cx[:, 0], 1 - cx[:, 1]], 1)
        cy = r_max + 0.02 + (1 - 2 * r_max - 0.04) * torch.rand(n, 2, generator=g)
        self.centre = torch.stack([cx, cy], -1)  # [n, 2 shapes, (x, y)]
        jitter = 0.08 * (torch.rand(n, 2, 3, generator=g) - 0.5)  # a little variation inside each palette colour
        self.colour = (torch.tensor(PALETTE)[self.colour_ids] + jitter).clamp(0, 1)
        self.background = 0.25 * torch.rand(n, 3, generator=g)  # dark backgrounds
        self.noise_seed = torch.randint(0, 2**31 - 1, (n,), generator=g)
        self._noise: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return self.n

    NOISE_PATTERNS = 256

    def _noise_bank(self, size: tuple[int, int]) -> torch.Tensor:
        """``[NOISE_PATTERNS, 3, H, W]`` standard normal noise for one size, drawn once from (seed, size), cached."""
        if size not in self._noise:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + size[0] * 1009 + size[1])
            self._noise[size] = torch.randn(self.NOISE_PATTERNS, 3, *size, generator=g)
        return self._noise[size]

    @staticmethod
    def _masks(kinds: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Boolean masks ``[B, H, W]``, one shape per image (kinds ``[B]``, centres ``[B, 2]``, radii ``[B]``)."""
        h, w = size
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        dx = xs.view(1, 1, w) - centre[:, 0].view(-1, 1, 1)
        dy = ys.view(1, h, 1) - centre[:, 1].view(-1, 1, 1)
        r = radius.view(-1, 1, 1)
        k = kinds.view(-1, 1, 1)
        adx, ady = dx.abs(), dy.abs()
        dist = torch.sqrt(dx * dx + dy * dy)
        cheb = torch.maximum(adx, ady)
        # disk: dist <= r; square: cheb <= 0.85 r (about the disk's area); ring: 0.55 r <= dist <= r;
        # cross: cheb <= r and min(|dx|, |dy|) <= 0.3 r -- one formula with the kind choosing metric and bounds
        boxy = (k == 1) | (k == 3)
        outer = torch.where(boxy, cheb, dist) <= torch.where(k == 1, 0.85 * r, r)
        ring_ok = (k != 2) | (dist >= 0.55 * r)
        cross_ok = (k != 3) | (torch.minimum(adx, ady) <= 0.3 * r)
        return outer & ring_ok & cross_ok

    def render(self, indices: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = size
        b = len(indices)
        image = self.background[indices].view(b, 3, 1, 1).expand(b, 3, h, w).clone()
        labels = torch.zeros(b, h, w, dtype=torch.long)
        for s in range(2):
            mask = self._masks(self.kinds[indices, s], self.centre[indices, s], self.radius[indices, s], size)
            colour = self.colour[indices, s].view(b, 3, 1, 1)
            image = torch.where(mask.unsqueeze(1), colour, image)
            labels = torch.where(mask, 1 + self.kinds[indices, s].view(b, 1, 1), labels)
        if self.noise:
            # each image's noise is one of NOISE_PATTERNS fixed patterns of this size (chosen by the image's latent
            # draw, independent of its label): the same bytes whatever batch the image is rendered in
            image = (image + self.noise * self._noise_bank(size)[self.noise_seed[indices] % self.NOISE_PATTERNS])
            image = image.clamp_(0, 1)
        targets = labels if self.task == "segmentation" else self.same[indices]
        return image, targets


# --------------------------------------------------------------------------------------------------------------------
# SceneWorld: the procedural segmentation data set (global context and fine detail)
# --------------------------------------------------------------------------------------------------------------------

SCENE_CLASSES = ("background", "wire", "dot", "beacon", "disk_in_red_scene", "disk_in_blue_scene")
BEACON_COLOURS = ((0.95, 0.2, 0.2), (0.2, 0.35, 1.0))  # scene kind 0: a red beacon; kind 1: a blue one
DISK_COLOURS = ((0.95, 0.85, 0.25), (0.3, 0.85, 0.35))  # disks and dots: yellow or green, whatever the scene kind


class SceneWorld(_BatchedDataset):
    """A procedural segmentation world in which both *global context* and *fine detail* decide the labels.

    Every image is a dark, noisy scene holding one **beacon**, ``n_disks`` **disks**, ``n_wires`` **wires** and
    ``n_dots`` **dots**; the target is a label map ``[H, W]`` with 6 classes (:data:`SCENE_CLASSES`):

    ====  =====================  ==========================================================================
    0     background             everything else (dark, random base colour, pixel noise)
    1     wire                   a straight line across the image, 1-2 pixels wide (``wire_width`` px at any
                                 rendering size): **fine detail** -- at 1/8 resolution a wire is a fraction
                                 of one cell, so a model that predicts from coarse tokens alone loses it
    2     dot                    a small square of 2-3 pixels, coloured like the disks (yellow or green):
                                 **small objects**, told from disks only by their size
    3     beacon                 a square of side 0.18 (of the image width), red or blue: the **cue**
    4     disk_in_red_scene      a disk (radius 0.07-0.11) in a scene whose beacon is red
    5     disk_in_blue_scene     the same disk in a scene whose beacon is blue
    ====  =====================  ==========================================================================

    **The context rule (classes 4 and 5).** Disks look the same in both kinds of scene: their colours, sizes and
    places are drawn independently of the scene kind (flip an image's kind and only the beacon's pixels change --
    a test checks it). Only the beacon's colour tells class 4 from class 5, and the beacon always lies in the
    *other* half of the image (beacon centre x in [0.12, 0.38], disk centres x in [0.6, 0.9], or mirrored), at
    least 0.22 of the image width away from every disk centre and 0.58 on average. So a model whose
    features at a disk pixel do not see the beacon can do no better than guess: its expected IoU on classes 4 and
    5 is at most about 1/3 each (half of each class's pixels wrong, and as many false positives). This is the
    "global semantics" TopFormer's extractor and SeaFormer's squeeze-axial branch claim to supply.

    **The detail rule (classes 1 and 2).** Wires and dots are drawn on top of disks (the beacon on top of all), so
    they cut thin lines and holes into bigger objects. The segmenters in this book predict at 1/8 of the input
    and upsample bilinearly; their IoU on classes 1 and 2 measures how much fine detail survives that.

    **Balance.** Scene kinds are exactly balanced (a seeded permutation of ``i % 2``), so classes 4 and 5 each
    cover about half of the disk pixels. Every image holds a beacon, at least one disk (so class 4 or 5) and, at the
    defaults, wires and dots. Pixel shares at the defaults (64x64, 2,000 images; a test checks the ranges on
    1,000): background 87.7% (84-91), wire 3.7% (2.5-5), dot 0.6% (0.4-0.8), beacon 3.2% (3.0-3.5), disk in a red
    scene 2.4% (1.8-3.0), in a blue scene 2.4% (1.8-3.0). The background dominates, as in any segmentation set;
    mIoU averages the classes, so the small ones weigh as much as the background.

    Rendering is that of :class:`ShapesWorld`: all latents drawn once, vectorised, from
    ``torch.Generator().manual_seed(seed)``; objects are implicit functions evaluated on the pixel grid for a whole
    batch; noise is one of 256 fixed patterns per size. The same seed gives the same bytes at any batch split.
    Coordinates live in [0, 1], except the wires' width and the dots' size, which are in pixels of the rendered
    size (fine detail stays fine at any resolution).
    """

    in_chans = 3
    num_classes = len(SCENE_CLASSES)
    class_names = SCENE_CLASSES
    # what the experiments report beside mIoU: the classes only the far cue separates, and the fine structures
    metric_groups = {"context_iou": (4, 5), "detail_iou": (1, 2)}
    mean = (0.3, 0.3, 0.3)
    std = (0.3, 0.3, 0.3)
    NOISE_PATTERNS = 256
    BEACON_HALF = 0.09

    def __init__(self, n: int = 10_000, size: int | tuple[int, int] = 64, seed: int = 0, n_disks: int = 2,
                 n_wires: int = 2, n_dots: int = 4, wire_width: float = 1.2, dot_size: tuple[float, float] = (2.0, 3.0),
                 noise: float = 0.05) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.size = _check_size(size)
        if min(self.size) < 32:
            raise ValueError(f"SceneWorld images must be at least 32 pixels a side (fine detail needs room), "
                             f"got {size!r}")
        for label, value, low in (("n_disks", n_disks, 1), ("n_wires", n_wires, 0), ("n_dots", n_dots, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 8:
                raise ValueError(f"{label} must be an int in [{low}, 8], got {value!r}")
        if not 0.5 <= wire_width <= 3.0:
            raise ValueError(f"wire_width must be in [0.5, 3] pixels (a thin structure), got {wire_width!r}")
        d_min, d_max = dot_size
        if not 1.0 <= d_min <= d_max <= 4.0:
            raise ValueError(f"dot_size must be (min, max) pixels with 1 <= min <= max <= 4, got {dot_size!r}")
        if not 0 <= noise <= 0.3:
            raise ValueError(f"noise must be in [0, 0.3], got {noise!r}")
        self.n, self.seed, self.noise = n, seed, noise
        self.wire_width, self.dot_size = float(wire_width), (float(d_min), float(d_max))
        g = torch.Generator().manual_seed(seed)
        self.kind = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]  # scene kind, exactly balanced
        beacon_left = torch.rand(n, generator=g) < 0.5

        def in_half(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
            return torch.where(left, x, 1 - x)

        bx = in_half(0.12 + 0.26 * torch.rand(n, generator=g), beacon_left.view(n))
        by = 0.12 + 0.76 * torch.rand(n, generator=g)
        self.beacon_centre = torch.stack([bx, by], -1)  # [n, 2]
        self.beacon_colour = (torch.tensor(BEACON_COLOURS)[self.kind]
                              + 0.08 * (torch.rand(n, 3, generator=g) - 0.5)).clamp(0, 1)
        # disks in the other half: x in [0.6, 0.9] when the beacon is on the left, mirrored otherwise
        dx = in_half(0.6 + 0.3 * torch.rand(n, n_disks, generator=g), beacon_left.view(n, 1))
        dy = 0.12 + 0.76 * torch.rand(n, n_disks, generator=g)
        self.disk_centre = torch.stack([dx, dy], -1)  # [n, n_disks, 2], in the half without the beacon
        self.disk_radius = 0.07 + 0.04 * torch.rand(n, n_disks, generator=g)
        self.disk_colour = self._palette_colours(g, n, n_disks)
        self.wire_point = 0.15 + 0.7 * torch.rand(n, n_wires, 2, generator=g)  # a point the wire passes through
        self.wire_angle = torch.pi * torch.rand(n, n_wires, generator=g)
        self.wire_colour = (0.75 + 0.2 * torch.rand(n, n_wires, 1, generator=g)).expand(n, n_wires, 3).clone()
        self.dot_centre = 0.05 + 0.9 * torch.rand(n, n_dots, 2, generator=g)
        self.dot_side = d_min + (d_max - d_min) * torch.rand(n, n_dots, generator=g)  # pixels
        self.dot_colour = self._palette_colours(g, n, n_dots)
        self.background = 0.2 * torch.rand(n, 3, generator=g)
        self.noise_seed = torch.randint(0, 2**31 - 1, (n,), generator=g)
        self._noise: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def _palette_colours(g: torch.Generator, n: int, k: int) -> torch.Tensor:
        ids = torch.randint(0, len(DISK_COLOURS), (n, k), generator=g)
        return (torch.tensor(DISK_COLOURS)[ids] + 0.08 * (torch.rand(n, k, 3, generator=g) - 0.5)).clamp(0, 1)

    def __len__(self) -> int:
        return self.n

    def _noise_bank(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._noise:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + size[0] * 1009 + size[1] + 7)
            self._noise[size] = torch.randn(self.NOISE_PATTERNS, 3, *size, generator=g)
        return self._noise[size]

    def render(self, indices: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = size
        b = len(indices)
        ys = ((torch.arange(h, dtype=torch.float32) + 0.5) / h).view(1, h, 1)
        xs = ((torch.arange(w, dtype=torch.float32) + 0.5) / w).view(1, 1, w)
        image = self.background[indices].view(b, 3, 1, 1).expand(b, 3, h, w).clone()
        labels = torch.zeros(b, h, w, dtype=torch.long)
        kind = self.kind[indices].view(b, 1, 1)

        def paint(mask: torch.Tensor, colour: torch.Tensor, label: torch.Tensor | int) -> None:
            nonlocal image, labels
            image = torch.where(mask.unsqueeze(1), colour.view(b, 3, 1, 1), image)
            labels = torch.where(mask, label, labels)

        for j in range(self.disk_centre.shape[1]):  # disks: class 4 or 5 by the scene kind, nothing else
            c = self.disk_centre[indices, j]
            r = self.disk_radius[indices, j].view(b, 1, 1)
            inside = (xs - c[:, 0].view(b, 1, 1)) ** 2 + (ys - c[:, 1].view(b, 1, 1)) ** 2 <= r * r
            paint(inside, self.disk_colour[indices, j], 4 + kind)
        half_px = 0.5 * self.wire_width / min(h, w)  # wire half-width in image units: wire_width pixels wide
        for j in range(self.wire_point.shape[1]):
            p, a = self.wire_point[indices, j], self.wire_angle[indices, j].view(b, 1, 1)
            # distance to the line through p with direction (cos a, sin a): |(x - p) x direction|
            dist = ((xs - p[:, 0].view(b, 1, 1)) * torch.sin(a) - (ys - p[:, 1].view(b, 1, 1)) * torch.cos(a)).abs()
            paint(dist <= half_px, self.wire_colour[indices, j], 1)
        for j in range(self.dot_centre.shape[1]):
            c = self.dot_centre[indices, j]
            half = 0.5 * self.dot_side[indices, j].view(b, 1, 1)  # pixels
            inside = (((xs - c[:, 0].view(b, 1, 1)) * w).abs() <= half) & (((ys - c[:, 1].view(b, 1, 1)) * h).abs()
                                                                           <= half)
            paint(inside, self.dot_colour[indices, j], 2)
        c = self.beacon_centre[indices]
        beacon = (((xs - c[:, 0].view(b, 1, 1)).abs() <= self.BEACON_HALF)
                  & ((ys - c[:, 1].view(b, 1, 1)).abs() <= self.BEACON_HALF))
        paint(beacon, self.beacon_colour[indices], 3)
        if self.noise:
            image = image + self.noise * self._noise_bank(size)[self.noise_seed[indices] % self.NOISE_PATTERNS]
            image = image.clamp_(0, 1)
        return image, labels


# --------------------------------------------------------------------------------------------------------------------
# Data sets by name, for experiments written as data
# --------------------------------------------------------------------------------------------------------------------

DATASETS = ("digits", "shapes_colour", "shapes_kind", "shapes_seg", "scenes")


def make_datasets(name: str, size: int = 32, seed: int = 0, n_train: int = 10_000, n_test: int = 2_000,
                  **world) -> tuple[_BatchedDataset, _BatchedDataset]:
    """``(train, test)`` of a named data set: ``"digits"`` (``n_*`` ignored: the split is fixed), ``"shapes_colour"``,
    ``"shapes_kind"`` (ShapesWorld's two relation tasks), ``"shapes_seg"``, ``"scenes"`` (:class:`SceneWorld`,
    segmentation with a context rule and fine detail). The procedural test sets are drawn from another
    seed (``seed + 1_000_003``), never from the train set's. ``world``: more :class:`ShapesWorld` arguments
    (``noise``, ``n_colours``, ``radius``) or :class:`SceneWorld` arguments."""
    if name == "digits":
        if world:
            raise ValueError(f"digits take no world arguments, got {sorted(world)}")
        return Digits("train", size, seed), Digits("test", size, seed)
    if name in ("shapes_colour", "shapes_kind", "shapes_seg"):
        task = {"shapes_colour": "same_colour", "shapes_kind": "same_kind", "shapes_seg": "segmentation"}[name]
        return (ShapesWorld(n_train, size, seed, task, **world),
                ShapesWorld(n_test, size, seed + 1_000_003, task, **world))
    if name == "scenes":
        return SceneWorld(n_train, size, seed, **world), SceneWorld(n_test, size, seed + 1_000_003, **world)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")

