"""Ablation axes: any setting as a grid dimension, a recipe per backbone, and results per axis."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.rundir import RunDir
from reidbench.variants.grid import parse_grid
from reidbench.variants.necks.grid_windows import grid_windows_cost
from tiny_run import run_args, write_inputs

cli = CliRunner()
SHOW_GRID = """
backbones = ["vit768"]
necks = ["none", "ms"]
[axes]
stride = [12, 16]
neck_scales = [[4, 8, 16], [2, 4, 8]]
"""
PATCHES_PER_BLOCK_MAC = 12 * 768 * 768
"""A ViT-B block's linear layers per token: qkv 3D^2, proj D^2, MLP 8D^2."""


def test_axes_multiply_the_cells_and_each_cell_has_its_settings(tmp_path: Path) -> None:
    grid_file = tmp_path / "axes.toml"
    grid_file.write_text(SHOW_GRID)
    out = tmp_path / "bench.json"
    result = cli.invoke(app, ["bench", "--grid", str(grid_file), "--device", "cpu", "--batch-sizes", "1", "--set", "depth=1",
                              "--repeats", "1", "--warmup", "0", "--train-batch-size", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "grid axes: 8 cell(s) = 1 backbone(s) x 2 neck(s) x stride (2) x neck_scales (2)" in result.output
    records = {r["cell"]: r for r in json.loads(out.read_text())}
    assert len(records) == 8 and all(r["status"] == "done" for r in records.values())
    for stride, grid in ((12, (21, 10)), (16, (16, 8))):
        for scales in ((4, 8, 16), (2, 4, 8)):
            tokens = 1 + grid[0] * grid[1]
            none = records[f"vit768-none@stride={stride},neck_scales={'-'.join(map(str, scales))}"]
            ms = records[f"vit768-ms@stride={stride},neck_scales={'-'.join(map(str, scales))}"]
            assert none["settings"]["stride"] == stride and ms["axes"] == {"stride": stride, "neck_scales": list(scales)}
            # The linear layers of the one block (the rest of the backbone is attention and the patch embedding).
            assert none["flops"]["gmacs_by_part"]["backbone"] * 1e9 >= tokens * PATCHES_PER_BLOCK_MAC
            assert ms["flops"]["gmacs_by_part"]["neck"] * 1e9 == pytest.approx(grid_windows_cost(768, grid, scales).macs, rel=1e-9)
            assert ms["params"]["neck"] == grid_windows_cost(768, grid, scales).params


@pytest.mark.parametrize("text, message", [
    ('[axes]\nstrid = [12, 16]', "axis 'strid' is neither a variant setting"),
    ('[axes]\nlr = ["fast"]', "'lr' = 'fast' has the wrong type"),
    ('[axes]\nstride = [12, 16]\n[backbone.vit768]\nrecipe = { profile = "nosuch" }', "unknown recipe 'nosuch'"),
    ('[backbone.vit768]\nrecipe = { ful = "clipreid" }', "recipe names profile 'ful', which is neither a built-in profile"),
])
def test_bad_axes_and_recipes_exit_2_before_anything_runs(tiny_synthetic: Path, tmp_path: Path, text: str, message: str) -> None:
    grid = 'backbones = ["vit768"]\nnecks = ["none"]\n' + text
    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic, grid=grid)
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_set_on_an_axis_is_refused(tiny_synthetic: Path, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic, grid='backbones = ["vit768"]\nnecks = ["none"]\n[axes]\nstride = [12, 16]\n')
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--set", "stride=12"))
    assert result.exit_code == 2 and "--set stride: grid" in result.output and "varies this setting as an axis" in result.output
    assert not (tmp_path / "run").exists()


def test_axes_from_the_command_line_and_ids_that_would_collide() -> None:
    grid = parse_grid(b'backbones = ["vit768"]\nnecks = ["none", "ms"]\n', "g.toml", "g")
    widened = grid.with_axes({"depth": [1, 2]}, "--axis")
    assert [c.id for c in widened.cells] == ["vit768-none@depth=1", "vit768-none@depth=2", "vit768-ms@depth=1", "vit768-ms@depth=2"]
    assert [c.id for c in widened.select(["vit768-ms"])] == ["vit768-ms@depth=1", "vit768-ms@depth=2"]  # a pair names all its values
    from reidbench.errors import UsageError

    with pytest.raises(UsageError, match="already has an axis 'depth'"):
        widened.with_axes({"depth": [3]}, "--axis")
    with pytest.raises(UsageError, match="lists a value twice"):
        grid.with_axes({"lr": [0.1, 0.10]}, "--axis")


@pytest.fixture(scope="module")
def recipe_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vit768 under the profile's recipe, clip512 under a recipe of its own, and a [train] axis: 2 x 2 cells."""
    folder = tmp_path_factory.mktemp("recipe-inputs")
    (folder / "fast-adam.toml").write_text(
        'follows = "a test recipe"\ninit = "scratch"\ndepartures = ["everything: it is a test"]\n[model]\ncamera_embedding_scale = 0.0\n'
        '[train]\noptimizer = "adam"\nlr = 0.0005\n'
    )
    grid = ('backbones = ["vit768", "clip512"]\nnecks = ["none"]\n[axes]\nlabel_smoothing = [0.0, 0.1]\n'
            '[backbone.clip512]\nrecipe = { profile = "fast-adam.toml" }\n')
    inputs = write_inputs(folder, tiny_synthetic, grid=grid, epochs=2)
    out = tmp_path_factory.mktemp("recipe-runs") / "run"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--axis", "drop_path_rate=0.0"))
    assert result.exit_code == 0, result.output
    assert "the fast-adam recipe, written for random initialisation" in result.output
    return out


def test_each_cell_trains_with_its_own_recipe_and_records_it(recipe_run: Path) -> None:
    run = RunDir(recipe_run)
    vit = run.read_record("vit768-none@label_smoothing=0.0,drop_path_rate=0.0", 0)
    clip = run.read_record("clip512-none@label_smoothing=0.1,drop_path_rate=0.0", 0)
    assert vit.recipe["profile"] == "profile" and vit.recipe["train"]["optimizer"] == "adamw"
    assert clip.recipe["profile"] == "profile+fast-adam" and clip.recipe["train"]["optimizer"] == "adam"
    assert clip.recipe["train"]["label_smoothing"] == 0.1 and clip.recipe["departures"] == ["everything: it is a test"]
    assert clip.settings["camera_embedding_scale"] == 0.0 and vit.settings["camera_embedding_scale"] > 0
    assert clip.axes == {"label_smoothing": 0.1, "drop_path_rate": 0.0}
    assert json.loads((recipe_run / "run.json").read_text())["cli_axes"] == {"drop_path_rate": [0.0]}
    header = (recipe_run / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["axis:label_smoothing", "axis:drop_path_rate"]


def test_a_missing_cell_keeps_its_backbone_neck_and_axes_in_the_frame(recipe_run: Path, tmp_path: Path) -> None:
    from reidbench.reports.load import load_run

    copy = tmp_path / "run"
    shutil.copytree(recipe_run, copy)
    (copy / "cells" / "clip512-none@label_smoothing=0.1,drop_path_rate=0.0" / "seed0" / "record.json").unlink()
    frame = load_run(copy).frame()
    row = frame[frame["cell"] == "clip512-none@label_smoothing=0.1,drop_path_rate=0.0"].iloc[0]
    assert (row["status"], row["backbone"], row["neck"]) == ("missing", "clip512", "none")
    assert (row["axis:label_smoothing"], row["axis:drop_path_rate"]) == ("0.1", "0.0")


def test_the_report_plots_every_axis_and_groups_the_table_by_its_values(recipe_run: Path, tmp_path: Path) -> None:
    result = cli.invoke(app, ["report", str(recipe_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "axis-label_smoothing.png").exists() and (tmp_path / "axis-drop_path_rate.png").exists()
    md = (tmp_path / "report.md").read_text()
    short, full = md.split("## All columns", 1)[0].split("## Results", 1)[1], md.split("## All columns", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in full.splitlines() if line.startswith("| cell |"))
    assert "| label_smoothing |" in header and "| drop_path_rate |" in header
    for table in (short, full):  # the short table names the axis values in its cell ids only, in the same order
        rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith(("| vit768-", "| clip512-"))]
        assert [r.split("label_smoothing=")[1][:3] for r in rows] == ["0.0", "0.0", "0.1", "0.1"]  # grouped by the first axis
    assert "profile+fast-adam for clip512-none@" in md and "follows a test recipe" in md


def test_resume_adds_the_command_line_axes_again(recipe_run: Path) -> None:
    result = cli.invoke(app, ["run", "--resume", str(recipe_run), "--no-progress"])
    assert result.exit_code == 0 and result.output.count("already, skipped") == 4, result.output
    pair = cli.invoke(app, ["run", "--resume", str(recipe_run), "--only", "clip512-none", "--no-progress"])
    assert pair.exit_code == 0 and pair.output.count("already, skipped") == 2, pair.output  # a pair names its axis values
    refused = cli.invoke(app, ["run", "--resume", str(recipe_run), "--axis", "depth=1,2"])
    assert refused.exit_code == 2 and "--axis would change it" in refused.output


def test_the_old_name_of_the_camera_embedding_scale_still_works() -> None:
    from reidbench.variants.settings import VariantSettings

    assert VariantSettings().with_overrides({"sie_xishu": 0.5}).camera_embedding_scale == 0.5
