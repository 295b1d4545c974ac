"""`--set TABLE.KEY=VALUE`: a profile's train/eval/measure/model values from the command line, checked like a
profile file's, laid over the profile and the recipe, never renaming cells; `--set KEY` stays a variant setting."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.harness.plan import RunRequest, cell_profile, cell_settings, new_plan
from reidbench.runtime.distributed import World

cli = CliRunner()


def test_list_profile_shows_a_set_value_with_its_origin() -> None:
    result = cli.invoke(app, ["list", "--profile", "quick", "--set", "train.epochs=5", "--set", "eval.rerank=true"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:] if line.startswith("  ") and "." in line.split()[0]}
    assert rows["train.epochs"] == ["5", "--set"] and rows["eval.rerank"] == ["true", "--set"]
    assert rows["train.lr"][-1] != "--set"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.epoch=5"], "unknown setting 'epoch'; valid settings are: "),
        (["eval.batch_size=100000000"], "over its limit of 65536"),
        (["train.epochs=\"five\""], "has the wrong type"),
        (["optim.lr=0.1"], "a dotted key names a profile table"),
        (["model.depht=2"], "unknown setting 'depht'"),
        (["depth=2"], "list --profile shows the profile's tables"),
    ],
)
def test_a_bad_set_exits_2_naming_the_tables_keys(sets: list[str], message: str) -> None:
    result = cli.invoke(app, ["list", "--profile", "quick", *[arg for item in sets for arg in ("--set", item)]])
    assert result.exit_code == 2 and message in result.output, result.output
    if "epoch=" in sets[0]:
        assert "epochs" in result.output and "warmup_epochs" in result.output


def test_set_without_a_profile_and_bench_profile_keys_are_refused() -> None:
    result = cli.invoke(app, ["list", "--set", "train.epochs=5"])
    assert result.exit_code == 2 and "add --profile NAME" in result.output
    result = cli.invoke(app, ["bench", "--set", "train.epochs=5"])
    assert result.exit_code == 2 and "bench has none" in result.output


def _plan(tmp_path: Path, grid: str, *sets: str, axes: tuple[str, ...] = ()):
    (tmp_path / "grid.toml").write_text(grid)
    request = RunRequest(grid=str(tmp_path / "grid.toml"), profile="full", overrides=sets, axes=axes)
    return new_plan(request, torch.device("cpu"), World())


def test_set_is_laid_over_the_recipe_and_keeps_cell_ids(tmp_path: Path) -> None:
    grid = 'backbones = ["clip512"]\nnecks = ["none"]\n[backbone.clip512]\nrecipe = { full = "clipreid" }\n'
    plain = cell_profile(_plan(tmp_path, grid), _plan(tmp_path, grid).cells[0])
    plan = _plan(tmp_path, grid, "train.lr=0.5", "model.depth=2", "eval.flip=true", "stride=12")
    cell = plan.cells[0]
    profile = cell_profile(plan, cell)
    assert profile.name == plain.name == "full+clipreid" and plain.train.lr != 0.5  # the recipe sets lr ...
    assert profile.train.lr == 0.5 and profile.origins["train.lr"] == "--set"  # ... and --set has the last word
    assert profile.train.epochs == plain.train.epochs and plan.profile.eval.flip is True
    assert cell.id == "clip512-none"
    assert cell_settings(plan, cell, _facts()).depth == 2 and cell_settings(plan, cell, _facts()).stride == 12


def _facts() -> SimpleNamespace:
    """A stand-in dataset with the facts cell_settings reads (no images needed)."""
    return SimpleNamespace(num_train_pids=8, num_cameras=3, modalities=("rgb",))


def test_set_of_an_axis_key_is_refused(tmp_path: Path) -> None:
    grid = 'backbones = ["vit768"]\nnecks = ["none"]\n'
    with pytest.raises(UsageError, match=r"--set train\.lr: grid .* varies this setting as an axis"):
        _plan(tmp_path, grid, "train.lr=0.1", axes=("lr=0.1,0.2",))
