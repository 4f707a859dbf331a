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
from lessons.experiments import EXPERIMENTS, MAX_CHECKPOINT_BYTES, RESULTS_DIR, ROOT, build_model, is_stale

# The experiments whose results the book shows: every one a direction claim reads.
SHOWN = sorted({c.experiment for c in all_claims() if isinstance(c, DirectionClaim)})


def test_the_book_shows_the_classification_ablations_and_their_second_attempts():
    assert SHOWN == ["mobilevit_multi_scale", "mobilevit_patch_sizes", "mobilevit_patch_sizes_128",
                     "poolformer_token_mixers", "poolformer_token_mixers_48"]


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
    expected = {"loss", "top1"} | {f"{m}@{s}" for s in exp.eval_sizes for m in ("loss", "top1")}
    for variant in exp.variants:
        for seed in exp.seeds:
            run = results["runs"][variant][str(seed)]
            where = f"{name} {variant}/seed {seed}"
            recipe = exp.recipe_for(variant)
            assert run["steps"] == recipe.steps and run["recipe"]["seed"] == seed, where
            assert set(run["metrics"]) == expected, where
            evals = run["history"]["eval"]
            assert [r["step"] for r in evals][-1] == recipe.steps, where
            assert len(evals) == recipe.steps // recipe.eval_every, where  # every evaluation of the curve
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
        in_chans, num_classes = 3, (10 if exp.dataset["name"] == "digits" else 2)
        model = build_model(spec, num_classes=num_classes, in_chans=in_chans)
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)


@pytest.mark.parametrize("name", SHOWN)
def test_the_chapters_table_and_curves_cover_every_variant(name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lessons.viz import plot_learning_curves, results_table

    exp = EXPERIMENTS[name]
    results = load_results(name, complete=True)
    table = results_table(results, metrics=("top1", "steps_to_60"))
    assert [row[0] for row in table.rows] == list(exp.variants)
    assert all(row[1] == str(len(exp.seeds)) for row in table.rows)
    ax = plot_learning_curves(results)
    assert [line.get_label() for line in ax.get_lines()] == [f"{v} (n={len(exp.seeds)})" for v in exp.variants]
    plt.close("all")
