"""The grid runner: per cell and seed, build -> forward probe -> train -> evaluate -> measure -> record.

A cell that raises, goes NaN or runs out of memory is recorded as failed and
the grid goes on. Ctrl-C marks the running cell interrupted and re-raises;
`resume_run` skips finished cells and continues unfinished ones from their
last checkpoint. Everything a report needs is written to the run directory.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.bench.environment import collect_environment
from reidbench.bench.probe import DONE, FAILED, XFAIL, XPASS, probe_cell
from reidbench.bench.suite import BenchOptions, measure_model, new_record
from reidbench.errors import UsageError
from reidbench.harness.data import ReidDataset, load_dataset
from reidbench.harness.evaluate import evaluate_model
from reidbench.harness.images import ImageSet, load_images
from reidbench.harness.metrics import evaluate_rank
from reidbench.harness.profile import Profile, load_profile
from reidbench.harness.progress import Progress
from reidbench.harness.rundir import RunDir, now_utc, read_json, save_torch_atomic, write_atomic, write_json
from reidbench.harness.train import TrainingDiverged, train_model
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

    @property
    def cells(self) -> list[Cell]:
        return self.grid.select(self.only)


@dataclass
class RunData:
    dataset: ReidDataset
    train: ImageSet
    query: ImageSet
    gallery: ImageSet
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
    )


def resolve_settings(plan: RunPlan, dataset: ReidDataset) -> VariantSettings:
    """Grid settings, then the profile's model overrides, then --set, then what the dataset dictates."""
    settings = plan.grid.settings.with_overrides(plan.profile.model, f"profile {plan.profile.name} [model]")
    settings = settings.with_overrides(plan.overrides, "--set")
    return settings.with_overrides({"num_classes": dataset.num_train_pids, "num_cameras": dataset.num_cameras}, "dataset")


def prepare_data(plan: RunPlan, dataset: ReidDataset, settings: VariantSettings, progress: Progress) -> RunData:
    """Decode every image once at the variant size and keep them on the device, for all cells."""
    sets = {}
    for split in ("train", "query", "gallery"):
        records = getattr(dataset, split)
        with progress.task(len(records), f"decoding {split}", "img") as advance:
            done = [0]

            def report(n: int, total: int) -> None:
                advance(n - done[0])
                done[0] = n

            sets[split] = load_images(records, settings.img_size, progress=report).to(plan.device)
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
        "decoded_mib": sum(v.nbytes for v in sets.values()) / 2**20,
        "chance": chance_level(sets["query"], sets["gallery"]),
    }
    return RunData(dataset, sets["train"], sets["query"], sets["gallery"], info)


def chance_level(query: ImageSet, gallery: ImageSet, seed: int = 0) -> dict[str, float]:
    """mAP and rank-1 of random features under the same protocol: the floor a trained model must clear."""
    generator = torch.Generator().manual_seed(seed)
    qf = torch.randn(len(query), 64, generator=generator)
    gf = torch.randn(len(gallery), 64, generator=generator)
    result = evaluate_rank(qf, gf, query.pids.cpu(), gallery.pids.cpu(), query.camids.cpu(), gallery.camids.cpu())
    return {"mAP": result.mAP, "rank1": result.rank1}


def check_plan(plan: RunPlan) -> ReidDataset:
    """Everything that can be wrong with the input, found before a run directory is created."""
    plan.cells  # noqa: B018 - raises for an unknown --only cell
    dataset = load_dataset(plan.dataset)
    resolve_settings(plan, dataset)
    return dataset


def execute(
    plan: RunPlan,
    run: RunDir,
    progress: Progress,
    on_epoch: Optional[Callable[[str, int, int], None]] = None,
    dataset: Optional[ReidDataset] = None,
) -> list[dict]:
    """Run (or continue) every cell and seed of the plan; returns the records. Re-raises KeyboardInterrupt."""
    log = progress.log
    meta = read_json(run.run_json)
    dataset = dataset or load_dataset(plan.dataset)
    settings = resolve_settings(plan, dataset)
    data = prepare_data(plan, dataset, settings, progress)
    if plan.device.type == "cpu":
        # Some CPU backward kernels (indexing an embedding table with camera ids, for one)
        # accumulate in a thread-dependent order; seen: gradients differing in the 8th digit
        # between two processes, and 30 epochs turning that into a different mAP.
        torch.use_deterministic_algorithms(True)
    environment = collect_environment(plan.device, plan.dtype)
    environment["seeds"] = list(range(plan.seeds))
    environment["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    write_json(run.environment_json, environment)
    meta.update({"status": RUNNING, "settings": settings.to_dict(), "dataset": data.info})
    write_json(run.run_json, meta)
    log(
        f"data: {data.dataset.name} — train {len(data.train)} images / {data.dataset.num_train_pids} ids, "
        f"query {len(data.query)}, gallery {len(data.gallery)}, {data.dataset.num_cameras} cameras "
        f"({data.info['decoded_mib']:.0f} MiB decoded on {plan.device}); "
        f"chance level: mAP {data.info['chance']['mAP']:.1%}, rank-1 {data.info['chance']['rank1']:.1%} (random features)"
    )
    options = BenchOptions(
        device=plan.device, dtype=plan.dtype, batch_sizes=list(plan.profile.measure.batch_sizes),
        train_batch_size=plan.profile.measure.train_batch_size, warmup=plan.profile.measure.warmup,
        repeats=plan.profile.measure.repeats, max_seconds=plan.profile.measure.max_seconds,
    )
    jobs = [(cell, seed) for cell in plan.cells for seed in range(plan.seeds)]
    records = []
    try:
        for index, (cell, seed) in enumerate(jobs, 1):
            existing = run.read_record(cell.id, seed)
            if existing is not None and existing["status"] in FINISHED:
                log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {existing['status']} already, skipped")
                records.append(existing)
                continue
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}")
            record = run_cell(cell, seed, plan, settings, data, options, run, environment, progress, on_epoch)
            records.append(record)
            run.write_results(c.id for c in plan.cells)
            log(f"[{index}/{len(jobs)}] {cell.id} seed {seed}: {summary_line(record)}")
    except KeyboardInterrupt:
        meta.update({"status": INTERRUPTED, "interrupted": now_utc()})
        write_json(run.run_json, meta)
        run.write_results(c.id for c in plan.cells)
        raise
    meta.update({"status": "finished", "finished": now_utc()})
    write_json(run.run_json, meta)
    run.write_results(c.id for c in plan.cells)
    return records


def run_cell(
    cell: Cell, seed: int, plan: RunPlan, settings: VariantSettings, data: RunData, options: BenchOptions,
    run: RunDir, environment: dict, progress: Progress, on_epoch: Optional[Callable[[str, int, int], None]],
) -> dict[str, Any]:
    cell_dir = run.cell_dir(cell.id, seed)
    started = time.perf_counter()
    base = {"cell": cell.id, "backbone": cell.backbone, "neck": cell.neck, "seed": seed, "started": now_utc()}
    run.write_record({**base, "status": RUNNING})
    torch.manual_seed(seed)
    probe = probe_cell(cell, lambda: create_variant(cell, weights=plan.weights.get(cell.backbone), settings=settings), plan.device)
    measured = new_record(cell, probe, settings, options)
    extra: dict[str, Any] = {"environment": {"commit": environment.get("git_commit"), "device_name": environment.get("device_name")}}
    failure: dict[str, Any] = {}
    model = probe.model
    try:
        if probe.status == DONE and model is not None:
            training = train_model(
                model, data.train, plan.profile.train, seed=seed, device=plan.device, dtype=plan.dtype,
                cell_dir=cell_dir, progress=progress,
                on_epoch=None if on_epoch is None else (lambda epoch: on_epoch(cell.id, seed, epoch)),
            )
            extra["training"] = training.to_dict()
            extra["metrics"] = evaluate_model(model, data.query, data.gallery, plan.profile.eval, plan.device, plan.dtype, progress)
            save_torch_atomic(model.state_dict(), cell_dir / "model.pt")
            (cell_dir / "checkpoint.pt").unlink(missing_ok=True)
            measure_model(model, measured, settings, options, progress.log)
    except KeyboardInterrupt:
        run.write_record({
            **measured.to_dict(), **base, **extra,
            "status": INTERRUPTED, "error": "interrupted; continue with reidbench run --resume RUN_DIR",
        })
        raise
    except TrainingDiverged as exc:
        failure = {"status": FAILED, "error": str(exc)}
    except torch.cuda.OutOfMemoryError as exc:
        failure = {"status": FAILED, "error": f"CUDA out of memory ({exc}); lower train.p or the measure batch sizes"}
    except Exception as exc:  # noqa: BLE001 - one cell's bug must not stop the grid
        failure = {"status": FAILED, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    record = {
        **measured.to_dict(), **base, **extra, **failure,
        "wall_seconds": time.perf_counter() - started, "finished": now_utc(),
    }
    run.write_record(record)
    return record


def summary_line(record: dict[str, Any]) -> str:
    status = record["status"]
    if status == DONE and record.get("metrics"):
        m, t = record["metrics"], record.get("training", {})
        return (
            f"done — mAP {m['mAP']:.1%}, rank-1 {m['rank1']:.1%}, mINP {m['mINP']:.1%}; "
            f"trained {t.get('seconds', 0):.0f} s at {t.get('img_per_s', 0):.0f} img/s; cell {record['wall_seconds']:.0f} s"
        )
    return f"{status}" + (f" — {record['error']}" if record.get("error") else "")
