"""The one contract every registered model keeps (see ``lessons/contract.py``), in the spirit of timm's
``tests/test_models.py``: one parametrized test per statement, over ``lessons.list_models()``.

Models run at a small input (64x64, or the model's ``size_divisor`` if larger) with 5 classes, batch 2, one thread:
the statements are about the contract, not about the paper's sizes.
"""

from __future__ import annotations

import os

import pytest
import torch

import lessons
from lessons.contract import FeatureInfo, ImageClassifier, Segmenter

from helpers import one_thread_for_the_module

ALL = lessons.list_models()
CLASSIFIERS = lessons.list_models(task="classification")
SEGMENTERS = lessons.list_models(task="segmentation")
NUM_CLASSES = 5
BATCH = 2

# Models with parts of a fixed size (a spatial MLP over all tokens, a position embedding) are built for the test size.
FIXED_SIZE = {"metaformer_pppf_s12", "metaformer_ppff_s12", "metaformer_pppa_s12", "metaformer_ppaa_s12"}

one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


def side(name: str) -> int:
    divisor = lessons.model_info(name).size_divisor
    return max(64, divisor * -(-64 // divisor))


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs.setdefault("num_classes", NUM_CLASSES)
    if name in FIXED_SIZE:
        kwargs.setdefault("img_size", side(name))
    return lessons.create_model(name, **kwargs).eval()


def image(name: str, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    s = side(name)
    return torch.randn(batch, lessons.model_info(name).input_size[0], s, s, generator=torch.Generator().manual_seed(seed))


def test_the_registry_lists_both_tasks_and_every_family() -> None:
    assert CLASSIFIERS and SEGMENTERS and sorted(CLASSIFIERS + SEGMENTERS) == ALL
    assert {lessons.model_info(n).family for n in ALL} == set(lessons.FAMILIES)


@pytest.mark.parametrize("name", ALL)
def test_model_carries_its_registry_entry_and_base_class(name: str) -> None:
    model = build(name)
    info = lessons.model_info(name)
    assert model.info is info and model.num_classes == NUM_CLASSES
    assert isinstance(model, ImageClassifier if info.task == "classification" else Segmenter)
    assert info.input_size[0] == 3 and info.num_classes == (1000 if info.task == "classification" else 150)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_splits_trunk_and_head(name: str) -> None:
    model, x = build(name), image(name)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model(x), logits)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert pooled.shape == (BATCH, model.num_features)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_intermediates_match_feature_info(name: str) -> None:
    model, x = build(name), image(name)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
    assert all(isinstance(f, FeatureInfo) for f in model.feature_info)
    assert [m.shape[1] for m in maps] == [f.channels for f in model.feature_info]
    assert [x.shape[-1] // m.shape[-1] for m in maps] == [f.stride for f in model.feature_info]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_reset_classifier_and_num_classes_zero_give_pooled_features(name: str) -> None:
    model, x = build(name), image(name)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(3)
        assert model(x).shape == (BATCH, 3) and model.num_classes == 3
        headless = build(name, num_classes=0)
        torch.testing.assert_close(headless(x), pooled)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_features_logits_forward_and_predict_agree(name: str) -> None:
    model, x = build(name), image(name)
    with torch.no_grad():
        features = model.forward_features(x)
        low = model.forward_head(features)
        torch.testing.assert_close(model.forward_logits(x), low)
        full = model(x)
        labels = model.predict(x)
    assert all(isinstance(f, FeatureInfo) for f in model.feature_info)
    assert [f.shape[1] for f in features] == [f.channels for f in model.feature_info]
    assert [x.shape[-1] // f.shape[-1] for f in features] == [f.stride for f in model.feature_info]
    assert low.shape == (BATCH, NUM_CLASSES, x.shape[-2] // model.logits_stride, x.shape[-1] // model.logits_stride)
    assert full.shape == (BATCH, NUM_CLASSES, *x.shape[-2:])
    assert labels.shape == (BATCH, *x.shape[-2:]) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < NUM_CLASSES


@pytest.mark.parametrize("name", ALL)
def test_eval_output_does_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    """In float64: with random weights and BatchNorm statistics, some models' activations grow large enough that
    float32 kernels chosen by batch size give logits apart by rounding alone (SeaFormer-Large's classifier: 5e-4 on
    one CPU, with both results 2e-4-3e-4 from the float64 one). In float64 rounding is ~1e-12; a sample that saw
    the rest of its batch would be off by the logits' own scale."""
    model, x = build(name).double(), image(name, batch=3).double()
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone)  # float64 defaults: rtol 1e-7, atol 1e-7


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_gives_the_same_output(name: str) -> None:
    model, x = build(name, seed=0), image(name)
    other = build(name, seed=1)
    other.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_model_same_output(name: str) -> None:
    x = image(name)
    with torch.no_grad():
        first, second = build(name, seed=3)(x), build(name, seed=3)(x)
        different = build(name, seed=4)(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, different)


@pytest.mark.parametrize("name", ALL)
def test_runs_under_no_grad_and_inference_mode_and_trains(name: str) -> None:
    model, x = build(name), image(name)
    with torch.no_grad():
        reference = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference)
    model.train()
    model(x).float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:1])


@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_a_clear_error(name: str) -> None:
    model, x = build(name), image(name)
    with pytest.raises(ValueError, match="input channels"):
        model(torch.zeros(1, 4, *x.shape[-2:]))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(x[0])
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(x.shape, dtype=torch.uint8))
    divisor = lessons.model_info(name).size_divisor
    if divisor > 1:
        with pytest.raises(ValueError, match=f"multiples of {divisor}"):
            model(torch.zeros(1, 3, x.shape[-2] + divisor // 2, x.shape[-1]))


# torch.export takes 3-20 s per model on CI's two cores, a sixth of the unit tests' time when every model was exported.
# Variants of one architecture run the same code with other widths and depths, so CI exports one variant of each
# family and task, plus every variant whose *structure* differs (another token mixer, another fusion, a third
# attention stage, a head without the depthwise conv); LESSONS_EXPORT_SWEEP=all exports every model.
CI_EXPORTED = [
    "hrvit_b1", "hrvit_b1_cls",  # b2, b3: more blocks and channels
    "mobilevit_xxs",  # xs, s: wider
    "poolformer_s12",  # s24 ... m48: deeper, wider
    "metaformer_id_s12", "metaformer_pppf_s12", "metaformer_ppff_s12", "metaformer_pppa_s12", "metaformer_ppaa_s12",
    "pp_mobileseg_tiny", "pp_mobileseg_base", "pp_mobileseg_base_5stage",  # AAM; AAMSx8; a fifth stage
    "seaformer_tiny", "seaformer_tiny_cls", "seaformer_large",  # small, base: wider; large: three attention stages
    "topformer_tiny", "topformer_tiny_cls", "topformer_small",  # tiny's head has a depthwise conv, small's not
]
EXPORTED = ALL if os.environ.get("LESSONS_EXPORT_SWEEP") == "all" else CI_EXPORTED


def test_ci_exports_every_family_and_task() -> None:
    assert set(CI_EXPORTED) <= set(ALL), f"not registered: {sorted(set(CI_EXPORTED) - set(ALL))}"
    assert {(lessons.model_info(n).family, n.endswith("_cls")) for n in EXPORTED} == {
        (lessons.model_info(n).family, n.endswith("_cls")) for n in ALL}


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_export_succeeds_and_matches_eager(name: str) -> None:
    model, x = build(name), image(name)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_pretrained_true_is_refused_with_what_to_do_instead() -> None:
    with pytest.raises(ValueError, match=r"downloads nothing.*checkpoint="):
        lessons.create_model("topformer_tiny", pretrained=True)
    with torch.device("meta"):
        assert lessons.create_model("topformer_tiny", pretrained=False).num_classes == 150


def test_list_models_filters_by_family_and_task_and_rejects_unknown_ones() -> None:
    assert lessons.list_models(family="hrvit", task="classification") == ["hrvit_b1_cls", "hrvit_b2_cls", "hrvit_b3_cls"]
    assert lessons.list_models("hrvit_*", task="segmentation") == ["hrvit_b1", "hrvit_b2", "hrvit_b3"]
    assert set(lessons.list_models(family="poolformer")) >= {"poolformer_s12", "metaformer_id_s12"}
    with pytest.raises(ValueError, match="unknown family 'vit'.*choose from"):
        lessons.list_models(family="vit")
    with pytest.raises(ValueError, match="unknown task 'detection'"):
        lessons.list_models(task="detection")


@pytest.mark.parametrize("name", ALL)
def test_naming_rule_bare_name_is_the_headline_task(name: str) -> None:
    info = lessons.model_info(name)
    headline = lessons.FAMILIES[info.family].headline_task
    assert (info.task == headline) == (not name.endswith("_cls")), name
