"""train.init_seed and train.data_seed: a seed's effect split into its initialisation and its data order."""
from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.rundir import RunDir
from repo_scripts import load_script
from tiny_run import ONE_CELL_GRID, run_args, write_inputs

cli = CliRunner()
CELL = "vit768-none"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("seed-split-inputs"), tiny_synthetic, epochs=2, grid=ONE_CELL_GRID)


@pytest.fixture(scope="module")
def runs(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeds 0 and 1 trained four ways: plain, data order fixed, initialisation fixed, both fixed."""
    settings = {"plain": [], "data0": ["--set", "train.data_seed=0"], "init0": ["--set", "train.init_seed=0"],
                "both0": ["--set", "train.data_seed=0", "--set", "train.init_seed=0"]}
    root, out = tmp_path_factory.mktemp("seed-split"), {}
    for name, extra in settings.items():
        out[name] = root / name
        result = cli.invoke(app, run_args(inputs, out[name], "--device", "cpu", "--seeds", "2", *extra))
        assert result.exit_code == 0, result.output
    return out


def weights(run: Path, seed: int) -> dict[str, torch.Tensor]:
    return torch.load(RunDir(run).cell(CELL, seed).path / "model.pt", map_location="cpu", weights_only=True)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fixing_both_seeds_leaves_nothing_for_the_cell_seed_to_change(runs: dict[str, Path]) -> None:
    assert same(weights(runs["both0"], 0), weights(runs["both0"], 1))
    assert same(weights(runs["both0"], 1), weights(runs["plain"], 0))


def test_each_seed_alone_leaves_the_other_source_varying(runs: dict[str, Path]) -> None:
    assert not same(weights(runs["plain"], 0), weights(runs["plain"], 1))  # the control: seeds differ
    assert not same(weights(runs["data0"], 0), weights(runs["data0"], 1))  # the initialisation still varies
    assert not same(weights(runs["init0"], 0), weights(runs["init0"], 1))  # the data order still varies


def test_a_seed_setting_equal_to_the_cell_seed_changes_nothing(runs: dict[str, Path]) -> None:
    for name in ("data0", "init0"):
        assert same(weights(runs[name], 0), weights(runs["plain"], 0))


def test_setting_is_recorded(runs: dict[str, Path]) -> None:
    record = RunDir(runs["data0"]).read_record(CELL, 1)
    assert record is not None and record.recipe is not None
    assert "data_seed" in str(record.to_dict())


@pytest.mark.parametrize("value", ["-1", "1.5", '"x"'])
def test_bad_seed_setting_exits_2_naming_it(inputs: dict[str, Path], tmp_path: Path, value: str) -> None:
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--set", f"train.data_seed={value}"))
    assert result.exit_code == 2, result.output
    assert "data_seed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_rescoring_script_reproduces_each_recorded_map_with_the_recorded_features(runs: dict[str, Path], capsys) -> None:
    """scripts/rescore_features.py, which splits a spread into training and test-time parts: its 'before' column is the record."""
    script = load_script("rescore_features")
    script.main(str(runs["plain"]))
    printed = capsys.readouterr().out
    for seed in (0, 1):
        record = RunDir(runs["plain"]).read_record(CELL, seed)
        line = next(l for l in printed.splitlines() if l.startswith(f"{CELL} seed {seed} "))
        assert f"before {100 * record.metrics['mAP']:.1f}," in line
        assert "after + flip" in line


def test_spread_script_pools_the_seeds_of_several_runs(runs: dict[str, Path], capsys) -> None:
    """scripts/seed_spread.py RUN RUN: one row per cell over both runs' seeds (a replication on fresh seeds read with the
    run it replicates), its sd that of the records' mAPs."""
    script = load_script("seed_spread")
    script.main(str(runs["plain"]), str(runs["data0"]))
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {CELL} |"))
    maps = [100 * RunDir(runs[name]).read_record(CELL, seed).metrics["mAP"] for name in ("plain", "data0") for seed in (0, 1)]
    assert len(row.split("|")[2].split(",")) == 4
    assert f"± {statistics.stdev(maps):.1f} |" in row
