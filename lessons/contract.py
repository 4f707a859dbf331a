"""The one contract every model in the book keeps, whatever its family (``tests/test_contract.py`` checks it for
every registered model).

**Classifiers** (:class:`ImageClassifier`), as timm's models:

- ``forward_features(x)`` -> the trunk's last feature map (HRViT: its four branch maps);
- ``forward_head(features, pre_logits=False)`` -> logits ``[B, num_classes]`` (pooled features if ``pre_logits``);
- ``forward(x) = forward_head(forward_features(x))``;
- ``reset_classifier(num_classes)`` swaps the last linear layer; ``num_classes=0`` makes ``forward`` return the
  pooled features ``[B, num_features]``;
- ``forward_intermediates(x)`` -> the maps of every stage, described by ``feature_info``.

**Segmenters** (:class:`Segmenter`):

- ``forward_features(x)`` -> the list of feature maps the head reads, described by ``feature_info`` (channels and
  stride of each);
- ``forward_head(features)`` -> logits at the head's own stride ``logits_stride``;
- ``forward_logits(x) = forward_head(forward_features(x))``;
- ``forward(x)`` -> logits resized (bilinear) to the input's size, as mmseg and PaddleSeg do at inference;
- ``predict(x)`` -> the label map ``[B, H, W]`` (PP-MobileSeg: through VIM where it applies).

Every model checks its input first (:func:`lessons.layers.check_image_batch`) and raises a ``ValueError`` or
``TypeError`` that says what it expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .layers import check_count, resize_to

# FX symbolic tracing records the resize as one call: its size is a traced shape, which FX cannot turn into a tuple.
torch.fx.wrap("resize_to")


class FeatureInfo(NamedTuple):
    """One feature map a model hands on: its channels, its stride (input side / map side), the module making it."""

    channels: int
    stride: int
    module: str


class ImageClassifier(nn.Module):
    """Base of the book's ImageNet classifiers: the timm-style split of trunk and head (see the module docstring).

    A subclass sets ``num_classes``, ``num_features``, ``feature_info`` and ``classifier_path`` (the dotted name of
    its last ``nn.Linear``, e.g. ``"fc"`` or ``"head.fc"``), and defines ``forward_features``, ``forward_head`` and
    ``forward_intermediates``.
    """

    num_classes: int
    num_features: int
    feature_info: list[FeatureInfo]
    classifier_path: str = "fc"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor | Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised last layer with ``num_classes`` outputs (0: none, ``forward`` returns the
        pooled features), for fine-tuning on another label set."""
        check_count("num_classes", num_classes, minimum=0, note=" (0 = no classifier)")
        parent_path, _, name = self.classifier_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        old = getattr(parent, name)
        weight = next(old.parameters(), None)
        factory = {"device": weight.device, "dtype": weight.dtype} if weight is not None else {}
        setattr(parent, name, nn.Linear(self.num_features, num_classes, **factory) if num_classes else nn.Identity())
        self.num_classes = num_classes


class Segmenter(nn.Module):
    """Base of the book's segmentation models (see the module docstring).

    A subclass sets ``num_classes``, ``feature_info`` and ``logits_stride``, and defines ``forward_features`` and
    ``forward_head``; it may override :meth:`predict` (PP-MobileSeg's VIM).
    """

    num_classes: int
    feature_info: list[FeatureInfo]
    logits_stride: int

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_head(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's own resolution, ``[B, num_classes, H / logits_stride, W / logits_stride]``."""
        return self.forward_head(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size (bilinear), what a loss against a full-resolution label map needs."""
        return resize_to(self.forward_logits(x), x.shape[-2:])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The label map ``[B, H, W]`` (int64): upsample the logits to the input, then argmax over classes."""
        return self.forward(x).argmax(dim=1)
