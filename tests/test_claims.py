"""Every number the book takes from a paper, checked: one test per registered claim."""

import pytest

from lessons.claims import all_claims, evaluate

CLAIMS = all_claims()


def test_every_family_with_a_chapter_has_claims():
    families = {claim.family for claim in CLAIMS}
    assert "mobilevit" in families


@pytest.mark.parametrize("claim", CLAIMS, ids=[claim.id for claim in CLAIMS])
def test_claim(claim):
    result = evaluate(claim)
    if claim.discrepancy:
        # A documented discrepancy must still be one: the day our number matches, the excuse must go.
        assert not result.within_tolerance, (
            f"{claim.id}: now matches the paper ({result.ours} vs {claim.paper}); remove its discrepancy note"
        )
    else:
        assert result.within_tolerance, (
            f"{claim.id}: paper {claim.paper}{claim.unit} ({claim.source}), ours {result.ours:.4f}{claim.unit}, "
            f"tolerance ±{claim.tolerance}{claim.unit}"
        )
