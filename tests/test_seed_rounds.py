"""`--seeds auto`: seeds in rounds until each cell's mAP interval is narrow enough, resumable, bad specs refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy import stats as sps
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.harness import runner as runner_module
from reidbench.harness.plan import RunRequest, new_plan
from reidbench.harness.seed_rounds import next_round
from reidbench.rundir import RunDir
from reidbench.runtime.distributed import World
from reidbench.schema import CellRecord, CellState
from tiny_run import ONE_CELL_GRID, run_args, write_inputs

cli = CliRunner()

XFAIL_GRID = """
backbones = ["vit768", "clip512"]
necks = ["ms"]
[expect.clip512-ms]
status = "xfail"
match = "to have 768 channels, but got 512 channels instead"
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("auto-inputs")
    written = write_inputs(folder, tiny_synthetic, epochs=2, grid=ONE_CELL_GRID)
    (folder / "xfail.toml").write_text(XFAIL_GRID)
    return {**written, "xfail_grid": folder / "xfail.toml"}


def half_width(maps: list[float]) -> float:
    """The 95 % Student t half-width of the mean, in points, computed here from its definition."""
    values = torch.tensor(maps, dtype=torch.float64) * 100
    return float(sps.t.ppf(0.975, len(maps) - 1) * values.std() / len(maps) ** 0.5)


def records(cell: str, maps: list[float], status: CellState = CellState.DONE) -> list[CellRecord]:
    backbone, neck = cell.split("-")
    return [CellRecord(cell, backbone, neck, status, seed=s, metrics={"mAP": m} if status == CellState.DONE else {})
            for s, m in enumerate(maps)]


def test_a_round_gives_one_more_seed_only_to_the_cells_not_yet_precise(inputs, tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["vit768", "clip512"]\nnecks = ["none", "ms"]\n')
    request = RunRequest(grid=str(grid), profile=str(inputs["profile"]), seeds="auto:4", precision=3.0)
    plan = new_plan(request, torch.device("cpu"), World())
    assert plan.seeds == 3 and plan.auto_seeds.max_seeds == 4 and plan.auto_seeds.precision == 3.0
    steady, noisy = [0.50, 0.51, 0.52], [0.40, 0.50, 0.60]
    assert half_width(steady) < 3.0 < half_width(noisy)
    said: list[str] = []
    done = (records("vit768-none", steady) + records("vit768-ms", noisy) + records("clip512-none", noisy)
            + records("clip512-ms", [0, 0, 0], CellState.XFAIL))

    slots = next_round(plan, plan.cells, done, said.append)

    assert [(cell.id, seed) for cell, seed in slots] == [("vit768-ms", 3), ("clip512-none", 3)]
    assert plan.auto_seeds.cells == {"vit768-ms": 4, "clip512-none": 4} and plan.seeds_of("vit768-none") == 3
    assert f"precise: vit768-none (3 seeds, ±{half_width(steady):.2f})" in said[0]
    assert f"one more seed each: vit768-ms (3 seeds, ±{half_width(noisy):.2f}); clip512-none" in said[0]
    assert "not seeded further: clip512-ms (3 seeds, xfail)" in said[0]
    # At the maximum, the noisy cells stop without being precise.
    done += records("vit768-ms", noisy + [0.45])[3:] + records("clip512-none", noisy + [0.45])[3:]
    assert next_round(plan, plan.cells, done, said.append) == []
    assert "at the maximum of 4 seeds, not precise: vit768-ms (4 seeds" in said[1]


def test_a_loose_precision_stops_after_the_first_round_and_xfail_cells_get_no_more(inputs, tmp_path: Path) -> None:
    out = tmp_path / "loose"
    result = cli.invoke(app, run_args(inputs, out, "--grid", str(inputs["xfail_grid"]), "--device", "cpu",
                                      "--seeds", "auto:3", "--precision", "1000"))
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    assert sorted((r.cell, r.seed, str(r.status)) for r in run.records()) == sorted(
        [("vit768-ms", s, "done") for s in range(3)] + [("clip512-ms", s, "xfail") for s in range(3)])
    meta = json.loads(run.run_json.read_text())
    assert meta["seeds"] == [0, 1, 2] and meta["auto_seeds"] == {"max_seeds": 3, "precision": 1000.0, "cells": {}}
    assert result.output.count("--seeds auto: 95% interval") == 1  # one round, then it stopped
    assert "  precise: vit768-ms (3 seeds, ±" in result.output and "not seeded further: clip512-ms (3 seeds, xfail)" in result.output
    status = cli.invoke(app, ["status", str(out)])
    assert status.exit_code == 0 and "2 cell(s) x 3 seed(s)" in status.output and "pending" not in status.output


def test_a_tight_precision_adds_rounds_up_to_the_maximum_and_resume_goes_on(
    inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "tight"
    original = runner_module.execute

    def stop_in_the_second_round(cell: str, seed: int, epoch: int) -> None:
        if seed == 3 and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "execute", lambda *a, **kw: original(*a, **{**kw, "on_epoch": stop_in_the_second_round}))
    interrupted = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--seeds", "auto:5", "--precision", "0.0001"))
    monkeypatch.undo()
    assert interrupted.exit_code == 130, interrupted.output
    assert "one more seed each: vit768-none (3 seeds" in interrupted.output
    run = RunDir(out)
    assert json.loads(run.run_json.read_text())["auto_seeds"]["cells"] == {"vit768-none": 4}  # the round was planned
    assert run.read_record("vit768-none", 3).status == "interrupted"

    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "vit768-none seed 2: done already, skipped" in resumed.output
    assert [r.seed for r in run.records() if r.status == "done"] == [0, 1, 2, 3, 4]
    assert run.read_record("vit768-none", 3).training["resumed_from_epoch"] == 1
    assert "at the maximum of 5 seeds, not precise: vit768-none (5 seeds" in resumed.output
    meta = json.loads(run.run_json.read_text())
    assert meta["status"] == "finished" and meta["auto_seeds"]["cells"] == {"vit768-none": 5}
    assert all(run.read_queries("vit768-none", seed) is not None for seed in range(5))
    refused = cli.invoke(app, ["run", "--resume", str(out), "--seeds", "auto:9"])
    assert refused.exit_code == 2 and "--seeds would change it" in refused.output


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "auto:1"], "MAX in auto:MAX must be a whole number of at least 2"),
    (["--seeds", "auto:x"], "MAX in auto:MAX must be a whole number of at least 2"),
    (["--seeds", "autox"], "give a number of seeds (e.g. --seeds 3) or auto[:MAX]"),
    (["--seeds", "auto", "--precision", "-1"], "--precision -1.0: give the half-width"),
    (["--seeds", "auto", "--precision", "0"], "a positive number"),
    (["--seeds", "3", "--precision", "1"], "--precision says when --seeds auto stops adding seeds"),
    (["--seeds", "auto", "--launcher", "submitit-local"], "--seeds auto decides each round"),
])
def test_a_bad_auto_seeds_spec_exits_2_with_a_clear_message(inputs, tmp_path: Path, extra: list[str], message: str) -> None:
    result = cli.invoke(app, run_args(inputs, tmp_path / "bad", "--device", "cpu", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bad").exists()
