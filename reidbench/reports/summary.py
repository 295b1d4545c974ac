"""One summary per cell over its seeds: status, message, mean ± std of every number, and seed-noise pairs.

Seeds are what separates a real difference between two cells from luck; the
rule used to call a difference noise is stated in `NOISE_RULE` and printed in
every report that applies it.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from reidbench.reports.load import DAMAGED, MISSING, LoadedRun
from reidbench.schema import MeasureMode, is_number
from reidbench.reports.quantities import Quantity

SEVERITY = ["failed", "xpass", DAMAGED, MISSING, "interrupted", "running", "xfail", "done"]
"""Most severe first: a cell whose seeds disagree shows its worst status."""
NOISE_RULE = (
    "two cells are within seed noise on a metric when |mean_a − mean_b| ≤ std_a + std_b "
    "(std over seeds, ddof = 1; cells with ≥ 2 seeds)"
)
NON_NUMERIC = {"cell", "backbone", "neck", "seed", "status", "error", "memory_kind"}


@dataclass
class Stat:
    mean: float
    std: Optional[float]
    """Sample standard deviation (ddof = 1); None with one value."""
    n: int


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
    expected_reason: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    memory_kind: Optional[str] = None
    """'peak-rss' (CPU process) or 'cuda-allocator'."""
    noise: dict[int, str] = field(default_factory=dict)
    """Batch size -> why an eager latency measured there cannot be trusted (any seed's)."""
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
        values = {}
        for column in frame.columns:
            if column in NON_NUMERIC:
                continue
            numbers = [float(v) for v in rows[column] if is_number(v)]
            if numbers:
                series = pd.Series(numbers)
                values[column] = Stat(float(series.mean()), float(series.std(ddof=1)) if len(numbers) > 1 else None, len(numbers))
        summaries.append(CellSummary(
            cell=str(cell),
            backbone=str(rows["backbone"].iloc[0]),
            neck=str(rows["neck"].iloc[0]),
            status=worst,
            message=message,
            statuses=statuses,
            values=values,
            expected_reason=(record.get("expected") or {}).get("reason") or None,
            notes=list(record.get("notes") or []),
            warnings=list(record.get("warnings") or []),
            memory_kind=next((k for k in rows["memory_kind"] if isinstance(k, str)), None) if "memory_kind" in rows else None,
            noise=latency_noise([r for r in run.records if r["cell"] == cell]),
            onnx=record.get("onnx"),
            axes=dict(record.get("axes") or {}),
        ))
    return summaries


def latency_noise(records: list[dict[str, Any]]) -> dict[int, str]:
    """Batch size -> why the eager latency there is noisy, from every seed's record."""
    noise: dict[int, str] = {}
    for record in records:
        for entry in record.get("latency") or []:
            if entry.get("mode") in (None, MeasureMode.EAGER) and entry.get("noisy") and isinstance(entry.get("batch_size"), int):
                noise.setdefault(entry["batch_size"], entry["noisy"])
    return noise


def _severity(status: str) -> int:
    return SEVERITY.index(status) if status in SEVERITY else 0


def _seed_text(seed: Any) -> str:
    return str(int(seed)) if is_number(seed) else "?"


def noise_pairs(summaries: list[CellSummary], quantity: Quantity) -> list[tuple[str, str]]:
    """Pairs of done cells, each with ≥ 2 seeds of `quantity`, whose difference is within their seed noise."""
    eligible = [
        (s.cell, stat) for s in summaries
        if s.status == "done" and (stat := s.stat(quantity)) is not None and stat.n >= 2 and stat.std is not None
    ]
    return [
        (a, b) for (a, sa), (b, sb) in itertools.combinations(eligible, 2)
        if abs(sa.mean - sb.mean) <= sa.std + sb.std
    ]


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
