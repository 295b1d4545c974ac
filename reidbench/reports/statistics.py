"""Where the report's numbers meet `reidbench.stats`: each cell's per-seed values and per-query scores, its
interval, and the test that compares two of them.

A seed fixes the sampler, the augmentation draws and the initialisation of every cell, so two
cells trained with the same seeds are paired. The order in which a test is chosen, for A − B:

1. paired t over seeds — both have the same seeds, at least two;
2. Welch's t over seeds — at least two seeds each, not the same ones;
3. the hierarchical bootstrap (seeds, then query identities) — a side has one seed, and both
   have per-query scores on the same queries;
4. none: the comparison is skipped, and the reason is said.

`docs/statistics.md` holds the formulas; `docs/reports.md` how the report shows them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from reidbench.reports.load import LoadedRun
from reidbench.schema import QueryScores, is_number
from reidbench.stats import Comparison, IdentityInterval, compare, hierarchical_bootstrap_compare, identity_bootstrap_interval
from reidbench.stats.bootstrap import rank_k_indicator
from reidbench.variants.compare import SUBSET_SEPARATOR

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
AGREEMENT = 5e-4
"""How far (as a fraction) queries.npz's mean may sit from record.json's metric before its scores are not trusted."""
PER_QUERY_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")
POINTS = 100.0
"""Accuracy is stored as a fraction and compared in percentage points."""


@dataclass(frozen=True)
class Operand:
    """One side of a comparison: a cell's main evaluation, or one modality subset of it ('CELL:SUBSET')."""

    cell: str
    subset: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "Operand":
        cell, _, subset = text.partition(SUBSET_SEPARATOR)
        return cls(cell, subset or None)

    @property
    def text(self) -> str:
        return self.cell if self.subset is None else f"{self.cell}{SUBSET_SEPARATOR}{self.subset}"

    def query_key(self, metric: str) -> tuple[str, str]:
        """(queries.npz key, metric within it): 'mAP_rr' is the 'test/rr' evaluation's mAP."""
        if self.subset is not None:
            return f"modalities/{self.subset}", metric
        base, reranked = metric.removesuffix("_rr"), metric.endswith("_rr")
        return ("test/rr" if reranked else "test"), base

    def recorded(self, record: dict, metric: str) -> Optional[float]:
        """The record's value of `metric` for this operand (None where it has none)."""
        metrics = record.get("metrics") or {}
        if self.subset is not None:
            metrics = (metrics.get("modality_subsets") or {}).get(self.subset) or {}
        value = metrics.get(metric)
        return float(value) if is_number(value) else None


def seed_values(run: LoadedRun, operand: Operand, metric: str) -> dict[int, float]:
    """Seed -> the operand's accuracy metric, from the cell's done records."""
    found = {}
    for record in run.records:
        if record.get("cell") == operand.cell and record.get("status") == "done":
            value = operand.recorded(record, metric)
            if value is not None:
                found[int(record.get("seed") or 0)] = value
    return found


def per_query(scores: QueryScores, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-query values, query identities) over the scored queries: AP, INP or the rank-k indicator."""
    valid = scores.valid
    if metric == "mAP":
        values = scores.ap[valid]
    elif metric == "mINP":
        values = scores.inp[valid]
    else:
        values = rank_k_indicator(scores.first_rank[valid], int(metric.removeprefix("rank")))
    return np.asarray(values, dtype=float), np.asarray(scores.pid[valid])


QueryValues = dict[int, tuple[np.ndarray, np.ndarray]]


def seed_queries(run: LoadedRun, operand: Operand, metric: str, values: dict[int, float]) -> Optional[QueryValues]:
    """Seed -> (per-query values, identities) for every seed in `values`; None unless all have them and each
    agrees with its record (a queries.npz that disagrees is named in a warning, not used)."""
    key, name = operand.query_key(metric)
    if name not in PER_QUERY_METRICS:
        return None
    found: QueryValues = {}
    for seed, recorded in values.items():
        scores = (run.queries(operand.cell, seed) or {}).get(key)
        if scores is None:
            return None
        found[seed] = per_query(scores, name)
        if found[seed][0].size == 0 or abs(float(found[seed][0].mean()) - recorded) > AGREEMENT:
            run.warnings.append(
                f"{operand.cell} seed {seed}: queries.npz's {key} gives {metric} {found[seed][0].mean() if found[seed][0].size else 'nothing'}, "
                f"its record.json {recorded}; its per-query scores are not used"
            )
            return None
    return found


def one_seed_interval(run: LoadedRun, cell: str, column: str) -> Optional[IdentityInterval]:
    """A one-seed cell's accuracy interval over query identities, where its per-query scores exist."""
    operand = Operand(cell)
    values = seed_values(run, operand, column)
    if len(values) != 1:
        return None
    queries = seed_queries(run, operand, column, values)
    if queries is None:
        return None
    per_query_values, pids = next(iter(queries.values()))
    return identity_bootstrap_interval(per_query_values, pids, confidence=CONFIDENCE)


def same_queries(a: QueryValues, b: QueryValues) -> bool:
    """Both sides scored on the same queries, in the same order (compared by identity)."""
    reference = next(iter(a.values()))[1]
    return all(pids.shape == reference.shape and np.array_equal(pids, reference) for _, pids in [*a.values(), *b.values()])


@dataclass(frozen=True)
class Sides:
    """Both sides' per-seed values (fractions) and, where every seed has them, per-query values."""

    a: dict[int, float]
    b: dict[int, float]
    qa: Optional[QueryValues] = None
    qb: Optional[QueryValues] = None

    @property
    def paired(self) -> bool:
        return set(self.a) == set(self.b)


def paired_t(sides: Sides, margin: float) -> Optional[Comparison]:
    if not (sides.paired and len(sides.a) >= 2):
        return None
    seeds = sorted(sides.a)
    return compare([sides.a[s] * POINTS for s in seeds], [sides.b[s] * POINTS for s in seeds], paired=True, margin=margin, alpha=ALPHA)


def welch_t(sides: Sides, margin: float) -> Optional[Comparison]:
    if len(sides.a) < 2 or len(sides.b) < 2:
        return None
    a, b = [v * POINTS for v in sides.a.values()], [v * POINTS for v in sides.b.values()]
    return compare(a, b, paired=False, margin=margin, alpha=ALPHA)


def identity_bootstrap(sides: Sides, margin: float) -> Optional[Comparison]:
    """The hierarchical bootstrap (seeds, then query identities), where both sides hold the same queries."""
    qa, qb = sides.qa, sides.qb
    if qa is None or qb is None or not same_queries(qa, qb):
        return None
    order_a, order_b = sorted(sides.a), sorted(sides.a if sides.paired else sides.b)
    return hierarchical_bootstrap_compare(
        [qa[s][0] * POINTS for s in order_a], [qb[s][0] * POINTS for s in order_b], qa[order_a[0]][1],
        paired=sides.paired, margin=margin, alpha=ALPHA,
    )


Test = Callable[[Sides, float], Optional[Comparison]]
REPORT_ORDER: tuple[Test, ...] = (paired_t, welch_t, identity_bootstrap)
"""The report's order: the t tests over seeds first, the bootstrap where a side has one seed."""


def first_test(sides: Sides, margin: float, order: tuple[Test, ...] = REPORT_ORDER) -> Union[Comparison, str]:
    """A − B in percentage points by the first test in `order` that applies, or why none does."""
    for test in order:
        result = test(sides, margin)
        if result is not None:
            return result
    if sides.qa is not None and sides.qb is not None:
        return "the per-query scores are not on the same queries: a bootstrap over query identities needs one test set"
    return (f"{len(sides.a)} and {len(sides.b)} seed(s) and per-query scores on "
            f"{'neither side' if sides.qa is None and sides.qb is None else 'one side only'}: "
            "neither a t test over seeds (≥ 2 seeds each) nor a bootstrap over query identities can be made")
