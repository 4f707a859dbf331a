"""The committed results of the miniature experiments (book/data/experiments) are complete and current.

The chapters' "Learning in miniature" sections and the direction claims read these files; a missing variant or
seed, a shortened run or a file made by an older definition of its experiment must fail here, by name, rather than
show up as a quietly different table or figure.
"""

from __future__ import annotations

import pytest
import torch

from lessons.claims import all_claims
from lessons.claims.core import DirectionClaim, load_results, missing_runs
from lessons.data import make_datasets
from lessons.experiments import EXPERIMENTS, MAX_CHECKPOINT_BYTES, RESULTS_DIR, ROOT, build_model, is_stale

# The experiments whose results the book shows: every one a direction claim reads.
SHOWN = sorted({c.experiment for c in all_claims() if isinstance(c, DirectionClaim)})


def test_the_book_shows_the_classification_and_segmentation_ablations():
    assert SHOWN == ["hrvit_ablations", "hrvit_high_resolution", "mobilevit_multi_scale", "mobilevit_patch_sizes",
                     "mobilevit_patch_sizes_128", "poolformer_token_mixers", "poolformer_token_mixers_48",
                     "pp_mobileseg_aam_x8", "pp_mobileseg_ablations", "seaformer_ablations", "topformer_ablations"]


def _world(name: str):
    """The experiment's (training) data set, one image of it: its classes, channels and class names."""
    return make_datasets(**{**EXPERIMENTS[name].dataset, "n_train": 1, "n_test": 1})[0]


def _final_metrics(name: str) -> set[str]:
    """What every full run of ``name`` must report at the end."""
    exp = EXPERIMENTS[name]
    if exp.recipe.task == "classification":
        names = ("loss", "top1")
        return set(names) | {f"{m}@{s}" for s in exp.eval_sizes for m in names}
    world = _world(name)
    return ({"loss", "pixel_acc", "miou"} | {f"iou.{c}" for c in world.class_names} | set(world.metric_groups))


@pytest.mark.parametrize("name", SHOWN)
def test_results_file_is_committed_current_and_complete(name):
    path = RESULTS_DIR / f"{name}.json"
    assert path.is_file(), f"{path} is missing: run `python -m lessons.experiments run {name}` and commit it"
    assert not is_stale(name, path), f"{path} is stale: its experiment's definition changed; run it again"
    results = load_results(name, complete=True)  # raises, naming what is missing
    assert results["partial"] is False
    assert missing_runs(name, results) == []
    exp = EXPERIMENTS[name]
    extra = {v for v in results["runs"] if v not in exp.variants}
    assert not extra, f"{path} holds variants the definition no longer has: {sorted(extra)}"


@pytest.mark.parametrize("name", SHOWN)
def test_every_run_is_a_full_run_with_its_learning_curve_and_provenance(name):
    exp = EXPERIMENTS[name]
    results = load_results(name, complete=True)
    expected = _final_metrics(name)
    for variant in exp.variants:
        for seed in exp.seeds:
            run = results["runs"][variant][str(seed)]
            where = f"{name} {variant}/seed {seed}"
            recipe = exp.recipe_for(variant)
            assert run["steps"] == recipe.steps and run["recipe"]["seed"] == seed, where
            assert set(run["metrics"]) == expected, where
            evals = run["history"]["eval"]
            # every evaluation of the curve: each multiple of eval_every, and the last step
            expected_steps = sorted({*range(recipe.eval_every, recipe.steps + 1, recipe.eval_every), recipe.steps})
            assert [r["step"] for r in evals] == expected_steps, where
            assert {"command", "git_commit", "versions", "machine", "wall_s"} <= set(run), where
            assert not run["git_commit"].endswith("+dirty"), f"{where}: made from uncommitted code"


@pytest.mark.parametrize("name", SHOWN)
def test_the_first_seed_of_every_variant_keeps_a_checkpoint_that_loads(name):
    exp = EXPERIMENTS[name]
    results = load_results(name, complete=True)
    first = str(exp.seeds[0])
    for variant, spec in exp.variants.items():
        relative = results["runs"][variant][first].get("checkpoint")
        assert relative, f"{name} {variant}: no checkpoint recorded for seed {first}"
        path = ROOT / relative
        assert path.is_file() and path.stat().st_size <= MAX_CHECKPOINT_BYTES, path
        world = _world(name)
        model = build_model(spec, num_classes=world.num_classes, in_chans=world.in_chans)
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)


@pytest.mark.parametrize("name", SHOWN)
def test_the_chapters_table_and_curves_cover_every_variant(name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lessons.viz import plot_learning_curves, results_table

    exp = EXPERIMENTS[name]
    results = load_results(name, complete=True)
    metric = "top1" if exp.recipe.task == "classification" else "miou"
    table = results_table(results, metrics=(metric, "steps_to_60") if metric == "top1" else (metric,))
    assert [row[0] for row in table.rows] == list(exp.variants)
    assert all(row[1] == str(len(exp.seeds)) for row in table.rows)
    ax = plot_learning_curves(results, metric=metric)
    assert [line.get_label() for line in ax.get_lines()] == [f"{v} (n={len(exp.seeds)})" for v in exp.variants]
    plt.close("all")


def test_segmentation_panels_draw_one_row_per_image_and_refuse_mismatched_maps():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lessons.data import SCENE_CLASSES
    from lessons.viz import SCENE_CLASS_COLOURS, colour_labels, show_segmentations

    images, labels = make_datasets("scenes", size=32, n_train=3, n_test=1)[0].batch([0, 1, 2])
    rgb = colour_labels(labels[0])
    assert rgb.shape == (32, 32, 3)
    assert (rgb[labels[0].numpy() == 0] == 0).all()  # background black
    fig = show_segmentations(images, labels, {"a": labels, "b": labels}, class_names=SCENE_CLASSES)
    assert len([ax for ax in fig.axes if ax.images]) == 3 * 4  # image, ground truth, two models per row
    plt.close(fig)
    assert len(SCENE_CLASS_COLOURS) == len(SCENE_CLASSES)
    with pytest.raises(ValueError, match="shape"):
        show_segmentations(images, labels, {"a": labels[:2]})
    with pytest.raises(ValueError, match="labels must be in"):
        colour_labels(labels[0] + 6)
