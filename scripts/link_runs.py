"""Link the cells of several runs into one run directory, so that one `reidbench report` tests them against each other.

Why: a grid's cells are sometimes trained in separate runs (the neck-less cells first, the
neck cells later; or a cell added after the fact), and the report's declared comparisons
(`each_neck_against`, `[compare]`) only pair cells of one run directory. The runs must agree on
everything that defines a cell's training and test: the code (git commit), the seeds, the profile
and its --set overrides, the settings, the weights and the dataset's version; the script refuses
otherwise and names what differs. Cells are linked (symlinks), never copied; the new run.json is
the first run's with the union of the cells, in the grid's order, the first start and last finish
of the runs, the grids' names joined by '+' where they differ (the first grid's file and declared
comparisons are kept), and the command that made it.
Usage (repository root):

  python scripts/link_runs.py OUT_DIR RUN_DIR RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

from reidbench.errors import UsageError
from reidbench.rundir import RunDir
from reidbench.schema import RunMeta
from reidbench.runtime.files import write_json
from reidbench.variants.grid import load_grid

MUST_AGREE = ("seeds", "first_seed", "profile", "overrides", "settings", "weights", "cli_axes")
"""run.json fields that define what a cell trained; the dataset is compared by its version, the code by its commit."""


def what_differs(first: RunMeta, other: RunMeta, commits: tuple[str | None, str | None]) -> list[str]:
    differs = [name for name in MUST_AGREE if getattr(first, name) != getattr(other, name)]
    if first.dataset.get("version") != other.dataset.get("version"):
        differs.append("dataset version")
    if commits[0] != commits[1]:
        differs.append(f"git commit ({commits[0]} against {commits[1]})")
    return differs


def link(out: Path, roots: list[Path]) -> list[str]:
    """Make `out` from `roots`; returns its cells. UsageError names the run and what stops the link."""
    runs = [RunDir(root) for root in roots]
    metas = [run.meta() for run in runs]
    commits = [(run.read_environment() or {}).get("git_commit") for run in runs]
    for run, meta, commit in zip(runs[1:], metas[1:], commits[1:]):
        differs = what_differs(metas[0], meta, (commits[0], commit))
        if differs:
            raise UsageError(f"{run.root} and {runs[0].root} differ in {', '.join(differs)}: their cells did not train "
                             "under the same conditions, so one report must not compare them. Link runs of one code, "
                             "seeds, profile, overrides and dataset.")
    owners: dict[str, Path] = {}
    for run in runs:
        for cell in sorted(p.name for p in run.cells_dir.iterdir() if p.is_dir()):
            if cell in owners:
                raise UsageError(f"cell {cell} is in both {owners[cell]} and {run.root}; link runs with disjoint cells.")
            owners[cell] = run.root
    if out.exists():
        raise UsageError(f"{out} exists; name a new folder for the linked run.")
    return _write(out, runs[0], metas, owners)


def _write(out: Path, first: RunDir, metas: list[RunMeta], owners: dict[str, Path]) -> list[str]:
    grid_order = [cell.id for cell in load_grid(first.grid_toml).cells]
    cells = sorted(owners, key=lambda c: grid_order.index(c) if c in grid_order else len(grid_order))
    linked = RunDir(out)
    linked.cells_dir.mkdir(parents=True)
    for path in (first.environment_json, first.grid_toml, first.profile_toml):
        shutil.copy(path, out / path.name)
    for cell, root in owners.items():
        (linked.cells_dir / cell).symlink_to((RunDir(root).cells_dir / cell).resolve(), target_is_directory=True)
    finished = [m.finished for m in metas]
    command = "python scripts/link_runs.py " + " ".join(sys.argv[1:])
    grid_name = "+".join(dict.fromkeys(m.grid.name for m in metas))
    meta = replace(metas[0], grid=replace(metas[0].grid, name=grid_name, cells=cells), only=cells, command=command,
                   started=min((m.started for m in metas if m.started), default=None),
                   finished=max(finished) if None not in finished else None)
    write_json(linked.run_json, meta.to_dict())
    linked.write_results(cells)
    return cells


def main(*args: str) -> None:
    if len(args) < 3:
        sys.exit("usage: python scripts/link_runs.py OUT_DIR RUN_DIR RUN_DIR [RUN_DIR ...]")
    try:
        cells = link(Path(args[0]), [Path(a) for a in args[1:]])
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args[0]}: {len(cells)} cells ({', '.join(cells)}); report it with reidbench report {args[0]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
