"""The grid runner: per cell and seed, build -> forward probe -> train -> evaluate -> measure -> record.

A cell that raises, goes NaN or runs out of memory is recorded as failed and
the grid goes on. Ctrl-C marks the running cell interrupted and re-raises;
`resume_run` skips finished cells and continues unfinished ones from their
last checkpoint. Everything a report needs is written to the run directory.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.runtime.environment import collect_environment
from reidbench.variants.probe import DONE, FAILED, XFAIL, XPASS, probe_cell
from reidbench.bench.suite import BenchOptions, measure_model, new_record
from reidbench.errors import UsageError
from reidbench.data import ReidDataset, load_dataset
from reidbench.runtime.distributed import (
    World, batchnorm_kinds, broadcast_object, describe_world, from_main, gather_objects, revert_sync_batchnorm,
)
from reidbench.harness.evaluate import evaluate_model
from reidbench.data.images import load_images
from reidbench.data.stream import AnyImageSet, stream_images
from reidbench.harness.metrics import evaluate_rank
from reidbench.profiles import Profile, load_profile
from reidbench.runtime.progress import Progress
from reidbench.harness.rundir import RunDir, phase_breakdown
from reidbench.runtime.files import now_utc, read_json, save_torch_atomic, write_atomic, write_json
from reidbench.harness.train import TrainingDiverged, train_model
from reidbench.training.step import ranks_batch
from reidbench.training.graph_step import GraphCaptureFailed
from reidbench.variants.factory import create_variant
from reidbench.variants.grid import Cell, Grid, parse_grid
from reidbench.variants.settings import VariantSettings

FINISHED = (DONE, XFAIL, XPASS)
"""Statuses `--resume` leaves alone; failed and interrupted cells run again."""
INTERRUPTED, RUNNING = "interrupted", "running"


@dataclass
class RunPlan:
    """Everything that defines a run; written to run.json, read back by --resume."""

    grid: Grid
    grid_text: str
    profile: Profile
    profile_text: str
    dataset: str
    device: torch.device
    dtype: str
    seeds: int
    only: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    """Backbone name -> local checkpoint (the grid's [weights] table, then --weights)."""
    compile: bool = False
    """Train with the backbone's transformer blocks compiled (torch.compile, regional)."""
    data_cache: str = "auto"
    """Where the decoded uint8 images live: auto, device, host, or stream (decoded per batch; see `cache_location`)."""
    sync_bn: bool = False
    """Under torchrun, batch norm with statistics over all ranks (SyncBatchNorm; CUDA only)."""
    cuda_graphs: bool = False
    """Train with each step after the first few replayed as a CUDA graph (`reidbench.training.graph_step`)."""

    @property
    def cells(self) -> list[Cell]:
        return self.grid.select(self.only)


@dataclass
class RunData:
    dataset: ReidDataset
    train: AnyImageSet
    query: AnyImageSet
    gallery: AnyImageSet
    info: dict[str, Any]


def start_run(plan: RunPlan, run_root: Path) -> RunDir:
    """Create the run directory and write what defines the run."""
    run = RunDir(run_root)
    write_atomic(run.root / "grid.toml", plan.grid_text)
    write_atomic(run.root / "profile.toml", plan.profile_text)
    write_json(run.run_json, {
        "status": RUNNING,
        "started": now_utc(),
        "command": " ".join(sys.argv),
        "grid": {"name": plan.grid.name, "source": plan.grid.source, "cells": [c.id for c in plan.cells]},
        "profile": {"name": plan.profile.name, "source": plan.profile.source, **plan.profile.to_dict()},
        "dataset": {"spec": plan.dataset},
        "device": str(plan.device),
        "dtype": plan.dtype,
        "seeds": list(range(plan.seeds)),
        "only": plan.only,
        "overrides": plan.overrides,
        "weights": plan.weights,
        "compile": plan.compile,
        "data_cache": plan.data_cache,
        "sync_bn": plan.sync_bn,
        "cuda_graphs": plan.cuda_graphs,
    })
    return run


def load_plan(run: RunDir, device: Optional[torch.device] = None) -> RunPlan:
    """The plan of an existing run directory, for --resume."""
    meta = read_json(run.run_json)
    if meta is None or not (run.root / "grid.toml").exists() or not (run.root / "profile.toml").exists():
        raise UsageError(f"{run.root} is not a reidbench run directory (run.json, grid.toml or profile.toml is missing).")
    grid_text = (run.root / "grid.toml").read_text()
    profile_text = (run.root / "profile.toml").read_text()
    grid = parse_grid(grid_text.encode(), source=meta["grid"]["source"], name=meta["grid"]["name"])
    profile = replace(load_profile(str(run.root / "profile.toml")), name=meta["profile"]["name"], source=meta["profile"]["source"])
    stored = torch.device(meta["device"])
    if device is not None and device.type != stored.type:
        raise UsageError(f"{run.root} was run on {stored}; resuming on {device} would mix numbers from two devices.")
    if stored.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{run.root} was run on CUDA and no CUDA device is visible now; resume it on a GPU machine.")
    return RunPlan(
        grid=grid, grid_text=grid_text, profile=profile, profile_text=profile_text, dataset=meta["dataset"]["spec"],
        device=stored, dtype=meta["dtype"], seeds=len(meta["seeds"]), only=meta.get("only", []),
        overrides=meta.get("overrides", {}), weights=meta.get("weights", {}),
        compile=meta.get("compile", False), data_cache=meta.get("data_cache", "auto"), sync_bn=meta.get("sync_bn", False),
        cuda_graphs=meta.get("cuda_graphs", False),
    )


def resolve_settings(plan: RunPlan, dataset: ReidDataset) -> VariantSettings:
    """Grid settings, then the profile's model overrides, then --set, then what the dataset dictates."""
    settings = plan.grid.settings.with_overrides(plan.profile.model, f"profile {plan.profile.name} [model]")
    settings = settings.with_overrides(plan.overrides, "--set")
    return settings.with_overrides({"num_classes": dataset.num_train_pids, "num_cameras": dataset.num_cameras}, "dataset")


def prepare_data(plan: RunPlan, dataset: ReidDataset, settings: VariantSettings, progress: Progress) -> RunData:
    """Decode every image once at the variant size and keep them where `cache_location` says, for all cells.

    Streamed sets (too big for memory) only have their headers read here; their
    pixels are decoded per batch during training and evaluation.
    """
    where, why = cache_location(decoded_size(dataset, settings), plan.device, plan.data_cache, _available_memory())
    streamed = where == STREAM
    sets: dict[str, AnyImageSet] = {}
    for split in ("train", "query", "gallery"):
        records = getattr(dataset, split)
        with progress.task(len(records), f"{'reading headers of' if streamed else 'decoding'} {split}", "img") as advance:
            done = [0]

            def report(n: int, total: int) -> None:
                advance(n - done[0])
                done[0] = n

            loaded = (stream_images if streamed else load_images)(records, settings.img_size, progress=report)
        # A streamed set only learns whether to pin its batches for the device.
        sets[split] = loaded.to(torch.device("cpu") if where == HOST else plan.device)
    location = sets["train"].location
    info = {
        "spec": plan.dataset,
        "name": dataset.name,
        "root": str(dataset.root),
        "version": dataset.version,
        "counts": dataset.counts(),
        "dropped": dataset.dropped,
        "unreadable": {s: len(v.skipped) for s, v in sets.items()},
        "unreadable_examples": [p for v in sets.values() for p, _ in v.skipped][:5],
        "converted_to_rgb": {s: v.converted for s, v in sets.items()},
        "resized": {s: v.resized for s, v in sets.items()},
        "decoded_mib": sum(v.decoded_nbytes for v in sets.values()) / 2**20,
        "cache": {"location": location, "policy": plan.data_cache, "why": why},
        "chance": chance_level(sets["query"], sets["gallery"]),
    }
    return RunData(dataset, sets["train"], sets["query"], sets["gallery"], info)


DEVICE, HOST, STREAM = "device", "host", "stream"
CACHE_POLICIES = ("auto", DEVICE, HOST, STREAM)
#: `auto` keeps the decoded images on the GPU while they take at most this share of its free memory.
DEVICE_CACHE_SHARE = 0.25
#: A cache may take at most this share of the host memory available when the run starts.
HOST_CACHE_SHARE = 0.8


def check_cache_policy(policy: str) -> None:
    if policy not in CACHE_POLICIES:
        raise UsageError(f"--data-cache {policy!r} is unknown; choose one of {', '.join(CACHE_POLICIES)}.")


def decoded_size(dataset: ReidDataset, settings: VariantSettings) -> int:
    """Bytes of uint8 pixels that caching every split of `dataset` at the variant's input size takes."""
    h, w = settings.img_size
    return sum(len(getattr(dataset, split)) for split in ("train", "query", "gallery")) * 3 * h * w


def cache_location(
    decoded_bytes: int, device: torch.device, policy: str, available_host: Optional[int] = None
) -> tuple[str, str]:
    """Where a run's images come from -- `DEVICE`, `HOST` or `STREAM` -- and why, decided before decoding.

    On the device, a batch is one gather and nothing crosses PCIe during
    training. When the images would take more than a quarter of the GPU's free
    memory (Market-1501 at 256x128 is 1.3 GB, MSMT17 3.2 GB: both stay on an
    80 GB card; a 16 GB card or a larger input size may not), they stay in host
    memory and each batch is gathered there and copied over asynchronously
    (pinned, non-blocking), overlapping the previous step. When they would take
    more than 80 % of the host memory `available_host` too, `auto` streams them:
    DataLoader workers decode each batch when it is needed (`reidbench.data.stream`);
    `host` and `device` refuse, since caching would swap the machine to a halt.
    """
    check_cache_policy(policy)
    size = f"{decoded_bytes / 2**20:.0f} MiB decoded"
    if policy == STREAM:
        return STREAM, f"{size}; --data-cache stream"
    if available_host is not None and decoded_bytes > HOST_CACHE_SHARE * available_host:
        over = f"{size} > {HOST_CACHE_SHARE:.0%} of the {available_host / 2**30:.1f} GiB of host memory available"
        if policy == "auto":
            return STREAM, f"{over}: decoded per batch by DataLoader workers"
        raise UsageError(
            f"--data-cache {policy}: the images would not fit, {over}. Use --data-cache stream (or auto) to decode "
            "them per batch, a smaller input size (--set img_size=[H,W]), or a machine with more memory."
        )
    if device.type != "cuda":
        return HOST, f"{size}; {device.type} run: the images live in host memory"
    if policy == HOST:
        return HOST, f"{size}; --data-cache host"
    if policy == DEVICE:
        return DEVICE, f"{size}; --data-cache device"
    free, _ = torch.cuda.mem_get_info(device)
    if decoded_bytes <= DEVICE_CACHE_SHARE * free:
        return DEVICE, f"{size} <= {DEVICE_CACHE_SHARE:.0%} of {free / 2**30:.1f} GiB free on the GPU"
    return HOST, f"{size} > {DEVICE_CACHE_SHARE:.0%} of {free / 2**30:.1f} GiB free on the GPU: host memory"


def _available_memory() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def chance_level(query: AnyImageSet, gallery: AnyImageSet, seed: int = 0) -> dict[str, float]:
    """mAP and rank-1 of random features under the same protocol: the floor a trained model must clear."""
    generator = torch.Generator().manual_seed(seed)
    qf = torch.randn(len(query), 64, generator=generator)
    gf = torch.randn(len(gallery), 64, generator=generator)
    result = evaluate_rank(qf, gf, query.pids.cpu(), gallery.pids.cpu(), query.camids.cpu(), gallery.camids.cpu())
    return {"mAP": result.mAP, "rank1": result.rank1}


def check_plan(plan: RunPlan, world: World = World()) -> ReidDataset:
    """Everything that can be wrong with the input, found before a run directory is created."""
    plan.cells  # noqa: B018 - raises for an unknown --only cell
    if plan.sync_bn and plan.device.type != "cuda":
        raise UsageError(
            f"--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm refuses {plan.device.type} tensors (the gloo "
            "backend has no synchronized batch norm); drop --sync-bn, or run on GPUs with --device cuda."
        )
    if plan.cuda_graphs:
        check_cuda_graphs(plan, world)
    ranks_batch(plan.profile.train, world)  # raises when P does not split over the ranks
    check_cache_policy(plan.data_cache)
    dataset = load_dataset(plan.dataset)
    resolve_settings(plan, dataset)
    return dataset


def default_cuda_graphs(device: torch.device, world: World) -> bool:
    """Whether a run replays its training steps as CUDA graphs when neither --cuda-graphs nor --no-cuda-graphs is given.

    On wherever it can be (a CUDA device, one process per cell): on an H200 it trained
    every cell of the full default grid 1.4-1.7x faster at the same accuracy, lifts the
    harness's batch-64 step above the bare library loop (1.27x and 1.56x of it, against
    0.80x eager), and replaying *compiled* steps is what makes --compile pay reliably
    (1.33-1.62x the graph-replayed eager steps, where compiled steps launched one by one
    gave 1.02-2.29x eager ones, below 1.15x in 4 of 8 measurements over two sessions;
    docs/benchmarks). Off under DDP, whose all-reduce a graph would have to capture.
    """
    return device.type == "cuda" and world.world_size == 1


def check_cuda_graphs(plan: RunPlan, world: World) -> None:
    """--cuda-graphs trains one network in one process on a GPU; anything else is named before the run starts."""
    if world.world_size > 1:
        raise UsageError(
            f"--cuda-graphs does not capture DDP's all-reduce: train each cell in one process (this run has "
            f"{world.world_size}: torchrun --nproc-per-node or --gpus-per-cell > 1), or leave --cuda-graphs off."
        )
    if plan.device.type != "cuda":
        raise UsageError(f"--cuda-graphs needs a CUDA device; this run is on {plan.device.type}. Drop --cuda-graphs, or run with --device cuda.")


def cell_environment(plan: RunPlan) -> dict[str, Any]:
    """Make this process's numbers reproducible, then describe it: what environment.json holds."""
    if plan.device.type == "cpu":
        # Some CPU backward kernels (indexing an embedding table with camera ids, for one)
        # accumulate in a thread-dependent order; seen: gradients differing in the 8th digit
        # between two processes, and 30 epochs turning that into a different mAP.
        torch.use_deterministic_algorithms(True)
    # cudnn.benchmark stays off in runs: with it on, the H200 full-profile run's vit768-ms reached
    # 12.7 % mAP instead of 71.2 %, its triplet loss climbing to ~9 from epoch 13 (docs/benchmarks).
    # It trained the ms cells 2.7x faster then; the ms windows are GEMMs now (TiledConv2d), so
    # only the patch embedding is left to cuDNN. bench, which never trains, turns it on.
    environment = collect_environment(plan.device, plan.dtype)
    environment["seeds"] = list(range(plan.seeds))
    environment["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    return environment


def bench_options(plan: RunPlan) -> BenchOptions:
    """The profile's [measure] table as the options `measure_model` takes."""
    m = plan.profile.measure
    return BenchOptions(
        device=plan.device, dtype=plan.dtype, batch_sizes=list(m.batch_sizes), train_batch_size=m.train_batch_size,
        warmup=m.warmup, repeats=m.repeats, max_seconds=m.max_seconds,
        compile=m.compile, cuda_graphs=m.cuda_graphs, reference=m.reference,
    )


def parallelism(plan: RunPlan, world: World) -> dict[str, Any]:
    """How many processes trained, over which backend, with SyncBN or not, and the batch each step saw."""
    global_batch = plan.profile.train.batch_size
    return {
        **describe_world(world),
        "sync_bn": plan.sync_bn and world.distributed,
        "global_batch": global_batch,
        "per_rank_batch": global_batch // world.world_size,
    }


def execute(
    plan: RunPlan,
    run: RunDir,
    progress: Progress,
    on_epoch: Optional[Callable[[str, int, int], None]] = None,
    dataset: Optional[ReidDataset] = None,
    world: World = World(),
) -> list[dict]:
    """Run (or continue) every cell and seed of the plan; returns the records. Re-raises KeyboardInterrupt.

    Under torchrun every rank calls this with the same plan and runs the same
    cells in the same order; rank 0 alone writes the run directory and decides
    which cells are finished, and every rank returns rank 0's records.
    """
    log = progress.log
    meta = read_json(run.run_json)
    dataset = dataset or load_dataset(plan.dataset)
    settings = resolve_settings(plan, dataset)
    data = prepare_data(plan, dataset, settings, progress)
    environment = cell_environment(plan)
    environment["distributed"] = parallelism(plan, world)
    if world.is_main:
        write_json(run.environment_json, environment)
        meta.update({"status": RUNNING, "settings": settings.to_dict(), "dataset": data.info})
        write_json(run.run_json, meta)
    log(
        f"data: {data.dataset.name} — train {len(data.train)} images / {data.dataset.num_train_pids} ids, "
        f"query {len(data.query)}, gallery {len(data.gallery)}, {data.dataset.num_cameras} cameras "
        f"(images from {data.info['cache']['location']}: {data.info['cache']['why']}); "
        f"chance level: mAP {data.info['chance']['mAP']:.1%}, rank-1 {data.info['chance']['rank1']:.1%} (random features)"
    )
    options = bench_options(plan)
    jobs = [(cell, seed) for cell in plan.cells for seed in range(plan.seeds)]
    records = []
    try:
        for index, (cell, seed) in enumerate(jobs, 1):
            existing = from_main(world, lambda: run.read_record(cell.id, seed))
            if existing is not None and existing["status"] in FINISHED:
                log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {existing['status']} already, skipped")
                records.append(existing)
                continue
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}")
            record = run_cell(cell, seed, plan, settings, data, options, run, environment, progress, on_epoch, world)
            records.append(record)
            if world.is_main:
                run.write_results(c.id for c in plan.cells)
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {summary_line(record)}")
    except KeyboardInterrupt:
        if world.is_main:
            meta.update({"status": INTERRUPTED, "interrupted": now_utc()})
            write_json(run.run_json, meta)
            run.write_results(c.id for c in plan.cells)
        raise
    if world.is_main:
        meta.update({"status": "finished", "finished": now_utc()})
        write_json(run.run_json, meta)
        run.write_results(c.id for c in plan.cells)
    return records


JOB_FILE = "job.json"
"""In a cell folder of a fanned-out run: where its job ran, with what `execute` would write to
environment.json and run.json (environment, dataset facts, settings), for the launcher to merge."""


def run_one(run_root: str, cell_id: str, seed: int, job: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Run one (cell, seed) of an existing run directory: the whole work of one job of a fanned-out run.

    Many of these run at once, so this writes only cells/<cell>/seed<k>/ (record, training log,
    checkpoint, model, and JOB_FILE); run.json, environment.json and results.csv belong to the
    launcher. As with --resume, a finished cell is returned untouched and an unfinished one
    continues from its checkpoint, so a requeued job picks up where the last one stopped.
    Plain str/int arguments, so a job scheduler can pickle the call.
    """
    from reidbench.runtime.distributed import init_distributed, world_from_env

    run = RunDir(Path(run_root))
    world = world_from_env()  # a job with N GPUs runs this in N processes, one DDP rank each
    plan = load_plan(run)
    plan = replace(plan, device=init_distributed(world, plan.device))
    cell = plan.grid.cell(cell_id)
    if cell not in plan.cells or not 0 <= seed < plan.seeds:
        raise UsageError(f"{run.root} plans no {cell_id} seed {seed}; its cells are {', '.join(c.id for c in plan.cells)}, seeds 0..{plan.seeds - 1}.")
    existing = from_main(world, lambda: run.read_record(cell.id, seed))
    if existing is not None and existing["status"] in FINISHED:
        return existing
    progress = Progress(lambda message: print(message, file=sys.stderr, flush=True), bars=False)
    dataset = load_dataset(plan.dataset)
    settings = resolve_settings(plan, dataset)
    data = prepare_data(plan, dataset, settings, progress)
    environment = cell_environment(plan)
    environment["distributed"] = parallelism(plan, world)
    if world.is_main:
        write_json(run.cell_dir(cell.id, seed) / JOB_FILE, {
            **(job or {}), "pid": os.getpid(), "started": now_utc(), "started_unix": time.time(),
            "environment": environment, "dataset": data.info, "settings": settings.to_dict(),
        })
    return run_cell(cell, seed, plan, settings, data, bench_options(plan), run, environment, progress, None, world)


def run_cell(
    cell: Cell, seed: int, plan: RunPlan, settings: VariantSettings, data: RunData, options: BenchOptions,
    run: RunDir, environment: dict, progress: Progress, on_epoch: Optional[Callable[[str, int, int], None]],
    world: World = World(),
) -> dict[str, Any]:
    """Probe, train, evaluate, save and measure one cell; the record (rank 0's, on every rank under torchrun).

    Each step ends with the ranks agreeing on its outcome (see `_agreed`), so a
    step that fails on any rank fails the cell on all of them and they move to
    the next cell together. Saving and measuring run on rank 0 while the
    others wait in that agreement.
    """
    cell_dir = run.cell_dir(cell.id, seed)
    started = time.perf_counter()
    base = {"cell": cell.id, "backbone": cell.backbone, "neck": cell.neck, "seed": seed, "started": now_utc()}
    if world.is_main:
        run.write_record({**base, "status": RUNNING})
    torch.manual_seed(seed)
    probe = probe_cell(cell, lambda: create_variant(cell, weights=plan.weights.get(cell.backbone), settings=settings), plan.device)
    measured = new_record(cell, probe, settings, options)
    phases = {"probe": time.perf_counter() - started}
    extra: dict[str, Any] = {
        "environment": {"commit": environment.get("git_commit"), "device_name": environment.get("device_name")},
        "distributed": parallelism(plan, world),
        "phase_seconds": phases,
    }
    failure: dict[str, Any] = {}
    model = probe.model

    def train() -> None:
        kinds = batchnorm_kinds(model)
        training = train_model(
            model, data.train, plan.profile.train, seed=seed, device=plan.device, dtype=plan.dtype,
            cell_dir=cell_dir, progress=progress,
            on_epoch=None if on_epoch is None else (lambda epoch: on_epoch(cell.id, seed, epoch)),
            world=world, sync_bn=plan.sync_bn and world.distributed, compile=plan.compile, cuda_graphs=plan.cuda_graphs,
        )
        revert_sync_batchnorm(model, kinds)  # no rank-0-only forward may all-reduce with the others
        extra["training"] = training.to_dict()
        measured.warnings.extend(training.warnings)
        for warning in training.warnings if world.is_main else []:
            progress.log(f"    warning: {warning}")

    def evaluate() -> None:
        extra["metrics"] = evaluate_model(model, data.query, data.gallery, plan.profile.eval, plan.device, plan.dtype, progress, world)

    def keep_and_measure() -> None:
        if world.is_main:
            save_torch_atomic(model.state_dict(), cell_dir / "model.pt")
            (cell_dir / "checkpoint.pt").unlink(missing_ok=True)
            measure_model(model, measured, settings, options, progress.log)

    try:
        failure = _agreed(world, lambda: _probe_agrees(probe.status, world))
        if not failure and probe.status == DONE and model is not None:
            for phase, step in (("train", train), ("evaluate", evaluate), ("measure", keep_and_measure)):
                step_started = time.perf_counter()
                failure = _agreed(world, step)
                phases[phase] = time.perf_counter() - step_started  # the ranks' agreement included
                if failure:
                    break
    except KeyboardInterrupt:
        if world.is_main:
            run.write_record({
                **measured.to_dict(), **base, **extra,
                "status": INTERRUPTED, "error": "interrupted; continue with reidbench run --resume RUN_DIR",
            })
        raise
    record = {
        **measured.to_dict(), **base, **extra, **failure,
        "wall_seconds": time.perf_counter() - started, "finished": now_utc(),
    }
    if world.is_main:
        run.write_record(record)
    return broadcast_object(record, world)


def _probe_agrees(status: str, world: World) -> None:
    """Fail on a rank whose forward probe ended otherwise than rank 0's (a GPU short of memory, say)."""
    statuses = gather_objects(status, world)
    if status != statuses[0]:
        raise RuntimeError(f"the forward probe ended {status} here but {statuses[0]} on rank 0")


def _agreed(world: World, step: Callable[[], None]) -> dict[str, Any]:
    """Run one step of a cell, then agree on its outcome across ranks: {} when it succeeded on every
    rank, else the failure of the lowest failing rank, the same on every rank (so all skip the rest).

    A step's own collectives (DDP's gradient all-reduce, the feature gather)
    must be reached by every rank or by none: a step that fails on one rank
    alone half-way through them cannot be agreed on (see
    reidbench.runtime.distributed). KeyboardInterrupt propagates.
    """
    failure: dict[str, Any] = {}
    try:
        step()
    except (TrainingDiverged, GraphCaptureFailed) as exc:  # the message says what to do; a traceback would not help
        failure = {"status": FAILED, "error": str(exc)}
    except torch.cuda.OutOfMemoryError as exc:
        failure = {"status": FAILED, "error": f"CUDA out of memory ({exc}); lower train.p or the measure batch sizes"}
    except Exception as exc:  # noqa: BLE001 - one cell's bug must not stop the grid
        failure = {"status": FAILED, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    if not world.distributed:
        return failure
    for rank, outcome in enumerate(gather_objects(failure, world)):
        if outcome:
            return outcome if rank == 0 else {**outcome, "error": f"on rank {rank}: {outcome['error']}"}
    return {}


def _after_first_epoch(training: dict[str, Any]) -> str:
    """With a compile or a capture in the first epoch, the later epochs' speed is the one to compare."""
    steady = training.get("steady_img_per_s")
    if steady is None or not (training.get("compiled") or training.get("graphed")):
        return ""
    return f" ({steady:.0f} img/s after a first epoch of {training.get('first_epoch_seconds', 0):.0f} s)"


def summary_line(record: dict[str, Any]) -> str:
    status = record["status"]
    if status == DONE and record.get("metrics"):
        m, t = record["metrics"], record.get("training", {})
        return (
            f"done — mAP {m['mAP']:.1%}, rank-1 {m['rank1']:.1%}, mINP {m['mINP']:.1%}; "
            f"trained {t.get('seconds', 0):.0f} s at {t.get('img_per_s', 0):.0f} img/s" + _after_first_epoch(t)
            + f"; cell {record['wall_seconds']:.0f} s" + phase_breakdown(record.get("phase_seconds", {}))
        )
    return f"{status}" + (f" — {record['error']}" if record.get("error") else "")
