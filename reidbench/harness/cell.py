"""One cell and seed of a run: probe -> train -> evaluate (record's metrics, queries.npz) -> save -> measure -> record.

A cell that raises, goes NaN or runs out of memory is recorded as failed and
the grid goes on. Ctrl-C records it as interrupted and re-raises. Its training
checkpoint is kept until the final record is written, so a cell interrupted
while it is evaluated or measured continues after its last epoch.

Measuring is not this package's job: the runner is handed a `Measure` (the
command line passes bench's), so harness never imports bench.
"""
from __future__ import annotations

import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch

from reidbench.errors import ReidbenchError
from reidbench.harness.evaluate import evaluate_model
from reidbench.harness.lock import DirectoryLock
from reidbench.harness.placement import ImageStore
from reidbench.harness.plan import RunPlan, cell_profile, cell_recipe, cell_settings
from reidbench.profiles import SET_ORIGIN, Profile
from reidbench.harness.tensorboard import tensorboard_hook, train_hparams, write_cell_hparams
from reidbench.harness.train import TrainOptions, train_model
from reidbench.harness.validation import periodic_evaluation
from reidbench.rundir import RunDir
from reidbench.runtime.distributed import World, batchnorm_kinds, broadcast_object, gather_objects, revert_sync_batchnorm
from reidbench.runtime.files import now_utc, remove_stale_temporaries, save_torch_atomic
from reidbench.runtime.progress import Log, Progress
from reidbench.schema import CellRecord, CellState
from reidbench.variants.factory import create_variant
from reidbench.variants.grid import Cell
from reidbench.variants.model import ReidModel
from reidbench.variants.probe import probe_cell
from reidbench.variants.settings import VariantSettings

Measure = Callable[[ReidModel, CellRecord, Log], None]
"""Fills a trained cell's record with its costs (FLOPs, latency, memory); a failure marks the record failed."""
MeasureFactory = Callable[..., Measure]
"""`(profile's MeasureConfig, device, dtype) -> Measure`; a module-level function, so a job scheduler can pickle it."""


@dataclass
class RunContext:
    """What every cell of a run shares."""

    plan: RunPlan
    settings: VariantSettings
    """The run's base settings; a cell's own come from `harness.plan.cell_settings`."""
    images: ImageStore
    run: RunDir
    environment: dict[str, Any]
    progress: Progress
    measure: Measure
    world: World = field(default_factory=World)
    on_epoch: Optional[Callable[[str, int, int], None]] = None
    """Told (cell, seed, epoch) after every epoch; tests interrupt runs with it."""


def run_cell(cell: Cell, seed: int, ctx: RunContext) -> CellRecord:
    """Probe, train, evaluate, save and measure one cell; the record (rank 0's, on every rank under torchrun).

    Each step ends with the ranks agreeing on its outcome (see `_agree_and_apply`), so a
    step that fails on any rank fails the cell on all of them and they move to
    the next cell together. Saving and measuring run on rank 0 while the
    others wait in that agreement.
    """
    files = ctx.run.cell(cell.id, seed)
    files.path.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(files.lock, "cell") if ctx.world.is_main else nullcontext():
        if ctx.world.is_main:
            remove_stale_temporaries(files.path)
        return _run_locked_cell(cell, seed, ctx)


def _run_locked_cell(cell: Cell, seed: int, ctx: RunContext) -> CellRecord:
    plan, world, run = ctx.plan, ctx.world, ctx.run
    started, stamp = time.perf_counter(), now_utc()
    record = CellRecord(cell.id, cell.backbone, cell.neck, CellState.RUNNING, seed=seed, started=stamp)
    if world.is_main:
        run.write_record(record)
    settings, profile = cell_settings(plan, cell, ctx.images.dataset), cell_profile(plan, cell)
    torch.manual_seed(seed if profile.train.init_seed is None else profile.train.init_seed)
    build = lambda: create_variant(cell, weights=plan.weights.get(cell.backbone), settings=settings)  # noqa: E731
    try:
        probe = probe_cell(cell, build, plan.device)
    except ReidbenchError as exc:  # bad input (a weights file that does not fit): the cell and the command stop
        if world.is_main:
            record.status, record.error, record.finished = CellState.FAILED, str(exc), now_utc()
            run.write_record(record)
        raise
    record = probe.record(cell, settings, seed)
    record.axes, record.recipe = dict(cell.axes), recipe_record(profile, cell_recipe(plan, cell).to_dict())
    record.started, record.phase_seconds = stamp, {"probe": time.perf_counter() - started}
    record.environment = {"commit": ctx.environment.get("git_commit"), "device_name": ctx.environment.get("device_name")}
    record.distributed = ctx.environment.get("distributed")
    try:
        _agree_and_apply(record, world, lambda: _probe_agrees(probe.status, world))
        if record.status == CellState.DONE and probe.model is not None:
            _train_evaluate_measure(probe.model, cell, seed, record, ctx, profile)
    except KeyboardInterrupt:
        if world.is_main:
            record.status, record.error = CellState.INTERRUPTED, "interrupted; continue with reidbench run --resume RUN_DIR"
            run.write_record(record)
        raise
    record.wall_seconds, record.finished = time.perf_counter() - started, now_utc()
    if world.is_main:
        run.write_record(record)
        run.cell(cell.id, seed).checkpoint.unlink(missing_ok=True)  # the record is final: nothing to resume
    return broadcast_object(record, world)


def _train_evaluate_measure(model: ReidModel, cell: Cell, seed: int, record: CellRecord, ctx: RunContext, profile: Profile) -> None:
    plan, world, files = ctx.plan, ctx.world, ctx.run.cell(cell.id, seed)
    data, tests = ctx.images.at(model.settings)

    def train() -> None:
        kinds = batchnorm_kinds(model)
        options = TrainOptions(seed, plan.device, plan.dtype, world, plan.sync_bn and world.distributed, plan.compile, plan.cuda_graphs)
        told = None if ctx.on_epoch is None else (lambda epoch: ctx.on_epoch(cell.id, seed, epoch))
        board = tensorboard_hook(ctx.run.root, cell.id, seed, ctx.progress.log) if world.is_main else None
        scoring = periodic_evaluation(plan, data, ctx.progress, world.is_main)
        summary = train_model(model, data.train, profile.train, options, files.path, ctx.progress, told,
                              extra_hooks=[board] if board is not None else [], before_log=[scoring] if scoring else [])
        record.validation = scoring.record(profile.train.epochs) if scoring else None
        revert_sync_batchnorm(model, kinds)  # no rank-0-only forward may all-reduce with the others
        record.training = summary.to_dict()
        record.warnings.extend(summary.warnings)
        for warning in summary.warnings if world.is_main else []:
            ctx.progress.log(f"    warning: {warning}")

    def evaluate() -> None:
        cfg = plan.profile.eval
        scored = evaluate_model(model, data.query, data.gallery, cfg, plan.device, plan.dtype, ctx.progress, world)
        record.metrics, queries = scored.metrics, dict(scored.queries)
        for test in tests:
            scored = evaluate_model(model, test.query, test.gallery, cfg, plan.device, plan.dtype, ctx.progress, world, test.spec)
            record.cross_domain[test.spec] = {**scored.metrics, "dataset": test.name}
            queries.update(scored.queries)
        if world.is_main:  # before any record that says done: a done cell always has its queries.npz
            ctx.run.write_queries(cell.id, seed, queries)
            write_cell_hparams(ctx.run.root, record, ctx.progress.log, extra=train_hparams(profile.train, profile.name))

    def keep_and_measure() -> None:
        if world.is_main:
            save_torch_atomic(model.state_dict(), files.model)
            ctx.measure(model, record, ctx.progress.log)

    for phase, step in (("train", train), ("evaluate", evaluate), ("measure", keep_and_measure)):
        step_started = time.perf_counter()
        failed = _agree_and_apply(record, world, step)
        record.phase_seconds[phase] = time.perf_counter() - step_started  # the ranks' agreement included
        if failed:
            return


def recipe_record(profile: Profile, choice: dict[str, Any]) -> dict[str, Any]:
    """What a cell trained with, for its record: a reader of its accuracy must see the recipe beside it, why that
    recipe (`RecipeChoice.to_dict`: the cell's initialisation and the recipe's), and which of its values the command
    line set (`--set TABLE.KEY`, under "set")."""
    given = {key: value for key, value, origin in profile.resolved() if origin == SET_ORIGIN}
    return {"profile": profile.name, "follows": profile.follows, "departures": list(profile.departures),
            **choice, "train": asdict(profile.train), **({"set": given} if given else {})}


def _probe_agrees(status: CellState, world: World) -> None:
    """Fail on a rank whose forward probe ended otherwise than rank 0's (a GPU short of memory, say)."""
    statuses = gather_objects(status, world)
    if status != statuses[0]:
        raise RuntimeError(f"the forward probe ended {status} here but {statuses[0]} on rank 0")


def _agree_and_apply(record: CellRecord, world: World, step: Callable[[], None]) -> bool:
    """Run one step of a cell and agree on its outcome across ranks; a failure (the lowest failing rank's,
    the same on every rank, so all skip the rest) is written into `record`. Returns whether it failed.

    A step's own collectives (DDP's gradient all-reduce, the feature gather)
    must be reached by every rank or by none: a step that fails on one rank
    alone half-way through them cannot be agreed on (see
    reidbench.runtime.distributed). KeyboardInterrupt propagates.
    """
    failure: dict[str, Any] = {}
    try:
        step()
    except ReidbenchError as exc:  # diverged, a capture refused, a damaged checkpoint: the message says what to do
        failure = {"error": str(exc)}
    except torch.cuda.OutOfMemoryError as exc:
        failure = {"error": f"CUDA out of memory ({exc}); lower train.p or the measure batch sizes"}
    except Exception as exc:  # noqa: BLE001 - one cell's bug must not stop the grid
        failure = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    if world.distributed:
        failures = gather_objects(failure, world)
        rank, failure = next(((r, f) for r, f in enumerate(failures) if f), (0, {}))
        if failure and rank:
            failure = {**failure, "error": f"on rank {rank}: {failure['error']}"}
    if failure:
        record.status, record.error = CellState.FAILED, failure["error"]
        record.traceback = failure.get("traceback", record.traceback)
    return bool(failure) or record.status == CellState.FAILED
