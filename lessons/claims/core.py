"""The claims registry: every number a chapter takes from a paper, with its source, tolerance and our measurement.

A :class:`Claim` says "the paper (table/section) reports *value* for *what*"; its ``measure`` function computes the
same quantity from this book's code. :func:`evaluate` compares the two within the claim's tolerance, which reflects
how the paper rounded (1.3M means anything from 1.25M to 1.35M). A number the code cannot reproduce after an honest
look is registered with ``discrepancy=...`` saying why; the tests then assert that it still does *not* match, so the
day it does, the registry must be updated rather than silently keep an outdated excuse.

Accuracy and mIoU from ImageNet/ADE20K training are quoted in the chapters, never claimed: nothing here trains.
What *is* claimed from training is the direction of a paper's ablation, on the committed results of this book's
miniature experiments (:func:`direction_claim`, reading ``book/data/experiments`` through :func:`load_results`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
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


# --------------------------------------------------------------------------------------------------------------------
# Direction claims: "variant A beats variant B", evaluated from the results of lessons.experiments
# --------------------------------------------------------------------------------------------------------------------
#
# A paper's ablation says which variant wins on ImageNet; a miniature run on a procedural data set can only say
# whether the *direction* shows up. So a direction claim's paper value is 1 ("the direction holds"), ours is 1.0 or
# 0.0 from the committed results file (lessons.experiments writes it), and the tolerance is 0. "Beats" means the
# difference of the seed means exceeds two standard errors of that difference (Welch: sqrt(s_a^2/n_a + s_b^2/n_b),
# sample standard deviations over seeds); "alike" means every pair of the listed variants differs by at most that.


class ResultsError(RuntimeError):
    """A results file a claim or chapter needs is missing, stale, partial, or lacks the runs asked for."""


def load_results(name: str, directory: str | os.PathLike | None = None, complete: bool = False) -> dict:
    """The results of experiment ``name`` (``book/data/experiments/NAME.json``), checked before anyone reads them.

    Raises :class:`ResultsError` (saying what to run) if the file is missing, was made by another definition of the
    experiment (:func:`lessons.experiments.is_stale`) or by a shortened run (``partial``); with ``complete=True``
    also if any variant x seed of the definition is missing.
    """
    from ..experiments import EXPERIMENTS, RESULTS_DIR, is_stale, results_path

    command = f"python -m lessons.experiments run {name}"
    if name not in EXPERIMENTS:
        raise ResultsError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    path = results_path(name, RESULTS_DIR if directory is None else directory)
    if not path.is_file():
        raise ResultsError(f"results file {path} is missing: run `{command}`")
    results = json.loads(path.read_text())
    if results.get("partial", False):
        raise ResultsError(f"{path} holds a partial (shortened or smoke) run, never book results: run `{command}`")
    if is_stale(name, path):
        raise ResultsError(f"{path} is stale: the definition of {name} changed since it was made; run `{command}` "
                           "again")
    if complete:
        missing = missing_runs(name, results)
        if missing:
            raise ResultsError(f"{path} lacks {len(missing)} run(s) "
                               f"({', '.join(f'{v}/seed {s}' for v, s in missing)}): run `{command}`")
    return results


def missing_runs(name: str, results: dict) -> list[tuple[str, int]]:
    """The (variant, seed) pairs of experiment ``name``'s definition that ``results`` does not hold."""
    from ..experiments import EXPERIMENTS

    exp = EXPERIMENTS[name]
    runs = results.get("runs", {})
    return [(v, s) for v in exp.variants for s in exp.seeds if str(s) not in runs.get(v, {})]


# Metrics a claim or a chapter can ask of one run, besides the keys of its final ``metrics`` ("top1", "top1@40", ...).
DERIVED_METRICS = {
    "steps_to_NN": "steps until the test top-1 first reaches NN% (first evaluation at or above it; the step budget "
                   "if never: a lower bound)",
    "s_per_step": "wall time per training step in seconds (the run's wall time, its periodic evaluations included, "
                  "over its steps)",
}


def _steps_to(run: dict, threshold: float) -> tuple[float, bool]:
    """First evaluated step with top-1 >= threshold, and whether it was reached (else the run's step count)."""
    for record in run["history"]["eval"]:
        if record.get("top1", -1.0) >= threshold - 1e-12:
            return float(record["step"]), True
    return float(run["steps"]), False


def run_value(run: dict, metric: str) -> float:
    """One number of one run: a final metric (``"top1"``, ``"top1@48"``) or a derived one (:data:`DERIVED_METRICS`)."""
    if metric in run["metrics"]:
        return float(run["metrics"][metric])
    if metric == "s_per_step":
        return float(run["wall_s"]) / float(run["steps"])
    match = re.fullmatch(r"steps_to_(\d+)", metric)
    if match:
        return _steps_to(run, int(match.group(1)) / 100)[0]
    raise ValueError(f"unknown metric {metric!r}: not in the run's metrics {sorted(run['metrics'])} nor derived "
                     f"({', '.join(DERIVED_METRICS)})")


@dataclass(frozen=True)
class Spread:
    """One variant's values of one metric over its seeds: mean, sample std (0 for one seed), standard error."""

    variant: str
    metric: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    censored: int = 0  # steps_to_NN: seeds that never reached the threshold (their value is the step budget)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def std(self) -> float:
        if self.n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n)


def spread(results: dict, variant: str, metric: str) -> Spread:
    """The values of ``metric`` for ``variant`` over every seed ``results`` holds (seed order)."""
    runs = results["runs"].get(variant)
    if not runs:
        raise ResultsError(f"{results.get('name', 'the results')} hold no run of variant {variant!r}; variants: "
                           f"{', '.join(results['runs']) or 'none yet'}")
    seeds = tuple(sorted(int(s) for s in runs))
    values = tuple(run_value(runs[str(s)], metric) for s in seeds)
    censored = 0
    match = re.fullmatch(r"steps_to_(\d+)", metric)
    if match and metric not in runs[str(seeds[0])]["metrics"]:
        censored = sum(not _steps_to(runs[str(s)], int(match.group(1)) / 100)[1] for s in seeds)
    return Spread(variant, metric, seeds, values, censored)


@dataclass(frozen=True)
class Comparison:
    """Variant a against variant b on one metric: the difference of the means and its standard error."""

    a: Spread
    b: Spread

    @property
    def difference(self) -> float:
        return self.a.mean - self.b.mean

    @property
    def se(self) -> float:
        return math.sqrt(self.a.se**2 + self.b.se**2)

    @property
    def beyond_two_se(self) -> bool:
        return abs(self.difference) > 2 * self.se


RELATIONS = {
    "greater": "more than two standard errors of the difference above",
    "less": "more than two standard errors of the difference below",
    "alike": "within two standard errors of the difference of each other",
}


def _fmt_value(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class DirectionClaim(Claim):
    """A paper's direction ("A beats B on <metric>") checked on a miniature experiment's committed results.

    ``paper`` is 1 (the direction, as the paper states it); ``measure()`` gives 1.0 if our results show it, else 0.0.
    Built by :func:`direction_claim`; :meth:`evidence` says what the numbers were.
    """

    experiment: str = ""
    metric: str = ""
    variants: tuple[str, ...] = ()
    relation: str = "greater"
    directory: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.relation not in RELATIONS:
            raise ValueError(f"claim {self.id!r}: relation must be one of {sorted(RELATIONS)}, got {self.relation!r}")
        if len(self.variants) < 2 or (self.relation != "alike" and len(self.variants) != 2):
            raise ValueError(f"claim {self.id!r}: 'greater'/'less' compare two variants, 'alike' two or more; got "
                             f"{self.variants}")

    def results(self) -> dict:
        return load_results(self.experiment, self.directory)

    def spreads(self) -> list[Spread]:
        results = self.results()
        spreads = [spread(results, v, self.metric) for v in self.variants]
        for s in spreads:
            if s.n < 2:
                raise ResultsError(f"claim {self.id!r} needs at least 2 seeds of {s.variant!r} in "
                                   f"{self.experiment}; the results hold {s.n}")
        return spreads

    def comparisons(self) -> list[Comparison]:
        spreads = self.spreads()
        return [Comparison(a, b) for i, a in enumerate(spreads) for b in spreads[i + 1:]]

    def holds(self) -> bool:
        comparisons = self.comparisons()
        if self.relation == "alike":
            return not any(c.beyond_two_se for c in comparisons)
        (c,) = comparisons
        return c.beyond_two_se and (c.difference > 0) == (self.relation == "greater")

    def evidence(self) -> str:
        """The numbers behind the verdict: each variant's mean ± std (n seeds) and each difference against 2 SE."""
        comparisons = self.comparisons()
        spreads = {s.variant: s for c in comparisons for s in (c.a, c.b)}
        parts = []
        for s in spreads.values():
            censored = f", {s.censored} never reached" if s.censored else ""
            parts.append(f"{s.variant} {_fmt_value(s.mean)} ± {_fmt_value(s.std)} (n={s.n}{censored})")
        diffs = [f"{c.a.variant} - {c.b.variant} = {_fmt_value(c.difference)} (2 SE = {_fmt_value(2 * c.se)})"
                 for c in comparisons]
        return f"{self.metric}: " + "; ".join(parts) + "; " + "; ".join(diffs)


def direction_claim(
    id: str, family: str, source: str, what: str, experiment: str, metric: str, variants: Sequence[str],
    relation: str = "greater", discrepancy: str | None = None, directory: str | os.PathLike | None = None,
) -> DirectionClaim:
    """A paper's direction, checked on the committed results of a miniature experiment.

    ``relation``: ``"greater"`` -- ``variants[0]``'s mean ``metric`` exceeds ``variants[1]``'s by more than two
    standard errors of the difference; ``"less"`` -- is below it by that much (steps, seconds: fewer is better);
    ``"alike"`` -- no two of ``variants`` differ by more than that. ``what`` states the direction in words; the rule
    and the number of seeds of the experiment's definition are appended. A direction the miniature does not show is
    registered with ``discrepancy=`` saying what was seen (from the data). ``directory``: where the results file
    lives (default ``book/data/experiments``; tests pass a temporary one).
    """
    from ..experiments import EXPERIMENTS

    if experiment not in EXPERIMENTS:
        raise ValueError(f"claim {id!r}: unknown experiment {experiment!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    exp = EXPERIMENTS[experiment]
    unknown = [v for v in variants if v not in exp.variants]
    if unknown:
        raise ValueError(f"claim {id!r}: {experiment} has no variant {unknown}; variants: {', '.join(exp.variants)}")
    rule = "no two more than 2 SE apart" if relation == "alike" else "by more than 2 SE of the difference"
    text = f"{what} ({rule}, {len(exp.seeds)} seeds)"
    claim: DirectionClaim

    def measure() -> float:
        return 1.0 if claim.holds() else 0.0

    claim = DirectionClaim(
        id, family, source, text, 1.0, "", 0.0, measure, discrepancy, experiment=experiment, metric=metric,
        variants=tuple(variants), relation=relation, directory=None if directory is None else str(directory),
    )
    return claim
