"""Inference latency in the faster modes -- CUDA-graph replay, compiled, both -- beside eager.

Eager stays the headline number (it is what every cell can run, and what the
reports rank); these entries sit in the same `latency` list with a `mode` key,
so a reader sees at once what compilation or a graph buys each cell. The
compiled mode runs on a deep copy, so the model that was measured eager (and
that a run may still save or evaluate) is never compiled.
"""
from __future__ import annotations

import copy
import traceback
from typing import Any, Callable

import torch

from reidbench.bench.graphs import capture_cuda_graph, cuda_graph_unavailable
from reidbench.bench.options import BenchOptions
from reidbench.bench.timing import time_callable
from reidbench.runtime.compile import compile_counters, compile_model, first_call_seconds, strict_recompiles
from reidbench.runtime.device import autocast
from reidbench.schema import MeasureMode
from reidbench.variants.model import ReidModel

OOM = "CUDA out of memory at this batch size"
COMPILED, GRAPH, COMPILED_GRAPH = MeasureMode.COMPILED.value, MeasureMode.GRAPH.value, MeasureMode.COMPILED_GRAPH.value


def timed_entry(call: Callable[[], Any], batch_size: int, mode: str, options: BenchOptions) -> dict[str, Any]:
    """The latency entry of `model()` at `batch_size`: median, p90, repeats, timer, img/s."""
    timing = time_callable(call, options.device, options.warmup, options.repeats, options.max_seconds)
    return {"batch_size": batch_size, "mode": mode, **timing.to_dict(), "img_per_s": batch_size / timing.median_ms * 1e3}


def measure_modes(model: ReidModel, options: BenchOptions, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Latency entries of the modes `options` asks for at every batch size, and what was compiled (or {}).

    A mode that cannot run here (a CUDA graph on CPU) is an entry with `skipped`
    and the reason; one that fails is an entry with `error`. Neither fails the
    cell: its eager numbers stand.
    """
    entries: list[dict[str, Any]] = []
    if options.cuda_graphs:
        for batch_size in options.batch_sizes:
            log(f"    CUDA-graph latency at batch {batch_size}")
            entries.append(_graph_entry(model, batch_size, GRAPH, options))
    if not options.compile:
        return entries, {}
    work = copy.deepcopy(model)
    try:
        info = compile_model(work, options.compile_backend).to_dict()
    except Exception as exc:  # noqa: BLE001 - a model that does not compile keeps its eager numbers
        error = f"compile failed: {type(exc).__name__}: {exc}"
        entries += [{"batch_size": b, "mode": COMPILED, "error": error} for b in options.batch_sizes]
        return entries, {"backend": options.compile_backend, "error": error, "traceback": traceback.format_exc()}
    for batch_size in options.batch_sizes:
        log(f"    compiled latency at batch {batch_size}")
        entries.append(_compiled_entry(work, batch_size, options))
        if options.cuda_graphs:
            entries.append(_graph_entry(work, batch_size, COMPILED_GRAPH, options))
    info["seconds"] = sum(e.get("compile_s", 0.0) for e in entries if MeasureMode.parse(e.get("mode")) == MeasureMode.COMPILED)
    del work
    _release(options.device)
    return entries, info


def _compiled_entry(model: ReidModel, batch_size: int, options: BenchOptions) -> dict[str, Any]:
    """Timed like eager, after a first call whose extra wall time over a steady call is the compile time."""
    images = model.example_input(batch_size, options.device)
    try:
        with torch.inference_mode(), autocast(options.device, options.dtype), strict_recompiles():
            before = compile_counters()
            first_s = first_call_seconds(lambda: model(images), options.device)
            counted = {k: v - before[k] for k, v in compile_counters().items()}
            entry = timed_entry(lambda: model(images), batch_size, COMPILED, options)
    except torch.cuda.OutOfMemoryError:
        _release(options.device)
        return {"batch_size": batch_size, "mode": COMPILED, "error": OOM}
    except Exception as exc:  # noqa: BLE001 - e.g. the recompile limit: say so, never report eager as compiled
        return {"batch_size": batch_size, "mode": COMPILED, "error": f"{type(exc).__name__}: {exc}"}
    entry.update(first_call_s=first_s, compile_s=max(first_s - entry["median_ms"] / 1e3, 0.0), **counted)
    return entry


def _graph_entry(model: ReidModel, batch_size: int, mode: str, options: BenchOptions) -> dict[str, Any]:
    """One forward captured as a CUDA graph at `batch_size`, timed per call including the input copy."""
    reason = cuda_graph_unavailable(options.device)
    if reason is not None:
        return {"batch_size": batch_size, "mode": mode, "skipped": reason}
    images = model.example_input(batch_size, options.device)
    graphed = None
    try:
        with strict_recompiles():
            graphed = capture_cuda_graph(model, images, dtype=options.dtype, warmup=options.warmup)
        fresh = images.clone()  # a new batch each call: the copy into the static buffer is part of the cost
        entry = timed_entry(lambda: graphed(fresh), batch_size, mode, options)
        entry["capture_s"] = graphed.capture_s
        return entry
    except torch.cuda.OutOfMemoryError:
        return {"batch_size": batch_size, "mode": mode, "error": OOM}
    except Exception as exc:  # noqa: BLE001 - an op that cannot be captured fails this mode, not the cell
        return {"batch_size": batch_size, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        del graphed
        _release(options.device)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
