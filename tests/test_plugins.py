"""A neck registered in the user's own module, outside the package: every command that reads or builds cells
imports it (--import, or the module the run recorded), in this process and in launcher jobs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.harness import launch
from reidbench.bench.suite import run_measurer
from reidbench.rundir import RunDir
from reidbench.schema import CellState
from reidbench.variants.necks import NECKS
from tiny_run import profile_toml

cli = CliRunner()

PLUGIN = '''
import torch
from reidbench.variants.necks import NECKS, NO_COST, Neck


class GeM(Neck):
    """CLS plus the generalized-mean (p = 3) of the patch tokens' magnitudes; no parameters."""

    def __init__(self, in_dim):
        super().__init__()
        self.input_width, self.out_dim, self.notes = None, in_dim, []

    def cost(self):
        return NO_COST

    def forward(self, tokens):
        return tokens[:, 0] + tokens[:, 1:].abs().clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3)


@NECKS.register("gem", "generalized-mean pooling of the patch tokens, added to CLS")
def gem(in_dim, settings):
    return GeM(in_dim)
'''
GRID = 'backbones = ["vit768"]\nnecks = ["gem"]\n'


def _forget(name: str) -> None:
    """This process forgets the plugin: a later command must import it again, as a new process would."""
    NECKS._entries.pop("gem", None)  # noqa: SLF001 - undoing what the plugin registered, as in a fresh process
    sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    _forget("gem_neck")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugin")
    (path / "gem_neck.py").write_text(PLUGIN)
    (path / "grid.toml").write_text(GRID)
    (path / "profile.toml").write_text(profile_toml(epochs=3))
    return path


@pytest.fixture(scope="module")
def gem_run(folder: Path, tiny_synthetic: Path) -> Path:
    """One run of the plugin's neck, with --set over the profile's 3 epochs and its evaluation."""
    out = folder / "run"
    args = ["run", "--grid", str(folder / "grid.toml"), "--profile", str(folder / "profile.toml"), "--data",
            f"synthetic:{tiny_synthetic}", "--out", str(out), "--no-progress", "--device", "cpu",
            "--import", str(folder / "gem_neck.py"), "--set", "train.epochs=1", "--set", "train.warmup_epochs=0", "--set", "eval.rerank=true"]
    result = cli.invoke(app, args)
    _forget("gem_neck")
    assert result.exit_code == 0, result.output
    return out


def test_list_grid_names_the_way_to_a_neck_of_ones_own_and_imports_it_by_module_name(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli.invoke(app, ["list", "--grid", str(folder / "grid.toml")])
    assert result.exit_code == 2 and "unknown neck 'gem'" in result.output and "--import MODULE" in result.output
    monkeypatch.chdir(folder)  # a module name is found in the current directory, as `python -m` would
    result = cli.invoke(app, ["list", "--grid", "grid.toml", "--import", "gem_neck"])
    assert result.exit_code == 0, result.output
    assert "vit768-gem" in result.output and "generalized-mean pooling" in result.output


def test_a_missing_plugin_module_is_one_paragraph(folder: Path) -> None:
    result = cli.invoke(app, ["list", "--import", "no_such_plugin_module"])
    assert result.exit_code == 2 and "plugin module 'no_such_plugin_module'" in result.output and "cannot be found" in result.output
    result = cli.invoke(app, ["list", "--import", str(folder / "absent.py")])
    assert result.exit_code == 2 and "absent.py" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_the_run_records_its_plugin_and_set_values_and_keeps_its_cell_ids(gem_run: Path, folder: Path) -> None:
    meta = json.loads((gem_run / "run.json").read_text())
    assert str((folder / "gem_neck.py").resolve()) in meta["plugins"]
    assert meta["overrides"] == {"train.epochs": 1, "train.warmup_epochs": 0, "eval.rerank": True}
    assert meta["grid"]["cells"] == ["vit768-gem"]
    assert meta["profile"]["train"]["epochs"] == 1 and meta["profile"]["eval"]["rerank"] is True
    assert "epochs = 3" in (gem_run / "profile.toml").read_text()  # the profile file as given; --set lives in run.json
    record = RunDir(gem_run).read_record("vit768-gem", 0)
    assert record.status == CellState.DONE, record.error
    assert record.recipe["train"]["epochs"] == 1 and record.recipe["set"] == {"train.epochs": 1, "train.warmup_epochs": 0, "eval.rerank": True}
    assert "mAP_rr" in record.metrics
    log = (RunDir(gem_run).cell_dir("vit768-gem", 0) / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]


def test_resume_status_report_and_export_import_the_recorded_plugin(gem_run: Path, tmp_path: Path) -> None:
    for args in (["run", "--resume", str(gem_run), "--no-progress"], ["status", str(gem_run)],
                 ["report", str(gem_run), "--out", str(tmp_path / "report")],
                 ["export", str(gem_run), "--out", str(tmp_path / "onnx"), "--batch-sizes", "1"]):
        _forget("gem_neck")
        result = cli.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "gem" in NECKS, args
    assert (tmp_path / "onnx" / "vit768-gem-seed0.onnx").is_file()


def test_a_run_whose_plugin_is_gone_names_the_module_and_the_run(gem_run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(gem_run, moved)
    meta = json.loads((moved / "run.json").read_text())
    meta["plugins"] = [str(tmp_path / "gem_neck_elsewhere.py")]
    (moved / "run.json").write_text(json.dumps(meta))
    for args in (["run", "--resume", str(moved), "--no-progress"], ["export", str(moved)], ["status", str(moved)], ["report", str(moved)]):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "gem_neck_elsewhere.py" in result.output and f"needed by the run {moved}" in result.output, args


def test_a_job_that_cannot_import_the_plugin_records_why(gem_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(gem_run, moved)
    shutil.rmtree(moved / "cells")
    meta = json.loads((moved / "run.json").read_text())
    meta["plugins"] = ["gem_neck_not_installed"]
    (moved / "run.json").write_text(json.dumps(meta))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "778")
    with pytest.raises(Exception, match="gem_neck_not_installed"):
        launch.run_cell_job(str(moved), "vit768-gem", 0, run_measurer)
    record = RunDir(moved).read_record("vit768-gem", 0)
    assert record.status == CellState.FAILED and "gem_neck_not_installed" in record.error and str(moved) in record.error


def test_submitit_local_jobs_import_the_plugin(folder: Path, tiny_synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs"
    args = ["run", "--grid", str(folder / "grid.toml"), "--profile", str(folder / "profile.toml"), "--data",
            f"synthetic:{tiny_synthetic}", "--out", str(out), "--no-progress", "--device", "cpu", "--launcher", "submitit-local",
            "--cpus-per-cell", "1", "--import", str(folder / "gem_neck.py"), "--set", "train.epochs=1", "--set", "train.warmup_epochs=0"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = RunDir(out).read_record("vit768-gem", 0)
    assert record.status == CellState.DONE and record.recipe["train"]["epochs"] == 1
