"""`reidbench run --launcher submitit-local|slurm`: one job per cell and seed, launch.json, waiting, and bad launch options."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.harness import launch
from reidbench.runtime.distributed import World, world_from_env
from reidbench.rundir import RunDir
from reidbench.bench.suite import run_measurer
from reidbench.schema import CellRecord, CellState
from tiny_run import LONG_EPOCHS, run_args, write_inputs

cli = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("launch-inputs"), tiny_synthetic)


def test_submitit_local_runs_two_cells_at_once_with_the_numbers_of_a_local_run(inputs, tmp_path: Path) -> None:
    out = tmp_path / "fanned"
    only = ["--only", "vit768-none", "--only", "vit768-ms"]
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--launcher", "submitit-local", "--cpus-per-cell", "1", *only))
    assert result.exit_code == 0, result.output
    run = RunDir(out)

    launched = json.loads((out / "launch.json").read_text())
    assert launched["launcher"] == "submitit-local"
    assert [(j["cell"], j["seed"]) for j in launched["jobs"]] == [("vit768-none", 0), ("vit768-ms", 0)]
    ids = [j["job_id"] for j in launched["jobs"]]
    assert all(ids) and len(set(ids)) == 2
    for job_id in ids:
        assert f"job {job_id}" in result.output and (out / "jobs" / f"{job_id}_0_log.err").exists()

    # Two jobs ran at the same time: each cell started before the other one finished.
    a, b = run.read_record("vit768-none", 0).to_dict(), run.read_record("vit768-ms", 0).to_dict()
    assert a["status"] == b["status"] == "done"
    jobs = [json.loads((run.cell_dir(c, 0) / "job.json").read_text()) for c in ("vit768-none", "vit768-ms")]
    assert {j["job_id"] for j in jobs} == set(ids) and jobs[0]["pid"] != jobs[1]["pid"]
    (start_a, end_a), (start_b, end_b) = [(j["started_unix"], j["started_unix"] + r["wall_seconds"]) for j, r in zip(jobs, (a, b))]
    assert start_a < end_b and start_b < end_a
    assert jobs[0]["environment"]["torch_threads"] == 1  # --cpus-per-cell

    # The waiting parent built the run-level files from the cell folders.
    table = pd.read_csv(out / "results.csv")
    assert list(table["cell"]) == ["vit768-none", "vit768-ms"] and list(table["status"]) == ["done", "done"]
    meta = json.loads(run.run_json.read_text())
    assert meta["status"] == "finished" and meta["dataset"]["counts"]["train"]["ids"] == 8 and meta["settings"]["depth"] == 1
    assert json.loads(run.environment_json.read_text())["device"] == "cpu"
    assert not list(out.rglob(".*.tmp-*"))

    status = cli.invoke(app, ["status", str(out)])
    assert status.exit_code == 0, status.output
    assert "2 done" in status.output and "mAP" in status.output
    report = cli.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "report.md").exists() and "vit768-ms" in report.output

    # A fanned-out cell is the same computation as a cell run in this process.
    local = cli.invoke(app, run_args(inputs, tmp_path / "local", "--device", "cpu", "--only", "vit768-none"))
    assert local.exit_code == 0, local.output
    assert RunDir(tmp_path / "local").read_record("vit768-none", 0).metrics == a["metrics"]


def test_max_parallel_starts_the_next_job_when_one_ends(inputs, tmp_path: Path) -> None:
    out = tmp_path / "one-at-a-time"
    args = ["--device", "cpu", "--launcher", "submitit-local", "--max-parallel", "1", "--only", "clip512-ms", "--seeds", "2"]
    result = cli.invoke(app, run_args(inputs, out, *args))
    assert result.exit_code == 0, result.output
    output = result.output
    assert output.index("clip512-ms seed 0: xfail") < output.index("submitted clip512-ms seed 1")
    assert "clip512-ms seed 1: xfail" in output
    assert all(j["job_id"] for j in json.loads((out / "launch.json").read_text())["jobs"])


def fake_slurm(bin_dir: Path, states: str) -> None:
    """sbatch that keeps the script it was given and answers like Slurm; srun (submitit wants it); sacct printing `states`."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" "{bin_dir}/submitted-script.sh"\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 0\n",
        "sacct": f"#!/bin/sh\nprintf 'JobID|State\\n{states}\\n'\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_slurm_submits_one_array_and_status_asks_sacct(inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir, "4242_[0-1]|PENDING")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "slurm"
    args = ["--launcher", "slurm", "--slurm-partition", "gpu", "--time", "01:30:00", "--gpus-per-cell", "2",
            "--max-parallel", "1", "--mem-gb", "32", "--slurm-account", "lab", "--only", "vit768-none", "--only", "vit768-ms"]
    result = cli.invoke(app, run_args(inputs, out, *args))
    assert result.exit_code == 0, result.output
    assert f"reidbench status {out}" in result.output

    script = (bin_dir / "submitted-script.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --array=0-1%1", "#SBATCH --mem=32GB", "#SBATCH --account=lab", f"{out}/jobs/%A_%a_0_log.err"):
        assert line in script, line
    launched = json.loads((out / "launch.json").read_text())
    assert [j["job_id"] for j in launched["jobs"]] == ["4242_0", "4242_1"]
    assert launched["parameters"]["timeout_min"] == 90 and launched["parameters"]["slurm_partition"] == "gpu"
    assert json.loads((out / "run.json").read_text())["device"] == "cuda"  # the jobs' device; this machine has none
    assert json.loads((out / "run.json").read_text())["cuda_graphs"] is False  # 2-process DDP cells train eagerly

    pending = cli.invoke(app, ["status", str(out)])
    assert pending.exit_code == 0, pending.output
    assert "2 pending" in pending.output and "queued (Slurm: PENDING)" in pending.output

    fake_slurm(bin_dir, "4242_0|FAILED\n4242_1|RUNNING")
    later = json.loads(cli.invoke(app, ["status", str(out), "--json"]).stdout)
    rows = {r["cell"]: r for r in later["cells"]}
    assert rows["vit768-none"]["state"] == "failed" and "before the cell started" in rows["vit768-none"]["detail"]
    assert rows["vit768-none"]["log"] == "jobs/4242_0_0_log.err" and "Slurm: FAILED" in rows["vit768-none"]["detail"]
    assert rows["vit768-ms"]["state"] == "running"
    assert later["status"] == "running"  # one job still runs, so the run is not finished


def test_one_gpu_slurm_cells_train_with_graph_replay_by_default(inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decided where the jobs are submitted (a login node has no GPU) from the jobs' device and processes."""
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir, "4242_[0]|PENDING")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for extra, graphs in (([], True), (["--no-cuda-graphs"], False)):
        out = tmp_path / f"slurm-{graphs}"
        result = cli.invoke(app, run_args(inputs, out, "--launcher", "slurm", "--time", "60", "--only", "vit768-none", *extra))
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "run.json").read_text())
        assert meta["device"] == "cuda" and meta["cuda_graphs"] is graphs


def test_a_refused_submission_is_one_paragraph(inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    fake_slurm(bin_dir, "")
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "sbatch: error: invalid partition specified: nosuch" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = cli.invoke(app, run_args(inputs, tmp_path / "refused", "--launcher", "slurm", "--time", "10", "--slurm-partition", "nosuch"))
    assert result.exit_code == 2, result.output
    assert "the scheduler refused the jobs" in result.output and "invalid partition specified: nosuch" in result.output
    assert "Traceback" not in result.output


def test_a_killed_local_job_is_failed_and_names_its_log(inputs, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = ["--device", "cpu", "--launcher", "submitit-local", "--no-wait", "--only", "vit768-none"]
    result = cli.invoke(app, run_args(inputs, out, *args, profile="long"))
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    log, job_file = run.cell_dir("vit768-none", 0) / "train_log.jsonl", run.cell_dir("vit768-none", 0) / "job.json"
    pid = None
    try:
        deadline = time.monotonic() + 180
        while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        running = cli.invoke(app, ["status", str(out)])
        assert "running" in running.output and "epoch " in running.output and f"/{LONG_EPOCHS}" in running.output, running.output

        pid = json.loads(job_file.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # what the OOM killer or a lost node does: no chance to write a record
        rows = []
        while time.monotonic() < deadline:
            rows = json.loads(cli.invoke(app, ["status", str(out), "--json"]).stdout)["cells"]
            if rows[0]["state"] != "running":
                break
            time.sleep(0.2)
    finally:
        if pid is None and job_file.exists():
            pid = json.loads(job_file.read_text())["pid"]
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    job_id = json.loads((out / "launch.json").read_text())["jobs"][0]["job_id"]
    assert rows[0]["state"] == "failed" and "ended without a final record" in rows[0]["detail"]
    assert rows[0]["log"] == f"jobs/{job_id}_0_log.err" and (out / rows[0]["log"]).exists()
    # status wrote down what it found: the record, results.csv and run.json agree with it.
    assert run.read_record("vit768-none", 0).status == "failed"
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["failed"]
    assert json.loads(run.run_json.read_text())["status"] == "finished"
    # Looking again changes nothing, so it does not make this run the latest one for `reidbench report`.
    files = (run.run_json, run.results_csv, run.record_path("vit768-none", 0))
    stamps = [(f.stat().st_mtime_ns, f.read_bytes()) for f in files]
    assert cli.invoke(app, ["status", str(out)]).exit_code == 0
    assert [(f.stat().st_mtime_ns, f.read_bytes()) for f in files] == stamps


def test_gpus_per_cell_2_trains_one_cell_with_two_ddp_processes(inputs, tmp_path: Path) -> None:
    """Two tasks in one local job (gloo on the CPU): the cell is trained by a 2-process world, and rank 0 alone writes."""
    out = tmp_path / "ddp"
    args = ["--device", "cpu", "--launcher", "submitit-local", "--gpus-per-cell", "2", "--cpus-per-cell", "1", "--only", "vit768-none"]
    result = cli.invoke(app, run_args(inputs, out, *args))
    assert result.exit_code == 0, result.output
    record = RunDir(out).read_record("vit768-none", 0).to_dict()
    assert record["status"] == "done" and record["distributed"]["world_size"] == 2 and record["distributed"]["backend"] == "gloo"
    job_id = json.loads((out / "launch.json").read_text())["jobs"][0]["job_id"]
    assert (out / "jobs" / f"{job_id}_1_log.err").exists()  # the second rank's own log
    assert json.loads((out / "environment.json").read_text())["distributed"]["world_size"] == 2


def test_a_multi_gpu_cell_must_split_its_batch_over_the_ranks(inputs, tmp_path: Path) -> None:
    args = ["--device", "cpu", "--launcher", "submitit-local", "--gpus-per-cell", "3"]
    result = cli.invoke(app, run_args(inputs, tmp_path / "never", *args))
    assert result.exit_code == 2, result.output
    assert "cannot be split over 3 processes" in result.output and not (tmp_path / "never").exists()


@pytest.mark.parametrize("tasks", [1, 2])
def test_a_multi_gpu_job_exports_the_torchrun_variables(tasks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Task 1 of a local job: the runner must see RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* as under torchrun."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "unset")  # so that undo removes what the job exports, not only restores
        monkeypatch.delenv(name)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    task = tasks - 1
    for key, value in {"EXECUTOR": "local", "LOCAL_JOB_ID": "777", "LOCAL_NTASKS": str(tasks), "LOCAL_JOB_NUM_NODES": "1",
                       "LOCAL_NODEID": "0", "LOCAL_GLOBALID": str(task), "LOCAL_LOCALID": str(task)}.items():
        monkeypatch.setenv(f"SUBMITIT_{key}", value)
    seen = {}

    def fake_run_one(run_root: str, cell_id: str, seed: int, measurer, job: dict) -> CellRecord:
        seen.update(environ=dict(os.environ), world=world_from_env(), job=job, measurer=measurer)
        return CellRecord(cell_id, "vit768", "none", CellState.DONE, seed=seed)

    monkeypatch.setattr(launch, "run_one", fake_run_one)
    assert launch.run_cell_job("RUN", "vit768-none", 0, run_measurer)["status"] == "done"
    assert seen["measurer"] is run_measurer
    assert seen["job"]["job_id"] == "777" and seen["job"]["launcher"] == "submitit-local"
    if tasks == 1:
        assert seen["world"] == World() and "WORLD_SIZE" not in seen["environ"]
        return
    env = seen["environ"]
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("1", "2", "1")
    assert env["MASTER_ADDR"] == socket.gethostname() and env["MASTER_PORT"].isdigit()
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # every GPU stays visible; LOCAL_RANK picks one, as under torchrun
    assert seen["world"] == World(rank=1, world_size=2, local_rank=1)


@pytest.mark.parametrize("text, minutes", [("90", 90), ("01:30:00", 90), ("1:30:00", 90), ("0:00:30", 1), ("2-00:00:00", 2880)])
def test_time_takes_minutes_or_hh_mm_ss(text: str, minutes: int) -> None:
    assert launch.parse_time(text) == minutes


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--launcher", "pbs"], "unknown launcher 'pbs'"),
        (["--launcher", "submitit-local", "--time", "90x"], "--time '90x' is not a time limit"),
        (["--launcher", "submitit-local", "--time", "0"], "at least one minute"),
        (["--launcher", "submitit-local", "--time", "1:30"], "HH:MM:SS"),
        (["--gpus-per-cell", "2"], "torchrun --nproc-per-node 2 -m reidbench run"),
        (["--launcher", "submitit-local", "--gpus-per-cell", "-1"], "--gpus-per-cell -1 is impossible"),
        (["--launcher", "submitit-local", "--slurm-partition", "gpu"], "--slurm-partition is for Slurm jobs only"),
        (["--max-parallel", "2"], "--max-parallel is for jobs, and --launcher local starts none"),
        (["--launcher", "submitit-local", "--max-parallel", "0"], "--max-parallel 0 is impossible"),
        (["--launcher", "submitit-local", "--max-parallel", "1", "--no-wait"], "needs --wait"),
    ],
)
def test_bad_launch_options_exit_2_before_any_run_directory(inputs, tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "never"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", *extra))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_slurm_without_sbatch_says_where_to_run(inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli.invoke(app, run_args(inputs, tmp_path / "never", "--launcher", "slurm", "--time", "60"))
    assert result.exit_code == 2
    assert "needs Slurm's sbatch and srun on PATH" in result.output and "login node" in result.output


def test_resume_with_a_job_launcher_is_refused(tmp_path: Path) -> None:
    result = cli.invoke(app, ["run", "--resume", str(tmp_path), "--launcher", "submitit-local", "--device", "cpu"])
    assert result.exit_code == 2 and "drop --launcher submitit-local" in result.output
