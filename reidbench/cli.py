"""The `reidbench` command line: thin wrappers that parse, call the library, and map errors to exit codes."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from reidbench.errors import ReidbenchError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Ablation and benchmarking harness for ReID backbones.",
    pretty_exceptions_enable=False,
)


def _user_errors(command: Callable) -> Callable:
    """A ReidbenchError becomes one paragraph on stderr and its exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ReidbenchError as exc:
            rank = _rank_reporting(exc)
            if rank is not None:
                typer.echo(f"error: {f'(rank {rank}) ' if rank else ''}{exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _log(message: str) -> None:
    if _on_main_rank():
        typer.echo(message, err=True)


def _rank_reporting(exc: ReidbenchError) -> Optional[int]:
    """This process's rank when it should print `exc`, None when rank 0 prints it.

    Under torchrun rank 0 reports every error; another rank only one of its own once
    the ranks are connected. Before that, every rank reads the same arguments and
    files and fails alike, and FailedOnMain is rank 0's error relayed.
    """
    import torch.distributed as dist

    from reidbench.runtime.distributed import FailedOnMain, world_from_env

    world = world_from_env()
    if world.is_main:
        return 0
    if isinstance(exc, FailedOnMain) or not (dist.is_available() and dist.is_initialized()):
        return None
    return world.rank


def _on_main_rank() -> bool:
    """Under torchrun only rank 0 talks: N ranks saying the same line would bury the one that differs."""
    from reidbench.runtime.distributed import world_from_env

    return world_from_env().is_main


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} {text!r} must be a comma-separated list of positive integers, e.g. 1,64.") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{option} {text!r} must be a comma-separated list of positive integers, e.g. 1,64.")
    return values


def parse_overrides(assignments: Optional[List[str]]) -> dict[str, Any]:
    """`--set depth=2 --set img_size=[128,64]`: values are TOML literals."""
    from reidbench.variants.grid import tomllib

    out: dict[str, Any] = {}
    for item in assignments or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} must look like key=value, e.g. --set depth=2 or --set img_size=[128,64].")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise UsageError(f"--set {item!r}: {value!r} is not a TOML value (numbers, true/false, \"strings\", [lists]).") from None
    return out


GRID_HELP = "A built-in grid name (see `reidbench list`) or a path to a TOML grid file."


@app.command()
@_user_errors
def bench(
    grid: str = typer.Option("default", "--grid", help=GRID_HELP),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Measure only this cell (repeatable), e.g. vit768-ms."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Inference batch sizes, e.g. 1,64 (default: 1,64,256 on CUDA, 1,8 on CPU)."),
    train_batch_size: Optional[int] = typer.Option(None, "--train-batch-size", help="Batch of the measured training step (default: 64 on CUDA, 4 on CPU)."),
    train_batch_sizes: Optional[str] = typer.Option(None, "--train-batch-sizes", help="Time the harness's training step (sampler, augmentation, losses, SGD) at these batches, P x 4 each, e.g. 64,128 (default: 64,128 on CUDA, none on CPU; 'none' turns it off)."),
    train_steps: int = typer.Option(20, "--train-steps", help="Timed training steps per batch size (after 5 warm-up steps)."),
    repeats: int = typer.Option(50, "--repeats", help="Timed repeats per batch size (fewer if --max-seconds runs out)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up calls per batch size."),
    max_seconds: float = typer.Option(5.0, "--max-seconds", help="Stop repeating a batch size after this much timed work."),
    reference: bool = typer.Option(False, "--reference", help="Also time a bare library loop of the same network (cells with neck `none`)."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark", help="Let cuDNN autotune convolutions per shape (CUDA only; recorded)."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="Also time a copy with every transformer block torch.compile'd, at every batch size, with its compile time (eager stays the headline)."),
    compile_backend: str = typer.Option("inductor", "--compile-backend", help="torch.compile backend for --compile: inductor, or aot_eager to check tracing quickly."),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="Also time CUDA-graph replay of the whole forward at every batch size, and of whole training steps at every --train-batch-sizes, eager and with --compile compiled (default: on with CUDA, off on CPU; asked for on CPU, recorded as skipped)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a grid setting, e.g. --set depth=2 (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as a JSON list to this file."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="BACKBONE=PATH: a local pretrained checkpoint for that backbone (repeatable; overrides the grid's [weights])."),
) -> None:
    """Measure parameters, FLOPs, latency and memory of every cell; no training."""
    from reidbench.runtime.device import resolve_device, resolve_dtype
    from reidbench.bench.suite import BenchOptions, bench_grid
    from reidbench.reports.tables import bench_table
    from reidbench.variants.grid import load_grid

    loaded = load_grid(grid)
    settings = loaded.settings.with_overrides(parse_overrides(overrides), "--set")
    cells = loaded.select(only)
    torch_device = resolve_device(device)
    cuda = torch_device.type == "cuda"
    if train_batch_size is not None and train_batch_size < 2:
        raise UsageError("--train-batch-size must be at least 2: the BNNeck's batch norm needs two samples in training mode.")
    if train_steps < 1:
        raise UsageError(f"--train-steps {train_steps} must be at least 1.")
    if repeats < 1 or warmup < 0 or max_seconds <= 0:
        raise UsageError("--repeats must be >= 1, --warmup >= 0 and --max-seconds > 0.")
    if compile_:
        from reidbench.runtime.compile import check_backend

        check_backend(compile_backend)
    options = BenchOptions(
        device=torch_device,
        dtype=resolve_dtype(dtype, torch_device),
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes") if batch_sizes else ([1, 64, 256] if cuda else [1, 8]),
        train_batch_size=train_batch_size or (64 if cuda else 4),
        warmup=warmup,
        repeats=repeats,
        max_seconds=max_seconds,
        reference=reference,
        cudnn_benchmark=cudnn_benchmark,
        train_batch_sizes=_train_batch_sizes(train_batch_sizes, cuda),
        train_steps=train_steps,
        compile=compile_,
        compile_backend=compile_backend,
        cuda_graphs=cuda if cuda_graphs is None else cuda_graphs,
    )
    if json_path is not None:
        _check_writable(json_path)
    _log(f"bench: grid {loaded.name} ({loaded.source}), {len(cells)} cell(s), device {options.device}, dtype {options.dtype}, "
         f"depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride}"
         + (f", compiled ({compile_backend})" if compile_ else "") + (", CUDA graphs" if options.cuda_graphs else ""))
    records = [r.to_dict() for r in bench_grid(loaded, cells, options, settings, _log, _merged_weights(loaded, weights))]
    if json_path is not None:
        _write_json(json_path, records)
        _log(f"wrote {json_path}")
    typer.echo(bench_table(records))
    _exit_unless_ok(records)


def _train_batch_sizes(text: Optional[str], cuda: bool) -> list[int]:
    if text is None:
        return [64, 128] if cuda else []
    if text.strip().lower() == "none":
        return []
    sizes = parse_int_list(text, "--train-batch-sizes")
    odd = [s for s in sizes if s % 4 or s < 8]
    if odd:
        raise UsageError(
            f"--train-batch-sizes {text!r}: a training batch is P identities x 4 images with P >= 2, "
            f"so each size must be a multiple of 4 and at least 8 ({', '.join(map(str, odd))} is not)."
        )
    return sizes


@app.command()
@_user_errors
def run(
    grid: str = typer.Option("default", "--grid", help=GRID_HELP),
    data: str = typer.Option("synthetic", "--data", help="synthetic (generated once, cached), market1501:PATH, dukemtmc:PATH, msmt17:PATH or veri776:PATH."),
    profile: str = typer.Option("auto", "--profile", help="auto (full on CUDA, quick elsewhere), quick, full, or a profile .toml file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create (default: runs/<time>-<grid>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory: finished cells are kept, unfinished ones continue from their last checkpoint."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this cell (repeatable)."),
    seeds: int = typer.Option(1, "--seeds", help="Train every cell with seeds 0..N-1."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a variant setting after the profile, e.g. --set stride=12."),
    bars: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="BACKBONE=PATH: a local pretrained checkpoint for that backbone (repeatable; overrides the grid's [weights])."),
    compile_: bool = typer.Option(False, "--compile/--no-compile", help="Train with the backbone's transformer blocks compiled by torch.compile (recorded; compile time counts in the first epoch)."),
    data_cache: str = typer.Option("auto", "--data-cache", help="Where decoded images live: auto (the GPU while they take <= 25% of its free memory, else host memory; if they would take > 80% of the host memory available, decoded per batch by DataLoader workers), device, host or stream."),
    launcher: str = typer.Option("local", "--launcher", help="local (every cell in this process), submitit-local (one local job per cell and seed) or slurm (a Slurm job array)."),
    gpus_per_cell: Optional[int] = typer.Option(None, "--gpus-per-cell", help="GPUs per job; N > 1 trains a cell with N-process DDP (default: 1 on slurm and for CUDA cells, else 0)."),
    cpus_per_cell: Optional[int] = typer.Option(None, "--cpus-per-cell", help="CPU cores per job process (Slurm cpus-per-task; also torch's thread count)."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Job time limit, minutes or HH:MM:SS (required on slurm; a timed-out job is requeued and continues from its checkpoint)."),
    mem_gb: Optional[float] = typer.Option(None, "--mem-gb", help="Memory per job in GB (slurm)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="Slurm partition."),
    slurm_account: Optional[str] = typer.Option(None, "--slurm-account", help="Slurm account."),
    slurm_qos: Optional[str] = typer.Option(None, "--slurm-qos", help="Slurm quality of service."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", help="At most this many jobs at once (default: all)."),
    wait: Optional[bool] = typer.Option(None, "--wait/--no-wait", help="Wait for the jobs, then write results.csv and exit like local (default: wait for submitit-local, not for slurm)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun, batch norm over the whole global batch (SyncBatchNorm; CUDA only; recorded)."),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="Train with every step after three eager ones replayed as one CUDA graph (fused SGD / capturable AdamW; recorded per cell). With --compile the compiled blocks are what the graph records. Default: on for a CUDA device with one process per cell, else off; asking for it elsewhere is an error."),
) -> None:
    """Train, evaluate and measure every cell of a grid; write a run directory.

    Under `torchrun --nproc-per-node N -m reidbench run ...` the N processes train each cell
    together with DDP (global batch P x K, P / N identities per rank); rank 0 alone writes.
    """
    from dataclasses import replace

    from reidbench.runtime.device import resolve_device, resolve_dtype
    from reidbench.profiles import load_profile, resolve_profile_name
    from reidbench.runtime.progress import Progress
    from reidbench.harness.rundir import RunDir, new_run_dir
    from reidbench.harness import runner
    from reidbench.harness.launch import LaunchOptions, check_launch
    from reidbench.runtime.distributed import from_main, init_distributed, main_first, world_from_env
    from reidbench.variants.grid import load_grid

    world = world_from_env()
    progress = Progress(_log, bars if world.is_main else False)
    launch_plan = check_launch(LaunchOptions(
        launcher, gpus_per_cell, cpus_per_cell, time_limit, mem_gb, slurm_partition, slurm_account, slurm_qos, max_parallel, wait,
    ), device)
    if world.distributed and launch_plan.fanned_out:
        raise UsageError(f"--launcher {launcher} starts its own jobs; under torchrun use --launcher local (the default).")
    if resume is not None:
        if launch_plan.fanned_out:
            raise UsageError(f"--resume runs the unfinished cells in this process; drop --launcher {launcher} (run it where the run's device is).")
        if not resume.is_dir():
            raise UsageError(f"--resume {resume}: no such run directory.")
        run_dir = RunDir(resume)
        plan = runner.load_plan(run_dir, None if device == "auto" else resolve_device(device))
        if cuda_graphs is not None and cuda_graphs != plan.cuda_graphs:
            raise UsageError(
                f"--resume {resume} continues the run as it was started, with training steps "
                f"{'replayed as CUDA graphs' if plan.cuda_graphs else 'run eagerly'} (its checkpoints hold that optimizer); "
                f"drop {'--no-cuda-graphs' if plan.cuda_graphs else '--cuda-graphs'}, or start a new run with it."
            )
        plan = replace(plan, device=init_distributed(world, plan.device))
        dataset = main_first(world, lambda: runner.check_plan(plan, world))
        _log(f"resuming {resume}: grid {plan.grid.name}, profile {plan.profile.name}, device {plan.device}")
    else:
        if seeds < 1:
            raise UsageError("--seeds must be at least 1.")
        torch_device = launch_plan.device
        loaded = load_grid(grid)
        profile_name = resolve_profile_name(profile, torch_device)
        loaded_profile = load_profile(profile_name)
        if profile == "auto":
            _log(f"profile auto -> {profile_name} ({'CUDA device found' if torch_device.type == 'cuda' else 'no CUDA device'}): {loaded_profile.description}")
        plan = runner.RunPlan(
            grid=loaded,
            grid_text=_source_text(loaded.source),
            profile=loaded_profile,
            profile_text=_source_text(loaded_profile.source, kind="profile"),
            dataset=data,
            device=torch_device,
            dtype=resolve_dtype(dtype, torch_device),
            seeds=seeds,
            only=list(only or []),
            overrides=parse_overrides(overrides),
            weights=_merged_weights(loaded, weights),
            compile=compile_,
            data_cache=data_cache,
            sync_bn=sync_bn,
            cuda_graphs=cuda_graphs if cuda_graphs is not None else runner.default_cuda_graphs(
                torch_device, launch_plan.cell_world(world)
            ),
        )
        # Connect the ranks once the arguments are known good on every rank (each rank reads them alike).
        plan = replace(plan, device=init_distributed(world, plan.device))
        # Rank 0 first: it may generate the synthetic set into the cache that the others then read.
        dataset = main_first(world, lambda: runner.check_plan(plan, launch_plan.cell_world(world)))

        def create_run_dir() -> Path:
            root = out if out is not None else new_run_dir(Path("runs"), loaded.name)
            if out is not None:
                if out.exists() and any(out.iterdir()):
                    raise UsageError(f"--out {out} already exists and is not empty; choose a new folder, or continue it with --resume {out}.")
                out.mkdir(parents=True, exist_ok=True)
            return runner.start_run(plan, root).root

        run_dir = RunDir(from_main(world, create_run_dir))  # one directory, named by rank 0, for every rank
        _log(f"run {run_dir.root}: grid {loaded.name}, {len(plan.cells)} cell(s) x {seeds} seed(s), profile {profile_name}, device {plan.device}, dtype {plan.dtype}"
             + (f", {world.world_size} processes (DDP)" if world.distributed else "")
             + (", transformer blocks compiled" if plan.compile else "")
             + (", training steps replayed as CUDA graphs (--no-cuda-graphs: eager)" if plan.cuda_graphs else ""))
    if launch_plan.fanned_out:
        return _fan_out(plan, run_dir, dataset, launch_plan)
    try:
        records = runner.execute(plan, run_dir, progress, dataset=dataset, world=world)
    except KeyboardInterrupt:
        _log(f"interrupted: finished cells and the last checkpoint are saved in {run_dir.root}; continue with\n  reidbench run --resume {run_dir.root}")
        raise typer.Exit(130)
    _log(f"results: {run_dir.results_csv}")
    _exit_unless_ok(records)


def _fan_out(plan: Any, run_dir: Any, dataset: Any, launch_plan: Any) -> None:
    """One job per cell and seed; with --wait, the jobs' outcome decides the exit code as for a local run."""
    from reidbench.harness import launch, status

    fanout = launch.fan_out(run_dir, plan, dataset, launch_plan, _log)
    _log(f"{len(fanout.launch['jobs'])} job(s), launcher {launch_plan.launcher}; ids in {run_dir.root / launch.LAUNCH_FILE}, "
         f"logs in {run_dir.root / launch.JOBS_DIR}/; follow them with\n  reidbench status {run_dir.root}")
    if not launch_plan.wait:
        return
    try:
        fanout.wait()
    except KeyboardInterrupt:
        _log(f"stopped waiting: a job that got the Ctrl-C records its cell as interrupted, others go on; see\n  reidbench status {run_dir.root}\n"
             f"and continue unfinished cells with\n  reidbench run --resume {run_dir.root}")
        raise typer.Exit(130)
    result = status.collect(run_dir.root)
    launch.finalize(run_dir, result.rows)
    typer.echo(result.table())
    _log(result.summary())
    _log(f"results: {run_dir.results_csv}")
    _exit_unless_ok([{"cell": r.cell, "seed": r.seed, "status": r.state} for r in result.rows])


@app.command("status")
@_user_errors
def status_(
    run_dir: Path = typer.Argument(..., help="A run directory (made by `reidbench run`, with any launcher)."),
    as_json: bool = typer.Option(False, "--json", help="Print the states as JSON."),
) -> None:
    """Which cells of a run are pending, running (with their epoch), done, xfail or failed (and why), with job ids and logs.

    For a fanned-out run it also brings results.csv, environment.json and run.json up to date with what the jobs wrote, and records as failed a cell whose job ended without saying how it ended.
    """
    from reidbench.harness import launch, status
    from reidbench.harness.rundir import RunDir

    result = status.collect(run_dir)
    notes = []
    if result.launch is not None:
        try:
            notes = launch.finalize(RunDir(run_dir), result.rows)
        except OSError as exc:
            notes = [f"could not update the run-level files ({exc})"]
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(result.table())
        typer.echo(result.summary())
    for note in notes:
        _log(note)


@app.command()
@_user_errors
def report(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory (default: the latest one under ./runs)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Another run directory: show every number's change against it."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.md, report.html, results.csv and the PNGs (default: RUN_DIR/report)."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Regression gate (needs --baseline), e.g. mAP:-1.0,latency_ms:+10%,gflops:+0%: exit 1 when a cell crosses one."),
) -> None:
    """Tables, plots and a comparison from a run directory: Markdown, self-contained HTML and CSV."""
    from reidbench.reports.build import gate_lines, make_report, summary_lines
    from reidbench.reports.compare import parse_fail_on
    from reidbench.reports.load import latest_run

    thresholds = parse_fail_on(fail_on) if fail_on is not None else None
    if thresholds and baseline is None:
        raise UsageError("--fail-on compares against a baseline; add --baseline RUN_DIR (e.g. the main branch's run).")
    if run_dir is None:
        run_dir = latest_run()
        _log(f"report on the latest run: {run_dir}")
    result = make_report(run_dir, out=out, baseline_root=baseline, thresholds=thresholds)
    typer.echo(result.markdown_table)
    for line in summary_lines(result):
        _log(line)
    for line in gate_lines(result, fail_on or ""):
        typer.echo(line)
    if result.crossings:
        raise typer.Exit(1)


data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate the synthetic set, inspect a dataset.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
@_user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic dataset to (new or empty)."),
    seed: int = typer.Option(0, "--seed", help="Generator seed: the same seed writes byte-identical files."),
) -> None:
    """Write the synthetic ReID dataset in Market-1501 layout."""
    from reidbench.data import generate_synthetic, load_synthetic

    generate_synthetic(out, seed=seed)
    typer.echo(load_synthetic(out).describe())


@data_app.command("info")
@_user_errors
def data_info(
    spec: str = typer.Argument(..., help="synthetic, market1501:PATH, dukemtmc:PATH, msmt17:PATH or veri776:PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Identities, images and cameras per split, as the evaluation protocol sees them."""
    from reidbench.data import load_dataset

    dataset = load_dataset(spec)
    if as_json:
        typer.echo(json.dumps({"name": dataset.name, "root": str(dataset.root), "version": dataset.version,
                               "counts": dataset.counts(), "dropped": dataset.dropped}, indent=2))
    else:
        typer.echo(dataset.describe())


def _exit_unless_ok(records: list[dict[str, Any]]) -> None:
    """Exit 1 when any cell ended other than done or xfail (failed, xpass, interrupted), naming them."""
    from reidbench.variants.probe import OK_STATUSES

    bad = [r for r in records if r["status"] not in OK_STATUSES]
    if bad:
        labels = [f"{r['cell']} seed {r['seed']}" if "seed" in r else r["cell"] for r in bad]
        _log("not as expected: " + ", ".join(f"{label} ({r['status']})" for label, r in zip(labels, bad)))
        raise typer.Exit(1)


def _merged_weights(grid: Any, options: Optional[List[str]]) -> dict[str, str]:
    """The grid file's [weights], overridden per backbone by --weights."""
    from reidbench.variants.factory import parse_weights_options

    return {**grid.weights, **{k: str(v) for k, v in parse_weights_options(options or []).items()}}


def _source_text(source: str, kind: str = "grid") -> str:
    """The TOML text behind a grid or profile, copied into the run directory so --resume needs nothing else."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if kind == "grid":
            from reidbench.variants.grid import GRIDS_DIR as folder
        else:
            from reidbench.profiles import PROFILES_DIR as folder
        return (folder / f"{name}.toml").read_text()
    return Path(source).read_text()


@app.command("list")
@_user_errors
def list_(
    grid: Optional[str] = typer.Option(None, "--grid", help="Show one grid's cells and resolved settings."),
) -> None:
    """Show the grids, backbones, necks and settings reidbench knows."""
    from reidbench.variants import BACKBONES, NECKS, builtin_grids, load_grid

    grids = [load_grid(grid)] if grid else [load_grid(name) for name in builtin_grids()]
    for g in grids:
        typer.echo(f"grid {g.name} ({g.source}): {g.description}")
        for cell in g.cells:
            expect = f"  [expected {cell.expect.status}: {cell.expect.reason}]" if cell.expect else ""
            typer.echo(f"  {cell.id}{expect}")
        typer.echo("  settings: " + ", ".join(f"{k}={v}" for k, v in g.settings.to_dict().items()))
    typer.echo("backbones:")
    for entry in BACKBONES:
        typer.echo(f"  {entry.name:<12} {entry.description}")
    typer.echo("necks:")
    for entry in NECKS:
        typer.echo(f"  {entry.name:<12} {entry.description}")


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory; give a file path such as {path / 'bench.json'}.")
    if not path.parent.exists():
        raise UsageError(f"--json {path}: the folder {path.parent} does not exist.")


def _write_json(path: Path, data: Any) -> None:
    """Write to a temporary file and rename, so a killed process never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
