"""The run directory's layout: the unit of truth that `run` writes and `report`, `status`, `--resume` and `export` read.

Layout:

    RUN/
      run.json            grid, profile, dataset, seeds, device, dtype, status of the run
      environment.json    versions, device, git commit, flags that change numbers
      grid.toml           the grid as run
      profile.toml        the profile as run (with grid.toml, all that --resume needs)
      results.csv         one row per cell and seed (rewritten after every cell)
      .lock               held by the process that writes the run
      launch.json, jobs/  a fanned-out run's job ids, and the job logs
      report/             where `report` writes by default
      onnx/               where `export` writes by default
      cells/<cell>/seed<k>/
        record.json       status, error, metrics, params, FLOPs, latency, memory, notes
        train_log.jsonl   one `EpochEntry` per line
        checkpoint.pt     resumable state (model, optimizer, epoch, RNG) while training
        model.pt          the trained weights, once the cell is done
        queries.npz       every query's AP, first correct rank and identity, per evaluation
        job.json          where a fanned-out run's job ran, and what it found
        .lock             held by the process that trains the cell
        events.out.tfevents.*  TensorBoard's curves (the cell folder is its log dir)

This module is the only one that spells these names. Its readers share one
policy: a file that is missing reads as None (or an empty log), and a file that
is damaged or of the wrong shape raises a SchemaError naming it.

Every file is written to a temporary name and renamed into place, so a run
killed at any moment leaves each file either old or new, never half-written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from reidbench.errors import UsageError
from reidbench.runtime.files import append_line, read_json, write_atomic, write_json
from reidbench.runtime.processes import is_alive
from reidbench.schema import (
    CellRecord, CellState, EpochEntry, QueryScores, RunMeta, RunState, SchemaError, check_value, query_scores_bytes, query_scores_from_npz,
    column_units, results_columns, results_row, units_document,
)

CELLS_DIR = "cells"
LOCK = ".lock"
RECORD = "record.json"
TRAIN_LOG = "train_log.jsonl"
RESULTS_CSV = "results.csv"
"""Also the name of a report's own table, which is why a report never writes into a run directory."""
RESULTS_UNITS = "results.units.json"
"""Beside every results.csv (the run's and a report's): each column's unit (`schema.column_units`)."""
FILE_NAMES = (
    "run.json", "environment.json", "grid.toml", "profile.toml", RESULTS_CSV, RESULTS_UNITS, "launch.json", LOCK,
    RECORD, TRAIN_LOG, "checkpoint.pt", "model.pt", "job.json", "queries.npz", "prompt_stage.json",
)
"""Every file name of a run directory (the architecture test holds the rest of the package to not spelling them)."""
DIR_NAMES = (CELLS_DIR, "jobs", "report", "onnx")
"""The folders a run directory holds, beside its files."""
DAMAGED_META_HINT = (
    "Restore it from a backup if you have one, or start a new run; the cell folders under cells/ are intact "
    "and `reidbench report` still reads them."
)
NOT_A_RUN_HINT = "Name a folder that `reidbench run` created (it prints it, e.g. runs/<time>-<grid>/), or check the path."


def new_run_dir(parent: Path, grid_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = parent / f"{stamp}-{grid_name}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = parent / f"{stamp}-{grid_name}-{suffix}"
    path.mkdir(parents=True)
    return path


@dataclass
class TrainLog:
    """A cell's epoch entries as read back, and how many lines were not entries (a torn last line, damage)."""

    path: Path
    entries: list[EpochEntry]
    skipped: int = 0

    @property
    def last_epoch(self) -> int:
        """The cell's own epochs done; an earlier stage's lines (CLIP-ReID's prompt learning) count their own."""
        return max((entry.epoch for entry in self.entries if entry.stage is None), default=0)


@dataclass(frozen=True)
class CellDir:
    """One (cell, seed)'s folder and the files in it."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / RECORD

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def checkpoint(self) -> Path:
        """Resumable training state; removed once the cell's final record is written."""
        return self.path / "checkpoint.pt"

    @property
    def model(self) -> Path:
        """The trained weights (a state dict), once the cell is done."""
        return self.path / "model.pt"

    @property
    def prompt_stage(self) -> Path:
        """CLIP-ReID's stage 1 of the cell: its log lines and cost, so a resumed cell records them without rerunning it."""
        return self.path / "prompt_stage.json"

    @property
    def queries(self) -> Path:
        """Every query's own result per evaluation (`QueryScores`), written before the record that says done."""
        return self.path / "queries.npz"

    @property
    def job(self) -> Path:
        """A fanned-out run's job: where it ran, with what it would have written to the run-level files."""
        return self.path / "job.json"

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def events(self) -> Path:
        """TensorBoard's log dir for this cell: the folder itself, so `tensorboard --logdir RUN` names curves by cell."""
        return self.path

    def write_train_log(self, entries: Iterable[EpochEntry]) -> None:
        write_atomic(self.train_log, "".join(json.dumps(e.to_dict()) + "\n" for e in entries))

    def append_epoch(self, entry: EpochEntry) -> None:
        append_line(self.train_log, entry.to_dict())

    def read_train_log(self) -> TrainLog:
        """The epoch entries; no file reads as none. A line that is not an entry (a run killed mid-write
        leaves a torn last one) is skipped and counted, for the reader to say so."""
        log = TrainLog(self.train_log, [])
        if not self.train_log.exists():
            return log
        for number, line in enumerate(self.train_log.read_text(errors="replace").splitlines(), 1):
            try:
                log.entries.append(EpochEntry.from_dict(json.loads(line), f"{self.train_log} line {number}"))
            except (ValueError, SchemaError):
                log.skipped += 1
        return log


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def environment_json(self) -> Path:
        return self.root / "environment.json"

    @property
    def grid_toml(self) -> Path:
        return self.root / "grid.toml"

    @property
    def profile_toml(self) -> Path:
        return self.root / "profile.toml"

    @property
    def results_csv(self) -> Path:
        return self.root / RESULTS_CSV

    @property
    def results_units(self) -> Path:
        return self.root / RESULTS_UNITS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def launch_json(self) -> Path:
        return self.root / "launch.json"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    @property
    def cells_dir(self) -> Path:
        return self.root / CELLS_DIR

    def looks_like_run(self) -> bool:
        """Whether the folder holds a run (run.json or cell folders), even a damaged one."""
        return self.run_json.exists() or self.cells_dir.is_dir()

    def cell(self, cell_id: str, seed: int) -> CellDir:
        return CellDir(self.cell_dir(cell_id, seed))

    def cell_dir(self, cell_id: str, seed: int) -> Path:
        return self.cells_dir / cell_id / f"seed{seed}"

    def record_path(self, cell_id: str, seed: int) -> Path:
        return self.cell(cell_id, seed).record

    def record_paths(self) -> list[Path]:
        return sorted(self.cells_dir.glob(f"*/seed*/{RECORD}"))

    def slots_on_disk(self) -> list[tuple[str, int]]:
        """(cell, seed) of every cell folder, with or without a record."""
        found = []
        for seed_dir in self.cells_dir.glob("*/seed*"):
            suffix = seed_dir.name[len("seed"):]
            if seed_dir.is_dir() and suffix.isdigit():
                found.append((seed_dir.parent.name, int(suffix)))
        return found

    def read_meta(self) -> Optional[RunMeta]:
        """run.json, None when there is none; one that is not JSON or not of `RunMeta`'s shape raises SchemaError naming it.

        `report` reads on without it; everything that needs the plan calls `meta`.
        """
        if not self.root.is_dir():
            return None
        data = self._read_json(self.run_json, DAMAGED_META_HINT)
        if data is None:
            return None
        try:
            return RunMeta.from_dict(data, str(self.run_json))
        except SchemaError as exc:
            raise SchemaError(f"{exc} It is not a run.json that reidbench wrote. {DAMAGED_META_HINT}") from None

    def meta(self) -> RunMeta:
        """run.json of a folder that must be a run directory: its absence is a UsageError, damage as `read_meta`."""
        meta = self.read_meta()
        if meta is None:
            raise UsageError(
                f"{self.root} is not a reidbench run directory: it has no run.json listing the grid's cells and seeds. "
                + NOT_A_RUN_HINT
            )
        return meta

    def read_environment(self) -> Optional[dict[str, Any]]:
        """environment.json, None when there is none; damaged or not a table raises SchemaError naming it."""
        data = self._read_json(self.environment_json, "")
        return None if data is None else check_value(data, dict, str(self.environment_json))

    def read_job(self, cell_id: str, seed: int) -> Optional[dict[str, Any]]:
        """A fanned-out cell's job.json, None before its job started; damaged or not a table raises SchemaError."""
        path = self.cell(cell_id, seed).job
        data = self._read_json(path, "")
        return None if data is None else check_value(data, dict, str(path))

    def read_launch(self) -> Optional[dict[str, Any]]:
        """launch.json of a fanned-out run; None for a run made by --launcher local."""
        data = self._read_json(self.launch_json, "")
        return None if data is None else check_value(data, dict, str(self.launch_json))

    @staticmethod
    def _read_json(path: Path, hint: str) -> Any:
        try:
            return read_json(path)
        except UsageError as exc:
            raise SchemaError(f"{exc} {hint}".rstrip()) from None

    def read_record(self, cell_id: str, seed: int) -> Optional[CellRecord]:
        """The cell's record, None before it has one; a damaged or wrongly shaped file raises SchemaError naming it."""
        path = self.record_path(cell_id, seed)
        data = self._read_json(path, "")
        return None if data is None else CellRecord.from_dict(data, str(path))

    def queries_path(self, cell_id: str, seed: int) -> Path:
        return self.cell(cell_id, seed).queries

    def write_queries(self, cell_id: str, seed: int, scores: dict[str, QueryScores]) -> None:
        write_atomic(self.queries_path(cell_id, seed), query_scores_bytes(scores))

    def read_queries(self, cell_id: str, seed: int) -> Optional[dict[str, QueryScores]]:
        """Evaluation key -> its per-query scores; None where the cell has none (runs made before they were kept)."""
        import zipfile

        import numpy as np

        path = self.queries_path(cell_id, seed)
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UsageError(f"{path} is damaged and cannot be read ({exc or type(exc).__name__}).") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise UsageError(f"{path} is damaged and cannot be read (not an .npz archive).")
        with data:
            return query_scores_from_npz(data, str(path))

    def write_record(self, record: CellRecord) -> None:
        write_json(self.record_path(record.cell, record.seed or 0), record.to_dict())

    def records(self) -> list[CellRecord]:
        """Every readable record on disk (`status` and `report` say which are not)."""
        found = []
        for path in self.record_paths():
            try:
                data = read_json(path)
                if data is not None:
                    found.append(CellRecord.from_dict(data, str(path)))
            except UsageError:
                continue
        return found

    def write_results(self, cell_order: Iterable[str]) -> None:
        import pandas as pd

        order = {cell: i for i, cell in enumerate(cell_order)}
        rows = sorted((results_row(r) for r in self.records()), key=lambda r: (order.get(r["cell"], len(order)), r["seed"]))
        columns = results_columns(rows)
        write_atomic(self.results_csv, pd.DataFrame(rows, columns=columns).to_csv(index=False))
        write_json(self.results_units, units_document(column_units(columns)))


def owner_gone(meta: RunMeta) -> str:
    """Why a run that says it is running is not: its process is gone (killed, out of memory); '' when it lives or
    cannot be asked from this host. `status` and `report` both judge a run by this, so they never disagree."""
    if meta.status != RunState.RUNNING or meta.owner is None:
        return ""
    owner = meta.owner
    if is_alive({"pid": owner.pid, "host": owner.host, "start_ticks": owner.start_ticks}) is not False:
        return ""
    return f"its process {owner.pid} on {owner.host} (started {owner.started}) is gone"


def standing(state: CellState, gone: str) -> CellState:
    """A cell's state as it stands: a record that says running in a run whose process is gone (`owner_gone`) was interrupted."""
    return CellState.INTERRUPTED if gone and state == CellState.RUNNING else state


def run_standing(meta: RunMeta) -> RunState:
    """The run's own state by the same rule: running with its process gone is interrupted."""
    return RunState.INTERRUPTED if owner_gone(meta) else meta.status
