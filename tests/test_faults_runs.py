"""Faults around a run's life on disk: the data changing under a resumed run, a disk filling up, exported weights
that are not files, a killed run, limits quoted from the wrong place. Their catalogue rows are in test_faults.py."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data import load_dataset
from reidbench.data.fingerprint import changes, fingerprint
from reidbench.rundir import RunDir
from reidbench.runtime import files
from test_faults import FAULTS, expect, finished_run, inputs, market_args, market_copy, rgbnt_copy, tiny_rgbnt  # noqa: F401
from tiny_run import run_args

cli = CliRunner()


def move_away(paths: list[Path], to: Path) -> list[tuple[Path, Path]]:
    """Take files out of a dataset (to put them back later): [(where it was, where it is now)]."""
    to.mkdir(parents=True, exist_ok=True)
    moved = [(path, to / f"{i}-{path.name}") for i, path in enumerate(paths)]
    for was, now in moved:
        shutil.move(was, now)
    return moved


def put_back(moved: list[tuple[Path, Path]]) -> None:
    for was, now in moved:
        shutil.move(now, was)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


def test_resume_refuses_data_that_changed_and_keeps_the_facts_it_recorded(inputs, tiny_synthetic: Path, tmp_path: Path) -> None:
    data, test = market_copy(tiny_synthetic, tmp_path / "data"), market_copy(tiny_synthetic, tmp_path / "test")
    run = tmp_path / "run"
    first = cli.invoke(app, market_args(inputs, data, run, "--only", "vit768-none", "--only", "clip512-ms",
                                        "--test-data", f"market1501:{test}"))
    assert first.exit_code == 0, first.output
    shutil.rmtree(RunDir(run).cell_dir("clip512-ms", 0).parent)  # as if interrupted after the first cell
    meta = json.loads((run / "run.json").read_text())
    assert set(meta["dataset"]["fingerprint"]) == {"train", "query", "gallery"}
    assert set(meta["test_sets"][f"market1501:{test}"]["fingerprint"]) == {"query", "gallery"}
    before = snapshot(run)

    train = sorted((data / "bounding_box_train").iterdir())
    one_identity = [p for p in train if p.name.split("_")[0] == train[0].name.split("_")[0]]
    moved = move_away(one_identity + sorted((data / "query").iterdir())[:2], tmp_path / "away")
    result = cli.invoke(app, ["run", "--resume", str(run), "--no-progress"])
    expect(result, "resume-data-changed")
    assert (f"{len(one_identity)} training images and 2 query images are gone; the training set had 8 identities and now has 7"
            in result.output), result.output
    assert snapshot(run) == before  # nothing written: no record of the pending cell, the recorded facts untouched
    put_back(moved)

    gallery = sorted((test / "bounding_box_test").iterdir())[-1]  # not a junk image (-1_...), which the loader drops
    gallery.write_bytes(gallery.read_bytes() + b"\0")  # replaced by a file of another size: the counts alone say nothing
    result = cli.invoke(app, ["run", "--resume", str(run), "--no-progress"])
    expect(result, "resume-data-changed")
    assert f"test set market1501:{test}: gallery files were replaced" in result.output, result.output
    assert snapshot(run) == before


def test_a_run_recorded_before_fingerprints_resumes_with_a_warning(inputs, tiny_synthetic: Path, tmp_path: Path) -> None:
    data = market_copy(tiny_synthetic, tmp_path / "data")
    run = tmp_path / "run"
    assert cli.invoke(app, market_args(inputs, data, run, "--only", "vit768-none", "--only", "clip512-ms")).exit_code == 0
    shutil.rmtree(RunDir(run).cell_dir("clip512-ms", 0).parent)
    meta = json.loads((run / "run.json").read_text())
    del meta["dataset"]["fingerprint"]
    (run / "run.json").write_text(json.dumps(meta))
    result = cli.invoke(app, ["run", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 0 and "cannot be checked" in result.output, result.output
    after = json.loads((run / "run.json").read_text())
    assert after["dataset"] == meta["dataset"] and after["status"] == "finished"
    assert RunDir(run).read_record("clip512-ms", 0).status == "xfail"


def test_a_multimodal_fingerprint_sees_one_modality_file_replaced(tiny_rgbnt: Path, tmp_path: Path) -> None:
    data = rgbnt_copy(tiny_rgbnt, tmp_path / "set")
    recorded = fingerprint(load_dataset(f"rgbnt201:{data}"))
    assert changes(recorded, fingerprint(load_dataset(f"rgbnt201:{data}")), "sample") == []
    thermal = sorted((data / "train_171" / "TI").iterdir())[0]
    thermal.write_bytes(thermal.read_bytes() + b"\0")
    assert changes(recorded, fingerprint(load_dataset(f"rgbnt201:{data}")), "sample") == [
        "training files were replaced (the same names, other sizes)"]
    for image in sorted((data / "test" / "RGB").iterdir())[:1]:
        for modality in ("RGB", "NI", "TI"):
            (data / "test" / modality / image.name).unlink()
    assert changes(recorded, fingerprint(load_dataset(f"rgbnt201:{data}")), "sample") == [
        "1 query sample and 1 gallery sample are gone", "training files were replaced (the same names, other sizes)"]  # RGBNT201's test folder is both


def done_run_copy(finished_run: Path, to: Path) -> Path:
    return Path(shutil.copytree(finished_run, to))


def test_export_refuses_to_open_weights_that_are_a_pipe(finished_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    run = done_run_copy(finished_run, tmp_path / "run")
    model = RunDir(run).cell("vit768-none", 0).model
    model.unlink()
    os.mkfifo(model)
    result = cli.invoke(app, ["export", str(run)])  # hung forever in torch.load before
    expect(result, "export-weights-a-pipe")
    assert str(model) in result.output


def test_export_that_exported_nothing_fails(finished_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    run = done_run_copy(finished_run, tmp_path / "run")
    RunDir(run).cell("vit768-none", 0).model.unlink()
    result = cli.invoke(app, ["export", str(run)])
    expect(result, "export-nothing")
    assert "does not exist" in result.output and not list((run / "onnx").glob("*.onnx"))


TORCH_DISK_FULL = "[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4364"
"""What torch.save raises when the disk fills up under it (a RuntimeError, no errno)."""


@pytest.mark.parametrize("raised", [RuntimeError(TORCH_DISK_FULL), OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_during_a_checkpoint_is_named_with_its_size_and_free_space(inputs, tmp_path: Path, monkeypatch, raised) -> None:
    def fill_the_disk(obj, path) -> None:
        Path(path).write_bytes(b"partial checkpoint")
        raise raised

    monkeypatch.setattr(files.torch, "save", fill_the_disk)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 3 * 2**20, 3 * 2**20))
    out = tmp_path / "full"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none"))
    expect(result, "disk-full-checkpoint")
    error = RunDir(out).read_record("vit768-none", 0).error
    checkpoint = RunDir(out).cell("vit768-none", 0).checkpoint
    assert f"Writing {checkpoint} (about " in error and "MiB) failed with 3.0 MiB free" in error, error
    assert "inline_container" not in error and "Traceback" not in result.output
    assert not list(out.rglob(".*.tmp-*"))


def test_data_synth_on_a_full_disk_names_the_file_and_keeps_nothing(tmp_path: Path, monkeypatch) -> None:
    saved = []

    def fill_the_disk(image, fp, *args, **kwargs) -> None:
        if len(saved) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")  # PIL writes through a file object: no file name
        saved.append(fp)
        original(image, fp, *args, **kwargs)

    original = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", fill_the_disk)
    out = tmp_path / "synth"
    result = cli.invoke(app, ["data", "synth", "--out", str(out)])
    expect(result, "synth-disk-full")
    written = Path(saved[-1])
    assert f"Writing {out / written.parent.name}{os.sep}" in result.output, result.output
    assert "--resume" not in result.output and "a file:" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".*"))  # generation starts over: nothing half-written stays


def test_an_axis_value_is_judged_against_the_cells_own_epochs(inputs, tmp_path: Path) -> None:
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--axis", "warmup_epochs=-3,0"))
    expect(result, "axis-limit-of-the-cell")
    assert "120" not in result.output and not (tmp_path / "run").exists()


def test_report_calls_a_killed_run_s_cell_interrupted_as_status_does(finished_run: Path, tmp_path: Path) -> None:
    run = done_run_copy(finished_run, tmp_path / "run")
    dead = subprocess.Popen(["true"])
    dead.wait()
    meta = json.loads((run / "run.json").read_text())
    meta["status"] = "running"
    meta["owner"] = {"pid": dead.pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00+00:00",
                     "started_unix": 0.0, "start_ticks": 1}
    (run / "run.json").write_text(json.dumps(meta))
    path = RunDir(run).record_path("vit768-none", 0)
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    status = json.loads(cli.invoke(app, ["status", str(run), "--json"]).stdout)["cells"][0]
    assert status["state"] == "interrupted" and "is gone" in status["detail"]
    result = cli.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")])
    expect(result, "report-killed-run")
    frame_status = (tmp_path / "report" / "results.csv").read_text().splitlines()[1]
    assert ",interrupted," in frame_status and ",running," not in frame_status
    text = (tmp_path / "report" / "report.md").read_text()
    assert "status interrupted" in text and "status running" not in text and "| running" not in text
    assert f"its process {dead.pid} on {socket.gethostname()}" in text
