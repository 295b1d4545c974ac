"""How the `--fail-on` gate knows its noise: the 95 % interval of a cell's change against the baseline.

A change fails the gate only when its whole interval lies beyond the threshold, so seed luck
or a busy machine does not fail a pull request. The rule that made the interval is named on
every gate line. For accuracy, in this order:

1. paired t over seeds — both runs hold the same seeds (at least two): a seed fixes the sampler,
   the augmentations and the initialisation, so the same seed in both runs cancels its luck;
2. the bootstrap over seeds and query identities — both runs hold per-query scores on the same
   test set (the query identities are checked to match);
3. Welch's t over seeds — at least two seeds each;
4. the plain difference of means — none of the above (one seed, no per-query scores): labelled so.

Latency and throughput records hold each seed's median (and p90), not the single timings, so
their change is Welch's t over the seeds' medians (two or more seeds each), else the plain
difference. Parameters and FLOPs are the same for every seed: the plain difference is exact.
`--fail-on-strict` takes the plain difference for everything.
"""
from __future__ import annotations

from dataclasses import dataclass

from reidbench.reports.load import LoadedRun
from reidbench.reports.quantities import Quantity
from reidbench.reports.statistics import (
    ALPHA, Operand, Sides, Test, first_test, identity_bootstrap, paired_t, seed_queries, seed_values, welch_t,
)
from reidbench.schema import is_number
from reidbench.stats import Comparison, compare

GATE_ORDER: tuple[Test, ...] = (paired_t, identity_bootstrap, welch_t)
PLAIN = "plain difference of means"


@dataclass(frozen=True)
class Change:
    """New − baseline in the quantity's shown units: its 95 % interval (low = high for a plain difference)."""

    diff: float
    low: float
    high: float
    rule: str


def change(run: LoadedRun, baseline: LoadedRun, cell: str, quantity: Quantity, column: str, diff: float, strict: bool) -> Change:
    """The change of `column` in `cell` with its interval, by the first rule that applies (module docstring)."""
    if strict:
        return Change(diff, diff, diff, f"{PLAIN} (--fail-on-strict)")
    if quantity.deterministic:
        return Change(diff, diff, diff, f"{PLAIN} (exact: the same for every seed)")
    if quantity.unit == "pp":
        return _accuracy_change(run, baseline, cell, column, diff)
    new, base = column_values(run, cell, column), column_values(baseline, cell, column)
    if len(new) >= 2 and len(base) >= 2:
        result = compare([v * quantity.scale for v in new], [v * quantity.scale for v in base], paired=False, margin=0.0, alpha=ALPHA)
        what = "medians" if quantity.timed else "values"
        return Change(diff, result.ci_low, result.ci_high, f"Welch's t over the seeds' {what} ({len(new)} and {len(base)} seeds)")
    return Change(diff, diff, diff, f"{PLAIN}: {len(new)} and {len(base)} seed(s), a t test over seeds needs ≥ 2 each")


def _accuracy_change(run: LoadedRun, baseline: LoadedRun, cell: str, column: str, diff: float) -> Change:
    operand = Operand(cell)
    new, base = seed_values(run, operand, column), seed_values(baseline, operand, column)
    sides = Sides(new, base, seed_queries(run, operand, column, new), seed_queries(baseline, operand, column, base))
    result = first_test(sides, 0.0, GATE_ORDER) if new and base else "no value in one of the runs"
    if not isinstance(result, Comparison):
        return Change(diff, diff, diff, f"{PLAIN}: {result}")
    return Change(result.diff, result.ci_low, result.ci_high, _rule(result, sides))


def _rule(result: Comparison, sides: Sides) -> str:
    if result.test == "paired-t":
        return f"paired t over seeds {', '.join(map(str, sorted(sides.a)))}"
    if result.test == "welch":
        return f"Welch's t over seeds ({result.n_a} and {result.n_b} seeds)"
    queries = next(iter((sides.qa or {}).values()))[0].size
    return (f"bootstrap over seeds and query identities ({result.n_a} and {result.n_b} seed(s), "
            f"{queries} queries, the same identities in both runs)")


def column_values(run: LoadedRun, cell: str, column: str) -> list[float]:
    """The column's value in each done seed of `cell` (the report's frame: latency per batch, memory, speed)."""
    frame = run.frame()
    if column not in frame.columns:
        return []
    rows = frame[(frame["cell"] == cell) & (frame["status"] == "done")]
    return [float(v) for v in rows[column] if is_number(v)]
