"""One summary per cell over its seeds: status, message, and every number's mean with its 95 % interval.

The interval is Student's t over the seeds; a cell with one seed gets the
bootstrap over query identities where its per-query scores exist, and no
interval where they do not (the table says so). Which differences between cells
are real is the declared comparisons' question (`reidbench.reports.comparisons`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from reidbench.bench.timing import NOISY_SPREAD
from reidbench.reports.load import DAMAGED, MISSING, LoadedRun
from reidbench.schema import MeasureMode, is_number
from reidbench.reports.quantities import ACCURACY, QUANTITIES, RERANKED, Quantity
from reidbench.reports.statistics import CONFIDENCE, one_seed_interval
from reidbench.stats import mean_interval

SEVERITY = ["failed", "xpass", DAMAGED, MISSING, "interrupted", "running", "xfail", "done"]
"""Most severe first: a cell whose seeds disagree shows its worst status."""
T_OVER_SEEDS, IDENTITY_BOOTSTRAP = "t over seeds", "bootstrap over query identities"
"""How a Stat's interval was made."""
ACCURACY_COLUMNS = frozenset(q.column for q in ACCURACY + RERANKED)
NON_NUMERIC = {"cell", "backbone", "neck", "seed", "status", "error", "memory_kind"}


@dataclass
class Stat:
    mean: float
    n: int
    low: Optional[float] = None
    high: Optional[float] = None
    """The 95 % interval of the mean (unscaled); None where there is none (one seed, no per-query scores)."""
    method: str = ""
    """T_OVER_SEEDS or IDENTITY_BOOTSTRAP; '' without an interval."""


@dataclass
class CellSummary:
    cell: str
    backbone: str
    neck: str
    status: str
    message: Optional[str]
    """PyTorch's message for an xfail, the reason for a failure, what is missing or damaged."""
    statuses: dict[int, str] = field(default_factory=dict)
    """Status per seed (the seed is -1 where a damaged record did not say)."""
    values: dict[str, Stat] = field(default_factory=dict)
    """Frame column -> statistics over the seeds that have the number (unscaled)."""
    seed_values: dict[str, dict[int, float]] = field(default_factory=dict)
    """Frame column -> seed -> its value (unscaled), for the seeds that have one: what the plots draw per seed."""
    expected_reason: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    memory_kind: Optional[str] = None
    """A memory record's `kind` (`reidbench.bench.memory`): 'cpu-tensor-peak', 'cuda-allocator', or an older record's."""
    noise: dict[int, str] = field(default_factory=dict)
    """Batch size -> why the eager latency there cannot be trusted: a seed's measurement spread, or seeds that
    disagree (`latency_noise`)."""
    onnx: Optional[dict[str, Any]] = None
    """The ONNX export's summary (exported, parity, error) where the cell was measured with it."""
    axes: dict[str, Any] = field(default_factory=dict)
    """The cell's axis values (a grid with [axes] or --axis)."""

    @property
    def pair(self) -> str:
        return f"{self.backbone}-{self.neck}"

    @property
    def seeds(self) -> int:
        return len(self.statuses)

    def stat(self, quantity: Quantity, batch: Optional[int] = None) -> Optional[Stat]:
        return self.values.get(quantity.column_at(batch))

    def scaled(self, quantity: Quantity, batch: Optional[int] = None) -> Optional[float]:
        s = self.stat(quantity, batch)
        return None if s is None else s.mean * quantity.scale


def summarize(run: LoadedRun) -> list[CellSummary]:
    """The cells in the grid's order; a cell without any readable record still has a summary (missing/damaged)."""
    frame = run.frame()
    records = {}
    for r in run.records:
        records.setdefault(r["cell"], r)
    summaries = []
    for cell, rows in frame.groupby("cell", sort=False):
        statuses = {int(s) if pd.notna(s) else -1: st for s, st in zip(rows["seed"], rows["status"])}
        worst = min(statuses.values(), key=_severity)
        worst_rows = rows[rows["status"] == worst]
        message = next((e for e in worst_rows["error"] if isinstance(e, str) and e), None)
        if len(set(statuses.values())) > 1 and message:
            message = f"seed {_seed_text(worst_rows['seed'].iloc[0])}: {message}"
        record = records.get(cell, {})
        values = {str(column): stat for column in frame.columns if column not in NON_NUMERIC
                  and (stat := column_stat(run, str(cell), str(column), rows[column])) is not None}
        per_seed = {column: {int(seed): float(v) for seed, v in zip(rows["seed"], rows[column]) if is_number(seed) and is_number(v)}
                    for column in values}
        summaries.append(CellSummary(
            cell=str(cell),
            backbone=str(rows["backbone"].iloc[0]),
            neck=str(rows["neck"].iloc[0]),
            status=worst,
            message=message,
            statuses=statuses,
            values=values,
            seed_values=per_seed,
            expected_reason=(record.get("expected") or {}).get("reason") or None,
            notes=list(record.get("notes") or []),
            warnings=list(record.get("warnings") or []),
            memory_kind=next((k for k in rows["memory_kind"] if isinstance(k, str)), None) if "memory_kind" in rows else None,
            noise=latency_noise([r for r in run.records if r["cell"] == cell], per_seed),
            onnx=record.get("onnx"),
            axes=dict(record.get("axes") or {}),
        ))
    return summaries


def column_stat(run: LoadedRun, cell: str, column: str, series: pd.Series) -> Optional[Stat]:
    """The mean over seeds with its interval: t over seeds, else (one seed, accuracy) over query identities."""
    numbers = [float(v) for v in series if is_number(v)]
    if not numbers:
        return None
    if len(numbers) > 1:
        interval = mean_interval(numbers, CONFIDENCE)
        # Nothing the report counts is negative (a share of queries, a time, a size): Student's t can reach past 0,
        # and past 100 % for an accuracy; the quantity cannot.
        low, high = max(interval.low, 0.0), interval.high
        if column in ACCURACY_COLUMNS:
            high = min(high, 1.0)
        return Stat(interval.mean, interval.n, low, high, T_OVER_SEEDS)
    bootstrap = one_seed_interval(run, cell, column) if column in ACCURACY_COLUMNS else None
    if bootstrap is not None:
        return Stat(numbers[0], 1, bootstrap.low, bootstrap.high, IDENTITY_BOOTSTRAP)
    return Stat(numbers[0], 1)


def latency_noise(records: list[dict[str, Any]], seed_values: Optional[dict[str, dict[int, float]]] = None) -> dict[int, str]:
    """Batch size -> why the eager latency there is noisy: any seed's own measurement (too few repeats, p90 far above
    its median: `reidbench.bench.timing`), or the seeds' medians disagreeing (`seed_disagreement`)."""
    noise: dict[int, str] = {}
    for record in records:
        for entry in record.get("latency") or []:
            if entry.get("mode") in (None, MeasureMode.EAGER) and entry.get("noisy") and isinstance(entry.get("batch_size"), int):
                noise.setdefault(entry["batch_size"], entry["noisy"])
    for column, medians in (seed_values or {}).items():
        name, _, batch = column.partition("@")
        if name == QUANTITIES["latency_ms"].column and batch.isdigit() and (why := seed_disagreement(medians)):
            noise[int(batch)] = "; ".join(filter(None, (noise.get(int(batch)), why)))
    return noise


def seed_disagreement(medians: dict[int, float]) -> str:
    """Why one cell's seeds timed it too differently to be read as one latency ('' when they agree).

    The seeds of a cell time the same network on the same machine, so their
    medians should agree as closely as one measurement's repeats do: a timing
    is trusted while its p90 stays within `NOISY_SPREAD` (1.5x) of its median.
    The slowest seed's median more than 1.5x the fastest's is more than that
    spread explains: the machine was disturbed while one of them was measured.
    """
    if len(medians) < 2 or min(medians.values()) <= 0:
        return ""
    fast, slow = min(medians, key=medians.__getitem__), max(medians, key=medians.__getitem__)
    ratio = medians[slow] / medians[fast]
    if ratio <= NOISY_SPREAD:
        return ""
    return (f"its seeds' medians disagree: {medians[fast]:.3g} ms (seed {fast}) to {medians[slow]:.3g} ms (seed {slow}), "
            f"{ratio:.1f}x apart, more than the {NOISY_SPREAD:g}x one measurement may spread")


def below_chance(summaries: list[CellSummary], chance: dict[str, float]) -> dict[str, str]:
    """Cell -> why its accuracy is no better than chance: its mean mAP at or below the chance level (the expected mAP
    of a random ranking under the same protocol). Such a cell learned nothing the test measures, and comparing it
    with another says nothing about its architecture."""
    level, m_ap = chance.get("mAP"), ACCURACY[0]
    if level is None:
        return {}
    found = {}
    for s in summaries:
        stat = s.stat(m_ap)
        if stat is not None and stat.mean <= level:
            found[s.cell] = (f"mAP {stat.mean * m_ap.scale:.1f} % is at or below the chance level {level * m_ap.scale:.1f} % "
                             "(the expected mAP of a random ranking under the same protocol): this cell learned nothing "
                             "the test measures")
    return found


def _severity(status: str) -> int:
    return SEVERITY.index(status) if status in SEVERITY else 0


def _seed_text(seed: Any) -> str:
    return str(int(seed)) if is_number(seed) else "?"


def short_reason(summary: CellSummary) -> str:
    """A few words for a plot annotation: '512≠768 channels' for the classic size mismatch."""
    message = summary.message or ""
    if summary.status == MISSING:
        where = re.search(r"\(([^()]*)\)$", message)
        return where.group(1) if where else "no record.json"
    if summary.status == DAMAGED:
        return "record.json unreadable"
    mismatch = re.search(r"to have (\d+) channels, but got (\d+) channels", message)
    if mismatch:
        return f"{mismatch.group(2)}≠{mismatch.group(1)} channels"
    if summary.expected_reason:
        message = summary.expected_reason
    message = message.split("\n", 1)[0]
    return message if len(message) <= 48 else message[:45] + "…"
