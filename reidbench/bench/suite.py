"""Measure every selected cell of a grid: one record per cell, failures included."""
from __future__ import annotations

import gc
import time
import traceback
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from reidbench.bench.export import measure_onnxruntime
from reidbench.bench.flops import count_flops
from reidbench.bench.graphs import cuda_graph_unavailable
from reidbench.bench.memory import measure_peak_memory
from reidbench.bench.modes import measure_modes
from reidbench.bench.options import BenchOptions
from reidbench.bench.reference import bare_inference_loop, bare_reference, bare_train_loop
from reidbench.bench.timing import time_callable
from reidbench.bench.training import harness_train_throughput
from reidbench.profiles import MeasureConfig
from reidbench.runtime.compile import uncompile_model
from reidbench.runtime.device import autocast
from reidbench.runtime.environment import collect_environment
from reidbench.schema import CellRecord, CellState, MeasureMode
from reidbench.variants.factory import create_variant
from reidbench.variants.grid import Cell, Grid
from reidbench.variants.model import ReidModel
from reidbench.variants.probe import probe_cell
from reidbench.variants.settings import PATCH_SIZE, VariantSettings
from reidbench.runtime.progress import Log



def bench_grid(
    grid: Grid, cells: list[Cell], options: BenchOptions, overrides: dict[str, Any], log: Log,
    weights: Optional[dict[str, str]] = None,
) -> list[CellRecord]:
    """Each cell at its own settings (the grid's, its backbone's table and axes, then `overrides`, i.e. --set);
    `weights` maps a backbone name to a local checkpoint (grid [weights] and --weights merged)."""
    if options.device.type == "cuda":
        # Fixed shapes: let cuDNN pick its fastest algorithm per shape (its default pick can be
        # far off for the patch embedding's strides); recorded with the numbers.
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
    environment = collect_environment(options.device, options.dtype)
    records = []
    for index, cell in enumerate(cells, 1):
        log(f"[{index}/{len(cells)}] {cell.id}")
        settings = grid.variant_settings(cell).with_overrides(overrides, "--set")
        record = bench_cell(cell, settings, options, log, (weights or {}).get(cell.backbone))
        record.axes = dict(cell.axes)
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
    record = probe.record(cell, settings)
    if probe.status == CellState.DONE and probe.model is not None:
        measure_model(probe.model, record, options, log)
    return record


def measure_model(model: ReidModel, record: CellRecord, options: BenchOptions, log: Log) -> None:
    """FLOPs, latency, memory (and the bare loop) into `record`; a failure marks the record failed.

    The measured training step updates the weights: measure after saving a trained model.
    """
    record.options = options.to_dict()
    stopwatch = Stopwatch(record.measure_seconds, log)
    try:
        _measure(model, record, options, stopwatch)
    except Exception as exc:  # noqa: BLE001 - a failing measurement fails the cell, not the grid
        record.status = CellState.FAILED
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


def _measure(model: ReidModel, record: CellRecord, options: BenchOptions, log: Log) -> None:
    settings = model.settings
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
    eager = [e for e in record.latency if "median_ms" in e and MeasureMode.parse(e.get("mode")) == MeasureMode.EAGER]
    largest = max(eager, key=lambda e: e["batch_size"], default=None)
    if largest is not None:
        record.memory["inference"] = _inference_memory(model, largest["batch_size"], options)
    log(f"    one training step at batch {options.train_batch_size}")
    record.memory["train_step"] = _train_step_memory(model, options)
    if options.reference and settings.stride == PATCH_SIZE and settings.num_modalities == 1 and bare_reference(record.backbone, record.neck):
        for entry in record.latency:
            if "median_ms" not in entry or MeasureMode.parse(entry.get("mode")) != MeasureMode.EAGER:
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
        record.train_throughput.extend(_train_throughput(model, batch_size, record, options, log))
    if options.measure.onnx:
        log("    ONNX export, parity and onnxruntime latency")
        entries, record.onnx = measure_onnxruntime(model, options)
        record.latency.extend(entries)


def _train_throughput(
    model: ReidModel, batch_size: int, record: CellRecord, options: BenchOptions, log: Log
) -> list[dict[str, Any]]:
    """The harness's training img/s at `batch_size` (eager, then compiled and graph-replayed if asked), and the bare loop's."""
    settings, bare = model.settings, None
    if options.reference and settings.stride == PATCH_SIZE and settings.num_modalities == 1 and bare_reference(record.backbone, record.neck):
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
    mode = MeasureMode.of(compiled, graphed).value
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
        return {"batch_size": batch_size, "mode": MeasureMode.EAGER.value, "error": "CUDA out of memory at this batch size"}
    entry = {"batch_size": batch_size, "mode": MeasureMode.EAGER.value, **timing.to_dict()}
    entry["img_per_s"] = batch_size / timing.median_ms * 1e3
    return entry


def _inference_memory(model: ReidModel, batch_size: int, options: BenchOptions) -> dict[str, Any]:
    images = model.example_input(batch_size, options.device)

    def forward() -> None:
        with torch.inference_mode(), autocast(options.device, options.dtype):
            model(images)

    return {"batch_size": batch_size, **measure_peak_memory(forward, options.device)}


def _train_step_memory(model: ReidModel, options: BenchOptions) -> dict[str, Any]:
    """Peak memory of one SGD step (forward, cross-entropy, backward, update), after a warm-up step: its activations,
    its gradients and the update's temporaries (the weights and momentum buffers exist before it)."""
    batch = options.train_batch_size
    images = model.example_input(batch, options.device)
    labels = torch.arange(batch, device=options.device) % model.settings.num_classes
    cams = torch.arange(batch, device=options.device) % max(model.settings.num_cameras, 1) if model.settings.num_cameras else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def step() -> None:
        with autocast(options.device, options.dtype):
            output = model(images, cams)
        F.cross_entropy(output.logits.float(), labels).backward()
        optimizer.step()

    def release() -> None:
        optimizer.zero_grad(set_to_none=True)

    try:
        step()  # the warm-up step creates the momentum buffers; its gradients go before the measured one
        release()
        measured = measure_peak_memory(step, options.device, release)
        return {"batch_size": batch, "optimizer": "SGD(momentum=0.9)", **measured}
    except torch.cuda.OutOfMemoryError:
        return {"batch_size": batch, "error": "CUDA out of memory in the training step"}
    finally:
        optimizer.zero_grad(set_to_none=True)  # frees the gradients; the optimizer state goes with this frame
        model.eval()


def run_measurer(measure: MeasureConfig, device: torch.device, dtype: str) -> Callable[[ReidModel, CellRecord, Log], None]:
    """How a run measures each trained cell: its profile's [measure] table, on the run's device and dtype.

    The grid runner calls what this returns; it knows nothing of bench, which the
    command line hands it (`reidbench.harness.runner`).
    """
    options = BenchOptions(device=device, dtype=dtype, measure=measure)
    return lambda model, record, log: measure_model(model, record, options, log)
