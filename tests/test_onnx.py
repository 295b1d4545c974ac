"""ONNX export: depth-1 cells exported with a dynamic batch axis, their parity with PyTorch under ONNX Runtime, its
latency entries, a run's done cells exported and the others skipped, and failures that are results, not crashes."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from reidbench.bench import export as onnx_export
from reidbench.bench.export import (
    MIN_COSINE, check_parity_at, export_onnx, export_problems, export_run, measure_onnxruntime, onnx_table_text,
)
from reidbench.bench.options import BenchOptions
from reidbench.bench.ort import INSTALL_HINT, MODE, onnxruntime_missing, ort_features, ort_latency, ort_session
from reidbench.profiles import MeasureConfig
from reidbench.runtime.files import write_json
from reidbench.schema import CellRecord, CellState, GridRef, RunMeta, RunState
from reidbench.variants.factory import create_variant
from reidbench.variants.model import ReidModel

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason="pip install onnx onnxscript onnxruntime",
)

IMG_SIZE = (32, 16)
QUICK = MeasureConfig(batch_sizes=(1,), repeats=3, warmup=1, max_seconds=0.5)
"""Timing just long enough to produce entries: these tests check their shape, not the machine's speed."""


def _model(cell: str, cameras: int, modalities: tuple[str, ...] = ("rgb",)) -> ReidModel:
    torch.manual_seed(0)
    return create_variant(cell, depth=1, img_size=IMG_SIZE, num_classes=4, num_cameras=cameras, modalities=modalities).eval()


@pytest.fixture(
    scope="module", params=[("vit768-none", 2, ("rgb",)), ("clip512-none", 0, ("rgb",)), ("vit768-ms", 2, ("rgb", "nir", "tir"))],
    ids=["vit768-none", "clip512-none", "vit768-ms-rgb-nir-tir"],
)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReidModel, Any, Any]:
    """A depth-1 cell exported once per module: with camera ids (vit768-none, 2 cameras), without (clip512-none),
    and multi-modal (9 input channels, the modalities stacked on the batch axis inside the graph)."""
    cell, cameras, modalities = request.param
    model = _model(cell, cameras, modalities)
    result = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{cell}.onnx")
    assert result.exported, result.error
    return model, result, ort_session(Path(result.path))


@needs_onnx
def test_a_cell_exports_with_a_dynamic_batch_axis_and_matches_pytorch(exported) -> None:
    model, result, session = exported
    assert (result.exporter, result.torch_version) == ("dynamo", torch.__version__)
    assert isinstance(result.opset, int) and result.opset >= 18
    assert result.inputs == (["images", "cam_ids"] if model.settings.num_cameras else ["images"])
    assert [i.name for i in session.get_inputs()] == result.inputs
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic: the batch axis is dynamic
    parity = check_parity_at(model, session, batch_sizes=(1, 3))  # neither is the traced batch of 2
    assert parity.ok, parity.message
    assert parity.batch_sizes == [1, 3] and parity.min_cosine >= MIN_COSINE and parity.max_abs_diff < 1e-4
    assert parity.message.startswith("ok:")


@needs_onnx
def test_onnxruntime_latency_entries_have_the_shape_of_eager_ones(exported) -> None:
    _, _, session = exported
    options = BenchOptions(torch.device("cpu"), "fp32", QUICK)
    entries = [ort_latency(session, batch_size, options) for batch_size in (1, 2)]
    assert [(e["batch_size"], e["mode"]) for e in entries] == [(1, MODE), (2, MODE)]
    for entry in entries:
        assert {"median_ms", "p90_ms", "repeats", "warmup", "timer", "noisy", "img_per_s", "threads"} <= entry.keys()
        assert 0 < entry["median_ms"] <= entry["p90_ms"] and entry["repeats"] >= 3 and entry["timer"] == "perf_counter"
        assert entry["img_per_s"] == pytest.approx(entry["batch_size"] / entry["median_ms"] * 1e3)


@needs_onnx
def test_features_that_drift_from_pytorch_are_a_parity_failure_not_an_exception(exported) -> None:
    model, _, session = exported
    drifted = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in drifted.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    parity = check_parity_at(drifted, session)
    assert not parity.ok and parity.error is None
    assert parity.min_cosine < MIN_COSINE and parity.message.startswith("parity failure: min cosine")


@needs_onnx
def test_bench_gets_onnxruntime_entries_and_the_exports_summary_without_keeping_the_file(monkeypatch) -> None:
    folders: list[str] = []
    real = tempfile.TemporaryDirectory

    def recorded(*args: Any, **kwargs: Any) -> Any:
        folder = real(*args, **kwargs)
        folders.append(folder.name)
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recorded)
    options = BenchOptions(torch.device("cpu"), "fp32", MeasureConfig(batch_sizes=(1, 2), repeats=3, warmup=1, max_seconds=0.5))
    entries, summary = measure_onnxruntime(_model("clip512-none", 2), options)
    assert [(e["batch_size"], e["mode"], e["provider"]) for e in entries] == [(b, MODE, "CPUExecutionProvider") for b in (1, 2)]
    assert summary["exported"] and summary["parity"]["ok"] and summary["error"] is None and "path" not in summary
    ours = [f for f in folders if Path(f).name.startswith("reidbench-onnx-")]
    assert len(ours) == 1 and not Path(ours[0]).exists()  # the exported file went with its temporary folder


@needs_onnx
def test_an_export_the_model_cannot_survive_is_a_result_with_the_error(tmp_path: Path) -> None:
    path = tmp_path / "clip512-ms.onnx"
    result = export_onnx(_model("clip512-ms", 2), path)  # the ms neck's 768-channel conv meets 512-d tokens
    assert not result.exported and result.path is None and not path.exists()
    assert "768 channels" in result.error and "512 channels" in result.error


def test_without_the_exporters_packages_the_result_says_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the import now fails, as without the package
    result = export_onnx(_model("vit768-none", 2), tmp_path / "x.onnx")
    assert not result.exported and result.error == onnx_export.INSTALL_HINT and "pip install onnx" in result.error
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert onnxruntime_missing() == INSTALL_HINT and "pip install onnxruntime" in INSTALL_HINT


def _write_cell(run_dir: Path, cell: str, status: CellState, error: str | None, model: ReidModel | None) -> None:
    cell_dir = run_dir / "cells" / cell / "seed0"
    settings = (model.settings if model is not None else _model("vit768-none", 2).settings).to_dict()
    backbone, neck = cell.split("-", 1)
    record = CellRecord(cell, backbone, neck, status, seed=0, error=error, settings=settings)
    write_json(cell_dir / "record.json", record.to_dict())
    if model is not None:
        torch.save(model.state_dict(), cell_dir / "model.pt")


def test_a_cell_with_axes_is_rebuilt_from_its_backbone_and_neck(tmp_path: Path) -> None:
    """A cell id such as vit768-none@stride=16 names no variant; the record's backbone and neck do."""
    trained = _model("vit768-none", 2)
    record = CellRecord("vit768-none@stride=16", "vit768", "none", CellState.DONE, seed=0, settings=trained.settings.to_dict())
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    rebuilt = onnx_export.load_cell_model(record, tmp_path / "model.pt")
    images, cams = trained.example_input(2), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(rebuilt(images, cams), trained.eval()(images, cams))


@needs_onnx
def test_a_runs_done_cells_are_exported_and_expected_and_failed_cells_skipped(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "onnx"
    cells = ["vit768-none", "clip512-ms", "clip512proj-none"]
    meta = RunMeta(RunState.FINISHED, GridRef("t", "t.toml", cells), seeds=[0], device="cpu", dtype="fp32")
    write_json(run_dir / "run.json", meta.to_dict())
    trained = _model("vit768-none", 2)
    _write_cell(run_dir, "vit768-none", CellState.DONE, None, trained)
    _write_cell(run_dir, "clip512-ms", CellState.XFAIL, "expected input[2, 512, 2, 1] to have 768 channels", None)
    _write_cell(run_dir, "clip512proj-none", CellState.FAILED, "RuntimeError: boom", None)
    lines: list[str] = []
    done, xfail, failed = export_run(run_dir, out, batch_sizes=(1, 2), log=lines.append, measure=QUICK)

    assert done["exported"] and (done["status"], done["exporter"]) == ("done", "dynamo") and done["parity"]["ok"]
    assert [(e["batch_size"], e["mode"]) for e in done["latency"]] == [(1, MODE), (2, MODE)]
    assert all("median_ms" in e for e in done["latency"])
    assert json.loads((out / "vit768-none-seed0.json").read_text()) == json.loads(json.dumps(done))
    images, cams = trained.example_input(3), torch.tensor([0, 1, 0])
    with torch.no_grad():  # the exported file holds the run's weights, not a fresh initialisation
        expected = trained(images, cams).numpy()
    assert ort_features(ort_session(Path(done["path"])), images, cams) == pytest.approx(expected, abs=1e-4)

    assert (xfail["status"], xfail["exported"]) == ("xfail", False) and xfail["skipped"].startswith("expected failure (xfail)")
    assert (failed["status"], failed["exported"]) == ("failed", False) and "boom" in failed["skipped"]
    assert sorted(p.name for p in out.iterdir()) == ["vit768-none-seed0.json", "vit768-none-seed0.onnx"]
    assert len(lines) == 3 and "skipped (expected failure (xfail)" in lines[1] and "opset" in lines[0]
    assert export_problems([done, xfail, failed]) == []  # skipped cells are not the export's problems
    assert len(export_problems([{**done, "parity": {**done["parity"], "ok": False}}])) == 1
    assert onnx_table_text(done).startswith("ok (opset ") and onnx_table_text(xfail) == "skipped"
    assert onnx_table_text({**done, "parity": {**done["parity"], "ok": False}}).startswith("parity failure (")


def test_the_export_command_and_bench_runtime_on_a_real_run(tiny_synthetic: Path, tmp_path: Path) -> None:
    """`reidbench export RUN` on what `reidbench run` wrote, and `bench --runtime onnxruntime` beside eager."""
    from typer.testing import CliRunner

    from reidbench.cli import app
    from tiny_run import run_args, write_inputs

    cli = CliRunner()
    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic)
    out = tmp_path / "run"
    assert cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", "--only", "clip512-ms")).exit_code == 0
    exported = cli.invoke(app, ["export", str(out), "--batch-sizes", "1,2"])
    assert exported.exit_code == 0, exported.output
    assert (out / "onnx" / "vit768-none-seed0.onnx").exists() and not (out / "onnx" / "clip512-ms-seed0.onnx").exists()
    result = json.loads((out / "onnx" / "vit768-none-seed0.json").read_text())
    assert result["exported"] and result["parity"]["ok"] and [e["batch_size"] for e in result["latency"]] == [1, 2]
    assert "expected failure" in exported.output
    for args, message in (
        (["--only", "clip512-ms"], "clip512-ms has nothing to export (seed 0: expected failure"),
        (["--only", "vit768-ms"], "vit768-ms: not a cell of this run"),
        (["--out", str(tmp_path / "bench.json")], "is a file; give a folder"),
        (["--out", str(out / "run.json" / "onnx")], "cannot be written"),
    ):
        (tmp_path / "bench.json").write_text("")
        refused = cli.invoke(app, ["export", str(out), *args])
        assert refused.exit_code == 2 and message in refused.output, (args, refused.output)
    bench = cli.invoke(app, ["bench", "--only", "vit768-none", "--device", "cpu", "--set", "depth=1", "--set", "img_size=[32,16]",
                             "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--runtime", "onnxruntime",
                             "--json", str(tmp_path / "bench.json")])
    assert bench.exit_code == 0, bench.output
    (record,) = json.loads((tmp_path / "bench.json").read_text())
    assert {e["mode"] for e in record["latency"]} == {"eager", "onnxruntime"} and record["onnx"]["parity"]["ok"]
    lines = bench.output.splitlines()
    header = next(i for i, line in enumerate(lines) if "ONNX (export / parity)" in line)  # on the console, as in --json
    assert lines[header + 1].lstrip().startswith("vit768-none") and "ok (opset" in lines[header + 1]
