"""The report's statistics on constructed run directories: intervals, declared comparisons, Holm, the forest plot,
comparisons.csv and the noise-aware `--fail-on` gate, each number checked against scipy or reidbench.stats."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.rundir import RunDir
from reidbench.schema import CellRecord, CellState, GridRef, QueryScores, RunMeta, RunState
from reidbench.stats import hierarchical_bootstrap_compare, identity_bootstrap_interval, rank_k_bootstrap_interval

cli = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
CSV_COLUMNS = ["a", "b", "metric", "n_a", "n_b", "test", "diff", "ci_low", "ci_high", "p", "p_holm", "p_improvement",
               "verdict", "seeds_needed"]


def query_scores(seed: int, identities: int = 30, shift: float = 0.0) -> QueryScores:
    """Two or three queries per identity, one skipped query (no match left): a test set a bootstrap can resample."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(identities), rng.integers(2, 4, identities)).astype(np.int64)
    ap = np.clip(rng.beta(4, 3, pid.size) + shift, 0, 1)
    first_rank = rng.integers(1, 4, pid.size).astype(np.int64)
    inp = ap * 0.8
    ap[0], first_rank[0], inp[0] = np.nan, 0, np.nan
    return QueryScores(pid=pid, ap=ap, first_rank=first_rank, inp=inp)


def metrics_of(scores: QueryScores) -> dict[str, float]:
    valid = scores.valid
    ranks = scores.first_rank[valid]
    return {"mAP": float(scores.ap[valid].mean()), "rank1": float((ranks <= 1).mean()), "rank5": float((ranks <= 5).mean()),
            "rank10": 1.0, "mINP": float(scores.inp[valid].mean())}


def write_cell(root: Path, cell: str, seed: int, metrics: Optional[dict] = None, *,
               scores: Optional[QueryScores] = None, status: str = "done", latency_ms: float = 10.0) -> None:
    """One record (and, with `scores`, its queries.npz, the record's metrics then computed from them)."""
    backbone, _, neck = cell.partition("-")
    run = RunDir(root)
    if scores is not None:
        run.write_queries(cell, seed, {"test": scores})
        metrics = metrics_of(scores)
    done = status == "done"
    run.write_record(CellRecord(
        cell=cell, backbone=backbone, neck=neck, status=CellState(status), seed=seed,
        error=None if done else "to have 768 channels, but got 512 channels instead",
        metrics={"rank5": 0.9, "rank10": 0.95, "mINP": 0.2, **(metrics or {})} if done else None,
        params={"total": 1000} if done else {}, gflops=1.0 if done else None,
        latency=[{"batch_size": 1, "median_ms": latency_ms, "p90_ms": latency_ms * 1.1, "img_per_s": 1000 / latency_ms,
                  "mode": "eager", "repeats": 20}] if done else [],
    ))


def finish(root: Path, cells: list[str], grid: str = "") -> Path:
    """grid.toml (its [compare] is what the report reads) and run.json naming the cells, with no planned seeds:
    each cell's seeds are those on disk."""
    (root / "grid.toml").write_text('backbones = ["vit768"]\nnecks = ["none"]\n' + grid)
    meta = RunMeta(status=RunState.FINISHED, grid=GridRef("constructed", "grid.toml", cells), seeds=[],
                   device="cpu", dtype="float32")
    (root / "run.json").write_text(json.dumps(meta.to_dict()))
    return root


def report(*args: str) -> object:
    result = cli.invoke(app, ["report", *args])
    assert "Traceback" not in result.output, result.output
    return result


def results_row(md: str, cell: str) -> dict[str, str]:
    lines = md.split("## All columns", 1)[1].strip().splitlines()  # the full table, after the short one
    columns = [c.strip() for c in lines[0].strip("|").split(" | ")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0] == cell:
            return dict(zip(columns, cells))
    raise AssertionError(f"no row {cell}")


def t_interval(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values) * 100
    half = sps.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)
    return a.mean() - half, a.mean() + half


def test_every_number_carries_its_interval(tmp_path: Path) -> None:
    """Several seeds: Student t; one seed with queries.npz: the identity bootstrap; one seed without: none, said so."""
    root = tmp_path / "run"
    seeds_map = [0.50, 0.52, 0.555]
    for seed, value in enumerate(seeds_map):
        write_cell(root, "vit768-none", seed, {"mAP": value, "rank1": 0.7 + seed / 100}, latency_ms=10 + seed)
    write_cell(root, "vit768-ms", 0, scores=query_scores(7))
    write_cell(root, "clip768-none", 0, {"mAP": 0.4, "rank1": 0.6})
    finish(root, ["vit768-none", "vit768-ms", "clip768-none"])
    result = report(str(root), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    low, high = t_interval(seeds_map)
    assert results_row(md, "vit768-none")["mAP %"] == f"{np.mean(seeds_map) * 100:.1f} [{low:.1f}, {high:.1f}]"
    low, high = t_interval([10.0, 11.0, 12.0])
    assert results_row(md, "vit768-none")["bs1 ms median / p90"].startswith(f"11.0 [{low / 100:.1f}, {high / 100:.1f}]")
    scores = query_scores(7)
    valid = scores.valid
    m_ap = identity_bootstrap_interval(scores.ap[valid], scores.pid[valid])
    rank1 = rank_k_bootstrap_interval(scores.first_rank[valid], scores.pid[valid], 1)
    row = results_row(md, "vit768-ms")
    assert row["mAP %"] == f"{m_ap.estimate * 100:.1f} [{m_ap.low * 100:.1f}, {m_ap.high * 100:.1f}]"
    assert row["R-1 %"] == f"{rank1.estimate * 100:.1f} [{rank1.low * 100:.1f}, {rank1.high * 100:.1f}]"
    assert results_row(md, "clip768-none")["mAP %"] == "40.0"
    assert "no interval: clip768-none" in md and "bootstrap over query identities" in md
    assert "≈" not in md and "std_a" not in md


COMPARE = """
[compare]
pairs = [["clip768-ms", "vit768-ms"]]
each_neck_against = "none"
margin = 1.0
"""
CELLS = ["vit768-none", "vit768-ms", "clip768-none", "clip768-ms"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seeds per cell; vit768-ms clearly above vit768-none, clip768-ms a seed short of pairing with vit768-ms."""
    root = tmp_path_factory.mktemp("compared") / "run"
    rng = np.random.default_rng(3)
    base = {"vit768-none": 0.50, "vit768-ms": 0.60, "clip768-none": 0.45, "clip768-ms": 0.455}
    for cell, level in base.items():
        seeds = [0, 1, 3] if cell == "clip768-ms" else [0, 1, 2]
        for seed in seeds:
            write_cell(root, cell, seed, {"mAP": level + rng.normal(0, 0.004), "rank1": level + 0.2 + rng.normal(0, 0.01)})
    return finish(root, CELLS, grid=COMPARE)


def per_seed(root: Path, cell: str, metric: str) -> dict[int, float]:
    return {r.seed: r.metrics[metric] * 100 for r in RunDir(root).records() if r.cell == cell}


def test_declared_comparisons_equal_scipy_and_holm_runs_over_the_family(compared: Path, tmp_path: Path) -> None:
    result = report(str(compared), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "comparisons.csv")
    assert list(frame.columns) == CSV_COLUMNS
    pairs = [("clip768-ms", "vit768-ms"), ("vit768-ms", "vit768-none"), ("clip768-ms", "clip768-none")]
    assert list(zip(frame["a"], frame["b"], frame["metric"])) == [(a, b, m) for a, b in pairs for m in ("mAP", "rank1")]
    for _, row in frame.iterrows():
        a, b = per_seed(compared, row["a"], row["metric"]), per_seed(compared, row["b"], row["metric"])
        if set(a) == set(b):
            seeds = sorted(a)
            expected = sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
            assert row["test"] == "paired-t" and row["n_a"] == row["n_b"] == 3
        else:
            expected = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
            assert row["test"] == "welch"
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert row["diff"] == pytest.approx(np.mean(list(a.values())) - np.mean(list(b.values())))
        ci = expected.confidence_interval(0.95)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    order = np.argsort(frame["p"].to_numpy(), kind="stable")
    m, running, holm = len(frame), 0.0, np.empty(len(frame))
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * frame["p"][index]))
        holm[index] = running
    assert frame["p_holm"].to_numpy() == pytest.approx(holm)
    mAP = frame[(frame["a"] == "vit768-ms") & (frame["metric"] == "mAP")].iloc[0]
    assert mAP["verdict"] == "a-better" and mAP["p_improvement"] == 1.0
    md = (tmp_path / "report.md").read_text()
    assert "The family: 3 declared comparison(s)" in md and "6 of the 6 tests" in md
    for metric in ("mAP", "rank1"):
        assert (tmp_path / f"forest-{metric}.png").read_bytes().startswith(PNG)
        assert f"](forest-{metric}.png)" in md
    assert "Declared comparisons: mAP" in (tmp_path / "report.html").read_text()


def test_one_seed_with_queries_is_compared_by_the_hierarchical_bootstrap(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_cell(root, "vit768-ms", 0, scores=query_scores(1))
    write_cell(root, "vit768-none", 0, scores=query_scores(1, shift=-0.05))
    write_cell(root, "clip768-none", 0, {"mAP": 0.4, "rank1": 0.6})
    write_cell(root, "clip768-ms", 0, status="xfail")
    finish(root, CELLS, grid=COMPARE)
    result = report(str(root), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    assert list(frame["a"]) == ["vit768-ms", "vit768-ms"] and set(frame["test"]) == {"bootstrap"}
    a, b = query_scores(1), query_scores(1, shift=-0.05)
    valid = a.valid
    expected = hierarchical_bootstrap_compare([a.ap[valid] * 100], [b.ap[valid] * 100], a.pid[valid], paired=True, margin=1.0)
    row = frame[frame["metric"] == "mAP"].iloc[0]
    assert (row["diff"], row["ci_low"], row["ci_high"], row["p"]) == pytest.approx(
        (expected.diff, expected.ci_low, expected.ci_high, expected.p))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "clip768-ms vs vit768-ms: not tested — clip768-ms is xfail" in md
    assert "clip768-ms vs clip768-none: not tested — clip768-ms is xfail" in md
    assert "2 of the 6 tests could be made" in md


def test_report_compare_adds_a_comparison_and_refuses_an_unknown_cell(compared: Path, tmp_path: Path) -> None:
    result = report(str(compared), "--out", str(tmp_path / "r"), "--compare", "clip768-none,vit768-none")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    assert ("clip768-none", "vit768-none") in set(zip(frame["a"], frame["b"])) and len(frame) == 8
    assert "1 of them added by --compare" in (tmp_path / "r" / "report.md").read_text()
    result = report(str(compared), "--out", str(tmp_path / "s"), "--compare", "vit768-none,nope-ms")
    assert result.exit_code == 2 and "'nope-ms' is not a cell of this run" in result.output
    result = report(str(compared), "--out", str(tmp_path / "s"), "--compare", "vit768-none")
    assert result.exit_code == 2 and "two different cells" in result.output


def seeds_run(root: Path, levels: dict[int, float], latency: Optional[dict[int, float]] = None) -> Path:
    for seed, level in levels.items():
        write_cell(root, "vit768-ms", seed, {"mAP": level, "rank1": level + 0.2}, latency_ms=(latency or {}).get(seed, 10.0))
    return finish(root, ["vit768-ms"])


def test_seed_noise_passes_the_gate_and_a_clear_drop_fails_it(tmp_path: Path) -> None:
    base = seeds_run(tmp_path / "base", {0: 0.50, 1: 0.53, 2: 0.51})
    noisy = seeds_run(tmp_path / "noisy", {0: 0.505, 1: 0.495, 2: 0.50})  # mean 1.3 points lower, seed to seed ±2
    lower = seeds_run(tmp_path / "lower", {0: 0.40, 1: 0.43, 2: 0.405})
    result = report(str(noisy), "--baseline", str(base), "--out", str(tmp_path / "r1"), "--fail-on", "mAP:-1.0")
    assert result.exit_code == 0, result.output
    assert "ok vit768-ms: mAP" in result.output and "rule: paired t over seeds 0, 1, 2" in result.output
    result = report(str(noisy), "--baseline", str(base), "--out", str(tmp_path / "r2"), "--fail-on", "mAP:-1.0", "--fail-on-strict")
    assert result.exit_code == 1 and "rule: plain difference of means (--fail-on-strict)" in result.output
    result = report(str(lower), "--baseline", str(base), "--out", str(tmp_path / "r3"), "--fail-on", "mAP:-1.0")
    assert result.exit_code == 1, result.output
    assert "FAILED, 1 regression(s)" in result.output and "rule: paired t over seeds 0, 1, 2" in result.output
    assert "rule: paired t" in (tmp_path / "r3" / "report.md").read_text()


def test_the_gate_bootstraps_query_identities_and_checks_they_match(tmp_path: Path) -> None:
    base, new, other = tmp_path / "base", tmp_path / "new", tmp_path / "other"
    write_cell(base, "vit768-ms", 0, scores=query_scores(2))
    write_cell(new, "vit768-ms", 0, scores=query_scores(2, shift=-0.2))
    write_cell(other, "vit768-ms", 0, scores=query_scores(5, identities=31, shift=-0.2))
    for root in (base, new, other):
        finish(root, ["vit768-ms"])
    result = report(str(new), "--baseline", str(base), "--out", str(tmp_path / "r1"), "--fail-on", "mAP:-1.0")
    assert result.exit_code == 1 and "rule: bootstrap over seeds and query identities" in result.output
    result = report(str(other), "--baseline", str(base), "--out", str(tmp_path / "r2"), "--fail-on", "mAP:-1.0")
    assert "rule: plain difference of means: the per-query scores are not on the same queries" in result.output


def test_latency_is_gated_on_the_seeds_medians(tmp_path: Path) -> None:
    base = seeds_run(tmp_path / "base", {0: 0.5, 1: 0.5, 2: 0.5}, {0: 10.0, 1: 12.0, 2: 9.0})
    noisy = seeds_run(tmp_path / "noisy", {0: 0.5, 1: 0.5, 2: 0.5}, {0: 13.0, 1: 9.5, 2: 12.5})
    slower = seeds_run(tmp_path / "slower", {0: 0.5, 1: 0.5, 2: 0.5}, {0: 20.0, 1: 20.5, 2: 21.0})
    result = report(str(noisy), "--baseline", str(base), "--out", str(tmp_path / "r1"), "--fail-on", "latency_ms:+10%")
    assert result.exit_code == 0, result.output
    assert "rule: Welch's t over the seeds' medians (3 and 3 seeds)" in result.output
    result = report(str(slower), "--baseline", str(base), "--out", str(tmp_path / "r2"), "--fail-on", "latency_ms:+10%")
    assert result.exit_code == 1 and "latency_ms at batch 1" in result.output


def test_fail_on_strict_needs_fail_on(compared: Path) -> None:
    result = report(str(compared), "--fail-on-strict")
    assert result.exit_code == 2 and "--fail-on mAP:-1.0 --fail-on-strict" in result.output


def test_each_modality_subset_is_compared_with_all_three_in_the_same_cell(tmp_path: Path) -> None:
    """Subset evaluations of one cell share its seeds: paired t over them; the subset table shows their intervals."""
    root = tmp_path / "run"
    subsets = {0: (0.30, 0.50), 1: (0.33, 0.52), 2: (0.31, 0.49)}
    for seed, (rgb, full) in subsets.items():
        write_cell(root, "vit768-ms", seed, {"mAP": full, "rank1": full + 0.2, "modality_subsets": {
            "R": {"mAP": rgb, "rank1": rgb + 0.2}, "RNT": {"mAP": full, "rank1": full + 0.2}}})
    finish(root, ["vit768-ms"], grid='[compare]\neach_subset_against = "RNT"\n')
    result = report(str(root), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    assert list(zip(frame["a"], frame["b"], frame["test"])) == [("vit768-ms:R", "vit768-ms:RNT", "paired-t")] * 2
    rgb, full = [v[0] * 100 for v in subsets.values()], [v[1] * 100 for v in subsets.values()]
    assert frame["p"][0] == pytest.approx(sps.ttest_rel(rgb, full).pvalue)
    low, high = t_interval([v[0] for v in subsets.values()])
    assert f"| R | {np.mean(rgb):.1f} [{low:.1f}, {high:.1f}] |" in (tmp_path / "r" / "report.md").read_text()


def grid_file(path: Path) -> Path:
    """The constructed runs' grid as a file `--grid` can name (an archived folder keeps no grid.toml)."""
    path.write_text('backbones = ["vit768", "clip768"]\nnecks = ["none", "ms"]\n' + COMPARE)
    return path


def archive(results_csv: Path, folder: Path) -> Path:
    """A folder that kept only a run's results.csv."""
    folder.mkdir(parents=True)
    (folder / "results.csv").write_bytes(results_csv.read_bytes())
    return folder


def test_an_archived_results_csv_gives_the_run_directorys_comparisons(compared: Path, tmp_path: Path) -> None:
    grid = grid_file(tmp_path / "grid.toml")
    assert report(str(compared), "--out", str(tmp_path / "full"), "--grid", str(grid)).exit_code == 0
    expected = pd.read_csv(tmp_path / "full" / "comparisons.csv")
    assert set(expected["test"]) == {"paired-t", "welch"} and len(expected) == 6
    run_copy = tmp_path / "run"
    run_copy.mkdir()
    for cell in CELLS:  # the run's own results.csv, as `reidbench run` writes it
        for record in (r for r in RunDir(compared).records() if r.cell == cell):
            RunDir(run_copy).write_record(record)
    RunDir(run_copy).write_results(CELLS)
    for source in (tmp_path / "full" / "results.csv", run_copy / "results.csv"):
        folder = archive(source, tmp_path / f"archived-{source.parent.name}")
        result = report(str(folder), "--grid", str(grid), "--out", str(folder))
        assert result.exit_code == 0, result.output
        pd.testing.assert_frame_equal(pd.read_csv(folder / "comparisons.csv"), expected)
        md = (folder / "report.md").read_text()
        assert "rebuilt from its results.csv alone" in md and "query-level intervals are unavailable" in md
        assert "Initialisation" not in md and "eager steps" not in md
        assert f"the grid {grid} (--grid)" in md and "6 of the 6 tests" in md
        assert (folder / "forest-mAP.png").read_bytes().startswith(PNG)
        low, high = t_interval([r.metrics["mAP"] for r in RunDir(compared).records() if r.cell == "vit768-ms"])
        assert results_row(md, "vit768-ms")["mAP %"].endswith(f"[{low:.1f}, {high:.1f}]")
    # A report's results.csv is kept as it was when the report is written into the archived folder.
    assert (tmp_path / "archived-full" / "results.csv").read_bytes() == (tmp_path / "full" / "results.csv").read_bytes()


def test_an_archived_one_seed_cell_has_no_interval_and_no_bootstrap(tmp_path: Path) -> None:
    root = tmp_path / "run"
    write_cell(root, "vit768-ms", 0, scores=query_scores(1))
    write_cell(root, "vit768-none", 0, scores=query_scores(1, shift=-0.05))
    finish(root, ["vit768-ms", "vit768-none"])
    assert report(str(root), "--out", str(tmp_path / "full")).exit_code == 0
    folder = archive(tmp_path / "full" / "results.csv", tmp_path / "archived")
    assert report(str(folder), "--out", str(tmp_path / "r")).exit_code == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "declares no comparison" in md
    grid = grid_file(tmp_path / "grid.toml")
    result = report(str(folder), "--out", str(tmp_path / "r"), "--grid", str(grid))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "vit768-ms vs vit768-none: not tested — 1 and 1 seed(s) and per-query scores on neither side" in md
    assert pd.read_csv(tmp_path / "r" / "comparisons.csv").empty
    assert results_row(md, "vit768-ms")["mAP %"] == f"{metrics_of(query_scores(1))['mAP'] * 100:.1f}"
    assert "records neither where the backbones' weights came from" in md


def test_a_folder_without_a_results_csv_of_reidbench_or_an_unknown_grid_is_a_usage_error(compared: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.csv").write_text("name,score\na,1\n")
    result = report(str(tmp_path / "other"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "lacks the column(s) cell, backbone, neck, seed, status" in result.output
    result = report(str(compared), "--out", str(tmp_path / "r"), "--grid", "no-such-grid")
    assert result.exit_code == 2 and "unknown grid 'no-such-grid'" in result.output


def test_an_accuracy_interval_is_cut_at_the_metrics_range(tmp_path: Path) -> None:
    root = seeds_run(tmp_path / "run", {0: 0.99, 1: 0.40, 2: 0.98})
    assert report(str(root), "--out", str(tmp_path / "r")).exit_code == 0
    low, high = t_interval([0.99, 0.40, 0.98])
    assert low < 0 and high > 100  # Student's t reaches past both ends; the table shows the metric's range
    row = results_row((tmp_path / "r" / "report.md").read_text(), "vit768-ms")
    assert row["mAP %"] == "79.0 [0.0, 100.0]"
