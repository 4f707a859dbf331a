"""Statements about the model registry: ``create_model``, ``list_models`` and ``register_model`` behave like timm's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lessons
from lessons import registry


SPEC = dict(family="mobilevit", task="classification", input_size=(3, 32, 32), num_classes=3, dataset="test")


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry for tests that register models, so nothing leaks into the package's own."""
    models = dict(registry._MODELS)
    monkeypatch.setattr(registry, "_MODELS", models)
    return models


def test_unknown_name_raises_value_error_naming_the_closest_match() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'mobilevit_xxxs'.*Did you mean 'mobilevit_xxs'"):
        lessons.create_model("mobilevit_xxxs")


def test_unknown_name_without_a_close_match_points_to_list_models() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'qqqq'\. lessons\.list_models\(\) lists all"):
        lessons.create_model("qqqq")


def test_model_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="model name must be a string"):
        lessons.create_model(None)  # type: ignore[arg-type]


def test_list_models_filters_with_shell_patterns() -> None:
    everything = lessons.list_models()
    assert everything == sorted(everything)
    assert {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s"} <= set(everything)
    mobilevits = lessons.list_models("mobilevit_*")
    assert {"mobilevit_s", "mobilevit_xs", "mobilevit_xxs"} <= set(mobilevits)
    assert mobilevits == [name for name in everything if name.startswith("mobilevit_")]
    assert lessons.list_models("*_xxs") == [name for name in everything if name.endswith("_xxs")]
    assert lessons.list_models("mobilevit_x?") == ["mobilevit_xs"]
    assert lessons.list_models("no_such_family_*") == []
    assert lessons.list_models("MOBILEVIT_*") == []  # case-sensitive, as model names are


def test_list_models_rejects_a_non_string_pattern() -> None:
    with pytest.raises(TypeError, match="pattern must be a string"):
        lessons.list_models(["mobilevit_*"])  # type: ignore[arg-type]


def test_register_model_uses_the_function_name(private_registry: dict) -> None:
    @lessons.register_model(**SPEC)
    def tiny_test_net(num_classes: int = 3) -> nn.Module:
        return nn.Linear(4, num_classes)

    assert "tiny_test_net" in lessons.list_models("tiny_*")
    assert lessons.create_model("tiny_test_net").out_features == 3


def test_registering_a_name_twice_raises(private_registry: dict) -> None:
    def twice_test_net() -> nn.Module:
        return nn.Identity()

    registry.register_model(**SPEC)(twice_test_net)
    registry.register_model(**SPEC)(twice_test_net)  # the same function again (a module re-import) is harmless

    def another() -> nn.Module:
        return nn.ReLU()

    another.__name__ = "twice_test_net"
    with pytest.raises(ValueError, match="'twice_test_net' is already registered"):
        registry.register_model(**SPEC)(another)
    assert isinstance(lessons.create_model("twice_test_net"), nn.Identity)  # the first one is kept


def test_the_private_registry_did_not_leak() -> None:
    assert lessons.list_models("tiny_test_net") == [] and lessons.list_models("twice_test_net") == []


def test_create_model_forwards_kwargs() -> None:
    with torch.device("meta"):
        model = lessons.create_model("mobilevit_xxs", num_classes=10, in_chans=1)
    assert model.fc.out_features == 10
    assert model.stem.conv.in_channels == 1
    with pytest.raises(TypeError):
        lessons.create_model("mobilevit_xxs", no_such_argument=1)


def test_registering_with_an_unknown_family_or_task_or_a_bad_size_raises(private_registry: dict) -> None:
    def odd_test_net() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="unknown family 'vit'"):
        registry.register_model(**{**SPEC, "family": "vit"})(odd_test_net)
    with pytest.raises(ValueError, match="task must be one of"):
        registry.register_model(**{**SPEC, "task": "detection"})(odd_test_net)
    with pytest.raises(ValueError, match="not a multiple of size_divisor 32"):
        registry.register_model(**{**SPEC, "input_size": (3, 48, 48), "size_divisor": 32})(odd_test_net)


def test_model_info_says_what_a_model_is_and_the_built_model_carries_it() -> None:
    info = lessons.model_info("topformer_tiny")
    assert (info.family, info.task, info.input_size, info.num_classes) == ("topformer", "segmentation", (3, 512, 512), 150)
    assert "TopFormer" in info.paper and info.code.startswith("https://github.com/hustvl/")
    with torch.device("meta"):
        assert lessons.create_model("topformer_tiny").info is info
    with pytest.raises(ValueError, match="unknown model 'topformer_tin'.*Did you mean 'topformer_tiny'"):
        lessons.model_info("topformer_tin")


def test_families_are_listed_once_in_chapter_order_and_each_has_models() -> None:
    names = [f.name for f in lessons.families()]
    assert names == list(lessons.FAMILIES) == ["mobilevit", "poolformer", "topformer", "seaformer", "pp_mobileseg", "hrvit"]
    for family in lessons.families():
        assert lessons.list_models(family=family.name, task=family.headline_task), family.name
