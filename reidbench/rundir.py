"""The run directory's layout: the unit of truth that `run` writes and `report`, `status`, `--resume` and `export` read.

Layout:

    RUN/
      run.json            grid, profile, dataset, seeds, device, dtype, status of the run
      environment.json    versions, device, git commit, flags that change numbers
      results.csv         one row per cell and seed (rewritten after every cell)
      cells/<cell>/seed<k>/
        record.json       status, error, metrics, params, FLOPs, latency, memory, notes
        train_log.jsonl   one line per epoch
        checkpoint.pt     resumable state (model, optimizer, epoch, RNG) while training
        model.pt          the trained weights, once the cell is done
        queries.npz       every query's AP, first correct rank and identity, per evaluation

Every file is written to a temporary name and renamed into place, so a run
killed at any moment leaves each file either old or new, never half-written.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional

from reidbench.errors import UsageError
from reidbench.runtime.files import read_json, write_atomic, write_json
from reidbench.schema import CellRecord, QueryScores, query_scores_bytes, query_scores_from_npz, results_columns, results_row

def new_run_dir(parent: Path, grid_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = parent / f"{stamp}-{grid_name}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = parent / f"{stamp}-{grid_name}-{suffix}"
    path.mkdir(parents=True)
    return path


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
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    def cell_dir(self, cell_id: str, seed: int) -> Path:
        return self.root / "cells" / cell_id / f"seed{seed}"

    def record_path(self, cell_id: str, seed: int) -> Path:
        return self.cell_dir(cell_id, seed) / "record.json"

    def read_record(self, cell_id: str, seed: int) -> Optional[CellRecord]:
        """The cell's record, None before it has one; a damaged or wrongly shaped file raises UsageError naming it."""
        path = self.record_path(cell_id, seed)
        data = read_json(path)
        return None if data is None else CellRecord.from_dict(data, str(path))

    def queries_path(self, cell_id: str, seed: int) -> Path:
        return self.cell_dir(cell_id, seed) / "queries.npz"

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
        for path in sorted(self.root.glob("cells/*/seed*/record.json")):
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
        write_atomic(self.results_csv, pd.DataFrame(rows, columns=results_columns(rows)).to_csv(index=False))
