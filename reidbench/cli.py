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
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _log(message: str) -> None:
    typer.echo(message, err=True)


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
    repeats: int = typer.Option(50, "--repeats", help="Timed repeats per batch size (fewer if --max-seconds runs out)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up calls per batch size."),
    max_seconds: float = typer.Option(5.0, "--max-seconds", help="Stop repeating a batch size after this much timed work."),
    reference: bool = typer.Option(False, "--reference", help="Also time a bare library loop of the same network (cells with neck `none`)."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark", help="Let cuDNN autotune convolutions per shape (CUDA only; recorded)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a grid setting, e.g. --set depth=2 (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as a JSON list to this file."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="BACKBONE=PATH: a local pretrained checkpoint for that backbone (repeatable; overrides the grid's [weights])."),
) -> None:
    """Measure parameters, FLOPs, latency and memory of every cell; no training."""
    from reidbench.bench.environment import resolve_device, resolve_dtype
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
    if repeats < 1 or warmup < 0 or max_seconds <= 0:
        raise UsageError("--repeats must be >= 1, --warmup >= 0 and --max-seconds > 0.")
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
    )
    if json_path is not None:
        _check_writable(json_path)
    _log(f"bench: grid {loaded.name} ({loaded.source}), {len(cells)} cell(s), device {options.device}, dtype {options.dtype}, "
         f"depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride}")
    records = [r.to_dict() for r in bench_grid(loaded, cells, options, settings, _log, _merged_weights(loaded, weights))]
    if json_path is not None:
        _write_json(json_path, records)
        _log(f"wrote {json_path}")
    typer.echo(bench_table(records))
    _exit_unless_ok(records)


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
) -> None:
    """Train, evaluate and measure every cell of a grid; write a run directory."""
    from reidbench.bench.environment import resolve_device, resolve_dtype
    from reidbench.harness.profile import load_profile, resolve_profile_name
    from reidbench.harness.progress import Progress
    from reidbench.harness.rundir import RunDir, new_run_dir
    from reidbench.harness import runner
    from reidbench.variants.grid import load_grid

    progress = Progress(_log, bars)
    if resume is not None:
        if not resume.is_dir():
            raise UsageError(f"--resume {resume}: no such run directory.")
        run_dir = RunDir(resume)
        plan = runner.load_plan(run_dir, None if device == "auto" else resolve_device(device))
        dataset = runner.check_plan(plan)
        _log(f"resuming {resume}: grid {plan.grid.name}, profile {plan.profile.name}, device {plan.device}")
    else:
        if seeds < 1:
            raise UsageError("--seeds must be at least 1.")
        torch_device = resolve_device(device)
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
        )
        dataset = runner.check_plan(plan)
        root = out if out is not None else new_run_dir(Path("runs"), loaded.name)
        if out is not None:
            if out.exists() and any(out.iterdir()):
                raise UsageError(f"--out {out} already exists and is not empty; choose a new folder, or continue it with --resume {out}.")
            out.mkdir(parents=True, exist_ok=True)
        run_dir = runner.start_run(plan, root)
        _log(f"run {run_dir.root}: grid {loaded.name}, {len(plan.cells)} cell(s) x {seeds} seed(s), profile {profile_name}, device {torch_device}, dtype {plan.dtype}")
    try:
        records = runner.execute(plan, run_dir, progress, dataset=dataset)
    except KeyboardInterrupt:
        _log(f"interrupted: finished cells and the last checkpoint are saved in {run_dir.root}; continue with\n  reidbench run --resume {run_dir.root}")
        raise typer.Exit(130)
    _log(f"results: {run_dir.results_csv}")
    _exit_unless_ok(records)


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
    from reidbench.harness.data import generate_synthetic, load_synthetic

    generate_synthetic(out, seed=seed)
    typer.echo(load_synthetic(out).describe())


@data_app.command("info")
@_user_errors
def data_info(
    spec: str = typer.Argument(..., help="synthetic, market1501:PATH, dukemtmc:PATH, msmt17:PATH or veri776:PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Identities, images and cameras per split, as the evaluation protocol sees them."""
    from reidbench.harness.data import load_dataset

    dataset = load_dataset(spec)
    if as_json:
        typer.echo(json.dumps({"name": dataset.name, "root": str(dataset.root), "version": dataset.version,
                               "counts": dataset.counts(), "dropped": dataset.dropped}, indent=2))
    else:
        typer.echo(dataset.describe())


def _exit_unless_ok(records: list[dict[str, Any]]) -> None:
    """Exit 1 when any cell ended other than done or xfail (failed, xpass, interrupted), naming them."""
    from reidbench.bench.probe import OK_STATUSES

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
            from reidbench.harness.profile import PROFILES_DIR as folder
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
