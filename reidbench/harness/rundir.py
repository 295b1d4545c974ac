"""The run directory: the unit of truth that `report` and `--resume` read back.

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

Every file is written to a temporary name and renamed into place, so a run
killed at any moment leaves each file either old or new, never half-written.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional

from reidbench.runtime.files import read_json, write_atomic, write_json

RESULT_COLUMNS = [
    "cell", "backbone", "neck", "seed", "status", "error",
    "mAP", "rank1", "rank5", "rank10", "mINP",
    "params", "params_backbone", "params_neck", "params_head", "gmacs", "gflops",
    "train_seconds", "train_img_per_s", "train_img_per_s_steady", "epochs",
]


def phase_breakdown(phases: dict[str, float]) -> str:
    """A record's `phase_seconds` as ' (probe 1 s, train 31 s, evaluate 2 s, measure 18 s)'; '' when it has none."""
    if not phases:
        return ""
    return " (" + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items()) + ")"


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

    def read_record(self, cell_id: str, seed: int) -> Optional[dict[str, Any]]:
        return read_json(self.record_path(cell_id, seed))

    def write_record(self, record: dict[str, Any]) -> None:
        write_json(self.record_path(record["cell"], record["seed"]), record)

    def records(self) -> list[dict[str, Any]]:
        return [r for path in sorted(self.root.glob("cells/*/seed*/record.json")) if (r := read_json(path)) is not None]

    def write_results(self, cell_order: Iterable[str]) -> None:
        import pandas as pd

        order = {cell: i for i, cell in enumerate(cell_order)}
        rows = sorted((flatten_record(r) for r in self.records()), key=lambda r: (order.get(r["cell"], len(order)), r["seed"]))
        write_atomic(self.results_csv, pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False))


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One results.csv row from one cell record: the single definition of that file's columns."""
    metrics = record.get("metrics") or {}
    params = record.get("params") or {}
    training = record.get("training") or {}
    return {
        "cell": record["cell"],
        "backbone": record["backbone"],
        "neck": record["neck"],
        "seed": record.get("seed"),
        "status": record["status"],
        "error": record.get("error"),
        "mAP": metrics.get("mAP"),
        "rank1": metrics.get("rank1"),
        "rank5": metrics.get("rank5"),
        "rank10": metrics.get("rank10"),
        "mINP": metrics.get("mINP"),
        "params": params.get("total"),
        "params_backbone": params.get("backbone"),
        "params_neck": params.get("neck"),
        "params_head": params.get("head"),
        "gmacs": record.get("gmacs"),
        "gflops": record.get("gflops"),
        "train_seconds": training.get("seconds"),
        "train_img_per_s": training.get("img_per_s"),
        "train_img_per_s_steady": training.get("steady_img_per_s"),
        "epochs": training.get("epochs_done"),
    }
