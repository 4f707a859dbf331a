"""The model registry, in the spirit of timm's: ``create_model(name, **kwargs)`` and ``list_models(pattern)``.

It is also the one place that knows the book's families (:data:`FAMILIES`, in chapter order) and, for every named
model, what it is (:class:`ModelInfo`: family, task, default input size and classes, normalisation, the official
model it follows). Each family module registers its variants at the bottom of its file::

    @register_model(family="topformer", task="segmentation", input_size=(3, 512, 512), num_classes=150, ...)
    def topformer_tiny(**kwargs) -> TopFormer: ...

The function's name is the model's name. The naming rule: the bare name is the model of the paper's headline task
(segmenters for TopFormer, SeaFormer, PP-MobileSeg and HRViT; classifiers for MobileViT and PoolFormer); ``_cls``
marks the ImageNet classifiers of the segmentation families.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike

from torch import nn

ModelFactory = Callable[..., nn.Module]

TASKS = ("classification", "segmentation")

# Normalisation (per channel, for images scaled to [0, 1]) the official training pipelines use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # ml-cvnets feeds MobileViT pixels in [0, 1] as they are


@dataclass(frozen=True)
class Family:
    """One family of models: one chapter ``book/<name>.ipynb``, one module ``lessons/<name>.py``, one claims module
    ``lessons/claims/<name>.py``."""

    name: str
    title: str
    paper: str
    code: str
    headline_task: str

    @property
    def chapter(self) -> str:
        return f"book/{self.name}.ipynb"


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        "mobilevit", "MobileViT",
        "Mehta & Rastegari, MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer, "
        "ICLR 2022 (arXiv 2110.02178)",
        "https://github.com/apple/ml-cvnets", "classification",
    ),
    Family(
        "poolformer", "MetaFormer / PoolFormer",
        "Yu et al., MetaFormer is Actually What You Need for Vision, CVPR 2022 (arXiv 2111.11418)",
        "https://github.com/sail-sg/poolformer", "classification",
    ),
    Family(
        "topformer", "TopFormer",
        "Zhang et al., TopFormer: Token Pyramid Transformer for Mobile Semantic Segmentation, CVPR 2022 "
        "(arXiv 2204.05525)",
        "https://github.com/hustvl/TopFormer", "segmentation",
    ),
    Family(
        "seaformer", "SeaFormer",
        "Wan et al., SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation, ICLR 2023 "
        "(arXiv 2301.13156)",
        "https://github.com/fudan-zvg/SeaFormer", "segmentation",
    ),
    Family(
        "pp_mobileseg", "PP-MobileSeg",
        "Tang et al., PP-MobileSeg: Explore the Fast and Accurate Semantic Segmentation Model on Mobile Devices, "
        "2023 (arXiv 2304.05152)",
        "https://github.com/PaddlePaddle/PaddleSeg/tree/release/2.8/configs/pp_mobileseg", "segmentation",
    ),
    Family(
        "hrvit", "HRViT",
        "Gu et al., Multi-Scale High-Resolution Vision Transformer for Semantic Segmentation, CVPR 2022 "
        "(arXiv 2111.01236)",
        "https://github.com/facebookresearch/HRViT", "segmentation",
    ),
)}


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, as timm's ``pretrained_cfg`` says it; every model ``create_model`` builds carries
    it as ``model.info``.

    ``input_size`` (C, H, W) and ``num_classes`` are the defaults the paper reports with (a model built with
    ``num_classes=10`` still carries the registry's entry; ``model.num_classes`` says what it has). Inputs are images
    in [0, 1], normalised per channel with ``mean`` and ``std``; height and width must be multiples of
    ``size_divisor``. ``official`` names the official model or config the variant follows.
    """

    name: str
    family: str
    task: str
    input_size: tuple[int, int, int]
    num_classes: int
    dataset: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisor: int = 1
    official: str = ""
    factory: ModelFactory | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model {self.name!r}: unknown family {self.family!r}; families: {list(FAMILIES)}")
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if len(self.input_size) != 3 or not all(isinstance(s, int) and s > 0 for s in self.input_size):
            raise ValueError(f"model {self.name!r}: input_size must be (C, H, W) of positive ints, got "
                             f"{self.input_size!r}")
        if any(s % self.size_divisor for s in self.input_size[1:]):
            raise ValueError(f"model {self.name!r}: input_size {self.input_size} is not a multiple of "
                             f"size_divisor {self.size_divisor}")

    @property
    def paper(self) -> str:
        return FAMILIES[self.family].paper

    @property
    def code(self) -> str:
        return FAMILIES[self.family].code


def imagenet_classifier(family: str, **fields) -> dict:
    """The registration fields of an ImageNet-1k classifier of ``family``: 224x224, 1,000 classes, ImageNet mean and
    std, any input size; ``fields`` override them (MobileViT: 256x256, no normalisation)."""
    return dict(family=family, task="classification", input_size=(3, 224, 224), num_classes=1000,
                dataset="ImageNet-1k", mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor=1) | fields


def ade20k_segmenter(family: str, **fields) -> dict:
    """The registration fields of an ADE20K segmenter of ``family``: 512x512, 150 classes, ImageNet mean and std (the
    mmseg and PaddleSeg ADE20K pipelines), any input size; ``fields`` override them (HRViT: multiples of 32)."""
    return dict(family=family, task="segmentation", input_size=(3, 512, 512), num_classes=150, dataset="ADE20K",
                mean=IMAGENET_MEAN, std=IMAGENET_STD, size_divisor=1) | fields


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    *, family: str, task: str, input_size: tuple[int, int, int], num_classes: int, dataset: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
    size_divisor: int = 1, official: str = "",
) -> Callable[[ModelFactory], ModelFactory]:
    """Register the decorated factory under its function name, with what the model is; a name is registered once."""

    def register(factory: ModelFactory) -> ModelFactory:
        name = factory.__name__
        if name in _MODELS and _MODELS[name].factory is not factory:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = ModelInfo(
            name, family, task, tuple(input_size), num_classes, dataset, tuple(mean), tuple(std), size_divisor,
            official, factory,
        )
        return factory

    return register


def _check_choice(label: str, value: object, allowed: tuple[str, ...] | list[str]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {label} {value!r}; choose from {list(allowed)}")


def list_models(pattern: str = "*", *, family: str | None = None, task: str | None = None) -> list[str]:
    """Sorted names of the registered models that match the shell-style ``pattern`` (``"mobilevit_*"``), and
    ``family`` (``"topformer"``) and ``task`` (``"classification"`` or ``"segmentation"``) when given."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as 'mobilevit_*', got {type(pattern).__name__}")
    _check_choice("family", family, list(FAMILIES))
    _check_choice("task", task, TASKS)
    return sorted(
        name for name, info in _MODELS.items()
        if fnmatch.fnmatchcase(name, pattern) and family in (None, info.family) and task in (None, info.task)
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} lessons.list_models() lists all {len(_MODELS)} known names."
        )
    return name


def model_info(name: str) -> ModelInfo:
    """What the registered model ``name`` is (family, task, default input size, classes, normalisation ...)."""
    return _MODELS[_check_name(name)]


def families() -> list[Family]:
    """The book's families, in chapter order."""
    return list(FAMILIES.values())


def create_model(
    name: str, pretrained: bool = False, checkpoint: str | PathLike | dict | None = None, **kwargs,
) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its factory (e.g. ``num_classes``).

    ``pretrained=True`` is refused: the book downloads nothing. Download the authors' checkpoint yourself and pass
    its path (or its loaded state dict) as ``checkpoint=``; :func:`lessons.load_official` maps it into the model.
    """
    info = model_info(name)
    if pretrained:
        raise ValueError(
            f"pretrained=True: this book downloads nothing. Download the authors' checkpoint for {name!r} yourself "
            f"(official code: {info.code}) and pass it as checkpoint='path/to/file'; see the README's "
            "'Official checkpoints' section."
        )
    assert info.factory is not None
    model = info.factory(**kwargs)
    model.info = info
    if checkpoint is not None:
        from .checkpoints import load_official  # late import: checkpoints imports the registry

        load_official(model, checkpoint)
    return model
