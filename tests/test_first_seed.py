"""`--first-seed`: a run on fresh seeds S..S+N-1, a seed's number (not its place) deciding its randomness, kept by --resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import reidbench
from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.harness.plan import RunRequest, new_plan
from reidbench.harness.runner import run_one
from reidbench.harness.seed_rounds import next_round
from reidbench.rundir import RunDir
from reidbench.runtime.distributed import World
from reidbench.schema import AutoSeeds, CellRecord, CellState, GridRef, RunMeta, RunState
from tiny_run import ONE_CELL_GRID, run_args as tiny_run_args, write_inputs

cli = CliRunner()
CELL = "vit768-none"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("first-seed-inputs"), tiny_synthetic, epochs=2, grid=ONE_CELL_GRID)


def run_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return tiny_run_args(inputs, out, "--device", "cpu", *extra)


@pytest.fixture(scope="module")
def fresh_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One cell trained with --first-seed 3 --seeds 2; the run directory and the console output."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    result = cli.invoke(app, run_args(inputs, out, "--first-seed", "3", "--seeds", "2"))
    assert result.exit_code == 0, result.output
    return out, result.output


def losses(run_root: Path, seed: int) -> list[float]:
    return [entry.loss for entry in RunDir(run_root).cell(CELL, seed).read_train_log().entries]


def test_first_seed_trains_and_records_the_seeds_from_it(fresh_run: tuple[Path, str]) -> None:
    out, output = fresh_run
    run = RunDir(out)
    assert sorted(run.slots_on_disk()) == [(CELL, 3), (CELL, 4)]
    assert [(r.seed, str(r.status)) for r in run.records()] == [(3, "done"), (4, "done")]
    assert list(pd.read_csv(run.results_csv)["seed"]) == [3, 4]
    meta = json.loads(run.run_json.read_text())
    assert meta["first_seed"] == 3 and meta["seeds"] == [3, 4]
    assert json.loads(run.environment_json.read_text())["seeds"] == [3, 4]
    assert "1 cell(s) x 2 seed(s) (seeds 3-4)" in output and f"{CELL} seed 0" not in output
    status = cli.invoke(app, ["status", str(out)])
    assert status.exit_code == 0 and [line.split()[1] for line in status.output.splitlines()[1:3]] == ["3", "4"]
    assert reidbench.load_run(out).meta["first_seed"] == 3
    reidbench.load_cell(out, CELL)  # no seed given: the cell's lowest, 3 (there is no seed 0)


def test_a_seeds_number_not_its_place_in_the_run_decides_its_randomness(
    inputs: dict[str, Path], fresh_run: tuple[Path, str], tmp_path: Path
) -> None:
    fresh, _ = fresh_run
    alone = tmp_path / "seed4"  # seed 4 first in its run, where the fresh run trained it second
    result = cli.invoke(app, run_args(inputs, alone, "--first-seed", "4"))
    assert result.exit_code == 0, result.output
    first, again = RunDir(fresh).read_record(CELL, 4), RunDir(alone).read_record(CELL, 4)
    assert again.metrics["mAP"] == first.metrics["mAP"] and again.metrics["cmc"] == first.metrics["cmc"]
    assert losses(alone, 4) == losses(fresh, 4) != losses(fresh, 3)
    one, other = (torch.load(RunDir(root).cell(CELL, 4).model, weights_only=True) for root in (fresh, alone))
    assert all(torch.equal(value, other[key]) for key, value in one.items())


def test_resume_continues_with_the_runs_own_seeds_and_refuses_another_first_seed(fresh_run: tuple[Path, str], tmp_path: Path) -> None:
    run_root = Path(shutil.copytree(fresh_run[0], tmp_path / "run"))
    expected = RunDir(run_root).read_record(CELL, 4).metrics["mAP"]
    shutil.rmtree(RunDir(run_root).cell_dir(CELL, 4))  # seed 4 is to train again

    refused = cli.invoke(app, ["run", "--resume", str(run_root), "--first-seed", "0", "--no-progress"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "its seeds start at 3" in refused.output and "--first-seed would change it" in refused.output
    resumed = cli.invoke(app, ["run", "--resume", str(run_root), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert f"[1/2] {CELL} seed 3: done already, skipped" in resumed.output and f"[2/2] {CELL} seed 4: done" in resumed.output
    assert sorted(RunDir(run_root).slots_on_disk()) == [(CELL, 3), (CELL, 4)]
    assert RunDir(run_root).read_record(CELL, 4).metrics["mAP"] == expected
    with pytest.raises(UsageError, match="plans no vit768-none seed 0; .* seeds 3-4"):
        run_one(str(run_root), CELL, 0, measurer=None)  # a launcher job for a seed the run does not plan


@pytest.mark.parametrize("value", ["-1", "x", "1.5", "2147483648"])
def test_a_bad_first_seed_exits_2_with_the_message(inputs: dict[str, Path], tmp_path: Path, value: str) -> None:
    out = tmp_path / "bad"
    result = cli.invoke(app, run_args(inputs, out, "--first-seed", value))
    assert result.exit_code == 2, result.output
    assert f"--first-seed {value!r}: give the lowest seed as a whole number from 0 to 2147483647" in result.output
    assert "Traceback" not in result.output and not out.exists()
    with pytest.raises(UsageError, match="--first-seed"):
        reidbench.run_grid(inputs["grid"], profile=str(inputs["profile"]), first_seed=value, out=out)  # type: ignore[arg-type]


def test_the_dry_run_names_the_seeds(inputs: dict[str, Path], tmp_path: Path) -> None:
    text = cli.invoke(app, run_args(inputs, tmp_path / "dry", "--first-seed", "5", "--seeds", "5", "--dry-run"))
    assert text.exit_code == 0, text.output
    assert "1 cell(s) x seeds 5-9," in text.output
    plan = cli.invoke(app, run_args(inputs, tmp_path / "dry", "--first-seed", "5", "--seeds", "auto:4", "--dry-run", "--json"))
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["seeds"] == [5, 6, 7] and not (tmp_path / "dry").exists()


def test_auto_rounds_start_at_the_first_seed_and_add_the_next_ones(inputs: dict[str, Path], tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["vit768"]\nnecks = ["none", "ms"]\n')
    request = RunRequest(grid=str(grid), profile=str(inputs["profile"]), seeds="auto:4", precision=3.0, first_seed="5")
    plan = new_plan(request, torch.device("cpu"), World())
    assert plan.cell_seeds("vit768-none") == plan.first_round_seeds == [5, 6, 7]
    maps = {"vit768-none": [0.50, 0.51, 0.52], "vit768-ms": [0.40, 0.50, 0.60]}  # precise, and not
    done = [CellRecord(cell, "vit768", cell.split("-")[1], CellState.DONE, seed=5 + i, metrics={"mAP": m})
            for cell, values in maps.items() for i, m in enumerate(values)]

    slots = next_round(plan, plan.cells, done, lambda line: None)

    assert [(cell.id, seed) for cell, seed in slots] == [("vit768-ms", 8)]
    assert plan.cell_seeds("vit768-ms") == [5, 6, 7, 8] and plan.cell_seeds("vit768-none") == [5, 6, 7]
    meta = RunMeta(RunState.RUNNING, GridRef("g", str(grid), [c.id for c in plan.cells]), seeds=[5, 6, 7], device="cpu",
                   dtype="fp32", first_seed=5, auto_seeds=AutoSeeds(4, 3.0, dict(plan.auto_seeds.cells)))
    assert meta.cell_seeds("vit768-ms") == [5, 6, 7, 8] and meta.cell_seeds("vit768-none") == [5, 6, 7]
