"""The grid runner: every cell and seed of a plan in turn (`execute`), or one of them as a job (`run_one`).

`execute` skips finished cells and continues unfinished ones from their last
checkpoint, so `--resume` is `execute` on a stored plan. Everything a report
needs is written to the run directory; the lifecycle of one cell is
`reidbench.harness.cell`'s.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.data import ReidDataset, load_dataset
from reidbench.errors import UsageError
from reidbench.harness.cell import Measure, MeasureFactory, RunContext, run_cell
from reidbench.harness.console import data_line, summary_line
from reidbench.harness.placement import prepare_data
from reidbench.harness.plan import RunPlan, load_plan, read_meta, resolve_settings
from reidbench.harness.rundir import RunDir
from reidbench.runtime.distributed import World, describe_world, from_main, init_distributed, world_from_env
from reidbench.runtime.environment import collect_environment
from reidbench.runtime.files import now_utc, write_json
from reidbench.runtime.progress import Progress
from reidbench.schema import CellRecord, RunState

JOB_FILE = "job.json"
"""In a cell folder of a fanned-out run: where its job ran, with what `execute` would write to
environment.json and run.json (environment, dataset facts, settings), for the launcher to merge."""


def cell_environment(plan: RunPlan, world: World) -> dict[str, Any]:
    """Make this process's numbers reproducible, then describe it: what environment.json holds."""
    if plan.device.type == "cpu":
        # Some CPU backward kernels (indexing an embedding table with camera ids, for one)
        # accumulate in a thread-dependent order: gradients then differ in the 8th digit
        # between two processes, and a few dozen epochs turn that into another mAP.
        torch.use_deterministic_algorithms(True)
    # cudnn.benchmark stays off in runs: with it on, a full-profile vit768-ms run once diverged
    # (docs/benchmarks); the ms windows are GEMMs, so only the patch embedding is cuDNN's.
    # bench, which never trains, turns it on.
    environment = collect_environment(plan.device, plan.dtype)
    environment["seeds"] = list(range(plan.seeds))
    environment["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    environment["distributed"] = parallelism(plan, world)
    return environment


def parallelism(plan: RunPlan, world: World) -> dict[str, Any]:
    """How many processes trained, over which backend, with SyncBN or not, and the batch each step saw."""
    global_batch = plan.profile.train.batch_size
    return {
        **describe_world(world),
        "sync_bn": plan.sync_bn and world.distributed,
        "global_batch": global_batch,
        "per_rank_batch": global_batch // world.world_size,
    }


def prepare_run(
    plan: RunPlan, run: RunDir, progress: Progress, measure: Measure, dataset: Optional[ReidDataset], world: World,
) -> RunContext:
    """Decode the images and describe the environment, once for every cell."""
    dataset = dataset or load_dataset(plan.dataset)
    settings = resolve_settings(plan, dataset)
    data = prepare_data(plan.dataset, dataset, settings, plan.device, plan.data_cache, progress)
    return RunContext(plan, settings, data, run, cell_environment(plan, world), progress, measure, world)


def execute(
    plan: RunPlan, run: RunDir, progress: Progress, measure: Measure, *,
    dataset: Optional[ReidDataset] = None, world: World = World(), on_epoch: Optional[Callable[[str, int, int], None]] = None,
) -> list[CellRecord]:
    """Run (or continue) every cell and seed of the plan; returns the records. Re-raises KeyboardInterrupt.

    Under torchrun every rank calls this with the same plan and runs the same
    cells in the same order; rank 0 alone writes the run directory and decides
    which cells are finished, and every rank returns rank 0's records.
    """
    ctx = replace(prepare_run(plan, run, progress, measure, dataset, world), on_epoch=on_epoch)
    meta = read_meta(run)
    if world.is_main:
        write_json(run.environment_json, ctx.environment)
        meta.status, meta.settings, meta.dataset = RunState.RUNNING, ctx.settings.to_dict(), ctx.data.info
        write_json(run.run_json, meta.to_dict())
    progress.log(data_line(ctx.data))
    try:
        records = _run_cells(ctx)
    except KeyboardInterrupt:
        _end_run(ctx, meta, RunState.INTERRUPTED)
        raise
    _end_run(ctx, meta, RunState.FINISHED)
    return records


def _run_cells(ctx: RunContext) -> list[CellRecord]:
    plan, run, log = ctx.plan, ctx.run, ctx.progress.log
    jobs = [(cell, seed) for cell in plan.cells_now for seed in range(plan.seeds)]
    records = []
    for index, (cell, seed) in enumerate(jobs, 1):
        existing = from_main(ctx.world, lambda: run.read_record(cell.id, seed))
        if existing is not None and existing.status.finished:
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {existing.status} already, skipped")
            records.append(existing)
            continue
        log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}")
        record = run_cell(cell, seed, ctx)
        records.append(record)
        if ctx.world.is_main:
            run.write_results(c.id for c in plan.cells)
        log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {summary_line(record.to_dict())}")
    return records


def _end_run(ctx: RunContext, meta: Any, state: RunState) -> None:
    if not ctx.world.is_main:
        return
    meta.status = state
    if state == RunState.FINISHED:
        meta.finished = now_utc()
    else:
        meta.interrupted = now_utc()
    write_json(ctx.run.run_json, meta.to_dict())
    ctx.run.write_results(c.id for c in ctx.plan.cells)


def run_one(run_root: str, cell_id: str, seed: int, measurer: MeasureFactory, job: Optional[dict[str, Any]] = None) -> CellRecord:
    """Run one (cell, seed) of an existing run directory: the whole work of one job of a fanned-out run.

    Many of these run at once, so this writes only cells/<cell>/seed<k>/ (record, training log,
    checkpoint, model, and JOB_FILE); run.json, environment.json and results.csv belong to the
    launcher. As with --resume, a finished cell is returned untouched and an unfinished one
    continues from its checkpoint, so a requeued job picks up where the last one stopped.
    Plain arguments and a module-level `measurer`, so a job scheduler can pickle the call.
    """
    run = RunDir(Path(run_root))
    world = world_from_env()  # a job with N GPUs runs this in N processes, one DDP rank each
    plan = load_plan(run)
    plan = replace(plan, device=init_distributed(world, plan.device))
    cell = plan.grid.cell(cell_id)
    if cell not in plan.cells or not 0 <= seed < plan.seeds:
        raise UsageError(f"{run.root} plans no {cell_id} seed {seed}; its cells are {', '.join(c.id for c in plan.cells)}, seeds 0..{plan.seeds - 1}.")
    existing = from_main(world, lambda: run.read_record(cell.id, seed))
    if existing is not None and existing.status.finished:
        return existing
    progress = Progress(lambda message: print(message, file=sys.stderr, flush=True), bars=False)
    ctx = prepare_run(plan, run, progress, measurer(plan.profile.measure, plan.device, plan.dtype), None, world)
    if world.is_main:
        write_json(run.cell_dir(cell.id, seed) / JOB_FILE, {
            **(job or {}), "pid": os.getpid(), "started": now_utc(), "started_unix": time.time(),
            "environment": ctx.environment, "dataset": ctx.data.info, "settings": ctx.settings.to_dict(),
        })
    return run_cell(cell, seed, ctx)
