"""The `reidbench` command line: thin wrappers that parse, call the library, and map errors to exit codes."""
from __future__ import annotations

import errno
import functools
import json
import sys
from dataclasses import replace
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
                typer.echo(_printable(f"error: {f'(rank {rank}) ' if rank else ''}{exc}"), err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno not in FILE_SYSTEM_ERRORS:
                raise
            resumable = RESUMABLE if command.__name__ == "run" and exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            typer.echo(f"error: {exc.filename or 'a file'}: {exc.strerror}. {FILE_SYSTEM_ERRORS[exc.errno]}{resumable}", err=True)
            raise typer.Exit(2) from None

    return wrapper


FILE_SYSTEM_ERRORS = {
    errno.ENOSPC: "The disk is full: free space (or choose --out on another disk), then run again.",
    errno.EDQUOT: "The disk quota is used up: free space (or choose --out on another disk), then run again.",
    errno.EROFS: "That file system is read-only: choose a writable folder (--out), then run again.",
    errno.EACCES: "reidbench may not write there: choose a folder you may write (--out), or fix the permissions.",
    errno.EPERM: "reidbench may not write there: choose a folder you may write (--out), or fix the permissions.",
    errno.EISDIR: "That is a folder where a file was expected: give a file path.",
    errno.ENOTDIR: "A part of that path is a file, not a folder: fix the path.",
    errno.ENAMETOOLONG: "The name is too long for the file system: choose a shorter path.",
}
"""File-system errors a user fixes by changing the disk or the path: one paragraph and exit 2, not a traceback."""
RESUMABLE = " An interrupted run continues with --resume."
"""Said after a full disk by `run` alone: the one command that continues where it stopped."""


def _log(message: str) -> None:
    if _on_main_rank():
        typer.echo(_printable(message), err=True)


def _printable(text: str) -> str:
    from reidbench.runtime.text import printable

    return printable(text)


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


GRID_HELP = "A built-in grid name (see `reidbench list`) or a path to a TOML grid file."
WEIGHTS_HELP = ("BACKBONE=SPEC: a local pretrained checkpoint for that backbone, or a name (timm/ARCH.TAG, an open_clip tag such "
                "as openai, hf-hub:ORG/REPO\\[/FILE]\\[@REVISION]) fetched into the Hugging Face cache (repeatable; overrides the grid's \\[weights]).")
PRETRAINED_HELP = ("Every backbone starts from its upstream weights (`reidbench list` shows which), fetched into the Hugging Face "
                   "cache; \\[weights] and --weights win for the backbones they name. Default: as the grid says (pretrained = true).")

IMPORT_HELP = ("Import this plugin module first, for the backbones and necks it registers (repeatable): a module name "
               "(from sys.path, then the current directory) or a path to a .py file. Installed reidbench.plugins entry points "
               "are always imported.")


def _plugins(imports: Optional[List[str]], *runs: Optional[Path]) -> None:
    """Import the entry-point plugins, `--import`'s modules, then those each run directory's run.json records."""
    from reidbench.harness.plan import import_run_plugins
    from reidbench.runtime.plugins import import_plugins

    import_plugins(imports or [])
    for run_dir in runs:
        if run_dir is not None:
            import_run_plugins(run_dir)


def _bench_help(text: str, name: str) -> str:
    """`text` with the option's default, as bench/options.py states it (never restated here)."""
    from reidbench.bench.options import default_text

    return f"{text} (default: {default_text(name)})."


@app.command()
@_user_errors
def bench(
    grid: str = typer.Option("default", "--grid", help=GRID_HELP),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Measure only this cell (repeatable), e.g. vit768-ms."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help=_bench_help("Inference batch sizes, e.g. 1,64", "batch_sizes")),
    train_batch_size: Optional[int] = typer.Option(None, "--train-batch-size", help=_bench_help("Batch of the measured training step", "train_batch_size")),
    train_batch_sizes: Optional[str] = typer.Option(None, "--train-batch-sizes", help=_bench_help("Time the harness's training step (sampler, augmentation, losses, SGD) at these batches, P x 4 each, e.g. 64,128; 'none' turns it off", "train_batch_sizes")),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help=_bench_help("Timed training steps per batch size (after 5 warm-up steps)", "train_steps")),
    repeats: Optional[int] = typer.Option(None, "--repeats", help=_bench_help("Timed repeats per batch size (fewer if --max-seconds runs out)", "repeats")),
    warmup: Optional[int] = typer.Option(None, "--warmup", help=_bench_help("Untimed warm-up calls per batch size", "warmup")),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help=_bench_help("Stop repeating a batch size after this many seconds of timed work", "max_seconds")),
    reference: bool = typer.Option(False, "--reference", help=_bench_help("Also time a bare library loop of the same network (cells with neck `none`)", "reference")),
    cudnn_benchmark: Optional[bool] = typer.Option(None, "--cudnn-benchmark/--no-cudnn-benchmark", help=_bench_help("Let cuDNN autotune convolutions per shape (CUDA only; recorded)", "cudnn_benchmark")),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=_bench_help("Also time a copy with every transformer block torch.compile'd, at every batch size, with its compile time (eager stays the headline)", "compile")),
    compile_backend: Optional[str] = typer.Option(None, "--compile-backend", help=_bench_help("torch.compile backend for --compile: inductor, or aot_eager to check tracing quickly", "compile_backend")),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help=_bench_help("Also time CUDA-graph replay of the whole forward at every batch size, and of whole training steps at every --train-batch-sizes, eager and with --compile compiled (asked for on CPU: recorded as skipped)", "cuda_graphs")),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a grid setting, e.g. --set depth=2 (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as a JSON list to this file."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help=PRETRAINED_HELP),
    axis: Optional[List[str]] = typer.Option(None, "--axis", help="KEY=V1,V2: add an axis to the grid (any variant setting; repeatable), e.g. --axis stride=12,16."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="eager (the default), or onnxruntime: also export each cell to ONNX, check parity with PyTorch and time it under ONNX Runtime (CPU) beside eager."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Measure parameters, FLOPs, latency and memory of every cell; no training."""
    from reidbench.bench.options import BenchOptions
    from reidbench.bench.suite import bench_grid
    from reidbench.harness.console import cells_line
    from reidbench.harness.plan import check_axes, merged_weights, parse_axes, parse_overrides
    from reidbench.profiles import split_sets
    from reidbench.reports.tables import bench_table
    from reidbench.runtime.device import resolve_device, resolve_dtype
    from reidbench.runtime.files import write_json
    from reidbench.variants.grid import load_grid

    _plugins(imports)
    loaded = load_grid(grid)
    cli_axes = parse_axes(axis or [])
    loaded = loaded.with_axes(cli_axes, "--axis") if cli_axes else loaded
    check_axes(loaded)  # bench trains nothing, but a misspelled axis is still an error
    given_settings, tables = split_sets(parse_overrides(overrides or []))
    if tables:
        raise UsageError(f"bench --set takes variant settings (e.g. --set depth=2); {', '.join(f'{t}.*' for t in tables)} "
                         "belongs to a run's profile, and bench has none: its own options (--batch-sizes, --repeats, ...) say how it measures.")
    settings = loaded.settings.with_overrides(given_settings, "--set")
    cells = loaded.select(only)
    _log(cells_line(loaded, cells, 1))
    torch_device = resolve_device(device)
    options = BenchOptions.of(
        torch_device, resolve_dtype(dtype, torch_device), batch_sizes=parse_int_list(batch_sizes, "--batch-sizes") if batch_sizes else None,
        train_batch_size=train_batch_size, repeats=repeats, warmup=warmup, max_seconds=max_seconds, compile=compile_,
        reference=reference or None, cuda_graphs=cuda_graphs, runtime=runtime, cudnn_benchmark=cudnn_benchmark,
        train_batch_sizes=_train_batch_sizes(train_batch_sizes), train_steps=train_steps, compile_backend=compile_backend,
    )
    if json_path is not None:
        _check_writable(json_path)
    _log(f"bench: grid {loaded.name} ({loaded.source}), {len(cells)} cell(s), device {options.device}, dtype {options.dtype}, "
         f"depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride}"
         + (f", compiled ({options.compile_backend})" if options.compile else "") + (", CUDA graphs" if options.cuda_graphs else ""))
    records = [r.to_dict() for r in bench_grid(loaded, cells, options, given_settings, _log, merged_weights(loaded, weights or [], pretrained, only or []))]
    typer.echo(bench_table(records))  # first: a file that can no longer be written costs the JSON, not the table
    if json_path is not None:
        write_json(json_path, records)
        _log(f"wrote {json_path}")
    _exit_unless_ok(records)


def _train_batch_sizes(text: Optional[str]) -> Optional[list[int]]:
    """--train-batch-sizes as given: None when left out (the device's default), [] for 'none'."""
    if text is None or text.strip().lower() == "none":
        return None if text is None else []
    return parse_int_list(text, "--train-batch-sizes")


@app.command()
@_user_errors
def run(
    grid: Optional[str] = typer.Option(None, "--grid", help=GRID_HELP + " Default: default."),
    data: Optional[str] = typer.Option(None, "--data", help="synthetic (the default; generated once, cached), synthetic-rgbnt (multi-modal), market1501:PATH, "
                                       "dukemtmc:PATH, msmt17:PATH, veri776:PATH, rgbnt201:PATH, rgbnt100:PATH or msvr310:PATH; "
                                       "default: the grid's own data, else synthetic."),
    profile: Optional[str] = typer.Option(None, "--profile", help="auto (the default: full on CUDA, quick elsewhere), quick, full, or a profile .toml file."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (the default: bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create (default: runs/<time>-<grid>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory: finished cells are kept, unfinished ones continue from their last checkpoint."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this cell (repeatable)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="N: train every cell with N seeds, 0..N-1 (default 1; S..S+N-1 with --first-seed S). auto[:MAX]: 3 seeds, then one more per round "
                                        "to each cell whose 95% interval of mAP is wider than --precision, up to MAX (default 10); it stops on precision, "
                                        "never on a p-value (stopping on significance inflates false positives)."),
    precision: Optional[float] = typer.Option(None, "--precision", help="With --seeds auto: the half-width of a cell's 95% interval of mean mAP over seeds, "
                                              "in points, at which it needs no more seeds (default 2.0)."),
    first_seed: Optional[str] = typer.Option(None, "--first-seed", help="S: the seeds start at S instead of 0: --seeds N trains seeds S..S+N-1 and --seeds auto "
                                             "starts its rounds at S (e.g. --first-seed 5 --seeds 5: fresh seeds 5-9 to replicate a result chosen on seeds 0-4). Recorded; --resume keeps it."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="KEY=VALUE (a TOML value; repeatable): a variant setting, e.g. --set stride=12, or a key of the profile's model, train, eval or measure table, e.g. --set train.epochs=5 or --set eval.rerank=true; over the profile and recipe, recorded, cell ids unchanged."),
    bars: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help=PRETRAINED_HELP),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Train with the backbone's transformer blocks compiled by torch.compile (recorded; compile time counts in the first epoch)."),
    data_cache: Optional[str] = typer.Option(None, "--data-cache", help="Where decoded images live: auto (the GPU while they take <= 25% of its free memory, else host memory; if they would take > 80% of the host memory available, decoded per batch by DataLoader workers), device, host or stream."),
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
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn", help="Under torchrun, batch norm over the whole global batch (SyncBatchNorm; CUDA only; recorded)."),
    axis: Optional[List[str]] = typer.Option(None, "--axis", help="KEY=V1,V2: add an axis to the grid (a variant or \\[train] setting; repeatable), e.g. --axis stride=12,16 or --axis lr=0.008,0.004."),
    test_data: Optional[List[str]] = typer.Option(None, "--test-data", help="Also evaluate every trained cell on this dataset's query and gallery (repeatable; cross-domain), e.g. dukemtmc:PATH or synthetic:seed=1 (another synthetic world)."),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="Train with every step after three eager ones replayed as one CUDA graph (fused SGD / capturable AdamW; recorded per cell). With --compile the compiled blocks are what the graph records. Default: on for a CUDA device with one process per cell, else off; asking for it elsewhere is an error."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve and print the whole plan (cells, seeds, each cell's initialisation, recipe and why, every setting), then exit: nothing is trained, no image decoded, no run directory created."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the plan as JSON."),
) -> None:
    """Train, evaluate and measure every cell of a grid; write a run directory.

    Under `torchrun --nproc-per-node N -m reidbench run ...` the N processes train each cell
    together with DDP (global batch P x K, P / N identities per rank); rank 0 alone writes.
    """
    from reidbench.harness.launch import LaunchOptions, check_launch
    from reidbench.harness.plan import RunRequest
    from reidbench.harness.runner import prepare_run
    from reidbench.runtime.distributed import world_from_env
    from reidbench.runtime.progress import Progress
    from reidbench.runtime.signals import interrupt_on_sigterm

    _plugins(imports)
    world = world_from_env()
    launch_plan = check_launch(LaunchOptions(
        launcher, gpus_per_cell, cpus_per_cell, time_limit, mem_gb, slurm_partition, slurm_account, slurm_qos, max_parallel, wait,
    ), device)
    if world.distributed and launch_plan.fanned_out:
        raise UsageError(f"--launcher {launcher} starts its own jobs; under torchrun use --launcher local (the default).")
    request = RunRequest(grid, data, profile, dtype, seeds, tuple(only or ()), tuple(overrides or ()), tuple(weights or ()),
                         compile_, data_cache, sync_bn, cuda_graphs, tuple(test_data or ()), tuple(axis or ()), pretrained=pretrained, precision=precision, imports=tuple(imports or ()),
                         first_seed=first_seed)
    if as_json and not dry_run:
        raise UsageError("run --json prints a dry run's plan; add --dry-run (a run's results are in its run directory's results.csv).")
    if dry_run:
        return _dry_run(request, launch_plan, world, resume, as_json)
    progress = Progress(_log, bars if world.is_main else False)
    interrupt_on_sigterm()
    if resume is not None:
        plan, run_dir, dataset = _resume_run(resume, request, device, launch_plan, world)
        prepared = None
    else:
        plan, dataset = _new_plan(request, launch_plan, world)
        # Decoded before the run directory exists: input found bad now leaves nothing behind.
        prepared = None if launch_plan.fanned_out else prepare_run(plan, progress, dataset, world)
        run_dir = _new_run_dir(out, plan, world)
    if launch_plan.fanned_out:
        return _fan_out(plan, run_dir, dataset, launch_plan)
    _execute(plan, run_dir, prepared, dataset, progress, world)


def _dry_run(request: Any, launch_plan: Any, world: Any, resume: Optional[Path], as_json: bool) -> None:
    from reidbench.harness.dryrun import describe_plan, plan_text
    from reidbench.harness.plan import check_plan, new_plan

    if resume is not None:
        raise UsageError("--dry-run resolves a new run's plan; drop --resume (a run directory's plan is in its run.json).")
    plan = new_plan(request, launch_plan.device, launch_plan.cell_world(world))
    described = describe_plan(plan, check_plan(plan, launch_plan.cell_world(world)))
    typer.echo(json.dumps(described, indent=2) if as_json else _printable(plan_text(described)))


def _resume_run(resume: Path, request: Any, device: str, launch_plan: Any, world: Any) -> tuple[Any, Any, Any]:
    from dataclasses import replace

    from reidbench.harness.plan import check_plan, resume_plan
    from reidbench.harness.runner import check_resumed_data
    from reidbench.rundir import RunDir
    from reidbench.runtime.device import resolve_device
    from reidbench.runtime.distributed import init_distributed, main_first

    if launch_plan.fanned_out:
        raise UsageError(f"--resume runs the unfinished cells in this process; drop --launcher {launch_plan.launcher} (run it where the run's device is).")
    if not resume.is_dir():
        raise UsageError(f"--resume {resume}: no such run directory.")
    run_dir = RunDir(resume)
    plan = resume_plan(run_dir, request, None if device == "auto" else resolve_device(device))
    plan = replace(plan, device=init_distributed(world, plan.device))
    dataset = main_first(world, lambda: check_plan(plan, world))
    for warning in check_resumed_data(run_dir, plan, dataset):
        _log(warning)
    only = f", only {', '.join(plan.now_only)} this time" if plan.now_only else ""
    _log(f"resuming {resume}: grid {plan.grid.name}, profile {plan.profile.name}, device {plan.device}{only}")
    return plan, run_dir, dataset


def _new_plan(request: Any, launch_plan: Any, world: Any) -> tuple[Any, Any]:
    from dataclasses import replace

    from reidbench.harness.console import cells_line
    from reidbench.harness.plan import check_plan, new_plan
    from reidbench.runtime.distributed import init_distributed, main_first

    plan = new_plan(request, launch_plan.device, launch_plan.cell_world(world))
    if plan.auto_seeds is not None and launch_plan.fanned_out:
        raise UsageError("--seeds auto decides each round from the last one's results, in this process; use --launcher local, or --seeds N.")
    _log(cells_line(plan.grid, plan.cells, plan.seeds))
    if (request.profile or "auto") == "auto":
        _log(f"profile auto -> {plan.profile.name} ({'CUDA device found' if plan.device.type == 'cuda' else 'no CUDA device'}): {plan.profile.description}")
    # Connect the ranks once the arguments are known good on every rank (each rank reads them alike).
    plan = replace(plan, device=init_distributed(world, plan.device))
    # Rank 0 first: it may generate the synthetic set into the cache that the others then read.
    return plan, main_first(world, lambda: check_plan(plan, launch_plan.cell_world(world)))


def _new_run_dir(out: Optional[Path], plan: Any, world: Any) -> Any:
    from reidbench.harness.console import run_header
    from reidbench.harness.plan import create_run_dir, start_run
    from reidbench.runtime.distributed import from_main

    run_dir = from_main(world, lambda: start_run(plan, create_run_dir(out, plan.grid.name)))  # one directory, named by rank 0
    _log(run_header(plan, run_dir.root, world))
    return run_dir


def _execute(plan: Any, run_dir: Any, prepared: Any, dataset: Any, progress: Any, world: Any) -> None:
    from reidbench.bench.suite import run_measurer
    from reidbench.harness import runner
    from reidbench.runtime.signals import exit_code

    measure = run_measurer(plan.profile.measure, plan.device, plan.dtype)
    try:
        records = runner.execute(plan, run_dir, progress, measure, prepared=prepared, dataset=dataset, world=world)
    except KeyboardInterrupt as stop:
        _log(f"interrupted: finished cells and the last checkpoint are saved in {run_dir.root}; continue with\n  reidbench run --resume {run_dir.root}")
        raise typer.Exit(exit_code(stop))
    _log(f"results: {run_dir.results_csv}")
    _exit_unless_ok([r.to_dict() for r in records])


def _fan_out(plan: Any, run_dir: Any, dataset: Any, launch_plan: Any) -> None:
    """One job per cell and seed; with --wait, the jobs' outcome decides the exit code as for a local run."""
    from reidbench.harness import launch, status

    from reidbench.bench.suite import run_measurer

    fanout = launch.fan_out(run_dir, plan, dataset, launch_plan, run_measurer, _log)
    _log(f"{len(fanout.launch['jobs'])} job(s), launcher {launch_plan.launcher}; ids in {run_dir.launch_json}, "
         f"logs in {run_dir.jobs_dir}/; follow them with\n  reidbench status {run_dir.root}")
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
    _exit_unless_ok([{"cell": r.cell, "seed": r.seed, "status": r.state.value} for r in result.rows])


@app.command("status")
@_user_errors
def status_(
    run_dir: Path = typer.Argument(..., help="A run directory (made by `reidbench run`, with any launcher)."),
    as_json: bool = typer.Option(False, "--json", help="Print the states as JSON."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Which cells of a run are pending, running (with their epoch), done, xfail or failed (and why), with job ids and logs.

    For a fanned-out run it also brings results.csv, environment.json and run.json up to date with what the jobs wrote, and records as failed a cell whose job ended without saying how it ended.
    """
    from reidbench.harness import launch, status
    from reidbench.rundir import RunDir

    _plugins(imports, run_dir)
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
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Regression gate (needs --baseline), e.g. mAP:-1.0,latency_ms:+10%,gflops:+0%: exit 1 when a cell's change, with its whole 95% interval, lies beyond one."),
    fail_on_strict: bool = typer.Option(False, "--fail-on-strict", help="Gate --fail-on on the plain difference of means, without intervals."),
    compare_pairs: Optional[List[str]] = typer.Option(None, "--compare", help="Also test A against B, e.g. --compare clip512proj-ms,vit768-ms (repeatable); joins the grid's declared comparisons."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Take the declared comparisons (\\[compare]) from this grid (a built-in name or a .toml file) instead of the run's grid.toml; for a folder that kept only a run's results.csv."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
    rank_lists: bool = typer.Option(True, "--rank-lists/--no-rank-lists", help="Draw each cell's rank lists (the default); --no-rank-lists leaves the section out and the dataset unopened, e.g. for a CI gate that reads only the verdicts."),
) -> None:
    """Tables, plots and a comparison from a run directory: Markdown, self-contained HTML and CSV."""
    from reidbench.reports.build import gate_lines, make_report, summary_lines
    from reidbench.reports.compare import parse_fail_on
    from reidbench.reports.load import latest_run

    thresholds = parse_fail_on(fail_on) if fail_on is not None else None
    if thresholds and baseline is None:
        raise UsageError("--fail-on compares against a baseline; add --baseline RUN_DIR (e.g. the main branch's run).")
    if fail_on_strict and thresholds is None:
        raise UsageError("--fail-on-strict changes how --fail-on decides; give the thresholds too, e.g. --fail-on mAP:-1.0 --fail-on-strict.")
    if run_dir is None:
        run_dir = latest_run()
        _log(f"report on the latest run: {run_dir}")
    _plugins(imports, run_dir, baseline)
    result = make_report(run_dir, out=out, baseline_root=baseline, thresholds=thresholds,
                         extra_comparisons=compare_pairs or [], strict=fail_on_strict, grid=grid, rank_lists=rank_lists)
    typer.echo(_printable(result.markdown_table))
    for line in summary_lines(result):
        _log(line)
    for line in gate_lines(result, fail_on or ""):
        typer.echo(_printable(line))
    if result.crossings:
        raise typer.Exit(1)


@app.command()
@_user_errors
def inspect(
    run_dir: Path = typer.Argument(..., help="A run directory whose cells were evaluated."),
    cell: str = typer.Option(..., "--cell", help="The cell whose ranking to draw, e.g. vit768-ms."),
    query: int = typer.Option(..., "--query", help="The query's row in the query set, from 0 (the report's rank-list tables use the same numbers)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Which seed of the cell (default: its lowest)."),
    top: Optional[int] = typer.Option(None, "--top", help="How many gallery images to show, 1 to the 10 a run keeps (default: all 10)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The PNG to write (default: ranklist-CELL-seedS-queryN.png in the run's report folder, RUN_DIR/report)."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Draw one query's rank list in one cell: the query, then its first gallery images in rank order, right ones marked; prints the PNG's path.

    The images are read from the dataset the run names, which must still be where it was, unchanged.
    """
    from reidbench.reports.ranklists import inspect_png
    from reidbench.rundir import RunDir
    from reidbench.runtime.files import write_atomic

    _plugins(imports, run_dir)
    png, used_seed = inspect_png(run_dir, cell, query, seed, top)
    target = out if out is not None else RunDir(run_dir).report_dir / f"ranklist-{cell}-seed{used_seed}-query{query}.png"
    if target.is_dir():
        raise UsageError(f"--out {target} is a folder; name the PNG file to write, e.g. {target / 'ranklist.png'}.")
    write_atomic(target, png)
    typer.echo(str(target))


@app.command()
@_user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory whose done cells to export."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Export only this cell (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for <cell>-seed<k>.onnx and .json (default: RUN_DIR/onnx)."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes of the ONNX Runtime latency."),
    exporter: str = typer.Option("dynamo", "--exporter", help="dynamo (torch.export, the default) or torchscript (the legacy tracer)."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Export a run's done cells to ONNX (dynamic batch), check parity under ONNX Runtime and time them.

    Expected failures and failed cells are skipped with their status; a cell whose export fails or whose features
    differ from PyTorch's (min cosine below 0.9999) makes the command exit 1.
    """
    from reidbench.bench.export import export_missing, export_problems, export_run
    from reidbench.rundir import RunDir

    if exporter not in ("dynamo", "torchscript"):
        raise UsageError(f"--exporter {exporter!r} is unknown; choose dynamo or torchscript.")
    if (missing := export_missing()) is not None:
        raise UsageError(missing)
    if not RunDir(run_dir).cells_dir.is_dir():
        raise UsageError(f"{run_dir} is not a reidbench run directory (it has no cells/ folder).")
    _plugins(imports, run_dir)
    target = out if out is not None else RunDir(run_dir).onnx_dir
    results = export_run(run_dir, target, parse_int_list(batch_sizes, "--batch-sizes"), only, _log, exporter=exporter)
    problems = export_problems(results)
    for line in problems:
        typer.echo(_printable(f"problem: {line}"), err=True)
    if problems:
        raise typer.Exit(1)


data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate the synthetic set, inspect a dataset.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
@_user_errors
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic dataset to (new or empty)."),
    seed: int = typer.Option(0, "--seed", help="Generator seed: the same seed writes byte-identical files."),
    modalities: str = typer.Option("rgb", "--modalities", help="rgb (Market-1501 layout), or rgb,nir,tir: the multi-modal "
                                   "set in RGBNT201 layout, an RGB, a near-infrared and a thermal image of each scene."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Write the synthetic ReID dataset: Market-1501 layout, or RGBNT201 layout with --modalities rgb,nir,tir."""
    from reidbench.data import generate_synthetic, load_synthetic
    from reidbench.data.formats import load_multimodal_synthetic
    from reidbench.data.synthetic import DEFAULT_MULTIMODAL_PARAMS, MODALITIES, generate_multimodal_synthetic

    _plugins(imports)
    wanted = tuple(m.strip().lower() for m in modalities.split(",") if m.strip())
    if wanted == ("rgb",):
        generate_synthetic(out, seed=seed)
        typer.echo(load_synthetic(out).describe())
    elif wanted == MODALITIES:
        generate_multimodal_synthetic(out, replace(DEFAULT_MULTIMODAL_PARAMS, seed=seed))
        typer.echo(load_multimodal_synthetic(out).describe())
    else:
        raise UsageError(f"--modalities {modalities!r}: the synthetic sets hold rgb alone or {','.join(MODALITIES)} "
                         "(in that order); give one of those.")


@data_app.command("info")
@_user_errors
def data_info(
    spec: str = typer.Argument(..., help="synthetic, synthetic-rgbnt, market1501:PATH, dukemtmc:PATH, msmt17:PATH, veri776:PATH, "
                               "rgbnt201:PATH, rgbnt100:PATH or msvr310:PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Identities, images and cameras per split, as the evaluation protocol sees them."""
    from reidbench.data import load_dataset

    _plugins(imports)
    dataset = load_dataset(spec)
    if as_json:
        typer.echo(json.dumps(dataset.facts(), indent=2))
    else:
        typer.echo(dataset.describe())


weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights by name: fill the Hugging Face cache, show what it holds.")
app.add_typer(weights_app, name="weights")


@weights_app.command("pull")
@_user_errors
def weights_pull(
    specs: Optional[List[str]] = typer.Argument(None, help="BACKBONE=SPEC: a name (timm/ARCH.TAG, an open_clip tag, hf-hub:ORG/REPO\\[/FILE]\\[@REVISION]) or a local file."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Pull what this grid's runs load: its \\[weights], and with pretrained = true (or --pretrained) every backbone's upstream weights."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Every backbone's upstream weights (of --grid, else of the default grid)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Build the backbones that check each file with this setting, e.g. --set depth=1 (repeatable)."),
) -> None:
    """Download names into the Hugging Face cache (HF_HOME / HF_HUB_CACHE) and check each file loads into its backbone."""
    from reidbench.harness.plan import merged_weights, parse_overrides
    from reidbench.variants.factory import parse_weights_options
    from reidbench.variants.grid import Cell, load_grid
    from reidbench.variants.pull import pull_weights
    from reidbench.variants.settings import VariantSettings

    given = parse_overrides(overrides or [])
    loaded = load_grid(grid or "default") if grid or pretrained else None
    if loaded is None:
        weights = parse_weights_options(specs or [], "weights pull")
        settings = lambda backbone: VariantSettings().with_overrides(given, "--set")  # noqa: E731
    else:
        weights = merged_weights(loaded, specs or [], pretrained or None)
        base = loaded.settings.with_overrides(given, "--set")
        settings = lambda backbone: loaded.variant_settings(Cell(backbone, "none"), base)  # noqa: E731
    pull_weights(weights, settings, _log)


@weights_app.command("list")
@_user_errors
def weights_list() -> None:
    """Show the model files in the Hugging Face cache: name, revision, file, size, SHA-256, the backbones that take them."""
    from reidbench.variants.pull import cached_weights, cached_weights_table

    typer.echo(cached_weights_table(cached_weights()))


def _exit_unless_ok(records: list[dict[str, Any]]) -> None:
    """Exit 1 when any cell ended other than done or xfail (failed, xpass, interrupted), naming them."""
    from reidbench.schema import OK, CellState

    bad = [r for r in records if CellState(r["status"]) not in OK]
    if bad:
        labels = [f"{r['cell']} seed {r['seed']}" if r.get("seed") is not None else r["cell"] for r in bad]
        _log("not as expected: " + ", ".join(f"{label} ({r['status']})" for label, r in zip(labels, bad)))
        raise typer.Exit(1)


@app.command("list")
@_user_errors
def list_(
    grid: Optional[str] = typer.Option(None, "--grid", help="Show one grid's cells and resolved settings."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Show one profile's resolved values instead (a built-in name or a .toml file), each with where it came from."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="With --profile: lay this recipe over it first (a built-in name or a .toml file)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="With --profile: lay TABLE.KEY=VALUE over it last, as `run --set` does (repeatable), e.g. --set train.epochs=5."),
    imports: Optional[List[str]] = typer.Option(None, "--import", help=IMPORT_HELP),
) -> None:
    """Show the grids, profiles, recipes, backbones, necks and settings reidbench knows."""
    from reidbench.variants import BACKBONES, NECKS, builtin_grids, load_grid

    _plugins(imports)
    for option, given in (("--recipe", recipe), ("--set", overrides)):
        if given and profile is None:
            raise UsageError(f"{option} is laid over a profile; add --profile NAME (e.g. --profile full {option} ...).")
    if profile is not None:
        return _list_profile(profile, recipe, overrides or [])
    grids = [load_grid(grid)] if grid else [load_grid(name) for name in builtin_grids()]
    for g in grids:
        typer.echo(f"grid {g.name} ({g.source}): {g.description}")
        for cell in g.cells:
            expect = f"  [expected {cell.expect.status}: {cell.expect.reason}]" if cell.expect else ""
            typer.echo(f"  {cell.id}{expect}")
        typer.echo("  settings: " + ", ".join(f"{k}={v}" for k, v in g.settings.to_dict().items()))
        if g.data:
            typer.echo(f"  data (unless --data names another): {g.data}")
        for backbone in sorted(set(g.backbone_settings) | set(g.recipes)):
            own = ", ".join(f"{k}={v}" for k, v in g.backbone_settings.get(backbone, {}).items())
            recipes = ", ".join(f"under {p}: {r}" for p, r in g.recipes.get(backbone, {}).items())
            typer.echo(f"  {backbone}: " + "; ".join(part for part in (own, f"recipe {recipes}" if recipes else "") if part))
    _list_profiles()
    typer.echo("backbones (--pretrained: the weights each starts from):")
    for entry in BACKBONES:
        typer.echo(f"  {entry.name:<12} {entry.description}")
        if entry.upstream is not None:
            typer.echo(f"  {'':<12} --pretrained: {entry.upstream.default} ({entry.upstream.about})")
    typer.echo("necks:")
    for entry in NECKS:
        typer.echo(f"  {entry.name:<12} {entry.description}")


def _list_profiles() -> None:
    from reidbench.profiles import builtin_profiles, builtin_recipes, load_profile, load_recipe

    typer.echo("profiles (reidbench list --profile NAME shows every value and where it came from):")
    for name in builtin_profiles():
        loaded = load_profile(name)
        typer.echo(f"  {name:<12} {loaded.description} (extends {loaded.extends or 'the base'})")
    typer.echo("recipes (laid over a profile by a grid's [backbone.<name>] recipe table):")
    for name in builtin_recipes():
        typer.echo(f"  {name:<12} follows {load_recipe(name).follows}")


def _list_profile(name: str, recipe: Optional[str], overrides: List[str]) -> None:
    """Every resolved value of a profile, and what set it: the base (the field defaults), a profile or recipe file, or --set."""
    from reidbench.harness.plan import parse_overrides
    from reidbench.profiles import load_profile, load_recipe, split_sets, with_recipe, with_sets
    from reidbench.runtime.text import counted

    variant, tables = split_sets(parse_overrides(overrides))
    if variant:
        raise UsageError(f"--set {', '.join(variant)}: list --profile shows the profile's tables; name one, e.g. --set model.depth=2.")
    loaded = load_profile(name)
    loaded = with_sets(with_recipe(loaded, load_recipe(recipe)) if recipe else loaded, tables)
    typer.echo(_printable(f"profile {loaded.name} ({loaded.source}, extends {loaded.extends or 'the base'}): {loaded.description}"))
    if loaded.follows:
        typer.echo(_printable(f"  follows {loaded.follows}; departs in {counted(len(loaded.departures), 'way')}"))
    for key, value, origin in loaded.resolved():
        shown = list(value) if isinstance(value, tuple) else value
        typer.echo(_printable(f"  {key:<28} {json.dumps(shown):<20} {origin}"))


def _check_writable(path: Path) -> None:
    """Refuse an output file that cannot be written before minutes of measuring, not after."""
    from reidbench.runtime.files import probe_write

    if path.is_dir():
        raise UsageError(f"--json {path} is a directory; give a file path such as {path / 'bench.json'}.")
    if not path.parent.is_dir():
        raise UsageError(f"--json {path}: the folder {path.parent} does not exist.")
    try:
        probe_write(path.parent)
    except OSError as exc:
        raise UsageError(f"--json {path} cannot be written ({exc.strerror}); choose a file in a folder you may write.") from None


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
