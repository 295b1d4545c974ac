"""scripts/link_runs.py: cells trained in separate runs reported, and tested against each other, as one run."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.rundir import RunDir
from repo_scripts import load_script
from tiny_run import run_args, write_inputs

cli = CliRunner()
GRID = """
backbones = ["vit768"]
necks = ["none", "ms"]
[compare]
each_neck_against = "none"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    """The neck-less cell and the neck cell in two runs of seeds 0-2; the neck cell again with one seed fewer."""
    inputs = write_inputs(tmp_path_factory.mktemp("link-inputs"), tiny_synthetic, epochs=2, grid=GRID)
    root, out = tmp_path_factory.mktemp("link-runs"), {}
    for name, cell, seeds in (("none", "vit768-none", "3"), ("ms", "vit768-ms", "3"), ("ms-2", "vit768-ms", "2")):
        out[name] = root / name
        result = cli.invoke(app, run_args(inputs, out[name], "--device", "cpu", "--only", cell, "--seeds", seeds))
        assert result.exit_code == 0, result.output
    controls = inputs["grid"].with_name("controls.toml")
    controls.write_text('backbones = ["vit768"]\nnecks = ["gap"]\n')
    out["gap"] = root / "gap"
    result = cli.invoke(app, run_args({**inputs, "grid": controls}, out["gap"], "--device", "cpu", "--seeds", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_linked_run_holds_both_runs_cells_and_the_report_tests_them_against_each_other(runs, tmp_path: Path, capsys) -> None:
    linked = tmp_path / "linked"
    load_script("link_runs").main(str(linked), str(runs["none"]), str(runs["ms"]))
    assert "2 cells (vit768-none, vit768-ms)" in capsys.readouterr().out
    meta = RunDir(linked).meta()
    assert meta.grid.cells == ["vit768-none", "vit768-ms"] and meta.seeds == [0, 1, 2]
    sources = [RunDir(runs[name]).meta() for name in ("none", "ms")]
    assert (meta.started, meta.finished) == (sources[0].started, sources[1].finished)
    for cell, source in (("vit768-none", "none"), ("vit768-ms", "ms")):
        assert RunDir(linked).read_record(cell, 2) == RunDir(runs[source]).read_record(cell, 2)
    report = tmp_path / "report"
    result = cli.invoke(app, ["report", str(linked), "--out", str(report), "--no-rank-lists"])
    assert result.exit_code == 0, result.output
    comparison = [line for line in (report / "report.md").read_text().splitlines()
                  if line.startswith("| vit768-ms | vit768-none | mAP % | paired-t | 3 / 3 |")]
    assert len(comparison) == 1, (report / "report.md").read_text()


def test_runs_of_other_seeds_are_refused_naming_the_difference(runs, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        load_script("link_runs").main(str(tmp_path / "linked"), str(runs["none"]), str(runs["ms-2"]))
    assert stop.value.code == 2
    assert "differ in seeds" in capsys.readouterr().err
    assert not (tmp_path / "linked").exists()


def test_a_cell_in_two_runs_is_refused(runs, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        load_script("link_runs").main(str(tmp_path / "linked"), str(runs["ms"]), str(runs["ms"]))
    assert stop.value.code == 2
    assert "cell vit768-ms is in both" in capsys.readouterr().err


def test_a_cell_of_another_grid_joins_and_the_grid_names_are_joined(runs, tmp_path: Path, capsys) -> None:
    linked = tmp_path / "linked"
    load_script("link_runs").main(str(linked), str(runs["none"]), str(runs["ms"]), str(runs["gap"]))
    meta = RunDir(linked).meta()
    assert meta.grid.cells == ["vit768-none", "vit768-ms", "vit768-gap"]
    assert meta.grid.name == "grid+controls"
