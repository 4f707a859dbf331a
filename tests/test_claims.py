"""Every number the book takes from a paper, checked: one test per registered claim."""

from pathlib import Path

import pytest
import yaml

from lessons import FAMILIES
from lessons.claims import all_claims, evaluate

CLAIMS = all_claims()


def family_chapters() -> list[str]:
    """The chapters of the "Families" part of the table of contents: book/<family>."""
    toc = yaml.safe_load((Path(__file__).parents[1] / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Families")
    return [Path(chapter["file"]).name for chapter in part["chapters"]]


def test_the_table_of_contents_lists_the_registry_families_in_order_and_each_has_claims():
    """The table of contents is written by hand; the registry's FAMILIES is the one list it must agree with."""
    chapters = family_chapters()
    assert chapters == list(FAMILIES), f"_toc.yml's Families part {chapters} != lessons.FAMILIES {list(FAMILIES)}"
    for family in FAMILIES.values():
        assert (Path(__file__).parents[1] / family.chapter).is_file(), family.chapter
    without_claims = set(FAMILIES) - {claim.family for claim in CLAIMS}
    assert not without_claims, f"families without claims: {sorted(without_claims)}"
    assert {claim.family for claim in CLAIMS} <= set(FAMILIES)


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
