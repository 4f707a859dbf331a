"""Every number the book takes from a paper, checked: one test per registered claim."""

from pathlib import Path

import pytest
import yaml

from lessons.claims import all_claims, evaluate

CLAIMS = all_claims()


def family_chapters() -> list[str]:
    """The chapters of the "Families" part of the table of contents: book/<family>."""
    toc = yaml.safe_load((Path(__file__).parents[1] / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Families")
    return [Path(chapter["file"]).name for chapter in part["chapters"]]


def test_every_family_chapter_has_claims():
    families = {claim.family for claim in CLAIMS}
    chapters = family_chapters()
    assert chapters, "the table of contents lists no family chapters"
    assert not set(chapters) - families, f"chapters without claims: {sorted(set(chapters) - families)}"


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
