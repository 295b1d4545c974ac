"""The grid runner: every cell and seed of a plan in turn (`execute`), or one of them as a job (`run_one`).

`execute` skips finished cells and continues unfinished ones from their last
checkpoint, so `--resume` is `execute` on a stored plan. Everything a report
needs is written to the run directory; the lifecycle of one cell is
`reidbench.harness.cell`'s.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.data import ReidDataset, load_dataset
from reidbench.data.fingerprint import changes, fingerprint
from reidbench.data.records import SPLITS
from reidbench.errors import ReidbenchError, UsageError
from reidbench.harness.cell import Measure, MeasureFactory, RunContext, run_cell
from reidbench.harness.console import data_line, summary_line, test_data_line
from reidbench.harness.lock import DirectoryLock
from reidbench.runtime.processes import this_process
from reidbench.harness.placement import TEST_SPLITS, ImageStore
from reidbench.harness.plan import RunPlan, cell_settings, cells_in_size_order, load_plan, resolve_settings, run_dataset
from reidbench.harness.seed_rounds import next_round
from reidbench.rundir import RunDir
from reidbench.runtime.distributed import World, describe_world, from_main, init_distributed, world_from_env
from reidbench.runtime.environment import collect_environment
from reidbench.runtime.files import now_utc, remove_stale_temporaries, write_json
from reidbench.runtime.progress import Progress
from reidbench.runtime.text import seeds_text
from reidbench.schema import OWNER_FIELDS, CellRecord, Owner, RunMeta, RunState
from reidbench.variants.grid import Cell
from reidbench.variants.settings import VariantSettings

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
    environment["seeds"] = plan.first_round_seeds
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


@dataclass
class Prepared:
    """What every cell of a run shares and that is known before the run directory exists."""

    settings: VariantSettings
    """The run's base settings (each cell's own add its backbone table, recipe and axes)."""
    images: ImageStore
    environment: dict[str, Any]


def prepare_run(plan: RunPlan, progress: Progress, dataset: Optional[ReidDataset] = None, world: World = World()) -> Prepared:
    """Decode the images and describe the environment, once for every cell.

    Done before a new run's directory is created, so that input found bad only
    now (no readable image, no query with a match) leaves nothing behind.
    """
    dataset = dataset or run_dataset(plan)
    settings = resolve_settings(plan, dataset)
    order = cells_in_size_order(plan, dataset)
    first = cell_settings(plan, order[0], dataset) if order else settings
    tests = {spec: load_dataset(spec) for spec in plan.test_data}
    images = ImageStore(plan.dataset, dataset, tests, plan.device, plan.data_cache, progress)
    images.at(first)  # decoded now: a dataset found bad here stops the run before its directory exists
    return Prepared(settings, images, cell_environment(plan, world))


def check_resumed_data(run: RunDir, plan: RunPlan, dataset: ReidDataset) -> list[str]:
    """Refuse to continue a run on data other than the data it trained and scored on (its fingerprint in run.json);
    the warnings returned say where that cannot be checked (a run recorded before fingerprints)."""
    meta = run.meta()
    sets = [(plan.dataset, meta.dataset, dataset, SPLITS)]
    sets += [(f"test set {spec}", meta.test_sets.get(spec) or {}, load_dataset(spec), TEST_SPLITS) for spec in plan.test_data]
    warnings, found = [], []
    for name, recorded, data, splits in sets:
        if "fingerprint" not in recorded:
            if "counts" in recorded:
                warnings.append(f"warning: {run.root} was recorded before reidbench fingerprinted the data it runs on, so whether "
                                f"{name} is still the data its finished cells used cannot be checked; go on only if it is unchanged.")
            continue
        differ = changes(recorded["fingerprint"], fingerprint(data, splits), "sample" if data.multimodal else "image")
        if differ:
            found.append(f"{name}: {'; '.join(differ)}")
    if found:
        raise UsageError(
            f"--resume {run.root}: the data changed since the run used it ({'. '.join(found)}). Its cells would be trained or "
            "scored on different data and listed side by side, so nothing was resumed: restore the data the run used, or "
            f"start a new run on the data as it is now (reidbench run --data {plan.dataset} --out NEW_DIR)."
        )
    return warnings


def execute(
    plan: RunPlan, run: RunDir, progress: Progress, measure: Measure, *, prepared: Optional[Prepared] = None,
    dataset: Optional[ReidDataset] = None, world: World = World(), on_epoch: Optional[Callable[[str, int, int], None]] = None,
) -> list[CellRecord]:
    """Run (or continue) every cell and seed of the plan; returns the records. Re-raises KeyboardInterrupt.

    Under torchrun every rank calls this with the same plan and runs the same
    cells in the same order; rank 0 alone writes the run directory and decides
    which cells are finished, and every rank returns rank 0's records. Rank 0
    holds the run directory's lock throughout.
    """
    with (DirectoryLock(run.lock, "run") if world.is_main else nullcontext()):
        prepared = prepared or prepare_run(plan, progress, dataset, world)
        ctx = RunContext(plan, prepared.settings, prepared.images, run, prepared.environment, progress, measure, world, on_epoch)
        meta = _start(ctx)
        progress.log(data_line(ctx.images.data))
        for test in ctx.images.tests:
            progress.log(test_data_line(test))
        try:
            records = _run_cells(ctx, meta)
        except KeyboardInterrupt:
            _end_run(ctx, meta, RunState.INTERRUPTED)
            raise
        except BaseException as exc:
            _end_run(ctx, meta, RunState.FAILED, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ReidbenchError) else str(exc))
            raise
        _end_run(ctx, meta, RunState.FINISHED)
        return records


def _start(ctx: RunContext) -> RunMeta:
    """run.json says who runs it now; what a killed process left half-written goes."""
    meta = ctx.run.meta()
    if ctx.world.is_main:
        for path in remove_stale_temporaries(ctx.run.root):
            ctx.progress.log(f"removed {path.relative_to(ctx.run.root)}, left by a process that is gone")
        write_json(ctx.run.environment_json, ctx.environment)
        meta.status, meta.settings = RunState.RUNNING, ctx.settings.to_dict()
        # The facts of the data the run's first cells used stand; a resume on other data was refused before this.
        meta.dataset = meta.dataset if "counts" in meta.dataset else ctx.images.data.info
        meta.test_sets = {test.spec: meta.test_sets.get(test.spec) or test.info for test in ctx.images.tests}
        meta.owner, meta.error = Owner(**{k: v for k, v in this_process().items() if k in OWNER_FIELDS}), None
        write_json(ctx.run.run_json, meta.to_dict())
    return meta


def _run_cells(ctx: RunContext, meta: RunMeta) -> list[CellRecord]:
    """Every planned (cell, seed); under `--seeds auto`, then round after round of more seeds where a cell needs them."""
    plan = ctx.plan
    cells = cells_in_size_order(plan, ctx.images.dataset)
    records = _run_slots(ctx, [(cell, seed) for cell in cells for seed in plan.cell_seeds(cell.id)])
    while plan.auto_seeds is not None:
        slots = next_round(plan, cells, records, ctx.progress.log)
        if not slots:
            break
        if ctx.world.is_main:  # the round is planned before it runs, so --resume finishes it
            meta.auto_seeds = plan.auto_seeds
            write_json(ctx.run.run_json, meta.to_dict())
        records += _run_slots(ctx, slots)
    return records


def _run_slots(ctx: RunContext, jobs: list[tuple[Cell, int]]) -> list[CellRecord]:
    run, log = ctx.run, ctx.progress.log
    records = []
    for index, (cell, seed) in enumerate(jobs, 1):
        existing = from_main(ctx.world, lambda: _finished_record(run, cell.id, seed, log))
        if existing is not None:
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {existing.status} already, skipped")
            records.append(existing)
            continue
        log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}")
        record = run_cell(cell, seed, ctx)
        records.append(record)
        if ctx.world.is_main:
            run.write_results(c.id for c in ctx.plan.cells)
        log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {summary_line(record.to_dict())}")
    return records


def _finished_record(run: RunDir, cell: str, seed: int, log: Callable[[str], None]) -> Optional[CellRecord]:
    """The cell's record if it finished; a damaged record means the cell runs again."""
    try:
        record = run.read_record(cell, seed)
    except UsageError as exc:
        log(f"    {exc} The cell runs again.")
        return None
    return record if record is not None and record.status.finished else None


def _end_run(ctx: RunContext, meta: RunMeta, state: RunState, error: Optional[str] = None) -> None:
    """run.json and results.csv say how the run ended; on a disk that refuses writes, the error that stopped it stands."""
    if not ctx.world.is_main:
        return
    meta.status, meta.error = state, error
    if state == RunState.FINISHED:
        meta.finished = now_utc()
    elif state == RunState.INTERRUPTED:
        meta.interrupted = now_utc()
    try:
        write_json(ctx.run.run_json, meta.to_dict())
        ctx.run.write_results(c.id for c in ctx.plan.cells)
    except OSError:
        if state == RunState.FINISHED:
            raise


def run_one(run_root: str, cell_id: str, seed: int, measurer: MeasureFactory, job: Optional[dict[str, Any]] = None) -> CellRecord:
    """Run one (cell, seed) of an existing run directory: the whole work of one job of a fanned-out run.

    Many of these run at once, so this writes only cells/<cell>/seed<k>/ (record, training log,
    checkpoint, model, and its job file: where it ran, with what `execute` would write to the run-level
    files, for the launcher to merge); run.json, environment.json and results.csv belong to the
    launcher. As with --resume, a finished cell is returned untouched and an unfinished one
    continues from its checkpoint, so a requeued job picks up where the last one stopped.
    Plain arguments and a module-level `measurer`, so a job scheduler can pickle the call.
    """
    run = RunDir(Path(run_root))
    world = world_from_env()  # a job with N GPUs runs this in N processes, one DDP rank each
    plan = load_plan(run)
    plan = replace(plan, device=init_distributed(world, plan.device))
    cell = plan.grid.cell(cell_id)
    if cell not in plan.cells or seed not in plan.cell_seeds(cell.id):
        raise UsageError(f"{run.root} plans no {cell_id} seed {seed}; its cells are {', '.join(c.id for c in plan.cells)}, "
                         f"{seeds_text(plan.cell_seeds(cell.id))}.")
    existing = from_main(world, lambda: run.read_record(cell.id, seed))
    if existing is not None and existing.status.finished:
        return existing
    progress = Progress(lambda message: print(message, file=sys.stderr, flush=True), bars=False)
    dataset = run_dataset(plan)
    for warning in check_resumed_data(run, plan, dataset):  # a requeued job continues on the data the run used, or not at all
        progress.log(warning)
    prepared = prepare_run(plan, progress, dataset, world)
    measure = measurer(plan.profile.measure, plan.device, plan.dtype)
    ctx = RunContext(plan, prepared.settings, prepared.images, run, prepared.environment, progress, measure, world)
    if world.is_main:
        write_json(run.cell(cell.id, seed).job, {
            **(job or {}), **this_process(),
            "environment": ctx.environment, "dataset": ctx.images.data.info, "settings": ctx.settings.to_dict(),
        })
    return run_cell(cell, seed, ctx)
