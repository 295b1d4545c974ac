"""Faults and bad input as an adversarial user meets them: each one's exit code and message, and what is left on disk.

`CATALOGUE` is also the source of docs/faults.md: `python tests/test_faults.py` rewrites that page,
and `test_the_catalogue_in_the_docs_is_this_one` fails when the two differ.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data.synthetic import MultimodalParams, generate_multimodal_synthetic
from reidbench.harness import cell as cell_module
from reidbench.harness import runner as runner_module
from reidbench.harness.lock import DirectoryLock
from reidbench.rundir import RunDir
from tiny_run import run_args, shorten_long_profile, start_interruptible, wait_for, write_inputs

cli = CliRunner()
DOC = Path(__file__).resolve().parents[1] / "docs" / "faults.md"


@dataclass(frozen=True)
class Fault:
    key: str
    what: str
    """The input or fault, in a user's words."""
    how: str
    """The command that meets it (RUN, A, B: run directories)."""
    exit_code: Optional[int]
    """None: met by a Python call, which has no exit code."""
    message: str
    """What reidbench says (a part of its one paragraph)."""


CATALOGUE = [
    Fault("report-out-is-a-run", "a report's --out is another run's directory", "reidbench report A --out B", 2,
          "is a run directory: the report's results.csv would replace the run's own"),
    Fault("out-is-a-file", "--out names an existing file", "reidbench run --out FILE", 2, "is a file; give a folder"),
    Fault("out-not-writable", "--out on a file system that refuses writes", "reidbench run --out /sys/run", 2,
          "may not write there: choose a folder you may write (--out)"),
    Fault("bench-json-not-writable", "bench --json to a path that cannot be written", "reidbench bench --json /sys/b.json", 2,
          "cannot be written"),
    Fault("run-json-wrong-shape", "run.json is valid JSON of the wrong shape ({})", "reidbench status RUN / run --resume RUN", 2,
          "run.json lacks the field 'status'"),
    Fault("record-wrong-shape", "a cell record of the wrong shape ([1], a seed \"zero\", notes 5)", "reidbench status RUN", 0,
          "is damaged"),
    Fault("run-in-use", "a second process continues a run another one is writing", "reidbench run --resume RUN (twice)", 2,
          "is in use by process"),
    Fault("resume-changes-plan", "--resume with an option that would change the run", "reidbench run --resume RUN --seeds 3", 2,
          "--seeds would change it"),
    Fault("deep-toml", "a --set value nested a thousand levels deep", "reidbench run --set depth=[[[...]]]", 2,
          "is not a TOML value"),
    Fault("non-finite-setting", "a setting that is not a finite number", "reidbench run --set camera_embedding_scale=nan", 2,
          "is not a finite number"),
    Fault("deep-grid", "a grid file nested a thousand levels deep", "reidbench run --grid deep.toml", 2, "nests its tables or lists too deeply"),
    Fault("zero-size", "an input size of 0x0", "reidbench run --set img_size=[0,0]", 2, "must be positive on both axes"),
    Fault("weights-not-a-file", "weights that name a device or a pipe", "reidbench run --weights vit768=/dev/zero", 2,
          "is not a regular file (a device, a pipe or a socket)"),
    Fault("no-readable-image", "a dataset whose training images are all unreadable", "reidbench run --data market1501:DIR", 2,
          "could be read"),
    Fault("no-query-match", "a test split in which no query has a match in its gallery", "reidbench run --data market1501:DIR", 2,
          "no query can be scored"),
    Fault("one-identity", "a training split with a single identity", "reidbench run --data market1501:DIR", 2,
          "needs at least 4"),
    Fault("wrong-weights", "a weights file for another network, found when its cell is built", "reidbench run --weights vit768=F",
          2, "does not fit"),
    Fault("sigterm", "SIGTERM while a cell trains (kill, a scheduler's stop)", "kill -TERM PID", 143, "--resume"),
    Fault("corrupt-checkpoint", "a damaged checkpoint.pt", "reidbench run --resume RUN", 1,
          "is damaged and cannot be read"),
    Fault("disk-full", "the disk fills up while a checkpoint is written", "reidbench run", 1, "No space left on device"),
    Fault("gate-batch-not-measured", "a gate on a batch size neither run measured", "reidbench report A --baseline B "
          "--fail-on img_per_s@999:-5%", 2, "batch 999 was not measured in both runs"),
    Fault("gate-batch-zero", "a gate on batch size 0", "reidbench report A --baseline B --fail-on latency_ms@0:+10%", 2,
          "batch 0 is not a batch size"),
    Fault("one-modality-only", "a multi-modal set copied with its RGB folders only", "reidbench run --data rgbnt201:DIR", 2,
          "modality folders are missing"),
    Fault("modality-names-differ", "file names that differ across a multi-modal set's modality folders",
          "reidbench run --data rgbnt201:DIR", 2, "has all three modalities"),
    Fault("modality-unreadable", "a multi-modal sample whose thermal image cannot be read", "reidbench run --data rgbnt201:DIR",
          0, "(1 unreadable, skipped)"),
    Fault("multimodal-grid-on-rgb-data", "the multimodal grid on single-modality data",
          "reidbench run --grid multimodal --data market1501:DIR", 2, "is multi-modal (rgb, nir, tir per sample)"),
    Fault("setting-over-its-limit", "a size-like setting far beyond any machine (k a million, depth 10^8, 200 neck scales)",
          "reidbench run --axis k=1000000,4", 2, "is over its limit of"),
    Fault("cell-too-big-for-memory", "a cell whose parameters, batch and token grid cannot fit in memory",
          "reidbench run --set img_size=[4096,4096] --set stride=1", 2, "estimated before building it"),
    Fault("rerank-huge-features", "re-ranking features scaled by 1e20 (or float64 by 1e200, or by 1e-30)",
          "rerank(qf * 1e20, gf * 1e20)", None, "(the distances of the unscaled features)"),
    Fault("rerank-numpy-extremes", "re-ranking with k1 = np.int64(2**63 - 1) or np.uint64(2**64 - 1)",
          "rerank(qf, gf, k1=np.uint64(2**64 - 1))", None, "(neighbour lists cut to all samples)"),
    Fault("non-utf8-run-name", "a run directory or grid file whose name is not UTF-8 (byte 0xff)",
          "reidbench run --grid grid-\\xff.toml --out run-\\xff", 0, "done — mAP"),
    Fault("events-unwritable", "TensorBoard's event files cannot be written", "reidbench run", 0,
          "TensorBoard event files cannot be written"),
    Fault("axis-the-dataset-dictates", "an axis over a setting the dataset dictates (modalities on RGB data)",
          "reidbench run --axis modalities=[\"rgb\"],[\"rgb\",\"nir\",\"tir\"]", 2, "varies a setting that the dataset dictates"),
    Fault("axis-value-twice", "an axis value given twice in two spellings", "reidbench run --axis lr=1,1.0", 2,
          "lists a value twice"),
    Fault("cell-id-too-long", "axis values that make a cell id too long for a folder name",
          "reidbench run --axis milestones=[1,2,...,89]", 2, "is too long for a folder name"),
    Fault("resume-data-changed", "the data under an interrupted run changed (images deleted, a file replaced; test sets too)",
          "reidbench run --resume RUN", 2, "the data changed since the run used it"),
    Fault("export-weights-a-pipe", "a done cell's model.pt is a pipe (FIFO)", "reidbench export RUN", 1,
          "is not a regular file (a device, a pipe or a socket)"),
    Fault("export-nothing", "no cell can be exported (model.pt deleted)", "reidbench export RUN", 1, "no cell was exported"),
    Fault("disk-full-checkpoint", "the disk fills up under torch.save (its `enforce fail at inline_container.cc`)",
          "reidbench run", 1, "No space left on device: the disk is full. Writing"),
    Fault("synth-disk-full", "the disk fills up while the synthetic set is written", "reidbench data synth --out DIR", 2,
          "Nothing was kept (the partly written set is removed)"),
    Fault("axis-limit-of-the-cell", "an axis value out of range for the cell's own [train] (a 3-epoch profile)",
          "reidbench run --axis warmup_epochs=-3,0", 2, "must be in [0, epochs = 3)"),
    Fault("report-killed-run", "a report on a run whose process was killed (SIGKILL, out of memory)", "reidbench report RUN", 0,
          "it was interrupted; continue it with reidbench run --resume"),
]
FAULTS = {fault.key: fault for fault in CATALOGUE}


def render_catalogue() -> str:
    lines = [
        "# Faults and bad input: exit codes and messages",
        "",
        "Every row is a test in `tests/test_faults.py`, `tests/test_faults_settings.py` or `tests/test_faults_runs.py` (this page is generated from",
        "`tests/test_faults.py`: `python tests/test_faults.py`). Exit codes: 0 fine, 1 a cell failed or passed unexpectedly,",
        "2 bad input, 130 Ctrl-C, 143 SIGTERM; - for a Python call. A message is one paragraph that names the bad input and",
        "the fix, never a traceback; one in parentheses is what the call returns instead.",
        "",
        "| input or fault | met by | exit | reidbench says (part) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {f.what} | `{f.how}` | {'-' if f.exit_code is None else f.exit_code} | {f.message} |" for f in CATALOGUE]
    return "\n".join(lines) + "\n"


def expect(result, key: str) -> None:
    fault = FAULTS[key]
    assert result.exit_code == fault.exit_code, result.output
    assert fault.message in result.output and "Traceback" not in result.output, result.output


def test_the_catalogue_in_the_docs_is_this_one() -> None:
    assert DOC.read_text() == render_catalogue(), "docs/faults.md is stale: run `python tests/test_faults.py`"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("fault-inputs"), tiny_synthetic)


@pytest.fixture(scope="module")
def finished_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fault-runs") / "finished"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none"))
    assert result.exit_code == 0, result.output
    return out


def copy_run(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))


def test_a_report_never_writes_into_another_run(finished_run: Path, tmp_path: Path) -> None:
    other = copy_run(finished_run, tmp_path / "B")
    before = (other / "results.csv").read_bytes()
    expect(cli.invoke(app, ["report", str(finished_run), "--out", str(other)]), "report-out-is-a-run")
    assert (other / "results.csv").read_bytes() == before and not (other / "report.md").exists()


def test_out_that_is_a_file_or_cannot_be_written(inputs, tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    expect(cli.invoke(app, run_args(inputs, file, "--device", "cpu")), "out-is-a-file")
    expect(cli.invoke(app, run_args(inputs, Path("/sys/reidbench-run"), "--device", "cpu")), "out-not-writable")


def test_bench_json_is_checked_before_anything_is_measured(monkeypatch) -> None:
    from reidbench.bench import suite

    monkeypatch.setattr(suite, "bench_cell", lambda *a, **k: pytest.fail("measured before checking --json"))
    expect(cli.invoke(app, ["bench", "--only", "vit768-none", "--device", "cpu", "--json", "/sys/bench.json"]), "bench-json-not-writable")


def test_run_json_of_the_wrong_shape(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    (run / "run.json").write_text("{}")
    expect(cli.invoke(app, ["status", str(run)]), "run-json-wrong-shape")
    expect(cli.invoke(app, ["run", "--resume", str(run)]), "run-json-wrong-shape")
    reported = cli.invoke(app, ["report", str(run), "--out", str(tmp_path / "r")])
    assert reported.exit_code == 0 and "run.json lacks the field 'status'" in reported.output, reported.output


@pytest.mark.parametrize("content, field", [("[1]", "expected a JSON object"), ("seed", "seed is 'zero'"), ("notes", "notes is 5")])
def test_records_of_the_wrong_shape_are_named_by_status_report_and_resume(
    finished_run: Path, tmp_path: Path, content: str, field: str,
) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    path = RunDir(run).record_path("vit768-none", 0)
    record = json.loads(path.read_text())
    path.write_text("[1]" if content == "[1]" else json.dumps({**record, content: "zero" if content == "seed" else 5}))
    status = cli.invoke(app, ["status", str(run)])
    expect(status, "record-wrong-shape")
    assert field in status.output
    reported = cli.invoke(app, ["report", str(run), "--out", str(tmp_path / "r")])
    assert reported.exit_code == 2 and "holds no readable cell record" in reported.output and field in reported.output
    resumed = cli.invoke(app, ["run", "--resume", str(run), "--no-progress"])
    assert resumed.exit_code == 0 and "The cell runs again" in resumed.output, resumed.output
    assert RunDir(run).read_record("vit768-none", 0).status == "done"


def test_a_run_that_another_process_writes_is_refused_naming_it(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    with DirectoryLock(RunDir(run).lock, "run"):
        result = cli.invoke(app, ["run", "--resume", str(run), "--no-progress"])
    expect(result, "run-in-use")
    assert f"process {os.getpid()}" in result.output


def test_resume_refuses_what_would_change_the_run_and_narrows_with_only(inputs, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "planned"
    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "execute", lambda *args, **kwargs: [])  # create the run directory, run nothing
        assert cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", "--only", "clip512-ms")).exit_code == 0
    expect(cli.invoke(app, ["run", "--resume", str(out), "--seeds", "3"]), "resume-changes-plan")
    unknown = cli.invoke(app, ["run", "--resume", str(out), "--only", "vit768-ms"])
    assert unknown.exit_code == 2 and "the run plans no such cell" in unknown.output
    narrowed = cli.invoke(app, ["run", "--resume", str(out), "--only", "clip512-ms", "--no-progress"])
    assert narrowed.exit_code == 0 and "only clip512-ms this time" in narrowed.output, narrowed.output
    assert RunDir(out).read_record("clip512-ms", 0).status == "xfail" and RunDir(out).read_record("vit768-none", 0) is None


def test_deeply_nested_or_non_finite_settings(inputs, tmp_path: Path) -> None:
    deep = "[" * 1000 + "]" * 1000
    expect(cli.invoke(app, run_args(inputs, tmp_path / "a", "--device", "cpu", "--set", f"depth={deep}")), "deep-toml")
    expect(cli.invoke(app, run_args(inputs, tmp_path / "b", "--device", "cpu", "--set", "camera_embedding_scale=nan")), "non-finite-setting")
    expect(cli.invoke(app, run_args(inputs, tmp_path / "c", "--device", "cpu", "--set", "img_size=[0,0]")), "zero-size")
    deep_grid = tmp_path / "deep.toml"
    deep_grid.write_text(f"backbones = {deep}\n")
    expect(cli.invoke(app, run_args({**inputs, "grid": deep_grid}, tmp_path / "d", "--device", "cpu")), "deep-grid")
    expect(cli.invoke(app, run_args(inputs, tmp_path / "e", "--device", "cpu", "--weights", "vit768=/dev/zero")), "weights-not-a-file")
    assert not any((tmp_path / name).exists() for name in "abcde")


def market_copy(source: Path, to: Path) -> Path:
    """The synthetic set's images as a plain Market-1501 folder, for a test to break."""
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.copytree(source / split, to / split)
    return to


def test_bad_data_found_while_decoding_leaves_no_run_directory(inputs, tiny_synthetic: Path, tmp_path: Path) -> None:
    unreadable = market_copy(tiny_synthetic, tmp_path / "unreadable")
    for image in (unreadable / "bounding_box_train").iterdir():
        image.write_bytes(b"not a jpeg")
    expect(cli.invoke(app, market_args(inputs, unreadable, tmp_path / "r1")), "no-readable-image")
    unmatched = market_copy(tiny_synthetic, tmp_path / "unmatched")
    query_ids = {p.name.split("_")[0] for p in (unmatched / "query").iterdir()}
    for image in (unmatched / "bounding_box_test").iterdir():
        if image.name.split("_")[0] in query_ids:
            image.unlink()
    result = cli.invoke(app, market_args(inputs, unmatched, tmp_path / "r2"))
    expect(result, "no-query-match")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def market_args(inputs: dict[str, Path], data: Path, out: Path, *extra: str) -> list[str]:
    return [a if not a.startswith("synthetic:") else f"market1501:{data}" for a in run_args(inputs, out, "--device", "cpu", *extra)]


def test_a_single_training_identity_is_refused_with_the_real_minimum(inputs, tiny_synthetic: Path, tmp_path: Path) -> None:
    data = market_copy(tiny_synthetic, tmp_path / "one-id")
    keep = sorted(p.name.split("_")[0] for p in (data / "bounding_box_train").iterdir())[0]
    for image in (data / "bounding_box_train").iterdir():
        if image.name.split("_")[0] != keep:
            image.unlink()
    result = cli.invoke(app, market_args(inputs, data, tmp_path / "run"))
    expect(result, "one-identity")
    assert "P >= 2" in result.output and not (tmp_path / "run").exists()


def test_weights_for_another_network_fail_the_run_and_its_cell(inputs, tmp_path: Path) -> None:
    import timm

    weights = tmp_path / "deeper.pth"
    torch.save(timm.create_model("vit_base_patch16_224", pretrained=False, depth=2).state_dict(), weights)
    out = tmp_path / "run"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", "--weights", f"vit768={weights}"))
    expect(result, "wrong-weights")
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and "does not fit" in meta["error"]
    assert RunDir(out).read_record("vit768-none", 0).status == "failed"


def test_sigterm_records_the_run_interrupted_and_status_agrees(inputs, tmp_path: Path) -> None:
    out = tmp_path / "terminated"
    process = start_interruptible([sys.executable, "-m", "reidbench", *run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", profile="long")])
    wait_for(out / "cells/vit768-none/seed0/checkpoint.pt", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == FAULTS["sigterm"].exit_code and FAULTS["sigterm"].message in output, output
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert RunDir(out).read_record("vit768-none", 0).status == "interrupted"
    assert "interrupted" in cli.invoke(app, ["status", str(out)]).output


def test_after_sigkill_status_tells_the_process_is_gone(inputs, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = start_interruptible([sys.executable, "-m", "reidbench", *run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", profile="long")])
    wait_for(out / "cells/vit768-none/seed0/checkpoint.pt", process)
    process.kill()
    process.communicate(timeout=60)
    result = cli.invoke(app, ["status", str(out)])
    assert result.exit_code == 0 and f"its process {process.pid}" in result.output and "is gone" in result.output, result.output
    rows = json.loads(cli.invoke(app, ["status", str(out), "--json"]).stdout)["cells"]
    assert rows[0]["state"] == "interrupted" and "--resume" in rows[0]["detail"]
    # What the killed process left half-written goes when the run is continued; another process's file stays.
    stale, live = out / "cells/vit768-none/seed0/.checkpoint.pt.tmp-999999", out / ".grid.toml.tmp-1"  # pid 1 always lives
    stale.write_bytes(b"partial"), live.write_bytes(b"partial")
    shorten_long_profile(out, torch.load(out / "cells/vit768-none/seed0/checkpoint.pt", weights_only=True)["epoch"] + 1)
    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert not stale.exists() and live.exists()


def test_a_damaged_checkpoint_is_named_with_the_way_on(inputs, tmp_path: Path) -> None:
    out = tmp_path / "damaged"
    process = start_interruptible([sys.executable, "-m", "reidbench", *run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", profile="long")])
    checkpoint = out / "cells/vit768-none/seed0/checkpoint.pt"
    wait_for(checkpoint, process)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    checkpoint.write_bytes(b"\x00" * 100)
    result = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    expect(result, "corrupt-checkpoint")
    error = RunDir(out).read_record("vit768-none", 0).error
    assert str(checkpoint) in error and "Delete that file" in error and "weights_only" not in error


def test_a_full_disk_fails_the_cell_and_leaves_no_partial_file(inputs, tmp_path: Path, monkeypatch) -> None:
    from reidbench.runtime import files

    def fill_the_disk(obj, path) -> None:
        Path(path).write_bytes(b"partial checkpoint")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(files.torch, "save", fill_the_disk)
    out = tmp_path / "full"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", "--only", "clip512-ms"))
    expect(result, "disk-full")
    assert RunDir(out).read_record("vit768-none", 0).status == "failed"
    assert RunDir(out).read_record("clip512-ms", 0).status == "xfail"  # the grid went on
    assert not list(out.rglob(".*.tmp-*"))


def test_ctrl_c_while_measuring_keeps_the_training(inputs, finished_run: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "measuring"
    original = cell_module.RunContext.__init__

    def measure_interrupted(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        self.measure = lambda model, record, log: (_ for _ in ()).throw(KeyboardInterrupt())

    with monkeypatch.context() as patch:
        patch.setattr(cell_module.RunContext, "__init__", measure_interrupted)
        assert cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none")).exit_code == 130
    assert (RunDir(out).cell_dir("vit768-none", 0) / "checkpoint.pt").exists()
    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    record, reference = RunDir(out).read_record("vit768-none", 0), RunDir(finished_run).read_record("vit768-none", 0)
    assert record.training["resumed_from_epoch"] == record.training["epochs_done"] == 3  # no epoch trained again
    assert record.metrics["mAP"] == reference.metrics["mAP"]
    assert not (RunDir(out).cell_dir("vit768-none", 0) / "checkpoint.pt").exists()


def test_a_gate_that_would_check_nothing_is_an_error(finished_run: Path, tmp_path: Path) -> None:
    for key, spec in (("gate-batch-not-measured", "img_per_s@999:-5%"), ("gate-batch-zero", "latency_ms@0:+10%")):
        expect(cli.invoke(app, ["report", str(finished_run), "--baseline", str(finished_run), "--out", str(tmp_path / key),
                                "--fail-on", spec]), key)


def test_noisy_latencies_are_marked_and_the_gate_skips_them(finished_run: Path, tmp_path: Path) -> None:
    """The tiny profile times one repeat per batch size: too few to trust, so the report says so and the gate does not judge it."""
    result = cli.invoke(app, ["report", str(finished_run), "--baseline", str(finished_run), "--out", str(tmp_path / "r"),
                              "--fail-on", "latency_ms@2:+1%"])
    assert result.exit_code == 0, result.output
    assert "vit768-none not checked, noisy latency" in result.output and "only 1 repeat(s)" in result.output
    assert "(noisy)" in (tmp_path / "r" / "report.md").read_text()


def test_a_run_directory_whose_name_is_not_utf8_still_reports(finished_run: Path, tmp_path: Path) -> None:
    odd = copy_run(finished_run, Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff")))
    result = cli.invoke(app, ["report", str(odd)])
    assert result.exit_code == 0, result.output
    assert "run-\ufffd" in (odd / "report" / "report.md").read_text()



@pytest.fixture(scope="module")
def tiny_rgbnt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-modal synthetic set in RGBNT201 layout, small enough to train on in seconds."""
    params = MultimodalParams(num_ids_train=6, num_ids_test=4, num_cameras=2, images_per_id_per_camera=2, size=(32, 16))
    return generate_multimodal_synthetic(tmp_path_factory.mktemp("rgbnt") / "set", params)


def rgbnt_copy(source: Path, to: Path, modalities: tuple[str, ...] = ("RGB", "NI", "TI")) -> Path:
    for split in ("train_171", "test"):
        for modality in modalities:
            shutil.copytree(source / split / modality, to / split / modality)
    return to


def multimodal_args(inputs: dict[str, Path], data: str, out: Path) -> list[str]:
    return ["run", "--grid", "multimodal", "--only", "vit768-none", "--profile", str(inputs["profile"]), "--data", data,
            "--out", str(out), "--device", "cpu", "--no-progress"]


def test_multimodal_data_missing_a_modality_or_its_partners_is_refused(inputs, tiny_rgbnt: Path, tmp_path: Path) -> None:
    rgb_only = rgbnt_copy(tiny_rgbnt, tmp_path / "rgb-only", ("RGB",))
    result = cli.invoke(app, multimodal_args(inputs, f"rgbnt201:{rgb_only}", tmp_path / "r1"))
    expect(result, "one-modality-only")
    assert "NI/" in result.output and "TI/" in result.output
    renamed = rgbnt_copy(tiny_rgbnt, tmp_path / "renamed")
    for image in (renamed / "train_171" / "TI").iterdir():
        image.rename(image.with_name("x" + image.name))
    result = cli.invoke(app, multimodal_args(inputs, f"rgbnt201:{renamed}", tmp_path / "r2"))
    expect(result, "modality-names-differ")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_an_unreadable_modality_image_skips_its_sample_and_counts_it(inputs, tiny_rgbnt: Path, tmp_path: Path) -> None:
    data = rgbnt_copy(tiny_rgbnt, tmp_path / "one-bad")
    bad = sorted((data / "train_171" / "TI").iterdir())[0]
    bad.write_bytes(b"not a jpeg")
    result = cli.invoke(app, multimodal_args(inputs, f"rgbnt201:{data}", tmp_path / "run"))
    expect(result, "modality-unreadable")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"]["unreadable"]["train"] == 1 and str(bad) in run["dataset"]["unreadable_examples"][0]
    first = sorted((data / "train_171" / "RGB").iterdir())[0]
    assert f"first unreadable: {first} (UnreadableView: {bad}: " in result.output  # the thermal file is the one named


def test_the_multimodal_grid_refuses_single_modality_data(inputs, tiny_synthetic: Path, tmp_path: Path) -> None:
    result = cli.invoke(app, multimodal_args(inputs, f"market1501:{tiny_synthetic}", tmp_path / "run"))
    expect(result, "multimodal-grid-on-rgb-data")
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    DOC.write_text(render_catalogue())
    print(f"wrote {DOC}")
