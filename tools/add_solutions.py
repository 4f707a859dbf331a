"""Insert (or refresh) the collapsed solution cells after each chapter's exercise cell.

Usage: python tools/add_solutions.py TEXT.py  -- TEXT.py defines S = {chapter: [(before, [functions], after), ...]}.
Each solution is one markdown cell, id "solution-<chapter>-<n>", holding a MyST dropdown whose code blocks are the
sources of lessons.solutions functions (tests/test_solutions.py checks they still match).
"""

from __future__ import annotations

import inspect
import json
import runpy
import sys
from pathlib import Path

from lessons import solutions

ROOT = Path(__file__).resolve().parents[1]


def cell_source(number: int, before: str, functions: list[str], after: str) -> str:
    parts = [f"````{{dropdown}} Solution to exercise {number}", before]
    for name in functions:
        parts.append("```python\n" + inspect.getsource(getattr(solutions, name)).rstrip("\n") + "\n```")
    if after:
        parts.append(after)
    return "\n\n".join(parts) + "\n````"


def main(text_file: str) -> None:
    texts = runpy.run_path(text_file)["S"]
    for chapter, items in texts.items():
        path = ROOT / "book" / f"{chapter}.ipynb"
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = nb["cells"]
        ids = [c["id"] for c in cells]
        exercise = next(i for i, c in enumerate(cells) if "## Exercises" in "".join(c["source"]))
        for n, (before, functions, after) in enumerate(items, start=1):
            cell_id = f"solution-{chapter}-{n}"
            source = cell_source(n, before, functions, after)
            lines = source.splitlines(keepends=True)
            if cell_id in ids:
                cells[ids.index(cell_id)]["source"] = lines
            else:
                position = exercise + n  # right after the exercises, in order
                cells.insert(position, {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": lines})
                ids.insert(position, cell_id)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if text != path.read_text(encoding="utf-8"):  # untouched notebooks are not rewritten
            path.write_text(text, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: solutions written")


if __name__ == "__main__":
    main(sys.argv[1])
