"""`reidbench status` and `runner.run_one`: every state a cell can be in, made by the runner's own code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.bench.suite import run_measurer
from reidbench.harness import cell as cell_module
from reidbench.harness import runner
from reidbench.harness import status as status_module
from reidbench.rundir import RunDir
from reidbench.harness.trainer import TrainingDiverged
from tiny_run import run_args, write_inputs

cli = CliRunner()


class Killed(BaseException):
    """What SIGKILL looks like from inside: the process stops and nothing gets to write a record."""


TRAIN_MODEL = cell_module.train_model


def stop_training_at_epoch_1(exception: type[BaseException]):
    original = TRAIN_MODEL

    def train(model, train_set, cfg, options, cell_dir, progress, on_epoch=None, **hooks):
        def stop(epoch: int) -> None:
            if epoch == 1:
                raise exception

        return original(model, train_set, cfg, options, cell_dir, progress, stop, **hooks)

    return train


def diverge(model, *args, **kwargs):
    raise TrainingDiverged("the loss became nan during epoch 1; lower the learning rate (train.lr)\nsecond line")


@pytest.fixture(scope="module")
def states_run(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> Path:
    """A 4-cell x 2-seed run directory in which each cell is in another state, each made by run_one.

    vit768-none: seed 0 done, seed 1 interrupted (Ctrl-C after epoch 1); vit768-ms 0: failed (NaN);
    clip512-none 0: running (its process vanished after epoch 1); clip512-ms 0: xfail; the other seeds 1: pending.
    """
    inputs = write_inputs(tmp_path_factory.mktemp("status-inputs"), tiny_synthetic)
    out = tmp_path_factory.mktemp("status") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "execute", lambda *args, **kwargs: [])  # create the run directory, run nothing
        created = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--seeds", "2"))
    assert created.exit_code == 0, created.output
    before = (out / "run.json").read_bytes()
    root = str(out)
    assert runner.run_one(root, "vit768-none", 0, run_measurer).status == "done"
    assert runner.run_one(root, "clip512-ms", 0, run_measurer).status == "xfail"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cell_module, "train_model", diverge)
        assert runner.run_one(root, "vit768-ms", 0, run_measurer).status == "failed"
        patch.setattr(cell_module, "train_model", stop_training_at_epoch_1(Killed))
        with pytest.raises(Killed):
            runner.run_one(root, "clip512-none", 0, run_measurer)
        patch.setattr(cell_module, "train_model", stop_training_at_epoch_1(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            runner.run_one(root, "vit768-none", 1, run_measurer)
    # Jobs run side by side, so run_one writes only its own cell folder.
    assert (out / "run.json").read_bytes() == before
    assert not (out / "environment.json").exists() and not (out / "results.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["cells", "grid.toml", "profile.toml", "run.json"]
    return out


def test_status_tells_every_state_apart(states_run: Path) -> None:
    rows = {(r.cell, r.seed): r for r in status_module.collect(states_run).rows}
    assert {k: r.state for k, r in rows.items()} == {
        ("vit768-none", 0): "done", ("vit768-none", 1): "interrupted",
        ("vit768-ms", 0): "failed", ("vit768-ms", 1): "pending",
        ("clip512-none", 0): "running", ("clip512-none", 1): "pending",
        ("clip512-ms", 0): "xfail", ("clip512-ms", 1): "pending",
    }
    assert rows[("vit768-none", 0)].detail.startswith("mAP ")
    assert rows[("vit768-ms", 0)].detail == "the loss became nan during epoch 1; lower the learning rate (train.lr)"
    assert "to have 768 channels, but got 512 channels instead" in rows[("clip512-ms", 0)].detail
    assert rows[("clip512-none", 0)].detail == "epoch 1/3"
    assert "--resume" in rows[("vit768-none", 1)].detail


def test_status_command_prints_a_table_and_a_count_and_writes_nothing_for_a_local_run(states_run: Path) -> None:
    before = {p: p.read_bytes() for p in states_run.rglob("*") if p.is_file()}
    result = cli.invoke(app, ["status", str(states_run)])
    assert result.exit_code == 0, result.output
    assert "1 done, 1 xfail, 1 failed, 1 interrupted, 1 running, 3 pending" in result.output
    assert "clip512-none  0     running" in result.output and "epoch 1/3" in result.output
    as_json = json.loads(cli.invoke(app, ["status", str(states_run), "--json"]).stdout)
    assert as_json["counts"] == {"done": 1, "xfail": 1, "failed": 1, "interrupted": 1, "running": 1, "pending": 3}
    assert as_json["launcher"] == "local"
    # Without launch.json, the process that runs the grid owns the run-level files: status only reads.
    assert {p: p.read_bytes() for p in states_run.rglob("*") if p.is_file()} == before


def test_a_torn_last_log_line_does_not_hide_the_epoch(states_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(states_run, copy)
    with (RunDir(copy).cell_dir("clip512-none", 0) / "train_log.jsonl").open("a") as f:
        f.write('{"epoch": 2, "loss"')  # killed in the middle of a write
    rows = {(r.cell, r.seed): r for r in status_module.collect(copy).rows}
    assert rows[("clip512-none", 0)].detail == "epoch 1/3"


def test_run_one_leaves_a_finished_cell_alone_and_refuses_an_unplanned_one(states_run: Path) -> None:
    run = RunDir(states_run)
    record = run.read_record("vit768-none", 0).to_dict()
    assert runner.run_one(str(states_run), "vit768-none", 0, run_measurer).to_dict() == record
    assert json.loads((run.cell_dir("vit768-none", 0) / "job.json").read_text())["dataset"]["counts"]["train"]["ids"] == 8
    with pytest.raises(UsageError, match="has no cell 'vit768-gem'"):
        runner.run_one(str(states_run), "vit768-gem", 0, run_measurer)
    with pytest.raises(UsageError, match="plans no vit768-none seed 5"):
        runner.run_one(str(states_run), "vit768-none", 5, run_measurer)


def test_status_of_something_that_is_not_a_run_directory(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        result = cli.invoke(app, ["status", str(path)])
        assert result.exit_code == 2, result.output
        assert "is not a reidbench run directory" in result.output and "Traceback" not in result.output
    (tmp_path / "run.json").write_text("{not json")
    result = cli.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "damaged" in result.output and "Traceback" not in result.output
