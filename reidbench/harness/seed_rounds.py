"""`--seeds auto`: train seeds in rounds until every cell's mean mAP is known to the precision asked for.

After each round a cell is *precise* when the 95 % Student t interval of its mean mAP over its
seeds (`reidbench.stats.mean_interval`, in percentage points) has a half-width of at most
`--precision`. The next round gives **one more seed to each cell that is not precise yet, and
none to the others**:

* a precise cell's interval is already as narrow as asked; more seeds for it cost trainings and
  answer no question the run was asked;
* one seed at a time stops each cell at the first seed count that meets the target, so no
  training is spent that the target did not need (cells train one after another in one
  process, so small rounds cost no waiting);
* seeds are numbered from the run's first seed (`--first-seed`, default 0) in every cell, so any
  two cells still share its first n seeds (the fewer of their counts) and a comparison can pair
  them on those.

The rounds stop on precision (or at MAX seeds), **never on a p-value**: adding seeds until a
difference turns significant finds one far more often than the 5 % the test promises, while the
width of an interval depends on the spread alone, not on which cell is ahead (docs/statistics.md).
Cells that ended xfail or failed are not seeded further: another seed would not change that.

The state lives in run.json (`AutoSeeds.cells`, rewritten after each round's decision), and the
decision is a function of the records on disk, so `--resume` of an interrupted run finishes the
round it was in and goes on deciding where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from reidbench.harness.plan import RunPlan
from reidbench.schema import CellRecord, CellState
from reidbench.stats import mean_interval
from reidbench.variants.grid import Cell

CONFIDENCE = 0.95


@dataclass(frozen=True)
class CellPrecision:
    """Where one cell stands after a round."""

    cell: str
    seeds: int
    """Seeds planned for it so far."""
    half_width: Optional[float]
    """Of the 95 % interval of its mean mAP over its done seeds, in points; None with fewer than two."""
    verdict: str
    """'precise', 'more' (gets a seed), 'max' (at MAX seeds, not precise) or 'stopped' (xfail or failed)."""
    why: str = ""


def judge(plan: RunPlan, cell: Cell, records: dict[tuple[str, int], CellRecord]) -> CellPrecision:
    """The verdict on `cell` from the records of its planned seeds (missing ones count as not done)."""
    auto = plan.auto_seeds
    assert auto is not None
    seeds = plan.seeds_of(cell.id)
    mine = [records.get((cell.id, seed)) for seed in plan.cell_seeds(cell.id)]
    ended = [r for r in mine if r is not None and r.status != CellState.DONE]
    if ended:
        return CellPrecision(cell.id, seeds, None, "stopped", ", ".join(sorted({str(r.status) for r in ended})))
    values = [100 * float(r.metrics["mAP"]) for r in mine if r is not None]
    half = mean_interval(values, CONFIDENCE).half_width if values else None
    if half is not None and half <= auto.precision:
        return CellPrecision(cell.id, seeds, half, "precise")
    return CellPrecision(cell.id, seeds, half, "max" if seeds >= auto.max_seeds else "more")


def next_round(
    plan: RunPlan, cells: list[Cell], records: list[CellRecord], log: Callable[[str], None],
) -> list[tuple[Cell, int]]:
    """Judge every cell of `cells`, say so on the console, and plan the next round: its (cell, seed) slots,
    already added to `plan.auto_seeds.cells`; empty when every cell is precise, at MAX, or stopped."""
    auto = plan.auto_seeds
    assert auto is not None
    by_slot = {(r.cell, r.seed if r.seed is not None else 0): r for r in records}
    verdicts = [judge(plan, cell, by_slot) for cell in cells]
    log(round_summary(verdicts, auto.precision, auto.max_seeds))
    grown = []
    for cell, verdict in zip(cells, verdicts):
        if verdict.verdict == "more":
            auto.cells[cell.id] = verdict.seeds + 1
            grown.append((cell, plan.cell_seeds(cell.id)[-1]))
    return grown


def round_summary(verdicts: list[CellPrecision], precision: float, max_seeds: int) -> str:
    """The console's account of a round: which cells are precise, which get a seed, which stop, with their widths."""

    def shown(v: CellPrecision) -> str:
        width = f", ±{v.half_width:.2f}" if v.half_width is not None else ""
        return f"{v.cell} ({v.seeds} seed{'s' if v.seeds != 1 else ''}{width}{', ' + v.why if v.why else ''})"

    groups = (
        ("precise", "precise"),
        ("more", "one more seed each"),
        ("max", f"at the maximum of {max_seeds} seeds, not precise"),
        ("stopped", "not seeded further"),
    )
    lines = [f"--seeds auto: 95% interval half-width of mAP <= {precision:g} points, at most {max_seeds} seeds"]
    for key, title in groups:
        named = [shown(v) for v in verdicts if v.verdict == key]
        if named:
            lines.append(f"  {title}: {'; '.join(named)}")
    return "\n".join(lines)
