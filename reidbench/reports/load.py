"""Read a run directory back for reporting, as far as it goes.

A report is most needed when a run went wrong, so nothing here assumes a run
finished: a cell without its record is listed as missing, a record that does
not parse is listed as damaged (with its file), a missing run.json costs the
header, not the report. Only a directory with no record at all is an error.
An archived run — a folder that kept only its results.csv (a report's, or a run's) — is read
from that file: the records it can rebuild, no header, no training log, no per-query scores.
The format itself (paths, results.csv columns) is `reidbench.rundir`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import pandas as pd

from reidbench.errors import UsageError
from reidbench.bench.memory import CPU_TENSORS, CUDA_ALLOCATOR, RSS_DELTA, headline_mib
from reidbench.rundir import RunDir, owner_gone, run_standing, standing
from reidbench.reports.quantities import COMPILE_SECONDS, MODE_COST, QUANTITIES
from reidbench.runtime.files import read_json
from reidbench.schema import (
    AXIS_COLUMN_PREFIX, CellRecord, CellState, EpochEntry, MeasureMode, SchemaError, is_number, record_from_results_row,
    column_units, results_columns, results_row,
)
from reidbench.schema import QueryScores

MISSING, DAMAGED = CellState.MISSING.value, CellState.DAMAGED.value
"""Statuses of cells the report names although they have no readable record."""
RUNS_PARENT = Path("runs")
"""Where `reidbench run` creates run directories by default; `report` looks there for the latest."""
T = TypeVar("T")


@dataclass
class CellIssue:
    """A cell (and seed) the run planned or started but whose record cannot be read."""

    cell: str
    seed: Optional[int]
    kind: str
    detail: str


@dataclass
class LoadedRun:
    root: Path
    meta: dict[str, Any]
    """run.json ({} when it is missing or damaged)."""
    environment: dict[str, Any]
    """environment.json ({} when it is missing or damaged)."""
    records: list[dict[str, Any]]
    logs: dict[tuple[str, int], list[EpochEntry]]
    """The training log's epoch entries per (cell, seed)."""
    issues: list[CellIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cell_order: list[str] = field(default_factory=list)
    """The grid's order, then cells found only on disk."""
    _queries: dict[tuple[str, int], Optional[dict[str, QueryScores]]] = field(default_factory=dict, repr=False)
    archived: Optional[pd.DataFrame] = None
    """The results.csv an archived run was rebuilt from (None for a run directory): the report's rows as kept."""

    def queries(self, cell: str, seed: int) -> Optional[dict[str, QueryScores]]:
        """The cell's per-query scores (queries.npz), read once; None, with a warning when damaged, where it has none."""
        if (cell, seed) not in self._queries:
            try:
                self._queries[(cell, seed)] = RunDir(self.root).read_queries(cell, seed)
            except UsageError as exc:
                self.warnings.append(f"{exc} Its intervals over query identities are left out")
                self._queries[(cell, seed)] = None
        return self._queries[(cell, seed)]

    @property
    def name(self) -> str:
        return self.root.name

    def chance(self) -> dict[str, float]:
        """The chance level run.json holds for the test set -- the expected mAP and rank-1 of a random ranking under
        its protocol (`reidbench.evaluation.metrics.chance_level`), fractions -- or {} where it holds none."""
        found = (self.meta.get("dataset") or {}).get("chance") or {}
        return {key: float(found[key]) for key in ("mAP", "rank1") if is_number(found.get(key))}

    def frame(self) -> pd.DataFrame:
        """One row per record and seed, with results.csv's columns first, then latency and memory columns.

        Unreadable cells get a row too (status `missing` / `damaged`, the reason in `error`), so a
        pandas user sees the same holes as the report's reader.
        """
        if self.archived is not None:
            frame = self.archived.copy()
        else:
            rows = [{**results_row(CellRecord.from_dict(r)), **measurement_columns(r)} for r in self.records]
            rows += [{"cell": i.cell, "seed": i.seed, "status": i.kind, "error": i.detail, **_id_parts(i.cell)} for i in self.issues]
            frame = pd.DataFrame(rows)
        fixed = results_columns([dict.fromkeys(frame.columns)])
        extra = sorted((c for c in frame.columns if c not in fixed), key=_extra_column_order)
        frame = frame.reindex(columns=fixed + extra)
        order = {cell: i for i, cell in enumerate(self.cell_order)}
        frame["_order"] = frame["cell"].map(lambda c: order.get(c, len(order)))
        frame["_seed"] = frame["seed"].fillna(-1)
        return frame.sort_values(["_order", "_seed"], kind="stable").drop(columns=["_order", "_seed"]).reset_index(drop=True)

    def batch_sizes(self) -> list[int]:
        """Every inference batch size measured in any cell (a `...@<batch>` column), ascending."""
        return sorted({int(batch) for column in self.frame().columns if (batch := str(column).partition("@")[2]).isdigit()})


def measurement_columns(record: dict[str, Any]) -> dict[str, Any]:
    """Latency per batch size (eager, and per faster mode) and peak memory as flat columns.

    results.csv's own columns stop at training. An entry without `mode` is eager
    (records from before the modes existed).
    """
    out: dict[str, Any] = {}
    for entry in record.get("latency") or []:
        b = entry.get("batch_size")
        if b is None:
            continue
        mode = MeasureMode.parse(entry.get("mode")).value
        if mode == MeasureMode.EAGER:
            out[f"latency_ms@{b}"] = entry.get("median_ms")
            out[f"latency_p90_ms@{b}"] = entry.get("p90_ms")
            out[f"img_per_s@{b}"] = entry.get("img_per_s")
        elif mode in MODE_COST:
            latency, rate = MODE_COST[mode]
            out[latency.column_at(b)] = entry.get("median_ms")
            out[rate.column_at(b)] = entry.get("img_per_s")
    compile_seconds = (record.get("compile") or {}).get("seconds")
    if compile_seconds is not None:
        out[COMPILE_SECONDS.column] = compile_seconds
    memory = record.get("memory") or {}
    for kind, column in (("inference", "peak_infer_mib"), ("train_step", "peak_train_mib")):
        m = memory.get(kind) or {}
        value = headline_mib(m)
        if value is not None:
            out[column] = value
            out[f"{column}_batch"] = m.get("batch_size")
            out["memory_kind"] = m.get("kind")
    return out


MEMORY_KIND_UNIT = f"text: what the peak memory columns measure ({CPU_TENSORS}, {RSS_DELTA} or {CUDA_ALLOCATOR})"


def frame_units(columns: list[str]) -> dict[str, str]:
    """Each column of the report's results.csv with its unit: the run's own columns as `schema.column_units` has them,
    the measured ones (`column@batch`, memory) as their quantity shows them, at scale 1 (`reports.quantities`)."""
    by_column = {q.column: q for q in QUANTITIES.values()}
    more = {}
    for column in columns:
        base, _, batch = column.partition("@")
        quantity = by_column.get(base)
        if quantity is not None and quantity.scale == 1:
            more[column] = quantity.unit + (f", at batch {batch}" if batch else "")
        elif base.endswith("_mib_batch"):
            more[column] = "images: the batch the peak memory was measured at"
        elif base == "memory_kind":
            more[column] = MEMORY_KIND_UNIT
    return column_units(columns, more)


def _id_parts(cell: str) -> dict[str, str]:
    """Backbone, neck and axis columns read back from a cell id '<backbone>-<neck>[@key=value,...]'."""
    pair, _, axes = cell.partition("@")
    backbone, _, neck = pair.partition("-")
    parts = {"backbone": backbone, "neck": neck or pair}
    for item in filter(None, axes.split(",")):
        key, _, value = item.partition("=")
        parts[AXIS_COLUMN_PREFIX + key] = value
    return parts


def _extra_column_order(column: str) -> tuple:
    name, _, batch = column.partition("@")
    return (0, int(batch), name) if batch.isdigit() else (1, 0, name)


def latest_run(parent: Path = RUNS_PARENT) -> Path:
    """The run directory under `parent` whose run.json (or results.csv) changed last.

    The directory's own mtime is a fallback only: writing a report into RUN/report
    touches it, which would make an old run look like the latest.
    """
    candidates = [p for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    if not candidates:
        raise UsageError(
            f"no run directory under {parent}/ to report on; create one with `reidbench run` first, "
            "or name one: reidbench report RUN_DIR."
        )

    def changed(path: Path) -> float:
        stamps = [f.stat().st_mtime for f in (RunDir(path).run_json, RunDir(path).results_csv) if f.exists()]
        return max(stamps) if stamps else path.stat().st_mtime

    return max(candidates, key=changed)


def load_run(root: Path) -> LoadedRun:
    """Everything readable in `root`; what is not readable becomes an issue or a warning, never an exception.

    Raises UsageError only when `root` is not a directory or holds no readable cell record.
    """
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory; name a run directory made by `reidbench run`.")
    run = RunDir(root)
    if not run.looks_like_run() and run.results_csv.is_file():
        return load_archived(run)
    warnings: list[str] = []
    stored = _read_optional(run.read_meta, run.run_json, warnings, "the header lacks the grid, profile and dataset")
    meta = stored.to_dict() if stored is not None else {}
    environment = _read_optional(run.read_environment, run.environment_json, warnings, "the header lacks versions and device flags") or {}
    planned_cells = list(stored.grid.cells) if stored is not None else []
    planned_seeds = list(stored.seeds) if stored is not None else []
    on_disk = run.slots_on_disk()
    cell_order = planned_cells + sorted({c for c, _ in on_disk} - set(planned_cells))
    slots = sorted(
        set(on_disk) | {(c, s) for c in planned_cells for s in planned_seeds},
        key=lambda cs: (cell_order.index(cs[0]), cs[1]),
    )
    records, issues, logs = [], [], {}
    for cell, seed in slots:
        record = _read_record(run, cell, seed, issues)
        if record is not None:
            records.append(record)
            logs[(cell, seed)] = _read_log(run, cell, seed, warnings)
    if not records:
        named = "; ".join(f"{i.cell} seed {i.seed}: {i.kind}, {i.detail}" for i in issues) or "no cell folder, and no cell planned"
        raise UsageError(f"{root} holds no readable cell record ({named}); nothing to report. Is it a reidbench run directory?")
    gone = owner_gone(stored) if stored is not None else ""
    for record in records:
        _settle(record, gone, root)
    if gone:
        meta["status"] = run_standing(stored).value
        warnings.append(f"the run says it is running, but {gone}: it was interrupted; continue it with reidbench run --resume {root}")
    elif meta.get("status") not in (None, "finished"):
        warnings.append(f"the run's status is {meta['status']!r}: it did not finish, the report shows what it wrote")
    return LoadedRun(root, meta, environment, records, logs, issues, warnings, cell_order)


def _settle(record: dict[str, Any], gone: str, root: Path) -> None:
    """A record that says running in a run whose process is gone is shown as `status` shows it: interrupted, and why."""
    state = CellState(record["status"])
    if standing(state, gone) != state:
        record["status"] = standing(state, gone).value
        record["error"] = f"{gone}; continue with reidbench run --resume {root}"


def load_archived(run: RunDir) -> LoadedRun:
    """A run kept as its results.csv alone: one record per row, rebuilt from the row's results.csv columns.

    The latency and memory columns a report's results.csv adds stay in the frame for the table and
    plots; rows the run listed as missing or damaged stay issues. No header, training log or
    per-query scores: the report says what it lacks.
    """
    where = run.results_csv
    try:
        frame = pd.read_csv(where)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where} is not a readable results.csv ({exc}); nothing to report.") from None
    lacking = [c for c in ("cell", "backbone", "neck", "seed", "status") if c not in frame.columns]
    if lacking:
        raise UsageError(f"{where} lacks the column(s) {', '.join(lacking)}: it is not a reidbench results.csv, and "
                         f"{run.root} holds no run.json or cell folders either. Name a run directory or a folder with its results.csv.")
    records, issues = [], []
    for line, row in enumerate(frame.to_dict("records"), start=2):
        cell, seed, status = str(row["cell"]), row["seed"], row["status"]
        seed = int(seed) if is_number(seed) else None
        if status in (MISSING, DAMAGED):
            issues.append(CellIssue(cell, seed, status, str(row.get("error") or "")))
            continue
        try:
            records.append(record_from_results_row(row, f"{where.name} line {line}").to_dict())
        except SchemaError as exc:
            issues.append(CellIssue(cell, seed, DAMAGED, f"{exc}"))
    if not records:
        raise UsageError(f"{where} holds no row that rebuilds a cell record; nothing to report.")
    cells = list(dict.fromkeys(str(c) for c in frame["cell"]))
    return LoadedRun(run.root, {}, {}, records, {}, issues, [], cells, archived=frame)


def _read_record(run: RunDir, cell: str, seed: int, issues: list[CellIssue]) -> Optional[dict[str, Any]]:
    """The record of (cell, seed) parsed through its schema, or None with the reason appended to `issues`."""
    path = run.record_path(cell, seed)
    where = str(path.relative_to(run.root))
    try:
        data = read_json(path)
    except UsageError:
        issues.append(CellIssue(cell, seed, DAMAGED, f"{where} does not parse as JSON"))
        return None
    if data is None:
        started = "its folder has no record.json" if path.parent.is_dir() else "not started"
        issues.append(CellIssue(cell, seed, MISSING, f"{where} is missing ({started})"))
        return None
    try:
        record = CellRecord.from_dict(data, where)
        if record.seed is None:
            record.seed = seed
        parsed = record.to_dict()
        measurement_columns(parsed)
    except (SchemaError, AttributeError, TypeError, KeyError, ValueError) as exc:
        detail = str(exc).removeprefix(f"{where}: ").removeprefix(where + " ")
        issues.append(CellIssue(cell, seed, DAMAGED, f"{where} has a malformed field: {detail}"))
        return None
    return parsed


def _read_optional(read: Callable[[], Optional[T]], path: Path, warnings: list[str], cost: str) -> Optional[T]:
    """A run-level file through its `RunDir` reader; None and a warning (what the report lacks without it) when it cannot serve."""
    try:
        value = read()
    except UsageError as exc:
        warnings.append(f"{exc} {cost}")
        return None
    if value is None:
        warnings.append(f"{path.name} is missing; {cost}")
    return value


def _read_log(run: RunDir, cell: str, seed: int, warnings: list[str]) -> list[EpochEntry]:
    """The epoch entries; lines that are not entries (a torn last line of a run killed mid-write) are skipped with a warning."""
    log = run.cell(cell, seed).read_train_log()
    if log.skipped:
        warnings.append(f"{log.path.relative_to(run.root)}: {log.skipped} line(s) are not epoch entries and were skipped")
    return log.entries
