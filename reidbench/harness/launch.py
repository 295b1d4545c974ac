"""Where the cells of a run execute: in this process (`local`), or one job per (cell, seed) with submitit.

`local` is `runner.execute`: every cell in turn, in this process. `submitit-local` and `slurm`
fan the grid out: this process validates the input and creates the run directory exactly as
`local` does, then submits one job per (cell, seed) — a Slurm job array, or one local process
each — that calls `runner.run_one`, which writes only its own cell folder. The job ids go to
launch.json, the job logs to RUN/jobs/. Since no job may write the run-level files, `finalize`
builds them from the cell folders: the waiting parent calls it when the jobs end, and
`reidbench status` calls it for a run nobody waits on.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import submitit
import torch

from reidbench.errors import ReidbenchError, UsageError
from reidbench.harness.cell import MeasureFactory
from reidbench.harness.console import summary_line
from reidbench.harness.plan import RunPlan, resolve_settings
from reidbench.rundir import RunDir
from reidbench.harness.runner import run_one
from reidbench.runtime.device import resolve_device
from reidbench.runtime.distributed import World
from reidbench.runtime.files import now_utc, write_json
from reidbench.runtime.text import first_line
from reidbench.schema import ACTIVE, CellRecord, CellState, RunState

LOCAL, SUBMITIT_LOCAL, SLURM = "local", "submitit-local", "slurm"
LAUNCHERS = (LOCAL, SUBMITIT_LOCAL, SLURM)
LOCAL_TIMEOUT_MIN = 60 * 24 * 365
"""submitit-local kills a job at its timeout (2 minutes unless told); without --time, in effect never."""
RUNNING_JOB, QUEUED_JOB, ENDED_JOB = "running", "queued", "ended"
"""What a scheduler says about a job; None where it cannot be asked (no sacct, another host)."""
SLURM_QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "STAGE_OUT", "SIGNALING"}
FAILED_JOB_DIED = "job ended without a final record"
"""A status row's `reason` when its job is gone and its record never said how the cell ended."""
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""Where the reidbench that runs here is installed or checked out: the jobs import the same one."""


@dataclass(frozen=True)
class LaunchOptions:
    """The `reidbench run` options that say where cells execute, as typed (None: not given)."""

    launcher: str = LOCAL
    gpus_per_cell: Optional[int] = None
    cpus_per_cell: Optional[int] = None
    time: Optional[str] = None
    mem_gb: Optional[float] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    max_parallel: Optional[int] = None
    wait: Optional[bool] = None


@dataclass(frozen=True)
class LaunchPlan:
    """Validated launch options with their defaults filled in, and the device the cells will use."""

    launcher: str
    device: torch.device
    gpus_per_cell: int
    cpus_per_cell: Optional[int]
    timeout_min: Optional[int]
    mem_gb: Optional[float]
    partition: Optional[str]
    account: Optional[str]
    qos: Optional[str]
    max_parallel: Optional[int]
    wait: bool

    @property
    def fanned_out(self) -> bool:
        return self.launcher != LOCAL

    def cell_world(self, here: World) -> World:
        """The processes that will train each cell: N DDP ranks in an N-GPU job, else this process's own world."""
        return World(world_size=self.gpus_per_cell) if self.fanned_out and self.gpus_per_cell > 1 else here

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device": str(self.device)}


def parse_time(text: str) -> int:
    """`--time` as whole minutes: `90`, `1:30:00`, `01:30:00` or `2-00:00:00` (days-hours:minutes:seconds)."""
    match = re.fullmatch(r"\s*(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)\s*", text)
    if text.strip().isdigit():
        minutes = int(text)
    elif match:
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        minutes = ((days * 24 + hours) * 60 + mins) + (1 if secs else 0)
    else:
        minutes = 0
    if minutes < 1:
        raise UsageError(
            f"--time {text!r} is not a time limit: give minutes (e.g. --time 90) or HH:MM:SS (e.g. --time 01:30:00; "
            "D-HH:MM:SS for days), at least one minute."
        )
    return minutes


def check_launch(options: LaunchOptions, device: str) -> LaunchPlan:
    """Every launch option checked before a run directory exists; raises UsageError naming the bad one."""
    o = options
    if o.launcher not in LAUNCHERS:
        raise UsageError(f"unknown launcher {o.launcher!r}; choose {', '.join(LAUNCHERS)} (--launcher local runs the cells in this process).")
    if o.gpus_per_cell is not None and o.gpus_per_cell < 0:
        raise UsageError(f"--gpus-per-cell {o.gpus_per_cell} is impossible; give 0 (CPU-only cells), 1, or N > 1 for N-GPU DDP per cell.")
    for name, value in (("--cpus-per-cell", o.cpus_per_cell), ("--max-parallel", o.max_parallel), ("--mem-gb", o.mem_gb)):
        if value is not None and value <= 0:
            raise UsageError(f"{name} {value} is impossible; give a positive number, or leave it out.")
    if o.launcher == LOCAL:
        if o.gpus_per_cell is not None and o.gpus_per_cell > 1:
            raise UsageError(
                f"--gpus-per-cell {o.gpus_per_cell} trains each cell on {o.gpus_per_cell} GPUs with DDP, which --launcher local "
                f"cannot start from one process; run `torchrun --nproc-per-node {o.gpus_per_cell} -m reidbench run ...` instead, "
                "or fan out with --launcher slurm / submitit-local."
            )
        given = [name for name, value in _fanout_only(o) if value is not None]
        if given:
            raise UsageError(f"{_are(given)} for jobs, and --launcher local starts none; add --launcher submitit-local or --launcher slurm, or drop {'it' if len(given) == 1 else 'them'}.")
        return LaunchPlan(LOCAL, resolve_device(device), o.gpus_per_cell or 0, None, None, None, None, None, None, None, True)
    if o.launcher == SUBMITIT_LOCAL:
        given = [name for name, value in _slurm_only(o) if value is not None]
        if given:
            raise UsageError(f"{_are(given)} for Slurm jobs only; drop {'it' if len(given) == 1 else 'them'}, or use --launcher slurm.")
        torch_device = resolve_device(device)
        gpus = o.gpus_per_cell if o.gpus_per_cell is not None else int(torch_device.type == "cuda")
        wait = True if o.wait is None else o.wait
        if o.max_parallel is not None and not wait:
            raise UsageError("--max-parallel with --launcher submitit-local needs --wait: the waiting process starts each next job.")
    else:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise UsageError(
                f"--launcher slurm needs Slurm's {' and '.join(missing)} on PATH, and this machine has none; run reidbench on a "
                "login node of the cluster (after `module load slurm` where that applies), or use --launcher submitit-local."
            )
        if o.time is None:
            raise UsageError("--launcher slurm needs --time (minutes or HH:MM:SS): Slurm kills a job at its limit, and a guess would be wrong either way.")
        gpus = o.gpus_per_cell if o.gpus_per_cell is not None else (0 if device == "cpu" else 1)
        torch_device = _slurm_device(device, gpus)
        wait = bool(o.wait)
    if torch_device.type == "cuda" and gpus == 0:
        raise UsageError(f"--device {device} with --gpus-per-cell 0 would give the jobs no GPU; give --gpus-per-cell 1 or more, or --device cpu.")
    return LaunchPlan(
        o.launcher, torch_device, gpus, o.cpus_per_cell, parse_time(o.time) if o.time is not None else None,
        o.mem_gb, o.partition, o.account, o.qos, o.max_parallel, wait,
    )


def _are(names: list[str]) -> str:
    return f"{names[0]} is" if len(names) == 1 else f"{', '.join(names)} are"


def _slurm_only(o: LaunchOptions) -> list[tuple[str, Any]]:
    return [("--slurm-partition", o.partition), ("--slurm-account", o.account), ("--slurm-qos", o.qos), ("--mem-gb", o.mem_gb)]


def _fanout_only(o: LaunchOptions) -> list[tuple[str, Any]]:
    return [*_slurm_only(o), ("--time", o.time), ("--cpus-per-cell", o.cpus_per_cell), ("--max-parallel", o.max_parallel),
            ("--wait/--no-wait", o.wait)]


def _slurm_device(name: str, gpus: int) -> torch.device:
    """The device inside the jobs, not here: a login node has no GPU, the compute nodes do."""
    if name == "auto":
        return torch.device("cuda" if gpus > 0 else "cpu")
    if name == "cpu" or name == "cuda" or name.startswith("cuda:"):
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda.")


def executor_parameters(plan: LaunchPlan, run: RunDir) -> dict[str, Any]:
    """submitit AutoExecutor parameters: one process per GPU of a cell (DDP), all on one node."""
    tasks = max(plan.gpus_per_cell, 1)
    # The jobs import the reidbench this process runs, wherever it is installed (or checked out).
    package_root = shlex.quote(str(PACKAGE_ROOT))
    setup = [f'export PYTHONPATH={package_root}"${{PYTHONPATH:+:$PYTHONPATH}}"']
    params: dict[str, Any] = {
        "name": f"reidbench-{run.root.name}",
        "timeout_min": plan.timeout_min or LOCAL_TIMEOUT_MIN,
        "nodes": 1,
        "tasks_per_node": tasks,
        "gpus_per_node": plan.gpus_per_cell,
        "cpus_per_task": plan.cpus_per_cell,
    }
    if plan.launcher == SLURM:
        params.update({
            "mem_gb": plan.mem_gb, "slurm_partition": plan.partition, "slurm_account": plan.account,
            "slurm_qos": plan.qos, "slurm_array_parallelism": plan.max_parallel, "slurm_setup": setup,
        })
        if plan.gpus_per_cell == 0:
            del params["gpus_per_node"]
    else:
        params["local_setup"] = setup
    return {k: v for k, v in params.items() if v is not None}


class CellJob(submitit.helpers.Checkpointable):
    """The callable each job runs. Checkpointable: on a timeout or preemption submitit requeues
    the same call, and `runner.run_one` continues the cell from its last epoch checkpoint."""

    def __call__(self, run_root: str, cell_id: str, seed: int, measurer: MeasureFactory, threads: Optional[int] = None) -> dict[str, Any]:
        return run_cell_job(run_root, cell_id, seed, measurer, threads)


def run_cell_job(run_root: str, cell_id: str, seed: int, measurer: MeasureFactory, threads: Optional[int] = None) -> dict[str, Any]:
    """One (cell, seed) inside a submitit job; with several tasks (GPUs) per job, each task is one DDP rank.

    The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) are exported
    from the job's own ranks, so the run code sees what `torchrun` would give it; every GPU of the
    node stays visible and LOCAL_RANK picks one, as under torchrun.

    The call's pickled arguments are plain values and reidbench functions, so unpickling needs no
    plugin; `run_one` imports the run's recorded plugins (`load_plan`) before it reads the grid or
    builds a cell. Input the job finds bad (a plugin missing on this node) becomes the cell's
    failed record, so that `status` shows why instead of "ended without a final record".
    """
    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if threads:
        torch.set_num_threads(threads)
    job = {"launcher": SLURM if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else SUBMITIT_LOCAL,
           "job_id": env.job_id, "host": env.hostname}
    try:
        record = run_one(run_root, cell_id, seed, measurer, job=job)
    except ReidbenchError as exc:
        _record_job_failure(RunDir(Path(run_root)), cell_id, seed, exc)
        raise
    return {"cell": cell_id, "seed": seed, "status": record.status.value, "error": record.error}


def _record_job_failure(run: RunDir, cell_id: str, seed: int, exc: ReidbenchError) -> None:
    """A failed record for a cell whose job stopped before the cell wrote one (a cell that started keeps its own)."""
    if os.environ.get("RANK", "0") != "0" or _readable_record(run, cell_id, seed) is not None:
        return
    backbone, neck = cell_id.split("@")[0].split("-", 1)  # ids are <backbone>-<neck>[@axes]; backbones hold no '-'
    run.write_record(CellRecord(cell_id, backbone, neck, CellState.FAILED, seed=seed, error=f"the job could not start the cell: {exc}",
                                finished=now_utc()))


class Fanout:
    """The jobs of one run: submitted all at once (a Slurm array with --max-parallel as its
    throttle), or --max-parallel at a time for submitit-local, where the waiting process starts
    each next one. Every submission is recorded in launch.json before anything waits on it."""

    def __init__(
        self, run: RunDir, plan: LaunchPlan, slots: list[tuple[str, int]], measurer: MeasureFactory, log: Callable[[str], None],
    ) -> None:
        self.run, self.plan, self.log, self.measurer = run, plan, log, measurer
        self.parameters = executor_parameters(plan, run)
        self.executor = submitit.AutoExecutor(folder=run.jobs_dir, cluster="slurm" if plan.launcher == SLURM else "local")
        self.executor.update_parameters(**self.parameters)
        self.jobs: dict[tuple[str, int], Any] = {}
        self.queue = list(slots)
        self.launch = {
            "launcher": plan.launcher, "folder": run.jobs_dir.name, "host": socket.gethostname(), "submitted": now_utc(),
            "options": plan.to_dict(), "parameters": self.parameters,
            "jobs": [{"cell": c, "seed": s, "job_id": None, "submitted": None} for c, s in slots],
        }

    def submit(self) -> None:
        """Submit what may start now: everything on Slurm, up to --max-parallel live jobs locally."""
        free = len(self.queue)
        if self.plan.launcher == SUBMITIT_LOCAL and self.plan.max_parallel is not None:
            free = max(self.plan.max_parallel - sum(not job.done() for job in self.jobs.values()), 0)
        batch, self.queue = self.queue[:free], self.queue[free:]
        if not batch:
            return
        root = str(self.run.root.resolve())
        try:
            jobs = self.executor.map_array(
                CellJob(), [root] * len(batch), [c for c, _ in batch], [s for _, s in batch], [self.measurer] * len(batch),
                [self.plan.cpus_per_cell] * len(batch),
            )
        except submitit.core.utils.FailedJobError as exc:
            raise UsageError(
                f"the scheduler refused the jobs of {self.run.root} ({first_line(str(exc)) or 'no message'}); check the "
                "--slurm-* options, --time and --gpus-per-cell against what the cluster offers (sinfo), then run again."
            ) from None
        stamp = now_utc()
        for slot, job in zip(batch, jobs):
            self.jobs[slot] = job
            entry = next(e for e in self.launch["jobs"] if (e["cell"], e["seed"]) == slot)
            entry.update(job_id=str(job.job_id), submitted=stamp)
            self.log(f"submitted {slot[0]} seed {slot[1]}: job {job.job_id}")
        write_json(self.run.launch_json, self.launch)

    def wait(self, poll_s: Optional[float] = None) -> None:
        """Until every job has ended, starting queued ones as slots free up; logs each cell as it ends."""
        poll_s = poll_s or (30.0 if self.plan.launcher == SLURM else 0.5)
        reported: set[tuple[str, int]] = set()
        while True:
            ended = {slot for slot, job in self.jobs.items() if job.done()}
            for cell, seed in sorted(ended - reported):
                record = _readable_record(self.run, cell, seed)
                ended_well = record is not None and record.status != CellState.RUNNING
                self.log(f"{cell} seed {seed}: {summary_line(record.to_dict()) if ended_well else FAILED_JOB_DIED}")
            reported |= ended
            self.submit()
            if not self.queue and len(reported) == len(self.jobs):
                return
            time.sleep(poll_s)


def _readable_record(run: RunDir, cell: str, seed: int) -> Any:
    try:
        return run.read_record(cell, seed)
    except UsageError:
        return None


def job_states(run: RunDir, launch: dict[str, Any]) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """job id -> (RUNNING_JOB / QUEUED_JOB / ENDED_JOB or None where it cannot be found out cheaply,
    Slurm's own word for it such as PENDING, TIMEOUT or OUT_OF_MEMORY, or None)."""
    ids = [e["job_id"] for e in launch.get("jobs", []) if e.get("job_id")]
    if launch.get("launcher") == SLURM:
        words = _slurm_states(ids)
        return {job_id: (_slurm_kind(words.get(job_id)), words.get(job_id)) for job_id in ids}
    same_host = launch.get("host") == socket.gethostname()
    return {job_id: (_local_state(run, job_id) if same_host else None, None) for job_id in ids}


def _slurm_states(ids: list[str]) -> dict[str, str]:
    """One `sacct` call for all the arrays; {} when sacct is missing, slow or fails."""
    arrays = sorted({job_id.split("_")[0] for job_id in ids})
    if not arrays or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "-o", "JobID,State", "--parsable2", *[arg for a in arrays for arg in ("-j", a)]]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    info = SlurmInfoWatcher().read_info(output)
    return {job_id: info[job_id]["State"].split()[0] for job_id in ids if info.get(job_id, {}).get("State")}


def _slurm_kind(state: Optional[str]) -> Optional[str]:
    if state is None:
        return None
    return QUEUED_JOB if state in SLURM_QUEUED else RUNNING_JOB if state in SLURM_RUNNING else ENDED_JOB


def _local_state(run: RunDir, job_id: str) -> str:
    """A local job is its controller process (the job id is its pid): alive, or ended; a pid that
    now belongs to another program, or a zombie nobody reaped, counts as ended."""
    if job_paths(run, job_id).result_pickle.exists() or not job_id.isdigit():
        return ENDED_JOB
    proc = Path("/proc") / job_id
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            alive = stat.rsplit(")", 1)[1].split()[0] != "Z" and b"submitit" in (proc / "cmdline").read_bytes()
        except OSError:
            alive = False
        return RUNNING_JOB if alive else ENDED_JOB
    try:
        os.kill(int(job_id), 0)
    except ProcessLookupError:
        return ENDED_JOB
    except PermissionError:
        pass
    return RUNNING_JOB


def job_paths(run: RunDir, job_id: str) -> Any:
    """submitit's file names for a job (task 0): log.out, log.err, result pickle, under RUN/jobs/."""
    return submitit.core.utils.JobPaths(run.jobs_dir, job_id, 0)


def finalize(run: RunDir, rows: list[Any]) -> list[str]:
    """Bring the run-level files of a fanned-out run up to date with its cell folders; returns what changed.

    A cell whose record still says running although its job has ended (killed, out of memory,
    node failure) is recorded as failed, naming the job's log: the job can no longer write it,
    and --resume runs it again. results.csv is rewritten when a record is newer than it;
    environment.json and run.json's dataset facts come from the first job that wrote them (each
    job's own, from its own node, stays in its cell folder); once no cell is pending or running,
    run.json says finished. A file is written only when it changes: `report` takes the run whose
    run.json or results.csv changed last as the latest, and looking must not make a run latest.
    """
    changes = []
    for row in rows:
        if row.reason == FAILED_JOB_DIED and (record := _readable_record(run, row.cell, row.seed)) is not None:
            record.status, record.error, record.finished = CellState.FAILED, row.detail, now_utc()
            run.write_record(record)
            changes.append(f"{row.cell} seed {row.seed} recorded as failed")
    meta = run.meta()
    before = meta.to_dict()
    cells = meta.grid.cells
    job = next((j for c in cells for s in meta.seeds if (j := run.read_job(c, s))), None)
    if job is not None and not run.environment_json.exists():
        write_json(run.environment_json, {**job["environment"], "fanned_out": True})
        changes.append("environment.json written")
    if job is not None and "counts" not in meta.dataset:
        meta.dataset = job["dataset"]
    if meta.status != RunState.FINISHED and not any(row.state in ACTIVE for row in rows):
        meta.status, meta.finished = RunState.FINISHED, now_utc()
        changes.append("run.json says finished")
    if meta.to_dict() != before:
        write_json(run.run_json, meta.to_dict())
    csv = run.results_csv
    if not csv.exists() or any(r.stat().st_mtime >= csv.stat().st_mtime for r in run.record_paths()):
        run.write_results(cells)
        changes.append(f"{csv.name} rewritten")
    return changes


def fan_out(
    run: RunDir, plan: RunPlan, dataset: Any, launch_plan: LaunchPlan, measurer: MeasureFactory, log: Callable[[str], None],
) -> Fanout:
    """Submit one job per (cell, seed) of a freshly started run directory; returns the Fanout (to wait on).

    The settings go into run.json now (they cost nothing to resolve); the dataset facts and the
    environment need the images decoded and the job's own machine, so `finalize` adds them later.
    """
    meta = run.meta()
    meta.settings = resolve_settings(plan, dataset).to_dict()
    write_json(run.run_json, meta.to_dict())
    fanout = Fanout(run, launch_plan, [(c.id, s) for c in plan.cells for s in plan.cell_seeds(c.id)], measurer, log)
    fanout.submit()
    return fanout
