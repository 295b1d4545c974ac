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
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Inference batch sizes, e.g. 1,64 [default: 1,64,256 on CUDA, 1,8 on CPU]."),
    train_batch_size: Optional[int] = typer.Option(None, "--train-batch-size", help="Batch of the measured training step [default: 64 on CUDA, 4 on CPU]."),
    repeats: int = typer.Option(50, "--repeats", help="Timed repeats per batch size (fewer if --max-seconds runs out)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up calls per batch size."),
    max_seconds: float = typer.Option(5.0, "--max-seconds", help="Stop repeating a batch size after this much timed work."),
    reference: bool = typer.Option(False, "--reference", help="Also time a bare library loop of the same network (cells with neck `none`)."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark", help="Let cuDNN autotune convolutions per shape (CUDA only; recorded)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a grid setting, e.g. --set depth=2 (repeatable)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the records as a JSON list to this file."),
) -> None:
    """Measure parameters, FLOPs, latency and memory of every cell; no training."""
    from reidbench.bench.environment import resolve_device, resolve_dtype
    from reidbench.bench.probe import OK_STATUSES
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
    records = [r.to_dict() for r in bench_grid(loaded, cells, options, settings, _log)]
    typer.echo(bench_table(records))
    if json_path is not None:
        _write_json(json_path, records)
        _log(f"wrote {json_path}")
    bad = [r for r in records if r["status"] not in OK_STATUSES]
    if bad:
        _log("not as expected: " + ", ".join(f"{r['cell']} ({r['status']})" for r in bad))
        raise typer.Exit(1)


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
