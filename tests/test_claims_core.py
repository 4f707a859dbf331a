"""Statements about the claims machinery (``lessons.claims.core``): tolerances, statuses, tables, and lookups.

These tests build their own claims with hand-written ``measure`` functions and register them in a private copy of
the registry; whether each family's claims hold is the per-claim test's business, not this file's.
"""

from __future__ import annotations

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
