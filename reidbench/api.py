"""The Python API for notebooks and scripts: run a grid, load a run's results, load a trained cell.

These call the same library code as `reidbench run`, `report` and `export`, and write the same run
directory, so a run started here can be reported, exported or resumed from the command line and
the other way round. Bad input raises `reidbench.errors.UsageError` with the message the command
line would print.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

if TYPE_CHECKING:
    import pandas as pd

    from reidbench.variants.model import ReidModel


def run_grid(
    grid: Union[str, Path], *, profile: str = "auto", seeds: Union[int, str] = 1, out: Optional[Union[str, Path]] = None,
    data: Optional[str] = None, sets: Optional[Mapping[str, Any]] = None, imports: Iterable[str] = (),
    only: Iterable[str] = (), axes: Optional[Mapping[str, list[Any]]] = None, device: str = "auto",
    log: Optional[Callable[[str], None]] = None, precision: Optional[float] = None, first_seed: int = 0,
) -> Path:
    """Train, evaluate and measure every cell of `grid` as `reidbench run` does; returns the run directory.

    `seeds` is `--seeds`: a number, or "auto[:MAX]" with `precision` (mAP points) as `--precision`;
    `first_seed` is `--first-seed` (the seeds count up from it: fresh seeds for a replication).
    `sets` is `--set` as a mapping (`{"train.epochs": 5, "depth": 2}`), `axes` is `--axis`
    (`{"stride": [12, 16]}`), `imports` is `--import`. Cells that fail are recorded in the run
    directory as the command line records them (see `load_run(...).frame["status"]`); bad input raises.
    """
    from reidbench.bench.suite import run_measurer
    from reidbench.harness import runner
    from reidbench.harness.plan import RunRequest, check_plan, create_run_dir, new_plan, start_run
    from reidbench.runtime.device import resolve_device
    from reidbench.runtime.distributed import World
    from reidbench.runtime.progress import Progress

    request = RunRequest(
        grid=str(grid), data=data, profile=profile, seeds=str(seeds), precision=precision, first_seed=str(first_seed),
        only=tuple(only), overrides=tuple(_assignments(sets or {})),
        axes=tuple(f"{key}={','.join(_toml(v) for v in values)}" for key, values in (axes or {}).items()), imports=tuple(imports),
    )
    plan = new_plan(request, resolve_device(device), World())
    dataset = check_plan(plan)
    progress = Progress(log or (lambda message: print(message, file=sys.stderr)), bars=False)
    prepared = runner.prepare_run(plan, progress, dataset)
    run_dir = start_run(plan, create_run_dir(Path(out) if out is not None else None, plan.grid.name))
    runner.execute(plan, run_dir, progress, run_measurer(plan.profile.measure, plan.device, plan.dtype),
                   prepared=prepared, dataset=dataset)
    return run_dir.root


def _assignments(sets: Mapping[str, Any]) -> list[str]:
    """`sets` as the command line's `KEY=VALUE` strings, so both are parsed and checked by one function."""
    return [f"{key}={_toml(value)}" for key, value in sets.items()]


def _toml(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers, booleans and arrays are TOML's."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


@dataclass(frozen=True)
class Run:
    """A run directory as read by `load_run`: what `reidbench report` reads, for pandas."""

    path: Path
    meta: dict[str, Any]
    """run.json: grid, profile, seeds, device, `--set` (`overrides`), plugins."""
    records: list[dict[str, Any]]
    """Every readable cells/<cell>/seed<k>/record.json (schema: docs/run-directory.md)."""
    frame: "pd.DataFrame" = field(repr=False)
    """One row per (cell, seed): results.csv's columns (cell, backbone, neck, seed, status, mAP, rank1, ...),
    then latency and memory columns; unreadable cells appear with status missing or damaged."""

    def model(self, cell: str, seed: Optional[int] = None) -> "ReidModel":
        """`load_cell(self.path, cell, seed)`."""
        return load_cell(self.path, cell, seed)


def load_run(path: Union[str, Path]) -> Run:
    """The records and a DataFrame of a run directory (finished or not), after importing its plugins."""
    from reidbench.harness.plan import import_run_plugins
    from reidbench.reports.load import load_run as load

    import_run_plugins(Path(path))
    loaded = load(Path(path))
    return Run(loaded.root, loaded.meta, loaded.records, loaded.frame())


def load_cell(path: Union[str, Path], cell: str, seed: Optional[int] = None) -> "ReidModel":
    """The trained model of a done cell, rebuilt as `reidbench export` rebuilds it (the record's settings, then
    the cell's model.pt), in eval mode on the CPU; the run's plugins are imported first. `seed` defaults to the
    cell's lowest seed in the run (0, unless the run was started with a first seed)."""
    from reidbench.bench.export import load_cell_model
    from reidbench.errors import UsageError
    from reidbench.harness.plan import import_run_plugins
    from reidbench.rundir import RunDir
    from reidbench.schema import CellState

    run = RunDir(Path(path))
    import_run_plugins(run.root)
    if seed is None:
        seed = min((s for c, s in run.slots_on_disk() if c == cell), default=0)
    record = run.read_record(cell, seed)
    if record is None:
        raise UsageError(f"{run.root} has no record of cell {cell!r} seed {seed}; load_run({str(run.root)!r}).frame lists its cells.")
    weights = run.cell(cell, seed).model
    if record.status != CellState.DONE:
        why = f"it ended {record.status.value}" + (f" ({record.error})" if record.error else "")
        raise UsageError(f"{run.root} cell {cell} seed {seed} has no trained model: {why}.")
    if not weights.is_file():
        raise UsageError(f"{run.root} cell {cell} seed {seed} is done but its weights {weights} are gone.")
    return load_cell_model(record, weights)
