"""Statements about the claims machinery (``lessons.claims.core``): tolerances, statuses, tables, and lookups.

These tests build their own claims with hand-written ``measure`` functions and register them in a private copy of
the registry; whether each family's claims hold is the per-claim test's business, not this file's.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from lessons.claims import core
from lessons.claims.core import Claim, ClaimResult, ClaimsTable, evaluate, rounding_tolerance


def make_claim(ours: float, paper: float = 1.3, tolerance: float = 0.05, discrepancy: str | None = None,
               id: str = "test.params", what: str = "Test-Net parameters", unit: str = "M") -> Claim:
    return Claim(id, "testfamily", "Test paper, Table 1", what, paper, unit, tolerance, lambda: ours, discrepancy)


@pytest.fixture
def private_claims(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty claims registry for this test; the package's registered claims are untouched."""
    claims: dict = {}
    monkeypatch.setattr(core, "_CLAIMS", claims)
    return claims


# ------------------------------------------------------------------------------------------------------------------
# Tolerance and status
# ------------------------------------------------------------------------------------------------------------------
def test_rounding_tolerance_is_half_a_unit_in_the_last_printed_place() -> None:
    assert rounding_tolerance(0) == 0.5
    assert rounding_tolerance(1) == pytest.approx(0.05)
    assert rounding_tolerance(2) == pytest.approx(0.005)


@pytest.mark.parametrize("ours", [1.3, 1.272, 1.25, 1.35, 1.3499])
def test_a_value_within_tolerance_passes(ours: float) -> None:
    result = evaluate(make_claim(ours))
    assert result.within_tolerance and result.status == "pass"
    assert result.difference == pytest.approx(ours - 1.3)


@pytest.mark.parametrize("ours", [1.2499, 1.351, 2.6, -1.3])
def test_a_value_outside_tolerance_fails(ours: float) -> None:
    result = evaluate(make_claim(ours))
    assert not result.within_tolerance and result.status == "FAIL"


def test_a_known_discrepancy_is_reported_as_such_not_as_a_failure() -> None:
    why = "the paper counts norms too"
    assert evaluate(make_claim(1.5, discrepancy=why)).status == "discrepancy"
    # a discrepancy that disappears is a pass: the per-claim test then flags the outdated excuse
    assert evaluate(make_claim(1.3, discrepancy=why)).status == "pass"


def test_exact_counts_use_zero_decimals() -> None:
    claim = core.params_claim("t.exact", "testfamily", "src", "exact", 1_272_024, "mobilevit_xxs", unit="", decimals=0)
    assert claim.tolerance == 0.5
    assert evaluate(claim).status == "pass"  # built on meta: an exact integer count


def test_claim_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="needs an id"):
        make_claim(1.3, id="")
    with pytest.raises(ValueError, match="needs an id, family, source and description"):
        make_claim(1.3, what="")
    with pytest.raises(ValueError, match="tolerance must be a finite non-negative number"):
        make_claim(1.3, tolerance=-0.1)
    with pytest.raises(ValueError, match="tolerance"):
        make_claim(1.3, tolerance=float("inf"))


def test_evaluate_calls_measure_each_time() -> None:
    calls = []

    def measure() -> float:
        calls.append(1)
        return 1.3

    claim = Claim("t.calls", "testfamily", "src", "what", 1.3, "M", 0.05, measure)
    evaluate(claim)
    evaluate(claim)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------------------------
# Registry lookups
# ------------------------------------------------------------------------------------------------------------------
def test_duplicate_claim_ids_raise(private_claims: dict) -> None:
    core.register_claims([make_claim(1.3)])
    with pytest.raises(ValueError, match="claim id 'test.params' is registered twice"):
        core.register_claims([make_claim(1.2)])
    assert private_claims["test.params"].measure() == 1.3  # the first registration is kept


def test_unknown_family_raises_naming_the_known_ones(private_claims: dict) -> None:
    core.register_claims([make_claim(1.3)])
    with pytest.raises(ValueError, match=r"no claims for family 'nosuch'; families with claims: \['testfamily'\]"):
        core.all_claims("nosuch")
    with pytest.raises(ValueError, match="no claims for family"):
        core.claims_table("nosuch")


def test_unknown_claim_id_raises(private_claims: dict) -> None:
    with pytest.raises(ValueError, match="unknown claim 'no.such.claim'"):
        core.get_claim("no.such.claim")
    with pytest.raises(ValueError, match="unknown claim"):
        evaluate("no.such.claim")
    with pytest.raises(ValueError, match="unknown claim"):
        core.claims_table(ids=["no.such.claim"])


def test_claims_keep_registration_order_and_filter_by_family(private_claims: dict) -> None:
    first, second = make_claim(1.3, id="b.first"), make_claim(1.3, id="a.second")
    other = Claim("c.other", "otherfamily", "src", "other", 1.0, "", 0.5, lambda: 1.0)
    core.register_claims([first, second, other])
    assert [c.id for c in core.all_claims("testfamily")] == ["b.first", "a.second"]
    assert [c.id for c in core.all_claims()] == ["b.first", "a.second", "c.other"]
    assert evaluate("c.other").status == "pass"


# ------------------------------------------------------------------------------------------------------------------
# The "paper vs. this book" table
# ------------------------------------------------------------------------------------------------------------------
def test_table_renders_text_and_html_with_every_claim(private_claims: dict) -> None:
    core.register_claims([
        make_claim(1.27, id="t.pass", what="Net-A parameters"),
        make_claim(1.6, id="t.disc", what="Net-B <MACs> & more", discrepancy="counts norms & activations"),
    ])
    table = core.claims_table("testfamily")
    assert isinstance(table, ClaimsTable) and len(table.rows) == 2
    text, page = repr(table), table._repr_html_()
    for claim in core.all_claims("testfamily"):
        assert claim.what in text
        assert claim.source in text
    assert "Net-A parameters" in page
    assert "Net-B &lt;MACs&gt; &amp; more" in page  # escaped for HTML
    assert "<table" in page and page.count("<tr") == 3  # header + one row per claim
    assert "counts norms &amp; activations" in page and "* Net-B <MACs> & more: counts norms & activations" in text
    assert [row[-1] for row in table.rows] == ["pass", "discrepancy"]
    assert table.all_pass  # a registered discrepancy is not a failure


def test_table_rows_show_paper_ours_difference_and_tolerance() -> None:
    table = ClaimsTable([ClaimResult(make_claim(1.272), 1.272)])
    (row,) = table.rows
    assert row == ("Test-Net parameters", "Test paper, Table 1", "1.3M", "1.272M", "-0.028M", "±0.05M", "pass")
    exact = ClaimsTable([ClaimResult(make_claim(0, paper=1_272_024, tolerance=0.5, unit=""), 1_272_024)])
    assert exact.rows[0][2:4] == ("1,272,024", "1,272,024")


def test_table_all_pass_is_false_when_any_claim_fails(private_claims: dict) -> None:
    core.register_claims([make_claim(1.3, id="t.ok"), make_claim(9.9, id="t.bad", what="Broken claim")])
    table = core.claims_table(ids=["t.ok", "t.bad"])
    assert not table.all_pass
    assert "FAIL" in repr(table)
    assert "#ffd6d6" in table._repr_html_()  # failures are highlighted on the page


# ------------------------------------------------------------------------------------------------------------------
# Direction claims, on synthetic results files of a real experiment's definition
# ------------------------------------------------------------------------------------------------------------------
EXPERIMENT = "mobilevit_patch_sizes"  # variants config_a_222 and config_b_842, seeds 0, 1, 2


def synthetic_run(top1: float, reach_step: int, wall_s: float = 100.0, steps: int = 400) -> dict:
    """One run as lessons.experiments writes it: final metrics, an evaluation every 100 steps, wall time."""
    evals = [{"step": s, "loss": 0.5, "top1": 0.5 if s < reach_step else top1} for s in range(100, steps + 1, 100)]
    return {"metrics": {"loss": 0.1, "top1": top1}, "history": {"eval": evals}, "steps": steps, "wall_s": wall_s}


def write_results(directory, runs: dict, name: str = EXPERIMENT, partial: bool = False, digest: str | None = None):
    from lessons.experiments import EXPERIMENTS, definition, definition_hash

    data = {"name": name, "definition": definition(EXPERIMENTS[name]), "partial": partial,
            "definition_hash": digest or definition_hash(name), "runs": runs}
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def two_variants(a: list[float], b: list[float], metric_of=lambda v: {"top1": v}) -> dict:
    def run(value: float) -> dict:
        made = synthetic_run(1.0, 100)
        made["metrics"].update(metric_of(value))
        return made

    return {"config_a_222": {str(s): run(v) for s, v in enumerate(a)},
            "config_b_842": {str(s): run(v) for s, v in enumerate(b)}}


def a_vs_b(tmp_path, relation: str = "greater", metric: str = "top1", discrepancy: str | None = None):
    return core.direction_claim("t.dir", "testfamily", "Test paper, §4.3", "A beats B", EXPERIMENT, metric,
                                ("config_a_222", "config_b_842"), relation=relation, discrepancy=discrepancy,
                                directory=tmp_path)


def test_a_direction_claim_states_the_rule_and_the_seeds_and_its_paper_value_is_one(tmp_path) -> None:
    claim = a_vs_b(tmp_path)
    assert claim.paper == 1.0 and claim.tolerance == 0.0 and claim.unit == ""
    assert "2 SE" in claim.what and "3 seeds" in claim.what and claim.what.startswith("A beats B")
    alike = core.direction_claim("t.alike", "testfamily", "src", "A and B alike", EXPERIMENT, "top1",
                                 ("config_a_222", "config_b_842"), relation="alike", directory=tmp_path)
    assert "no two more than 2 SE apart" in alike.what


def test_a_difference_beyond_two_standard_errors_holds(tmp_path) -> None:
    write_results(tmp_path, two_variants([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]))
    result = evaluate(a_vs_b(tmp_path))
    assert result.ours == 1.0 and result.status == "pass"
    assert evaluate(a_vs_b(tmp_path, relation="less")).ours == 0.0  # the other direction does not
    assert evaluate(a_vs_b(tmp_path, relation="alike")).ours == 0.0


def test_a_difference_within_two_standard_errors_does_not_hold(tmp_path) -> None:
    # means 0.85 vs 0.80: difference 0.05; std 0.05 each over 3 seeds -> SE of the difference 0.041, 2 SE 0.082
    write_results(tmp_path, two_variants([0.80, 0.85, 0.90], [0.75, 0.80, 0.85]))
    claim = a_vs_b(tmp_path)
    (comparison,) = claim.comparisons()
    assert comparison.difference == pytest.approx(0.05)
    assert comparison.se == pytest.approx(math.sqrt(2 * 0.05**2 / 3))
    assert evaluate(claim).ours == 0.0 and evaluate(claim).status == "FAIL"
    assert evaluate(a_vs_b(tmp_path, relation="alike")).ours == 1.0
    # registered as a discrepancy it is reported as one, and its evidence gives the numbers
    noted = a_vs_b(tmp_path, discrepancy="the miniature shows no difference")
    assert evaluate(noted).status == "discrepancy"
    assert "config_a_222 0.85 ± 0.05 (n=3)" in noted.evidence() and "2 SE = 0.08165" in noted.evidence()


def test_identical_seeds_differ_only_when_the_means_do(tmp_path) -> None:
    write_results(tmp_path, two_variants([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))
    assert evaluate(a_vs_b(tmp_path)).ours == 0.0  # everything at 100%: no direction, both ways
    assert evaluate(a_vs_b(tmp_path, relation="alike")).ours == 1.0


def test_derived_metrics_steps_to_a_threshold_and_time_per_step(tmp_path) -> None:
    runs = {"config_a_222": {str(s): synthetic_run(1.0, 100, wall_s=80.0 + s) for s in range(3)},
            "config_b_842": {str(s): synthetic_run(1.0, 300 + 100 * (s == 2), wall_s=40.0 + s) for s in range(3)}}
    runs["config_b_842"]["2"]["history"]["eval"][-1]["top1"] = 0.9  # seed 2 never reaches 95% in its 400 steps
    write_results(tmp_path, runs)
    faster = a_vs_b(tmp_path, relation="less", metric="steps_to_95")
    a, b = faster.spreads()
    assert a.values == (100.0, 100.0, 100.0) and b.values == (300.0, 300.0, 400.0)
    assert b.censored == 1 and a.censored == 0  # the budget stands in for "never": a lower bound
    assert evaluate(faster).ours == 1.0
    per_step = core.direction_claim("t.speed", "testfamily", "src", "B is faster", EXPERIMENT, "s_per_step",
                                    ("config_b_842", "config_a_222"), relation="less", directory=tmp_path)
    assert per_step.spreads()[0].values == pytest.approx((0.1, 41 / 400, 42 / 400))
    assert evaluate(per_step).ours == 1.0
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        evaluate(a_vs_b(tmp_path, metric="top5"))


def test_alike_compares_every_pair(tmp_path) -> None:
    from lessons.experiments import EXPERIMENTS

    name = "poolformer_token_mixers"
    same = {str(s): synthetic_run(1.0, 250) for s in range(3)}
    worse = {str(s): synthetic_run(0.9 + 0.001 * s, 250) for s in range(3)}
    write_results(tmp_path, {"pooling3": same, "pooling5": same, "pooling7": worse}, name=name)
    alike = core.direction_claim("t.sizes", "testfamily", "src", "3, 5, 7 alike", name, "top1",
                                 ("pooling3", "pooling5", "pooling7"), relation="alike", directory=tmp_path)
    assert len(alike.comparisons()) == 3 and evaluate(alike).ours == 0.0  # 7 differs from 3 and from 5
    assert len(EXPERIMENTS[name].seeds) == 3 and "3 seeds" in alike.what


@pytest.mark.parametrize("problem, message", [
    ("missing", "is missing: run `python -m lessons.experiments run mobilevit_patch_sizes`"),
    ("stale", "is stale: the definition of mobilevit_patch_sizes changed"),
    ("partial", "partial"),
    ("one seed", "needs at least 2 seeds of 'config_b_842'"),
    ("no variant", "hold no run of variant 'config_b_842'"),
])
def test_a_direction_claim_fails_clearly_without_usable_results(tmp_path, problem: str, message: str) -> None:
    runs = two_variants([0.9, 0.91, 0.92], [0.8, 0.81, 0.82])
    if problem == "stale":
        write_results(tmp_path, runs, digest="0" * 16)
    elif problem == "partial":
        write_results(tmp_path, runs, partial=True)
    elif problem == "one seed":
        write_results(tmp_path, {**runs, "config_b_842": {"0": runs["config_b_842"]["0"]}})
    elif problem == "no variant":
        write_results(tmp_path, {"config_a_222": runs["config_a_222"]})
    with pytest.raises(core.ResultsError, match=re.escape(message)):
        evaluate(a_vs_b(tmp_path, discrepancy="a documented discrepancy does not hide a missing file"))


def test_load_results_can_insist_on_every_variant_and_seed(tmp_path) -> None:
    runs = two_variants([0.9, 0.91, 0.92], [0.8, 0.81, 0.82])
    del runs["config_b_842"]["2"]
    write_results(tmp_path, runs)
    assert core.load_results(EXPERIMENT, tmp_path)["runs"] == runs  # usable as it is ...
    assert core.missing_runs(EXPERIMENT, core.load_results(EXPERIMENT, tmp_path)) == [("config_b_842", 2)]
    with pytest.raises(core.ResultsError, match=r"lacks 1 run\(s\) \(config_b_842/seed 2\)"):
        core.load_results(EXPERIMENT, tmp_path, complete=True)  # ... but not complete


def test_direction_claims_validate_their_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        core.direction_claim("t.x", "f", "s", "w", "nope", "top1", ("a", "b"))
    with pytest.raises(ValueError, match="has no variant \\['config_c'\\]"):
        core.direction_claim("t.x", "f", "s", "w", EXPERIMENT, "top1", ("config_a_222", "config_c"))
    with pytest.raises(ValueError, match="relation must be one of"):
        core.direction_claim("t.x", "f", "s", "w", EXPERIMENT, "top1", ("config_a_222", "config_b_842"),
                             relation="better")
    with pytest.raises(ValueError, match="compare two variants"):
        core.direction_claim("t.x", "f", "s", "w", "poolformer_token_mixers", "top1",
                             ("pooling3", "pooling5", "pooling7"), relation="greater")


def test_a_direction_claim_renders_in_the_table(tmp_path) -> None:
    write_results(tmp_path, two_variants([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]))
    table = ClaimsTable([evaluate(a_vs_b(tmp_path))])
    (row,) = table.rows
    assert row[2:5] == ("1", "1", "+0.000") and row[-1] == "pass"
