"""What a reader sees cites the papers and official repositories, never this book's internal notes.

The chapters were written with internal reading notes at hand ("seed" summaries, a facts file); a citation of those
tells a reader nothing they can check. This scans every chapter (markdown, code and stored outputs), the intro, the
package the chapters show, and every claim's source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lessons.claims import all_claims

ROOT = Path(__file__).resolve().parents[1]
INTERNAL = re.compile(r"seed 0\d\d|seed article|facts\.md|via Papers with Code", re.IGNORECASE)
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def notebook_text(path: Path) -> str:
    """Every cell's source and every stored text output of a notebook, as one string."""
    parts = []
    for cell in json.loads(path.read_text())["cells"]:
        parts.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            for value in output.get("data", {}).values():
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def test_the_scan_finds_what_it_looks_for():
    assert INTERNAL.search("as quoted in seed 002") and INTERNAL.search("see facts.md §3")
    assert INTERNAL.search("Table 3 (via Papers with Code)") and not INTERNAL.search("seed_everything(0)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_chapters_cite_no_internal_notes(path):
    found = sorted({m.group(0) for m in INTERNAL.finditer(notebook_text(path))})
    assert not found, f"{path.name} cites internal notes: {found}; cite the paper or official repository instead"


def test_intro_and_package_cite_no_internal_notes():
    files = [ROOT / "book" / "intro.md", *sorted((ROOT / "lessons").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
    found = {f.relative_to(ROOT).as_posix(): m.group(0) for f in files for m in INTERNAL.finditer(f.read_text())}
    assert not found, f"internal notes cited: {found}"


def test_claim_sources_cite_no_internal_notes():
    found = {c.id: c.source for c in all_claims() if INTERNAL.search(c.source) or INTERNAL.search(c.what)}
    assert not found, found
