"""`reidbench run` end to end on a tiny synthetic set: run directory, determinism, failures, Ctrl-C and --resume."""
from __future__ import annotations

import json
import statistics
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.harness import runner as runner_module
from reidbench.harness import cell as cell_module
from reidbench.harness.console import summary_line
from reidbench.rundir import RunDir
from reidbench.schema import RESULT_COLUMN_NAMES as RESULT_COLUMNS
from reidbench.harness.trainer import TrainingDiverged
from tiny_run import run_args as tiny_run_args, shorten_long_profile, start_interruptible, wait_for, write_inputs

cli = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("run-inputs"), tiny_synthetic)


def run_args(setup: dict[str, Path], out: Path, *extra: str, profile: str = "profile") -> list[str]:
    return tiny_run_args(setup, out, "--device", "cpu", *extra, profile=profile)


@pytest.fixture(scope="module")
def finished_run(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "first"
    result = cli.invoke(app, run_args(setup, out))
    assert result.exit_code == 0, result.output
    return out


def test_run_directory_holds_everything_a_report_needs(finished_run: Path) -> None:
    meta = json.loads((finished_run / "run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["dataset"]["counts"]["train"]["ids"] == 8 and meta["dataset"]["chance"]["mAP"] > 0
    images = sum(meta["dataset"]["counts"][split]["images"] for split in ("train", "query", "gallery"))
    assert meta["dataset"]["decoded_mib"] == pytest.approx(images * 3 * 32 * 16 / 2**20)  # uint8 RGB at 32x16
    assert meta["dataset"]["cache"]["location"] == "cpu" and "host memory" in meta["dataset"]["cache"]["why"]
    assert meta["cuda_graphs"] is False  # the default off CUDA: the steps train eagerly
    assert meta["settings"]["depth"] == 1 and meta["settings"]["num_classes"] == 8 and meta["settings"]["num_cameras"] == 3
    assert (finished_run / "grid.toml").exists() and (finished_run / "profile.toml").exists()
    env = json.loads((finished_run / "environment.json").read_text())
    assert env["packages"]["torch"] and env["seeds"] == [0] and env["device"] == "cpu"

    table = pd.read_csv(finished_run / "results.csv")
    assert list(table.columns) == RESULT_COLUMNS
    assert list(table["cell"]) == ["vit768-none", "vit768-ms", "clip512-none", "clip512-ms"]
    assert list(table["status"]) == ["done", "done", "done", "xfail"]
    assert "to have 768 channels" in table.set_index("cell").loc["clip512-ms", "error"]
    done = table[table["status"] == "done"]
    assert done[["mAP", "rank1", "mINP", "gmacs", "params"]].notna().all().all()
    assert ((done["mAP"] > 0) & (done["mAP"] <= 1)).all()

    cell = finished_run / "cells" / "vit768-ms" / "seed0"
    record = json.loads((cell / "record.json").read_text())
    assert record["metrics"]["protocol"]["normalized"] is True and record["metrics"]["protocol"]["metric"] == "euclidean"
    assert record["training"]["epochs_done"] == 3 and record["latency"][0]["batch_size"] == 2
    epochs = [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    # The first epoch (warm-up, compile, capture) apart from the speed of the later ones.
    assert record["training"]["first_epoch_seconds"] == epochs[0]["seconds"]
    assert record["training"]["steady_img_per_s"] == statistics.median(e["img_per_s"] for e in epochs[1:])
    row = table.set_index("cell").loc["vit768-ms"]
    assert row["train_img_per_s_steady"] == pytest.approx(record["training"]["steady_img_per_s"])
    assert (cell / "model.pt").exists() and not (cell / "checkpoint.pt").exists()
    assert not list(finished_run.rglob(".*.tmp-*"))


def test_every_done_cell_keeps_every_querys_scores(finished_run: Path) -> None:
    run = RunDir(finished_run)
    num_query = json.loads(run.run_json.read_text())["dataset"]["counts"]["query"]["images"]
    for record in run.records():
        queries = run.read_queries(record.cell, record.seed)
        if record.status != "done":
            assert queries is None, record.cell  # the xfail cell was never evaluated
            continue
        assert set(queries) == {"test"}
        scores, metrics = queries["test"], record.metrics
        assert len(scores.pid) == num_query == metrics["protocol"]["num_query"]
        assert np.nanmean(scores.ap) == pytest.approx(metrics["mAP"], abs=1e-9)
        assert int((~scores.valid).sum()) == metrics["num_skipped_queries"]
        assert (scores.first_rank[scores.valid] <= 5).mean() == pytest.approx(metrics["rank5"])


def test_a_cell_record_says_where_its_wall_time_went(finished_run: Path) -> None:
    record = json.loads((finished_run / "cells" / "vit768-ms" / "seed0" / "record.json").read_text())
    phases = record["phase_seconds"]
    assert list(phases) == ["probe", "train", "evaluate", "measure"] and all(v >= 0 for v in phases.values())
    assert phases["train"] >= record["training"]["seconds"]
    assert sum(phases.values()) <= record["wall_seconds"]
    measures = record["measure_seconds"]  # the measurement steps, in the order they ran
    assert list(measures)[:3] == ["counting FLOPs", "latency at batch 2", "one training step at batch 2"]
    assert sum(measures.values()) <= phases["measure"]
    xfail = json.loads((finished_run / "cells" / "clip512-ms" / "seed0" / "record.json").read_text())
    assert list(xfail["phase_seconds"]) == ["probe"] and xfail["measure_seconds"] == {}


def test_summary_line_names_each_phase() -> None:
    record = {
        "status": "done", "metrics": {"mAP": 0.5, "rank1": 0.6, "mINP": 0.2}, "training": {"seconds": 30.4, "img_per_s": 1700},
        "wall_seconds": 52.2, "phase_seconds": {"probe": 0.6, "train": 31.2, "evaluate": 2.1, "measure": 18.3},
    }
    assert summary_line(record).endswith("cell 52 s (probe 1 s, train 31 s, evaluate 2 s, measure 18 s)")
    assert "after a first epoch" not in summary_line(record)  # eager: the first epoch holds nothing special
    record["training"].update(compiled=True, steady_img_per_s=4295.4, first_epoch_seconds=17.2)
    assert "trained 30 s at 1700 img/s (4295 img/s after a first epoch of 17 s); cell 52 s" in summary_line(record)


def test_same_seed_same_numbers_in_another_process(setup: dict[str, Path], finished_run: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "reidbench", *run_args(setup, tmp_path / "again", "--only", "vit768-ms")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first = json.loads((finished_run / "cells/vit768-ms/seed0/record.json").read_text())
    again = json.loads((tmp_path / "again/cells/vit768-ms/seed0/record.json").read_text())
    assert again["metrics"]["mAP"] == first["metrics"]["mAP"]
    assert again["metrics"]["cmc"] == first["metrics"]["cmc"]
    assert losses(tmp_path / "again") == losses(finished_run)


def losses(run_root: Path) -> list[float]:
    log = run_root / "cells/vit768-ms/seed0/train_log.jsonl"
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def test_interrupted_cell_resumes_from_its_checkpoint_to_the_same_numbers(
    setup, finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "interrupted"
    original = runner_module.execute

    def stop_after_first_epoch(cell: str, seed: int, epoch: int) -> None:
        if cell == "vit768-ms" and epoch == 1:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the cell

    monkeypatch.setattr(
        runner_module, "execute", lambda *args, **kw: original(*args, **{**kw, "on_epoch": stop_after_first_epoch})
    )
    interrupted = cli.invoke(app, run_args(setup, out, "--only", "vit768-none", "--only", "vit768-ms"))
    monkeypatch.undo()
    assert interrupted.exit_code == 130, interrupted.output
    assert f"reidbench run --resume {out}" in interrupted.output
    run = RunDir(out)
    assert json.loads(run.run_json.read_text())["status"] == "interrupted"
    assert run.read_record("vit768-none", 0).status == "done"
    assert run.read_record("vit768-ms", 0).status == "interrupted"
    assert (run.cell_dir("vit768-ms", 0) / "checkpoint.pt").exists()

    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "vit768-none seed 0: done already, skipped" in resumed.output
    record = run.read_record("vit768-ms", 0).to_dict()
    assert record["status"] == "done" and record["training"]["resumed_from_epoch"] == 1
    reference = json.loads((finished_run / "cells/vit768-ms/seed0/record.json").read_text())
    assert record["metrics"]["mAP"] == reference["metrics"]["mAP"]
    assert record["metrics"]["cmc"] == reference["metrics"]["cmc"]
    log = run.cell("vit768-ms", 0).read_train_log()  # epoch 1 came back through the checkpoint, 2 and 3 were appended
    assert [e.epoch for e in log.entries] == [1, 2, 3] and log.skipped == 0
    assert record["training"]["first_epoch_seconds"] == log.entries[1].seconds  # this process's first: epoch 2
    assert record["training"]["steady_img_per_s"] == log.entries[2].img_per_s


def test_resume_refuses_to_switch_graph_replay_on_or_off(finished_run: Path, tmp_path: Path) -> None:
    """The checkpoints hold the optimizer of the way the run trains; a contradicting flag is named, not ignored."""
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    result = cli.invoke(app, ["run", "--resume", str(run), "--cuda-graphs"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "with training steps run eagerly" in result.output and "drop --cuda-graphs" in result.output
    assert cli.invoke(app, ["run", "--resume", str(run), "--no-cuda-graphs", "--no-progress"]).exit_code == 0  # agrees: fine


def test_ctrl_c_in_a_real_process_exits_130_and_resume_finishes(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sigint"
    args = [sys.executable, "-m", "reidbench", *run_args(setup, out, "--only", "vit768-none", profile="long")]
    process = start_interruptible(args)
    checkpoint = out / "cells/vit768-none/seed0/checkpoint.pt"
    wait_for(checkpoint, process)  # the long profile saves after every epoch and ends long after this
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "--resume" in output
    record = RunDir(out).read_record("vit768-none", 0).to_dict()
    assert record["status"] == "interrupted"
    epochs_before = torch.load(checkpoint, weights_only=True)["epoch"]
    shorten_long_profile(out, epochs_before + 1)
    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    final = RunDir(out).read_record("vit768-none", 0).to_dict()
    assert final["status"] == "done" and final["training"]["resumed_from_epoch"] == epochs_before
    assert final["training"]["epochs_done"] == epochs_before + 1


def test_a_diverging_cell_is_failed_and_the_grid_goes_on(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = cell_module.train_model

    def diverge_on_ms(model, *args, **kwargs):
        if model.cell_id == "vit768-ms":
            raise TrainingDiverged("the loss became nan during epoch 1; lower the learning rate")
        return original(model, *args, **kwargs)

    monkeypatch.setattr(cell_module, "train_model", diverge_on_ms)
    result = cli.invoke(app, run_args(setup, tmp_path / "nan", "--only", "vit768-ms", "--only", "vit768-none"))
    assert result.exit_code == 1
    assert "not as expected: vit768-ms seed 0 (failed)" in result.output
    table = pd.read_csv(tmp_path / "nan" / "results.csv").set_index("cell")
    assert table.loc["vit768-ms", "status"] == "failed" and "nan" in table.loc["vit768-ms", "error"]
    assert table.loc["vit768-none", "status"] == "done"


def test_seeds_give_one_row_per_cell_and_seed(setup, tmp_path: Path) -> None:
    result = cli.invoke(app, run_args(setup, tmp_path / "seeds", "--only", "vit768-none", "--seeds", "2"))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "seeds" / "results.csv")
    assert list(table["seed"]) == [0, 1]
    assert table["mAP"].iloc[0] != table["mAP"].iloc[1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "nosuch"], "unknown dataset 'nosuch'"),
        (["--data", "market1501:/nonexistent/market"], "/nonexistent/market"),
        (["--profile", "nosuch"], "unknown profile 'nosuch'"),
        (["--only", "vit768-gem"], "has no cell 'vit768-gem'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--set", "stride=99"], "stride 99 is impossible"),
        (["--cuda-graphs"], "--cuda-graphs needs a CUDA device"),
    ],
)
def test_bad_run_input_exits_2_without_traceback(setup, tmp_path: Path, extra: list[str], message: str) -> None:
    result = cli.invoke(app, [*run_args(setup, tmp_path / "bad"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_resume_of_something_that_is_not_a_run_directory(tmp_path: Path) -> None:
    result = cli.invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a reidbench run directory" in result.output
    result = cli.invoke(app, ["run", "--resume", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_out_must_be_new_or_empty(setup, finished_run: Path) -> None:
    result = cli.invoke(app, run_args(setup, finished_run))
    assert result.exit_code == 2 and "--resume" in result.output


def test_the_run_directory_records_which_weights_each_cell_used(setup, tmp_path: Path) -> None:
    import hashlib

    import timm

    ckpt = tmp_path / "jx_vit_base_p16_224.pth"
    torch.save(timm.create_model("vit_base_patch16_224", pretrained=False, depth=1).state_dict(), ckpt)
    out = tmp_path / "weights"
    result = cli.invoke(app, run_args(setup, out, "--only", "vit768-none", "--only", "clip512-none", "--weights", f"vit768={ckpt}"))
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    loaded = run.read_record("vit768-none", 0).weights
    assert loaded["path"] == str(ckpt) and loaded["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert run.read_record("clip512-none", 0).weights is None
    assert json.loads(run.run_json.read_text())["weights"] == {"vit768": str(ckpt)}


def test_compile_trains_with_compiled_blocks_and_losses_and_measures_eager(setup, tmp_path: Path) -> None:
    """--compile (inductor, on the CPU here): the cell trains and evaluates, the record says it was compiled,
    and the latency the run measures afterwards is the eager model's, as its note says."""
    out = tmp_path / "compiled"
    result = cli.invoke(app, run_args(setup, out, "--only", "vit768-none", "--compile"))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cells" / "vit768-none" / "seed0" / "record.json").read_text())
    assert record["status"] == "done" and 0 < record["metrics"]["mAP"] <= 1
    assert record["training"]["compiled"] is True and record["training"]["graphed"] is False  # no graphs off CUDA
    assert "transformer blocks compiled" in result.output and "replayed as CUDA graphs" not in result.output
    assert json.loads((out / "run.json").read_text())["compile"] is True
    assert any("measured eager" in note for note in record["notes"])
    assert {entry.get("mode", "eager") for entry in record["latency"]} == {"eager"}


def test_a_profile_can_ask_the_run_for_compiled_graph_and_bare_loop_inference(setup, tmp_path: Path) -> None:
    """[measure] compile / cuda_graphs / reference: the run's records carry the modes `bench` would add.
    On the CPU the compiled copy is timed (inductor), the graph modes are skipped with their reason."""
    profile = tmp_path / "modes.toml"
    profile.write_text(setup["profile"].read_text().replace("max_seconds = 0.5", "max_seconds = 0.5\ncompile = true\ncuda_graphs = true\nreference = true"))
    out = tmp_path / "modes"
    result = cli.invoke(app, run_args({**setup, "modes": profile}, out, "--only", "vit768-none", profile="modes"))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cells" / "vit768-none" / "seed0" / "record.json").read_text())
    by_mode = {entry.get("mode", "eager"): entry for entry in record["latency"]}
    assert set(by_mode) == {"eager", "compiled", "graph", "compiled+graph"}
    assert by_mode["compiled"]["median_ms"] > 0 and by_mode["compiled"]["compile_s"] >= 0
    assert "CUDA" in by_mode["graph"]["skipped"]
    assert record["compile"]["backend"] == "inductor" and record["compile"]["seconds"] > 0
    assert [ref["batch_size"] for ref in record["reference"]] == [2] and record["reference"][0]["mean_ms"] > 0
    assert "compiled latency at batch 2" in record["measure_seconds"]
