"""A run against a baseline run: deltas per cell and quantity, and the `--fail-on` regression gate for CI.

`--fail-on` grammar: comma-separated `METRIC[@BATCH]:DELTA`; DELTA is `+x` / `-x`
(absolute, in the metric's unit) or `+x%` / `-x%` (relative to the baseline).
The sign names the direction that is a regression: `mAP:-1.0` fails when mAP
drops by more than 1.0 percentage point, `latency_ms:+10%` when the median
latency rises by more than 10 %, `gflops:+0%` on any increase. A change counts
only when its whole 95 % interval lies beyond the threshold; the rule that made
the interval (`reidbench.reports.gate_rules`) is named on each line, and
`--fail-on-strict` compares the plain means instead. Besides the thresholds, a
cell that was done in the baseline and is not done now (failed, missing, an
unexpected pass) fails the gate: a cell that stops working is the largest
regression there is.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional

from reidbench.errors import UsageError
from reidbench.reports.gate_rules import Change, change
from reidbench.reports.load import LoadedRun
from reidbench.reports.quantities import QUANTITIES, Quantity
from reidbench.reports.summary import CellSummary

THRESHOLD = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<batch>\d+))?:(?P<sign>[+-])(?P<amount>\d+(?:\.\d*)?|\.\d+)(?P<pct>%?)$")
DEFAULT_LATENCY_BATCH = 1
"""`latency_ms` without `@BATCH` gates batch 1 (the launch-bound case); `img_per_s` the largest batch."""


@dataclass(frozen=True)
class Threshold:
    quantity: Quantity
    batch: Optional[int]
    sign: str
    amount: float
    relative: bool
    text: str

    def describe(self) -> str:
        unit = "%" if self.relative else f" {self.quantity.unit}"
        way = "rises" if self.sign == "+" else "drops"
        return f"{self.text}: fail when {self.quantity.name} {way} by more than {self.amount:g}{unit}"


def parse_fail_on(spec: str) -> list[Threshold]:
    """`"mAP:-1.0,latency_ms:+10%"` -> thresholds; anything else is a UsageError that shows the grammar."""
    thresholds = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = THRESHOLD.match(item.replace(" ", ""))
        if match is None:
            raise UsageError(f"--fail-on {item!r} is malformed. {fail_on_help()}")
        quantity = QUANTITIES.get(match["name"])
        if quantity is None:
            raise UsageError(f"--fail-on {item!r}: unknown metric {match['name']!r}. {fail_on_help()}")
        batch = int(match["batch"]) if match["batch"] else None
        if batch == 0:
            raise UsageError(f"--fail-on {item!r}: batch 0 is not a batch size; give one the runs measured, e.g. @1.")
        if batch is not None and not quantity.per_batch:
            raise UsageError(f"--fail-on {item!r}: {quantity.name} has no batch size; only "
                             f"{', '.join(q.name for q in QUANTITIES.values() if q.per_batch)} take @BATCH. {fail_on_help()}")
        thresholds.append(Threshold(quantity, batch, match["sign"], float(match["amount"]), bool(match["pct"]), item))
    if not thresholds:
        raise UsageError(f"--fail-on {spec!r} names no threshold. {fail_on_help()}")
    return thresholds


def fail_on_help() -> str:
    names = ", ".join(QUANTITIES)
    return (
        "Give comma-separated METRIC[@BATCH]:DELTA, DELTA as +x or -x (absolute) or +x% or -x% (relative), the sign "
        "being the direction that counts as a regression, e.g. mAP:-1.0,latency_ms@64:+10%,gflops:+0%. "
        f"Metrics: {names} (accuracy in percentage points, params in millions, latency in ms at batch 1 unless @BATCH, "
        "img_per_s at the largest batch unless @BATCH, memory in MiB)."
    )


@dataclass
class Delta:
    base: float
    new: float
    higher_is_better: bool

    @property
    def diff(self) -> float:
        return self.new - self.base

    @property
    def relative(self) -> float:
        """Percent change against the baseline (infinite when the baseline is 0 and the value is not)."""
        if self.base == 0:
            return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)
        return self.diff / abs(self.base) * 100

    @property
    def better(self) -> Optional[bool]:
        """True: improved, False: regressed, None: unchanged."""
        if self.diff == 0:
            return None
        return (self.diff > 0) == self.higher_is_better


@dataclass
class Comparison:
    baseline: LoadedRun
    cells: dict[str, CellSummary]
    """The baseline's summaries by cell id."""
    only_in_run: list[str] = field(default_factory=list)
    only_in_baseline: list[str] = field(default_factory=list)
    status_changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(cell, baseline status, run status) where they differ."""
    differences: list[str] = field(default_factory=list)
    """Settings that differ between the runs and so explain part of any delta."""
    batches: list[int] = field(default_factory=list)
    """Inference batch sizes measured in both runs."""

    def delta(self, summary: CellSummary, quantity: Quantity, batch: Optional[int] = None) -> Optional[Delta]:
        base = self.cells.get(summary.cell)
        if base is None:
            return None
        old, new = base.scaled(quantity, batch), summary.scaled(quantity, batch)
        if old is None or new is None:
            return None
        return Delta(old, new, quantity.higher_is_better)

    def noisy(self, summary: CellSummary, quantity: Quantity, batch: Optional[int]) -> str:
        """Why a latency pair cannot be trusted ('' when it can): either run's timing marked noisy at this batch."""
        if not quantity.timed or batch is None:
            return ""
        base = self.cells.get(summary.cell)
        reasons = [f"{where}: {why}" for where, s in (("baseline", base), ("this run", summary))
                   if s is not None and (why := s.noise.get(batch))]
        return "noisy latency (" + "; ".join(reasons) + ")" if reasons else ""


def compare(run: LoadedRun, summaries: list[CellSummary], baseline: LoadedRun, base_summaries: list[CellSummary]) -> Comparison:
    ours = {s.cell: s for s in summaries}
    theirs = {s.cell: s for s in base_summaries}
    return Comparison(
        baseline=baseline,
        cells=theirs,
        only_in_run=[c for c in ours if c not in theirs],
        only_in_baseline=[c for c in theirs if c not in ours],
        status_changes=[(c, theirs[c].status, s.status) for c, s in ours.items() if c in theirs and theirs[c].status != s.status],
        differences=setting_differences(run, baseline),
        batches=sorted(set(run.batch_sizes()) & set(baseline.batch_sizes())),
    )


def setting_differences(run: LoadedRun, baseline: LoadedRun) -> list[str]:
    """What differs in how the two runs were made: a latency delta across two devices is not a regression."""

    def facts(r: LoadedRun) -> dict[str, object]:
        settings = r.meta.get("settings") or (r.records[0].get("settings") if r.records else {}) or {}
        return {
            "device": f"{r.environment.get('device') or r.meta.get('device')} ({r.environment.get('device_name')})",
            "dtype": r.environment.get("dtype") or r.meta.get("dtype"),
            "torch": (r.environment.get("packages") or {}).get("torch"),
            "input size": settings.get("img_size"),
            "stride": settings.get("stride"),
            "depth": settings.get("depth"),
            "profile": (r.meta.get("profile") or {}).get("name"),
            "--set": ", ".join(f"{k}={v}" for k, v in sorted((r.meta.get("overrides") or {}).items())) or "none",
            "torch threads": r.environment.get("torch_threads"),
            "dataset": (r.meta.get("dataset") or {}).get("version"),
        }

    ours, theirs = facts(run), facts(baseline)
    return [f"{k}: {theirs[k]} in the baseline, {ours[k]} here" for k in ours if ours[k] != theirs[k]]


@dataclass
class Crossing:
    """One reason the gate fails, as printed and as shown in the report."""

    cell: str
    what: str


def resolve_batch(threshold: Threshold, comparison: Comparison) -> Optional[int]:
    """The batch size a per-batch threshold is checked at, or None when the runs share none."""
    if not threshold.quantity.per_batch:
        return None
    if threshold.batch is not None:
        return threshold.batch
    if not comparison.batches:
        return None
    if threshold.quantity.name.startswith("latency"):
        return DEFAULT_LATENCY_BATCH if DEFAULT_LATENCY_BATCH in comparison.batches else comparison.batches[0]
    return comparison.batches[-1]


@dataclass
class GateOutcome:
    crossings: list[Crossing] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    """Each checked cell that passed: its change, its interval and the rule that decided."""
    notes: list[str] = field(default_factory=list)
    """Pairs left out (a noisy latency)."""


def gate(
    run: LoadedRun, summaries: list[CellSummary], comparison: Comparison, thresholds: list[Threshold], strict: bool = False,
) -> GateOutcome:
    """Every cell checked against every threshold; a threshold that can check nothing is an error, not a pass."""
    outcome = GateOutcome([
        Crossing(s.cell, f"status {base.status} in the baseline, {s.status} now" + (f" ({s.message})" if s.message else ""))
        for s in summaries if (base := comparison.cells.get(s.cell)) is not None and status_regressed(base.status, s.status)
    ])
    for threshold in thresholds:
        batch = _checked_batch(threshold, comparison)
        checked = 0
        for summary in summaries:
            delta = comparison.delta(summary, threshold.quantity, batch)
            if delta is None:
                continue
            noisy = comparison.noisy(summary, threshold.quantity, batch)
            if noisy:
                outcome.notes.append(f"{threshold.text}: {summary.cell} not checked, {noisy}")
                continue
            checked += 1
            moved = change(run, comparison.baseline, summary.cell, threshold.quantity,
                           threshold.quantity.column_at(batch), delta.diff, strict)
            crossed, text = _judge(threshold, delta, moved, batch)
            if crossed:
                outcome.crossings.append(Crossing(summary.cell, text))
            else:
                outcome.passes.append(f"{summary.cell}: {text}")
        if checked == 0 and not any(note.startswith(f"{threshold.text}:") for note in outcome.notes):
            raise UsageError(
                f"--fail-on {threshold.text} checks nothing: no cell has {threshold.quantity.name} in both runs. "
                "Gate on a quantity both runs measured."
            )
    return outcome


def _checked_batch(threshold: Threshold, comparison: Comparison) -> Optional[int]:
    """The batch a per-batch threshold checks; an explicit batch the runs did not both measure is refused."""
    batch = resolve_batch(threshold, comparison)
    if threshold.quantity.per_batch and (batch is None or batch not in comparison.batches):
        measured = ", ".join(map(str, comparison.batches)) or "none"
        raise UsageError(
            f"--fail-on {threshold.text}: {'batch ' + str(batch) + ' was not' if batch is not None else 'no batch size was'} "
            f"measured in both runs (batch sizes measured in both: {measured}); gate at one of those, e.g. "
            f"{threshold.quantity.name}@{comparison.batches[0] if comparison.batches else 1}."
        )
    return batch


def _judge(threshold: Threshold, delta: Delta, moved: Change, batch: Optional[int]) -> tuple[bool, str]:
    """Crossed when the whole interval of the change lies beyond the threshold; the line names the rule."""
    quantity = threshold.quantity
    low, high = (_relative(moved.low, delta.base), _relative(moved.high, delta.base)) if threshold.relative else (moved.low, moved.high)
    crossed = low > threshold.amount if threshold.sign == "+" else high < -threshold.amount
    at = f" at batch {batch}" if batch is not None else ""
    unit = "%" if threshold.relative else quantity.unit
    interval = "" if moved.low == moved.high else f", 95 % interval [{low:+.3g}, {high:+.3g}] {unit}"
    text = (f"{quantity.name}{at} {quantity.shown(delta.base / quantity.scale)} → {quantity.shown(delta.new / quantity.scale)} "
            f"({format_change(delta, quantity)}{interval}); threshold {threshold.text}: "
            f"{'crossed' if crossed else 'not crossed'}; rule: {moved.rule}")
    return crossed, text


def _relative(value: float, base: float) -> float:
    """A change as percent of the baseline (infinite when the baseline is 0 and the change is not)."""
    if base == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return value / abs(base) * 100


def status_regressed(before: str, after: str) -> bool:
    """done -> anything else, or xfail -> something other than xfail/done (a new failure, an unexpected pass)."""
    if before == "done":
        return after != "done"
    if before == "xfail":
        return after not in ("xfail", "done")
    return False


def format_change(delta: Delta, quantity: Quantity) -> str:
    """'+1.2 pp' for accuracy, '+3.4%' for costs; no change is written as one ('0.0 pp', '0.0%'), not '±0', which
    would read as a spread beside the value's interval."""
    if delta.diff == 0:
        return "0.0 pp" if quantity.unit == "pp" else "0.0%"
    if quantity.unit == "pp":
        return f"{delta.diff:+.{quantity.digits or 1}f} pp"
    if math.isinf(delta.relative):
        return f"{delta.diff:+g} {quantity.unit} (baseline 0)"
    return f"{delta.relative:+.1f}%"
