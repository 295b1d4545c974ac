"""`reidbench status RUN_DIR`: where every (cell, seed) of a run stands, while it runs or after.

The cell records are the truth about what a cell did. A fanned-out run's jobs are asked only
what a record cannot say — whether a cell without a final record is still queued, still
running, or gone without writing one (killed, out of memory, a lost node) — and only
cheaply: one `sacct` call for a Slurm run, a look at /proc for local jobs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from reidbench.errors import UsageError
from reidbench.harness import launch
from reidbench.harness.launch import FAILED_JOB_DIED
from reidbench.harness.lock import is_alive
from reidbench.rundir import RunDir
from reidbench.runtime.text import first_line
from reidbench.schema import CellRecord, CellState, RunMeta, RunState

DONE, XFAIL, XPASS, FAILED = CellState.DONE, CellState.XFAIL, CellState.XPASS, CellState.FAILED
INTERRUPTED, RUNNING, PENDING = CellState.INTERRUPTED, CellState.RUNNING, CellState.PENDING
STATES = (DONE, XFAIL, XPASS, FAILED, INTERRUPTED, RUNNING, PENDING)
"""Every state a (cell, seed) can be in, in the order the summary counts them."""


@dataclass
class SlotStatus:
    """One (cell, seed): its state, a short detail (progress, metric or error), and its job."""

    cell: str
    seed: int
    state: CellState
    detail: str = ""
    job_id: Optional[str] = None
    log: Optional[str] = None
    """The job's stderr log, relative to the run directory."""
    reason: Optional[str] = None


@dataclass
class RunStatus:
    root: Path
    meta: RunMeta
    launch: Optional[dict[str, Any]]
    rows: list[SlotStatus] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {state.value: n for state in STATES if (n := sum(r.state == state for r in self.rows))}

    def summary(self) -> str:
        cells = len({r.cell for r in self.rows})
        how = f" ({self.launch['launcher']} jobs)" if self.launch else ""
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items())
        gone = _owner_gone(self.meta)
        per_cell = sorted({len(self.meta.cell_seeds(cell)) for cell in self.meta.grid.cells} or {len(self.meta.seeds)})
        seeds = str(per_cell[0]) if len(per_cell) == 1 else f"{per_cell[0]}-{per_cell[-1]}"
        return f"{self.root}: {cells} cell(s) x {seeds} seed(s){how}: {counts}" + (f"; {gone}" if gone else "")

    def table(self) -> str:
        header = ("cell", "seed", "state", "job", "detail")
        lines = [(r.cell, str(r.seed), str(r.state), r.job_id or "-", r.detail) for r in self.rows]
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(4)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(line[:4], widths)) + "  " + line[4] for line in [header, *lines]).rstrip()

    def to_json(self) -> str:
        return json.dumps({
            "run": str(self.root), "launcher": (self.launch or {}).get("launcher", launch.LOCAL),
            "status": self.meta.status.value, "counts": self.counts(), "cells": [asdict(r) for r in self.rows],
        }, indent=2, default=str)


def collect(root: Path) -> RunStatus:
    """The state of every planned (cell, seed) of the run directory `root`."""
    run = RunDir(root)
    meta = run.meta()
    fanout = run.read_launch()
    entries = {(e["cell"], e["seed"]): e for e in (fanout or {}).get("jobs", [])}
    states = launch.job_states(run, fanout) if fanout else {}
    epochs = (meta.profile.get("train") or {}).get("epochs")
    status = RunStatus(root, meta, fanout)
    gone = _owner_gone(meta)
    for cell in meta.grid.cells:
        for seed in meta.cell_seeds(cell):
            job_id = (entries.get((cell, seed)) or {}).get("job_id")
            row = slot_status(run, cell, seed, epochs, fanout, job_id, *states.get(job_id, (None, None)))
            if gone and row.state == RUNNING:
                row.state, row.detail = INTERRUPTED, f"{gone} after {row.detail}; continue with reidbench run --resume {root}"
            status.rows.append(row)
    return status


def _owner_gone(meta: RunMeta) -> str:
    """Why a run that says it is running is not: its process is gone (killed, out of memory); '' when it lives or cannot be asked."""
    if meta.status != RunState.RUNNING or meta.owner is None:
        return ""
    owner = meta.owner
    if is_alive({"pid": owner.pid, "host": owner.host, "start_ticks": owner.start_ticks}) is not False:
        return ""
    return f"its process {owner.pid} on {owner.host} (started {owner.started}) is gone"


def slot_status(
    run: RunDir, cell: str, seed: int, epochs: Optional[int], fanout: Optional[dict[str, Any]],
    job_id: Optional[str], job_state: Optional[str], slurm_word: Optional[str],
) -> SlotStatus:
    """Record first; the job's state only where the record is missing or not final."""
    log = str(launch.job_paths(run, job_id).stderr.relative_to(run.root.absolute())) if job_id else None
    row = SlotStatus(cell, seed, PENDING, job_id=job_id, log=log)
    try:
        record = run.read_record(cell, seed)
    except UsageError as exc:
        row.state, row.detail = FAILED, f"{run.record_path(cell, seed).relative_to(run.root)} is damaged ({exc})"
        return row
    status = record.status if record is not None else None
    scheduler = f" (Slurm: {slurm_word})" if slurm_word else ""
    if status in (DONE, XFAIL, XPASS, FAILED):
        row.state, row.detail = status, _outcome(record)
    elif job_state == launch.QUEUED_JOB:
        row.detail = f"queued{scheduler}"
    elif job_state == launch.ENDED_JOB and status in (None, RUNNING):
        where = _progress(run, cell, seed, epochs) if status == RUNNING else "before the cell started"
        row.state, row.reason = FAILED, FAILED_JOB_DIED
        row.detail = f"job {job_id} ended without a final record{scheduler} ({where}; killed?); see its log {log}"
    elif status == RUNNING or job_state == launch.RUNNING_JOB:
        row.state, row.detail = RUNNING, _progress(run, cell, seed, epochs) if status == RUNNING else "job started, cell not yet"
    elif status == INTERRUPTED:
        row.state, row.detail = INTERRUPTED, first_line(record.error)
    elif fanout is not None:
        row.detail = "not submitted (waits for a free --max-parallel slot)" if job_id is None else "submitted; its queue state cannot be asked from here"
    return row


def _outcome(record: CellRecord) -> str:
    metrics = record.metrics or {}
    if record.status == DONE and metrics.get("mAP") is not None:
        return f"mAP {metrics['mAP']:.1%}, rank-1 {metrics['rank1']:.1%}"
    return first_line(record.error)


def _progress(run: RunDir, cell: str, seed: int, epochs: Optional[int]) -> str:
    """'epoch 37/120' from the training log's last complete line; a torn last line is skipped."""
    done = run.cell(cell, seed).read_train_log().last_epoch
    if not done:
        return "no epoch finished yet"
    return f"epoch {done}/{epochs}" if epochs else f"epoch {done}"
