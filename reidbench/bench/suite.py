"""Measure every selected cell of a grid: one record per cell, failures included."""
from __future__ import annotations

import gc
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from reidbench.bench.graphs import cuda_graph_unavailable
from reidbench.runtime.compile import uncompile_model
from reidbench.runtime.device import autocast
from reidbench.runtime.environment import collect_environment
from reidbench.bench.flops import count_flops
from reidbench.bench.memory import measure_peak_memory
from reidbench.bench.modes import EAGER, entry_mode, measure_modes
from reidbench.bench.params import count_parameters
from reidbench.variants.probe import DONE, FAILED, Probe, probe_cell
from reidbench.bench.reference import bare_inference_loop, bare_reference, bare_train_loop
from reidbench.bench.timing import time_callable
from reidbench.bench.training import harness_train_throughput, train_mode
from reidbench.variants.factory import create_variant
from reidbench.variants.grid import Cell, Grid
from reidbench.variants.model import ReidModel
from reidbench.variants.settings import PATCH_SIZE, VariantSettings

Log = Callable[[str], None]


@dataclass
class BenchOptions:
    device: torch.device
    dtype: str
    batch_sizes: list[int]
    train_batch_size: int
    warmup: int = 3
    repeats: int = 50
    max_seconds: float = 5.0
    reference: bool = False
    cudnn_benchmark: bool = True
    train_batch_sizes: list[int] = field(default_factory=list)
    """Batches (P x 4) at which the harness's training step is timed; empty: not measured."""
    train_steps: int = 20
    """Timed training steps per batch size (after 5 untimed ones)."""
    compile: bool = False
    """Also time a regionally compiled copy (each transformer block torch.compile'd) at every batch size."""
    compile_backend: str = "inductor"
    cuda_graphs: bool = False
    """Also time CUDA-graph replay of the whole forward (of the compiled copy too with `compile`); skipped off CUDA."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["device"] = str(self.device)
        return data


@dataclass
class CellRecord:
    """One cell's measurements; the JSON file is a list of these as dicts."""

    cell: str
    backbone: str
    neck: str
    status: str
    error: Optional[str] = None
    traceback: Optional[str] = None
    expected: Optional[dict[str, str]] = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    feature_dim: Optional[int] = None
    weights: Optional[dict[str, Any]] = None
    """Which checkpoint filled the backbone (path, SHA-256, what was loaded, new, ignored); None: random init."""
    params: dict[str, int] = field(default_factory=dict)
    gmacs: Optional[float] = None
    gflops: Optional[float] = None
    flops: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    """Per batch size and mode (eager, graph, compiled, compiled+graph); eager is the headline."""
    compile: dict[str, Any] = field(default_factory=dict)
    """What --compile compiled (backend, block class, how many blocks) and its total compile seconds; {} without."""
    memory: dict[str, Any] = field(default_factory=dict)
    reference: list[dict[str, Any]] = field(default_factory=list)
    train_throughput: list[dict[str, Any]] = field(default_factory=list)
    """Harness training img/s per batch size and mode, with the bare loop's beside it under --reference."""
    measure_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each measurement, in order, under the message that announced it ("latency at batch 256": 4.2)."""
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_grid(
    grid: Grid, cells: list[Cell], options: BenchOptions, settings: VariantSettings, log: Log,
    weights: Optional[dict[str, str]] = None,
) -> list[CellRecord]:
    """`weights` maps a backbone name to a local checkpoint (grid [weights] and --weights merged)."""
    if options.device.type == "cuda":
        # Fixed shapes: let cuDNN pick its fastest algorithm per shape. Without it the
        # ms neck's whole-grid 16x8 convolution ran slower at batch 64 than at 256 (H200).
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
    environment = collect_environment(options.device, options.dtype)
    records = []
    for index, cell in enumerate(cells, 1):
        log(f"[{index}/{len(cells)}] {cell.id}")
        record = bench_cell(cell, settings, options, log, (weights or {}).get(cell.backbone))
        record.environment = environment
        records.append(record)
        log(f"[{index}/{len(cells)}] {cell.id}: {record.status}" + (f" ({record.error})" if record.error else ""))
        gc.collect()
        if options.device.type == "cuda":
            torch.cuda.empty_cache()
    return records


def bench_cell(cell: Cell, settings: VariantSettings, options: BenchOptions, log: Log, weights: Optional[str] = None) -> CellRecord:
    """Probe the cell, then count, time and measure it; an exception anywhere marks it failed, keeping what was measured."""
    probe = probe_cell(cell, lambda: create_variant(cell, weights=weights, settings=settings), torch.device("cpu"))
    record = new_record(cell, probe, settings, options)
    if probe.status == DONE and probe.model is not None:
        measure_model(probe.model, record, settings, options, log)
    return record


def new_record(cell: Cell, probe: Probe, settings: VariantSettings, options: BenchOptions) -> CellRecord:
    """The record of a probed cell: status, error, and what a built model tells without running (notes, parameters)."""
    record = CellRecord(
        cell=cell.id,
        backbone=cell.backbone,
        neck=cell.neck,
        status=probe.status,
        error=probe.error,
        traceback=probe.traceback,
        expected=None if cell.expect is None else vars(cell.expect),
        settings=settings.to_dict(),
        options=options.to_dict(),
    )
    if probe.model is not None:
        record.notes = probe.model.notes
        record.params = count_parameters(probe.model)
        record.feature_dim = probe.model.feature_dim
        if probe.model.weights_report is not None:
            record.weights = probe.model.weights_report.to_dict()
    return record


def measure_model(model: ReidModel, record: CellRecord, settings: VariantSettings, options: BenchOptions, log: Log) -> None:
    """FLOPs, latency, memory (and the bare loop) into `record`; a failure marks the record failed.

    The measured training step updates the weights: measure after saving a trained model.
    """
    stopwatch = Stopwatch(record.measure_seconds, log)
    try:
        _measure(model, record, settings, options, stopwatch)
    except Exception as exc:  # noqa: BLE001 - a failing measurement fails the cell, not the grid
        record.status = FAILED
        record.error = f"measurement failed: {type(exc).__name__}: {exc}"
        record.traceback = traceback.format_exc()
    finally:
        stopwatch.stop()


class Stopwatch:
    """A `Log` that also times what it announces: each message starts a measurement and ends the one before.

    Why: a cell's measurement is a dozen steps (FLOPs, latency per batch size and
    mode, memory, training throughput) and on a GPU some take seconds, others
    minutes (compilation); the record says which, so a slow grid can be trimmed
    where it spends its time.
    """

    def __init__(self, into: dict[str, float], log: Log) -> None:
        self.into, self.log = into, log
        self.current: Optional[str] = None
        self.started = 0.0

    def __call__(self, message: str) -> None:
        self.stop()
        self.current, self.started = message.strip(), time.perf_counter()
        self.log(message)

    def stop(self) -> None:
        if self.current is not None:
            self.into[self.current] = self.into.get(self.current, 0.0) + time.perf_counter() - self.started
            self.current = None


def _measure(model: ReidModel, record: CellRecord, settings: VariantSettings, options: BenchOptions, log: Log) -> None:
    if uncompile_model(model):  # compiled for training: the headline numbers are eager, compiled ones say so
        record.notes.append("blocks compiled for training were measured eager; compiled numbers carry mode 'compiled'")
    log("    counting FLOPs")
    flops = count_flops(model, model.example_input(1, next(model.parameters()).device))
    record.gmacs, record.gflops = flops.gmacs, flops.gflops
    record.flops = flops.to_dict()
    record.warnings.extend(flops.warnings)

    model.to(options.device).eval()
    for batch_size in options.batch_sizes:
        log(f"    latency at batch {batch_size}")
        record.latency.append(_latency(model, batch_size, options))
    largest = max((e for e in record.latency if "median_ms" in e and entry_mode(e) == EAGER), key=lambda e: e["batch_size"], default=None)
    if largest is not None:
        record.memory["inference"] = _inference_memory(model, largest["batch_size"], options)
    log(f"    one training step at batch {options.train_batch_size}")
    record.memory["train_step"] = _train_step_memory(model, options)
    if options.reference and settings.stride == PATCH_SIZE and bare_reference(record.backbone, record.neck):
        for entry in record.latency:
            if "median_ms" not in entry or entry_mode(entry) != EAGER:
                continue
            log(f"    bare reference loop at batch {entry['batch_size']}")
            bare = bare_inference_loop(
                record.backbone, settings, entry["batch_size"], options.device, options.dtype,
                iterations=max(entry["repeats"], 3),
            )
            bare["harness_over_bare"] = entry["median_ms"] / bare["mean_ms"]
            record.reference.append(bare)
    if options.cuda_graphs or options.compile:
        modes, record.compile = measure_modes(model, options, log)
        record.latency.extend(modes)
    for batch_size in options.train_batch_sizes:
        record.train_throughput.extend(_train_throughput(model, batch_size, record, settings, options, log))


def _train_throughput(
    model: ReidModel, batch_size: int, record: CellRecord, settings: VariantSettings, options: BenchOptions, log: Log
) -> list[dict[str, Any]]:
    """The harness's training img/s at `batch_size` (eager, then compiled and graph-replayed if asked), and the bare loop's."""
    bare = None
    if options.reference and settings.stride == PATCH_SIZE and bare_reference(record.backbone, record.neck):
        log(f"    bare training loop at batch {batch_size}")
        bare = bare_train_loop(record.backbone, settings, batch_size, options.device, options.dtype, options.train_steps)
    modes = [(compiled, graphed) for graphed in (False, True) for compiled in (False, True)
             if (options.compile or not compiled) and (options.cuda_graphs or not graphed)]  # eager first
    entries = [_harness_train_entry(model, batch_size, compiled, graphed, options, log) for compiled, graphed in modes]
    for entry in entries:
        if bare is not None and "img_per_s" in entry:
            entry["bare"] = bare
            entry["ratio_to_bare"] = entry["img_per_s"] / bare["img_per_s"]  # img/s: higher is better
    eager = entries[0].get("img_per_s")
    for entry in entries[1:]:
        if eager and "img_per_s" in entry:
            entry["ratio_to_eager"] = entry["img_per_s"] / eager
    return entries


def _harness_train_entry(
    model: ReidModel, batch_size: int, compiled: bool, graphed: bool, options: BenchOptions, log: Log
) -> dict[str, Any]:
    """One mode's training img/s; a mode that cannot run here, or fails, is an entry saying why, not a crash."""
    mode = train_mode(compiled, graphed)
    if graphed and (reason := cuda_graph_unavailable(options.device)) is not None:
        return {"mode": mode, "batch_size": batch_size, "skipped": reason}
    log(f"    harness training step at batch {batch_size}" + (f" ({mode})" if mode != "eager" else ""))
    try:
        return harness_train_throughput(
            model, batch_size, options.device, options.dtype, options.train_steps,
            compile_backend=options.compile_backend if compiled else None, cuda_graph=graphed,
        )
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"mode": mode, "batch_size": batch_size, "error": "CUDA out of memory"}
    except Exception as exc:  # noqa: BLE001 - an op that cannot be captured fails this mode, not the cell
        if not graphed:
            raise
        return {"mode": mode, "batch_size": batch_size, "error": f"{type(exc).__name__}: {exc}"}


def _latency(model: ReidModel, batch_size: int, options: BenchOptions) -> dict[str, Any]:
    images = model.example_input(batch_size, options.device)
    try:
        with torch.inference_mode(), autocast(options.device, options.dtype):
            timing = time_callable(lambda: model(images), options.device, options.warmup, options.repeats, options.max_seconds)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"batch_size": batch_size, "mode": EAGER, "error": "CUDA out of memory at this batch size"}
    entry = {"batch_size": batch_size, "mode": EAGER, **timing.to_dict()}
    entry["img_per_s"] = batch_size / timing.median_ms * 1e3
    return entry


def _inference_memory(model: ReidModel, batch_size: int, options: BenchOptions) -> dict[str, Any]:
    images = model.example_input(batch_size, options.device)

    def forward() -> None:
        with torch.inference_mode(), autocast(options.device, options.dtype):
            model(images)

    return {"batch_size": batch_size, **measure_peak_memory(forward, options.device)}


def _train_step_memory(model: ReidModel, options: BenchOptions) -> dict[str, Any]:
    """Peak memory of one SGD step (forward, cross-entropy, backward, update), after a warm-up step."""
    batch = options.train_batch_size
    images = model.example_input(batch, options.device)
    labels = torch.arange(batch, device=options.device) % model.settings.num_classes
    cams = torch.arange(batch, device=options.device) % max(model.settings.num_cameras, 1) if model.settings.num_cameras else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(options.device, options.dtype):
            output = model(images, cams)
        F.cross_entropy(output.logits.float(), labels).backward()
        optimizer.step()

    try:
        step()
        return {"batch_size": batch, "optimizer": "SGD(momentum=0.9)", **measure_peak_memory(step, options.device)}
    except torch.cuda.OutOfMemoryError:
        return {"batch_size": batch, "error": "CUDA out of memory in the training step"}
    finally:
        optimizer.zero_grad(set_to_none=True)  # frees the gradients; the optimizer state goes with this frame
        model.eval()
