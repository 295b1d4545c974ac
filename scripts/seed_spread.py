"""Where a run's spread comes from, per cell: seeds against the test set, and what the weight average changed.

For every cell of the run directories with per-query scores (queries.npz), prints one Markdown row:
the mAP of each seed, their mean and standard deviation (ddof 1) with its 95 % interval, the test set's own standard
error of one seed's mAP (the identity bootstrap of `reidbench.stats`, as a 95 % interval's
width / 3.92), and the part of a seed-to-seed difference that the test set explains (the
identity-bootstrap standard error of the paired per-query difference of two seeds, over
sqrt 2 so that it reads as one seed's share; averaged over the seed pairs). A cell whose
seed spread is well above both is spread by its training, not by the sample of query
identities.

Several run directories (each holding run.json) pool their seeds per cell: seeds 0-4 of one
run and 5-9 of another (`--first-seed 5`) read as one cell of 10 seeds. With a folder that
`scripts/live_weights/sitecustomize.py` filled (no run.json), the row also gives every seed's mAP with the last weights instead of their moving average
(train.ema_decay) and the mean change: the average does not steer the training, so the last
weights' mAP is what the same run gives without it. Usage (repository root):

  python scripts/seed_spread.py RUN_DIR [RUN_DIR ...] [LIVE_DIR]
"""
from __future__ import annotations

import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from reidbench.rundir import RunDir
from reidbench.stats.bootstrap import identity_bootstrap_interval

Z95 = 3.92
"""Width of a normal 95 % interval in standard errors."""


def standard_error(values: np.ndarray, pids: np.ndarray) -> float:
    return identity_bootstrap_interval(values, pids).width / Z95


def sd_interval(values: np.ndarray) -> str:
    """The 95 % interval of the seeds' standard deviation (chi-square, seeds taken as normal): whether a spread
    is below a target is decided only where the whole interval is."""
    n, sd = len(values), values.std(ddof=1)
    low, high = (sd * np.sqrt((n - 1) / chi2.ppf(q, n - 1)) for q in (0.975, 0.025))
    return f"[{low:.1f}, {high:.1f}]"


def cell_row(runs: list[RunDir], cell: str, live_dir: Path | None) -> str:
    slots = sorted(((int(p.name[4:]), run) for run in runs for p in (run.root / "cells" / cell).glob("seed*")
                    if (p / "queries.npz").exists()), key=lambda slot: slot[0])
    seeds = [seed for seed, _ in slots]
    scores = [run.read_queries(cell, seed)["test"] for seed, run in slots]
    aps = [(s.pid[s.valid], s.ap[s.valid]) for s in scores]
    maps = np.array([100 * ap.mean() for _, ap in aps])
    test_se = np.mean([100 * standard_error(ap, pid) for pid, ap in aps])
    pairs = [100 * standard_error(b[1] - a[1], a[0]) / np.sqrt(2) for a, b in combinations(aps, 2)]
    spread = f"{maps.std(ddof=1):.1f}" if len(maps) > 1 else "–"
    row = [cell, ", ".join(f"{m:.1f}" for m in maps), f"{maps.mean():.1f} ± {spread}",
           sd_interval(maps) if len(maps) > 2 else "–", f"{test_se:.1f}",
           f"{np.mean(pairs):.1f}" if pairs else "–"]
    files = [live_dir / f"{cell}-seed{seed}.json" for seed in seeds] if live_dir is not None else []
    live = [json.loads(f.read_text()) for f in files if f.exists()]
    if live:
        last = np.array([100 * entry["live"] for entry in live])
        change = np.mean([100 * (entry["ema"] - entry["live"]) for entry in live])
        row += [", ".join(f"{m:.1f}" for m in last), f"{last.mean():.1f} ± {last.std(ddof=1) if len(last) > 1 else 0:.1f}", f"{change:+.1f}"]
    return "| " + " | ".join(row) + " |"


def main(*paths: str) -> None:
    """Run directories (those holding run.json: their seeds are pooled per cell), and at most one live-weights folder."""
    runs = [RunDir(Path(p)) for p in paths if (Path(p) / "run.json").exists()]
    others = [p for p in paths if not (Path(p) / "run.json").exists()]
    if not runs or len(others) > 1:
        sys.exit("usage: python scripts/seed_spread.py RUN_DIR [RUN_DIR ...] [LIVE_DIR]")
    live = others[0] if others else None
    cells = sorted({p.parent.parent.name for run in runs for p in run.root.glob("cells/*/seed*/queries.npz")})
    header = ["cell", "mAP % per seed", "mean ± sd", "sd, 95 % interval", "test-set se of one seed", "test set's share of a seed change"]
    header += ["last weights' mAP % per seed", "mean ± sd", "average − last"] if live else []
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cell in cells:
        print(cell_row(runs, cell, Path(live) if live else None))


if __name__ == "__main__":
    main(*sys.argv[1:])
