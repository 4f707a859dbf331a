"""Tests of the experiment runner (lessons.experiments): definitions, smoke runs, resumption, staleness."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from lessons import experiments
from lessons.data import make_datasets
from lessons.experiments import (
    EXPERIMENTS, RESULTS_DIR, Experiment, build_model, definition_hash, experiment, is_stale, run_experiment,
    stale_results,
)

from helpers import one_thread_for_the_module


# One intra-op thread: these models are tiny, and on a shared machine extra threads only spin.
one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_for_the_module)


def test_committed_results_match_their_definitions():
    # Passes vacuously while book/data/experiments holds no results; fails as soon as one is stale.
    stale = stale_results(RESULTS_DIR)
    assert stale == [], f"stale results (definition changed since they were made; run them again): {stale}"


def test_every_experiment_states_a_hypothesis_and_cites_its_paper():
    assert {"poolformer_token_mixers", "mobilevit_patch_sizes", "mobilevit_multi_scale", "poolformer_token_mixers_48",
            "mobilevit_patch_sizes_128"} <= set(EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        assert exp.name == name
        # the paper: its venue, or its arXiv number for a preprint without one (PP-MobileSeg)
        assert "Hypothes" in exp.hypothesis and any(cite in exp.hypothesis for cite in ("ICLR", "CVPR", "arXiv")), name
        assert len(exp.variants) >= 2 and exp.seeds


def test_an_experiment_needs_a_docstring():
    def undocumented() -> Experiment:
        return EXPERIMENTS["mobilevit_patch_sizes"]

    with pytest.raises(ValueError, match="hypothesis"):
        experiment(undocumented)
    assert "undocumented" not in EXPERIMENTS


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_runs_two_steps_on_a_tiny_batch(name, tmp_path):
    results = run_experiment(name, seeds=[0], smoke=True, out_dir=tmp_path, progress=False)
    exp = EXPERIMENTS[name]
    assert set(results["runs"]) == set(exp.variants)
    written = json.loads((tmp_path / f"{name}.smoke.json").read_text())
    assert written["partial"] is True and written["definition_hash"] == definition_hash(name)
    for variant, runs in written["runs"].items():
        run = runs["0"]
        assert run["steps"] == 2 and len(run["history"]["loss"]) == 2
        names = ("loss", "top1") if exp.recipe.task == "classification" else ("loss", "pixel_acc", "miou")
        expected = set(names) | {f"{m}@{s}" for s in exp.eval_sizes for m in names}
        if exp.recipe.task == "segmentation":  # per-class IoU and the data set's groups, at the end
            world, _ = make_datasets(**{**exp.dataset, "n_train": 1, "n_test": 1})
            expected |= {f"iou.{c}" for c in world.class_names} | set(world.metric_groups)
        assert set(run["metrics"]) == expected, variant
        assert {"command", "git_commit", "versions", "machine", "wall_s", "params"} <= set(run)


def test_finished_runs_are_skipped_and_a_changed_definition_starts_over(tmp_path, monkeypatch):
    name = "mobilevit_patch_sizes"
    first = run_experiment(name, seeds=[0], smoke=True, out_dir=tmp_path, progress=False)
    calls = []
    real_train = experiments.train
    monkeypatch.setattr(experiments, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = run_experiment(name, seeds=[0], smoke=True, out_dir=tmp_path, progress=False)
    assert calls == [] and again["runs"] == first["runs"]  # nothing trained twice
    run_experiment(name, seeds=[0, 1], smoke=True, out_dir=tmp_path, progress=False, variants=["config_b_842"])
    assert len(calls) == 1  # only the missing (variant, seed)

    changed = replace(EXPERIMENTS[name], hypothesis=EXPERIMENTS[name].hypothesis + "\nAn afterthought.")
    monkeypatch.setitem(EXPERIMENTS, name, changed)
    calls.clear()
    run_experiment(name, seeds=[0], smoke=True, out_dir=tmp_path, progress=False)
    assert len(calls) == 2  # both variants again: the stored runs belong to another definition


def test_is_stale_can_fail(tmp_path, monkeypatch):
    name = "poolformer_token_mixers"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"definition_hash": definition_hash(name), "runs": {}}))
    assert not is_stale(name, path) and stale_results(tmp_path) == []
    # the code's definition changes after the results were made: the committed file is stale
    changed = replace(EXPERIMENTS[name], recipe=replace(EXPERIMENTS[name].recipe, lr=1e-3))
    monkeypatch.setitem(EXPERIMENTS, name, changed)
    assert is_stale(name, path) and stale_results(tmp_path) == [name]
    # a results file of an experiment that no longer exists is stale too
    (tmp_path / "gone.json").write_text(json.dumps({"definition_hash": "0" * 16}))
    assert stale_results(tmp_path) == ["gone", name]


def test_the_hash_covers_hypothesis_variants_recipe_and_data():
    exp = EXPERIMENTS["mobilevit_multi_scale"]
    base = definition_hash(exp)
    assert definition_hash(exp) == base  # stable
    assert definition_hash(replace(exp, hypothesis=exp.hypothesis + ".")) != base
    assert definition_hash(replace(exp, variants={**exp.variants, "extra": exp.variants["single_64"]})) != base
    assert definition_hash(replace(exp, recipe=replace(exp.recipe, steps=exp.recipe.steps + 1))) != base
    assert definition_hash(replace(exp, dataset={**exp.dataset, "seed": 1})) != base


def test_model_specs_build_the_family_models_and_the_patch_stem():
    spec = EXPERIMENTS["poolformer_token_mixers"].variants
    overlap = build_model(spec["pooling3"], num_classes=2)
    patch = build_model(spec["pooling3_patch_stem"], num_classes=2)
    assert overlap.stem.kernel_size == (7, 7)
    assert patch.stem[1].kernel_size == (1, 1) and patch.stem[1].in_channels == 48
    x = torch.zeros(2, 3, 32, 32)
    assert overlap.stem(x).shape == patch.stem(x).shape  # the same token grid
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({"family": "resnet"}, 2)


def test_the_second_attempts_build_what_their_hypotheses_describe():
    pool = EXPERIMENTS["poolformer_token_mixers_48"]
    assert pool.dataset["size"] == 48 and pool.recipe.eval_every == 25
    x = torch.zeros(2, 3, 48, 48)
    torch.manual_seed(0)
    random = build_model(pool.variants["random"], num_classes=2)
    mixers = [block.token_mixer for stage in random.stages for block in stage.blocks]
    assert [tuple(m.random_matrix.shape) for m in mixers] == [(144, 144), (36, 36), (9, 9), (9, 9), (4, 4)]
    assert not any("random_matrix" in name for name, _ in random.named_parameters())  # frozen: buffers only
    patch = build_model(pool.variants["pooling3_patch4_stem"], num_classes=2)
    overlap = build_model(pool.variants["pooling3"], num_classes=2)
    assert isinstance(patch.stem[0], torch.nn.PixelUnshuffle) and patch.stem[0].downscale_factor == 4
    assert patch.stem(x).shape == overlap.stem(x).shape == (2, 16, 12, 12)  # 4x4 patches, the official grid
    assert random(x).shape == (2, 2)
    # MobileViT at 128x128: the three MobileViT stages see 16x16, 8x8 and 4x4 maps, so config-B's patches (8, 4, 2)
    # cut each into a 2x2 grid -- several tokens per attention, unlike the first attempt's single token at 64x64
    vit = EXPERIMENTS["mobilevit_patch_sizes_128"]
    assert vit.dataset["size"] == 128 and vit.variants["config_b_842"]["patch_sizes"] == [8, 4, 2]
    assert [128 // stride // patch for stride, patch in zip((8, 16, 32), (8, 4, 2))] == [2, 2, 2]


def test_command_line_list(capsys):
    assert experiments.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_the_first_seed_of_a_real_run_keeps_a_small_checkpoint_that_loads(tmp_path):
    name = "mobilevit_patch_sizes"
    results = run_experiment(name, seeds=[0, 1], steps=2, out_dir=tmp_path, progress=False,
                             variants=["config_b_842"])
    runs = results["runs"]["config_b_842"]
    assert "checkpoint" in runs["0"] and "checkpoint" not in runs["1"]  # the chapters show one trained model
    path = tmp_path / name / "config_b_842.steps2.pt"
    assert runs["0"]["checkpoint"] == str(path) and path.stat().st_size <= experiments.MAX_CHECKPOINT_BYTES
    model = build_model(EXPERIMENTS[name].variants["config_b_842"], num_classes=2, in_chans=3)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)


def test_segmenter_specs_build_the_micro_topformer_and_seaformer_with_their_ablation_switches():
    top = EXPERIMENTS["topformer_ablations"].variants
    sea = EXPERIMENTS["seaformer_ablations"].variants
    x = torch.zeros(2, 3, 64, 64)
    for spec in (*top.values(), *sea.values()):
        model = build_model(spec, num_classes=6).eval()
        assert model(x).shape == (2, 6, 64, 64)  # logits at the input's size, as the trainer's loss needs
    paper = build_model(top["paper"], 6)
    assert paper.pool(paper.token_pyramid(x)).shape[-2:] == (2, 2)  # pooling stride 32: a 2x2 grid at 64x64
    assert build_model(top["no_attention"], 6).config.extractor_attention is False
    assert build_model(top["last_token"], 6).config.extractor_input == "last"
    no_axial = build_model(sea["no_axial"], 6)
    assert not hasattr(no_axial.backbone.transformers[0][0].attn, "proj_row")
    with pytest.raises(TypeError):
        build_model({**top["paper"], "not_a_field": 1}, 6)


def test_segmenter_specs_build_the_micro_pp_mobileseg_with_aam_or_seaformers_fusion():
    variants = EXPERIMENTS["pp_mobileseg_ablations"].variants
    assert "pp_mobileseg" in experiments.SEGMENTER_FAMILIES
    x = torch.zeros(2, 3, 64, 64)
    aam = build_model(variants["aam"], num_classes=6).eval()
    sea = build_model(variants["sea_fusion"], num_classes=6).eval()
    for model in (aam, sea):
        assert model(x).shape == (2, 6, 64, 64)  # logits at the input's size, as the trainer's loss needs
        assert model.predict(x).shape == (2, 64, 64)
    assert type(aam.fusion).__name__ == "AggregatedAttention" and aam.logits_stride == 16
    assert type(sea.fusion).__name__ == "SeaFusion" and sea.logits_stride == 8
    assert aam.forward_logits(x).shape[-2:] == (4, 4) and sea.forward_logits(x).shape[-2:] == (8, 8)
    with pytest.raises(ValueError, match="unknown fusion"):
        build_model({**variants["aam"], "fusion": "concat"}, 6)
    with pytest.raises(TypeError):
        build_model({**variants["aam"], "not_a_field": 1}, 6)
    with pytest.raises(ValueError, match="unknown model family"):
        build_model({"family": "pp-mobileseg"}, 6)


def test_hrvit_specs_build_the_micro_hrvit_with_its_ablation_switches():
    from lessons.hrvit import MixCFN, TokenMlp

    assert "hrvit" in experiments.SEGMENTER_FAMILIES
    hv = EXPERIMENTS["hrvit_ablations"].variants
    x = torch.zeros(2, 3, 64, 64)
    models = {name: build_model(spec, num_classes=6).eval() for name, spec in hv.items()}
    for model in models.values():
        assert model(x).shape == (2, 6, 64, 64)  # logits at the input's size
    paper = models["paper"]
    assert paper.config.channels == (16, 32, 48, 64) and len(paper.backbone.layers) == 5
    assert paper.decode_head.classify.in_channels == 32  # head_channels from the spec, not the default 256
    assert [f.shape[-1] for f in paper.forward_features(x)] == [16, 8, 4, 2]  # branches at 1/4 .. 1/32

    def modules(model, kind):
        return [m for m in model.modules() if isinstance(m, kind)]

    attn = paper.backbone.layers[0].stage.branches[0][0].attn
    kv_attn = models["independent_kv"].backbone.layers[0].stage.branches[0][0].attn
    assert attn.qkv.out_features == 2 * attn.dim and kv_attn.qkv.out_features == 3 * kv_attn.dim
    assert modules(paper, MixCFN) and not modules(paper, TokenMlp)
    assert modules(models["plain_mlp"], TokenMlp) and not modules(models["plain_mlp"], MixCFN)

    def paths(model):
        return sum(len(p) for f in model.backbone.fusions for p in f.paths)

    assert paths(models["sparse_fusion"]) < paths(paper)
    # only the switch differs: every other field is the paper's
    for name, model in models.items():
        assert sum(getattr(model.config, f) != getattr(paper.config, f)
                   for f in ("shared_kv", "mix_cfn", "dense_fusion")) == (name != "paper")
    with pytest.raises(TypeError):
        build_model({**hv["paper"], "not_a_field": 1}, 6)
    with pytest.raises(ValueError, match="even"):
        build_model({**hv["paper"], "channels": [15, 32, 48, 64]}, 6)
    with pytest.raises(ValueError, match="hrvit"):
        build_model({"family": "hrvitt"}, 6)


def test_class_metrics_are_per_class_iou_and_the_worlds_groups():
    train_set, test_set = make_datasets("scenes", size=32, n_train=4, n_test=6)

    class Oracle(torch.nn.Module):  # predicts the true labels, except that every disk is "red scene"
        def forward(self, x):
            _, labels = test_set.batch(list(range(len(x))))
            labels = torch.where(labels == 5, 4, labels)
            return torch.nn.functional.one_hot(labels, 6).permute(0, 3, 1, 2).float()

    recipe = replace(EXPERIMENTS["topformer_ablations"].recipe, eval_batch_size=6)
    metrics = experiments.class_metrics(Oracle(), test_set, recipe)
    assert set(metrics) == {f"iou.{c}" for c in test_set.class_names} | {"context_iou", "detail_iou"}
    assert metrics["iou.beacon"] == metrics["iou.wire"] == metrics["detail_iou"] == 1.0
    assert metrics["iou.disk_in_blue_scene"] == 0.0 and 0 < metrics["iou.disk_in_red_scene"] < 1
    assert metrics["context_iou"] == pytest.approx(metrics["iou.disk_in_red_scene"] / 2)
    _, labels = test_set.batch(list(range(6)))
    iou = experiments.class_iou(labels, labels, 6)
    assert torch.equal(iou, torch.ones(6))
