"""The claims registry: every number a chapter takes from a paper, with its source, tolerance and our measurement.

A :class:`Claim` says "the paper (table/section) reports *value* for *what*"; its ``measure`` function computes the
same quantity from this book's code. :func:`evaluate` compares the two within the claim's tolerance, which reflects
how the paper rounded (1.3M means anything from 1.25M to 1.35M). A number the code cannot reproduce after an honest
look is registered with ``discrepancy=...`` saying why; the tests then assert that it still does *not* match, so the
day it does, the registry must be updated rather than silently keep an outdated excuse.

Accuracy and mIoU from ImageNet/ADE20K training are quoted in the chapters, never claimed: nothing here trains.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..measure import model_count, model_params

_CLAIMS: dict[str, Claim] = {}


@dataclass(frozen=True)
class Claim:
    """One number from a paper and how to compute it here.

    ``paper`` and ``tolerance`` are in ``unit`` ("M" for millions, "G" for billions, "%", "x" for a ratio, or "" for
    a plain count); ``measure()`` returns our value in the same unit.
    """

    id: str
    family: str
    source: str
    what: str
    paper: float
    unit: str
    tolerance: float
    measure: Callable[[], float] = field(repr=False, compare=False)
    discrepancy: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.family or not self.source or not self.what:
            raise ValueError(f"a claim needs an id, family, source and description: {self!r}")
        if self.tolerance < 0 or not math.isfinite(self.tolerance):
            raise ValueError(f"claim {self.id!r}: tolerance must be a finite non-negative number, got {self.tolerance}")


@dataclass(frozen=True)
class ClaimResult:
    """A claim evaluated: our value, the difference from the paper's, and whether it is within tolerance."""

    claim: Claim
    ours: float

    @property
    def difference(self) -> float:
        return self.ours - self.claim.paper

    @property
    def within_tolerance(self) -> bool:
        return abs(self.difference) <= self.claim.tolerance + 1e-12

    @property
    def status(self) -> str:
        if self.within_tolerance:
            return "pass"
        return "discrepancy" if self.claim.discrepancy else "FAIL"


def register_claims(claims: Iterable[Claim]) -> None:
    """Add claims to the registry; ids are unique."""
    for claim in claims:
        if claim.id in _CLAIMS:
            raise ValueError(f"claim id {claim.id!r} is registered twice")
        _CLAIMS[claim.id] = claim


def all_claims(family: str | None = None) -> list[Claim]:
    """Registered claims, in registration order; only one family's if ``family`` is given."""
    families = {c.family for c in _CLAIMS.values()}
    if family is not None and family not in families:
        raise ValueError(f"no claims for family {family!r}; families with claims: {sorted(families)}")
    return [c for c in _CLAIMS.values() if family is None or c.family == family]


def get_claim(claim_id: str) -> Claim:
    if claim_id not in _CLAIMS:
        raise ValueError(f"unknown claim {claim_id!r}; see lessons.claims.all_claims()")
    return _CLAIMS[claim_id]


def evaluate(claim: Claim | str) -> ClaimResult:
    """Compute our value for ``claim`` (a :class:`Claim` or its id) and compare it with the paper's."""
    claim = get_claim(claim) if isinstance(claim, str) else claim
    return ClaimResult(claim, float(claim.measure()))


# --------------------------------------------------------------------------------------------------------------------
# Claims about parameters and multiply-adds (counted by lessons.measure's cached model_params / model_count)
# --------------------------------------------------------------------------------------------------------------------

UNITS = {"": 1.0, "M": 1e6, "G": 1e9}


def rounding_tolerance(decimals: int) -> float:
    """Half a unit in the last place a paper printed: 1.3 (one decimal) covers 1.25 .. 1.35."""
    return 0.5 * 10.0**-decimals


def params_claim(
    id: str, family: str, source: str, what: str, paper: float, model: str, unit: str = "M", decimals: int = 1,
    discrepancy: str | None = None, **model_kwargs,
) -> Claim:
    """A parameter count from a paper, e.g. "1.3M", checked to the precision it was printed with."""
    return Claim(
        id, family, source, what, paper, unit, rounding_tolerance(decimals),
        lambda: model_params(model, **model_kwargs) / UNITS[unit], discrepancy,
    )


def macs_claim(
    id: str, family: str, source: str, what: str, paper: float, model: str, input_size: tuple[int, ...],
    unit: str = "G", decimals: int = 1, discrepancy: str | None = None, tolerance: float | None = None,
    **model_kwargs,
) -> Claim:
    """A multiply-add count ("FLOPs" in most papers, "MACs" in some) at the paper's input size."""
    tol = rounding_tolerance(decimals) if tolerance is None else tolerance
    return Claim(
        id, family, source, what, paper, unit, tol,
        lambda: model_count(model, input_size, **model_kwargs) / UNITS[unit], discrepancy,
    )


# --------------------------------------------------------------------------------------------------------------------
# Rendering: the "paper vs. this book" table each chapter shows
# --------------------------------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"


class ClaimsTable:
    """Evaluated claims as a table; renders as HTML on the site and in Jupyter, and as text elsewhere."""

    columns = ("claim", "source", "paper", "this book", "difference", "tolerance", "result")

    def __init__(self, results: list[ClaimResult]) -> None:
        self.results = results

    @property
    def rows(self) -> list[tuple[str, ...]]:
        rows = []
        for r in self.results:
            c = r.claim
            rows.append((
                c.what, c.source, f"{_fmt(c.paper)}{c.unit}", f"{_fmt(r.ours)}{c.unit}",
                f"{r.difference:+.3f}{c.unit}", f"±{_fmt(c.tolerance)}{c.unit}", r.status,
            ))
        return rows

    @property
    def all_pass(self) -> bool:
        return all(r.status != "FAIL" for r in self.results)

    def _notes(self) -> list[str]:
        return [f"{r.claim.what}: {r.claim.discrepancy}" for r in self.results if r.claim.discrepancy]

    def __repr__(self) -> str:
        rows = [self.columns, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.columns))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"* {note}" for note in self._notes()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for row, r in zip(self.rows, self.results):
            style = {"pass": "", "discrepancy": ' style="background:#fff4d6"', "FAIL": ' style="background:#ffd6d6"'}
            cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
            # claims-pass / claims-discrepancy / claims-fail: hooks for the site's CSS (book/_static/site.css)
            body.append(f'<tr class="claims-{r.status.lower()}"{style[r.status]}>{cells}</tr>')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self._notes())
        notes_html = f"<p>Discrepancies, and why:</p><ul>{notes}</ul>" if notes else ""
        return (
            f'<table class="claims-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{notes_html}'
        )


def claims_table(family: str | None = None, ids: Iterable[str] | None = None) -> ClaimsTable:
    """Evaluate a family's claims (or the listed ids) and return the "paper vs. this book" table."""
    claims = [get_claim(i) for i in ids] if ids is not None else all_claims(family)
    return ClaimsTable([evaluate(c) for c in claims])
