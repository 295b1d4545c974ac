"""The report's declared comparisons: A − B with its interval, p, Holm over the family, P(A > B), verdict.

The family is fixed before any number is seen: the comparisons the run's grid file declares in
[compare] (`reidbench.variants.compare`; `report --grid` names the grid instead, for an archived
run that kept no grid.toml) and those `report --compare A,B` adds, each on every
metric in METRICS. Holm's correction runs over every test of that family that could be made;
a comparison that could not be made (a cell not done, one seed without per-query scores) is
listed with its reason and is not part of the family.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from reidbench.errors import UsageError
from reidbench.reports.load import LoadedRun
from reidbench.reports.statistics import ALPHA, Operand, Sides, first_test, seed_queries, seed_values
from reidbench.reports.summary import CellSummary
from reidbench.rundir import RunDir
from reidbench.stats import Comparison, decide, holm
from reidbench.variants.compare import DEFAULT_MARGIN, SUBSET_SEPARATOR, CompareSpec, cells_of, declared, read_compare
from reidbench.config import tomllib
from reidbench.variants.grid import load_grid

METRICS = ("mAP", "rank1")
"""The metrics every declared comparison is tested on (each one a member of the family)."""
CSV_COLUMNS = ["a", "b", "metric", "n_a", "n_b", "test", "diff", "ci_low", "ci_high", "p", "p_holm",
               "p_improvement", "verdict", "seeds_needed"]


@dataclass
class Row:
    a: str
    b: str
    metric: str
    result: Optional[Comparison] = None
    skipped: str = ""
    """Why no test could be made ('' when one was)."""
    p_holm: Optional[float] = None
    verdict: Optional[str] = None


@dataclass
class Family:
    rows: list[Row] = field(default_factory=list)
    margin: float = DEFAULT_MARGIN
    pairs: int = 0
    """Declared comparisons (each tested on every metric)."""
    added: int = 0
    """Of which `--compare` added."""
    source: str = "the run's grid file"
    """Where the [compare] table came from."""

    @property
    def tested(self) -> list[Row]:
        return [r for r in self.rows if r.result is not None]


def declared_pairs(run: LoadedRun, extra: list[str], grid: Optional[str] = None) -> tuple[list[tuple[str, str]], float, int]:
    """(A, B) operands from the grid's [compare] (`grid`, else the run's grid.toml) and from `--compare`, the margin,
    and how many were added."""
    spec = load_grid(grid).compare if grid is not None else CompareSpec()
    grid_file = RunDir(run.root).grid_toml
    if grid is None and grid_file.is_file():
        try:
            spec = read_compare(tomllib.loads(grid_file.read_text()).get("compare", {}), "the run's grid.toml")
        except (UsageError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            run.warnings.append(f"the run's grid.toml [compare] cannot be read ({exc}); no comparison is declared")
    subsets = {r["cell"]: list((r.get("metrics") or {}).get("modality_subsets") or {}) for r in run.records}
    if spec.each_subset_against is not None and not any(subsets.values()):
        run.warnings.append(f"[compare] each_subset_against = {spec.each_subset_against!r} compares modality subsets, and no "
                            "record of this run holds any (a results.csv keeps none): those comparisons cannot be made")
    named = [name for pair in spec.pairs for name in pair]  # a pair naming a cell this run left out is listed as skipped
    pairs = declared(spec, list(dict.fromkeys(run.cell_order + named)), subsets)
    added = [pair for text in extra for pair in _option_pairs(text, run.cell_order) if pair not in pairs]
    return pairs + list(dict.fromkeys(added)), spec.margin, len(dict.fromkeys(added))


def _option_pairs(text: str, cells: list[str]) -> list[tuple[str, str]]:
    """`--compare A,B`: two cells of this run (or '<backbone>-<neck>' pairs at every axis value, or CELL:SUBSET)."""
    names = [n.strip() for n in text.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UsageError(f"--compare {text!r} must name two different cells as A,B, e.g. --compare clip512proj-ms,vit768-ms.")
    for name in names:
        if not cells_of(Operand.parse(name).cell, cells):
            raise UsageError(f"--compare {text!r}: {Operand.parse(name).cell!r} is not a cell of this run; its cells are: {', '.join(cells)}.")
    if any(SUBSET_SEPARATOR in name for name in names):
        return [(names[0], names[1])]
    return declared(CompareSpec(pairs=((names[0], names[1]),)), cells)


def family(run: LoadedRun, summaries: list[CellSummary], extra: list[str], grid: Optional[str] = None) -> Family:
    """Every declared comparison on every metric, Holm-corrected over those that could be tested."""
    pairs, margin, added = declared_pairs(run, extra, grid)
    status = {s.cell: s for s in summaries}
    rows = [_row(run, status, Operand.parse(a), Operand.parse(b), metric, margin) for a, b in pairs for metric in METRICS]
    tested = [r for r in rows if r.result is not None]
    if tested:
        results = [r.result for r in tested if r.result is not None]
        for row, p_holm, verdict in zip(tested, holm([c.p for c in results]), decide(results, ALPHA)):
            row.p_holm, row.verdict = float(p_holm), verdict
    return Family(rows, margin, len(pairs), added, "the run's grid file" if grid is None else f"the grid {grid} (--grid)")


def _row(run: LoadedRun, status: dict[str, CellSummary], a: Operand, b: Operand, metric: str, margin: float) -> Row:
    for side in (a, b):
        summary = status.get(side.cell)
        if summary is None or summary.status != "done":
            why = "not in this run" if summary is None else f"{summary.status}" + (f" ({summary.message})" if summary.message else "")
            return Row(a.text, b.text, metric, skipped=f"{side.cell} is {why}")
    values = {side: seed_values(run, side, metric) for side in (a, b)}
    for side, found in values.items():
        if not found:
            return Row(a.text, b.text, metric, skipped=f"{side.text} has no {metric}")
    sides = Sides(values[a], values[b], seed_queries(run, a, metric, values[a]), seed_queries(run, b, metric, values[b]))
    result = first_test(sides, margin)
    if isinstance(result, str):
        return Row(a.text, b.text, metric, skipped=result)
    return Row(a.text, b.text, metric, result=result)


def comparisons_csv(found: Family) -> str:
    """comparisons.csv: one line per test made, in the family's order (differences in percentage points)."""
    lines = [
        {"a": r.a, "b": r.b, "metric": r.metric, "n_a": c.n_a, "n_b": c.n_b, "test": c.test, "diff": c.diff,
         "ci_low": c.ci_low, "ci_high": c.ci_high, "p": c.p, "p_holm": r.p_holm, "p_improvement": c.p_improvement,
         "verdict": r.verdict, "seeds_needed": c.seeds_needed}
        for r in found.rows if (c := r.result) is not None
    ]
    return pd.DataFrame(lines, columns=CSV_COLUMNS).astype({"seeds_needed": "Int64"}).to_csv(index=False)
