"""Multi-process runs: the collectives, the DDP training split, sharded evaluation, and real torchrun runs.

Everything runs on the CPU with the gloo backend and 2 processes. The
collective scenarios share one pair of spawned processes (starting a process
that imports torch costs seconds on 2 cores); each scenario's outcome comes
back per rank and is checked by its own test. The torchrun tests start the
real command: `python -m torch.distributed.run --nproc-per-node 2 -m reidbench run`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

import reidbench
from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.runtime.distributed import (
    World, any_rank, batchnorm_kinds, broadcast_object, from_main, gather_rows, main_first, revert_sync_batchnorm, shard,
)
from reidbench.data.images import ImageSet
from reidbench.rundir import RunDir
from tiny_run import ONE_CELL_GRID, shorten_long_profile, wait_for, write_inputs

WORLD_SIZE = 2
SPAWN_TIMEOUT_S = 180
RUN_TIMEOUT_S = 240




# --- scenarios run in two spawned gloo processes ---------------------------------------------------


def _raised(fn: Callable[[], Any]) -> tuple[str, str, int]:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return type(exc).__name__, str(exc), getattr(exc, "exit_code", -1)
    return "nothing", "", 0


def _fail(exc: Exception) -> None:
    raise exc


def _mark(folder: Path, rank: int) -> list[str]:
    """Which ranks' marks already exist, then leave this rank's."""
    seen = sorted(p.name for p in folder.glob("mark-*"))
    (folder / f"mark-{rank}").touch()
    return seen


def collectives_scenario(world: World, out: Path) -> dict[str, Any]:
    features = torch.arange(6, dtype=torch.float32).reshape(3, 2) if world.rank == 0 else torch.empty(0, 2)
    labels = torch.arange(2) if world.rank == 0 else torch.arange(10, 13)
    marks = out / "marks"
    marks.mkdir(exist_ok=True)
    return {
        "features": gather_rows(features, world),
        "labels": gather_rows(labels, world),
        "path": broadcast_object(f"runs/named-by-rank-{world.rank}", world),
        "value": from_main(world, lambda: 40 + world.rank),
        "usage_error": _raised(lambda: from_main(world, lambda: _fail(UsageError("--out x is not empty")))),
        "bug": _raised(lambda: from_main(world, lambda: _fail(ValueError("boom")))),
        "main_first": main_first(world, lambda: _mark(marks, world.rank)),
        "main_first_failing": _raised(lambda: main_first(world, lambda: _fail(UsageError("no such dataset")))),
        "any_rank": [any_rank(world.rank == 1, world), any_rank(False, world), any_rank(True, world)],
    }


def agreement_scenario(world: World, out: Path) -> dict[str, Any]:
    from reidbench.harness.cell import _agree_and_apply
    from reidbench.schema import CellRecord, CellState

    def fails_on_rank_1() -> None:
        if world.rank == 1:
            raise ValueError("rank 1 ran out of memory")

    ok, failed = (CellRecord("c", "b", "n", CellState.DONE) for _ in range(2))
    _agree_and_apply(failed, world, fails_on_rank_1)
    _agree_and_apply(ok, world, lambda: None)
    return {"ok": ok.status == CellState.DONE and ok.error is None, "failed": {"status": failed.status.value, "error": failed.error}}


def random_images(n: int, num_ids: int, generator: torch.Generator, size: tuple[int, int] = (32, 16)) -> ImageSet:
    images = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=generator)
    pids = torch.arange(n) % num_ids
    camids = torch.randint(0, 3, (n,), generator=generator)
    return ImageSet(images, pids, camids, [f"img{i}.jpg" for i in range(n)])


def train_and_evaluate_scenario(world: World, out: Path) -> dict[str, Any]:
    """The lead's train_model under DDP with a sampler that records its batches and a periodic evaluation after every
    epoch, then sharded evaluation."""
    import reidbench.harness.train as train_module
    from reidbench.harness.evaluate import evaluate_model
    from reidbench.harness.trainer import TrainHook
    from reidbench.harness.validation import PeriodicEvaluation
    from reidbench.profiles import EvalConfig, TrainConfig
    from reidbench.runtime.progress import Progress
    from reidbench.training.sampler import PKSampler
    from reidbench.variants.factory import create_variant

    drawn: list[dict[str, Any]] = []

    class RecordingSampler(PKSampler):
        def __iter__(self):  # type: ignore[override]
            batches = list(super().__iter__())
            drawn.append({"epoch": self.epoch, "p": self.p, "rank": self.rank, "world_size": self.world_size, "batches": batches})
            return iter(batches)

    generator = torch.Generator().manual_seed(0)  # the same data on every rank
    train_set = random_images(32, 8, generator)
    query, gallery = random_images(9, 4, generator), random_images(13, 4, generator)
    torch.manual_seed(0)
    model = create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=8, num_cameras=3)
    quiet = Progress(lambda message: None, bars=False)
    cfg = TrainConfig(epochs=2, p=4, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1, epoch_covers="identities")  # one PK pass over the ids
    eval_cfg = EvalConfig(batch_size=4)
    scored: list[tuple[int, float, float]] = []

    class Scores(TrainHook):
        def on_epoch(self, ctx, entry):  # type: ignore[override]
            scored.append((entry.epoch, entry.val_map, entry.val_rank1))

    periodic = PeriodicEvaluation(query, gallery, replace(eval_cfg, period=1), "test", "fp32", quiet, log=False)
    original, train_module.PKSampler = train_module.PKSampler, RecordingSampler
    try:
        train_module.train_model(
            model, train_set, cfg, train_module.TrainOptions(seed=0, device=torch.device("cpu"), dtype="fp32", world=world),
            out / "cell", quiet, before_log=[periodic, Scores()],
        )
    finally:
        train_module.PKSampler = original
    return {
        "periodic": scored,
        "epochs": [{**d, "pids": [train_set.pids[b].tolist() for b in d["batches"]]} for d in drawn],
        "weights": torch.cat([p.detach().flatten() for p in model.parameters()]),
        "sharded": evaluate_model(model, query, gallery, eval_cfg, torch.device("cpu"), "fp32", quiet, world),
        "single": evaluate_model(model, query, gallery, eval_cfg, torch.device("cpu"), "fp32", quiet),
    }


SCENARIOS = {
    "collectives": collectives_scenario,
    "agreement": agreement_scenario,
    "train_and_evaluate": train_and_evaluate_scenario,
}


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    world = World(rank=rank, world_size=WORLD_SIZE, local_rank=rank)
    results: dict[str, Any] = {}
    for name, scenario in SCENARIOS.items():
        try:
            results[name] = scenario(world, Path(out))
        except Exception:  # noqa: BLE001 - reported by the scenario's test
            results[name] = {"raised": traceback.format_exc()}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every scenario's outcome on rank 0 and rank 1 of one 2-process gloo group."""
    out = tmp_path_factory.mktemp("two-ranks")
    context = mp.start_processes(
        _worker, args=(str(out / "store"), str(out)), nprocs=WORLD_SIZE, join=False, start_method="spawn",
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2-process scenarios did not finish in {SPAWN_TIMEOUT_S} s (a collective deadlocked?)")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def scenario(ranks: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    for rank, results in enumerate(ranks):
        assert "raised" not in results[name], f"rank {rank}:\n{results[name].get('raised')}"
    return [results[name] for results in ranks]


def test_gather_rows_concatenates_uneven_shares_in_rank_order_on_rank_0_only(ranks) -> None:
    main, other = scenario(ranks, "collectives")
    assert torch.equal(main["features"], torch.arange(6, dtype=torch.float32).reshape(3, 2))  # rank 1 sent no rows
    assert torch.equal(main["labels"], torch.tensor([0, 1, 10, 11, 12]))  # rank 0's 2 rows travelled padded to 3
    assert other["features"] is None and other["labels"] is None


def test_rank_0_decides_and_every_rank_learns_the_value_or_the_error(ranks) -> None:
    main, other = scenario(ranks, "collectives")
    assert main["path"] == other["path"] == "runs/named-by-rank-0"
    assert main["value"] == other["value"] == 40
    assert main["usage_error"] == ("UsageError", "--out x is not empty", 2)
    assert other["usage_error"] == ("FailedOnMain", "--out x is not empty", 2)
    assert main["bug"] == ("ValueError", "boom", -1)
    assert other["bug"] == ("FailedOnMain", "ValueError: boom", 1)


def test_main_first_runs_rank_0_before_the_others_and_stops_them_when_it_fails(ranks) -> None:
    main, other = scenario(ranks, "collectives")
    assert main["main_first"] == [] and other["main_first"] == ["mark-0"]
    assert main["main_first_failing"][0] == "UsageError"
    assert other["main_first_failing"] == ("FailedOnMain", "no such dataset", 2)


def test_any_rank_gives_every_rank_the_same_decision(ranks) -> None:
    """The time-based checkpoint decision: true on one rank's clock means a checkpoint on all."""
    main, other = scenario(ranks, "collectives")
    assert main["any_rank"] == other["any_rank"] == [True, False, True]


def test_a_step_failing_on_one_rank_fails_the_cell_on_every_rank(ranks) -> None:
    main, other = scenario(ranks, "agreement")
    assert main["ok"] is other["ok"] is True
    assert main["failed"] == other["failed"] == {"status": "failed", "error": "on rank 1: ValueError: rank 1 ran out of memory"}


def test_ddp_ranks_draw_distinct_identities_per_step_and_all_of_them_per_epoch(ranks) -> None:
    main, other = scenario(ranks, "train_and_evaluate")
    assert [e["epoch"] for e in main["epochs"]] == [e["epoch"] for e in other["epochs"]] == [0, 1]
    for rank, drawn in enumerate((main, other)):
        assert all(e["p"] == 2 and e["rank"] == rank and e["world_size"] == 2 for e in drawn["epochs"])  # P 4 over 2 ranks
    for epoch0, epoch1 in zip(main["epochs"], other["epochs"]):
        assert len(epoch0["pids"]) == len(epoch1["pids"]) == 2  # 8 ids / (2 per rank x 2 ranks)
        seen = set()
        for batch0, batch1 in zip(epoch0["pids"], epoch1["pids"]):
            assert len(batch0) == len(batch1) == 4 and len(set(batch0)) == len(set(batch1)) == 2
            assert not set(batch0) & set(batch1)
            seen |= set(batch0) | set(batch1)
        assert seen == set(range(8))


def test_ddp_training_leaves_the_same_weights_on_every_rank(ranks) -> None:
    main, other = scenario(ranks, "train_and_evaluate")
    assert torch.equal(main["weights"], other["weights"])


def test_the_periodic_evaluation_gives_every_rank_rank_0s_scores_of_the_weights_training_ends_with(ranks) -> None:
    main, other = scenario(ranks, "train_and_evaluate")
    assert main["periodic"] == other["periodic"] and [epoch for epoch, *_ in main["periodic"]] == [1, 2]
    _, last_map, last_rank1 = main["periodic"][-1]
    assert (last_map, last_rank1) == pytest.approx((main["single"].metrics["mAP"], main["single"].metrics["rank1"]), abs=1e-6)


def test_sharded_evaluation_gives_every_rank_the_single_process_numbers(ranks) -> None:
    main, other = scenario(ranks, "train_and_evaluate")
    assert main["sharded"].metrics == other["sharded"].metrics
    for key, scores in main["single"].queries.items():  # every query's scores reach every rank too
        for evaluation in (main["sharded"], other["sharded"]):
            np.testing.assert_array_equal(evaluation.queries[key].pid, scores.pid)
            np.testing.assert_allclose(evaluation.queries[key].ap, scores.ap, atol=1e-6)
    single, sharded = main["single"].metrics, main["sharded"].metrics
    assert sharded["protocol"] == single["protocol"]
    for key in ("mAP", "mINP"):
        assert sharded[key] == pytest.approx(single[key], abs=1e-6)
    assert sharded["cmc"] == pytest.approx(single["cmc"], abs=1e-6)


# --- in one process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 7, 8])
def test_shards_are_contiguous_and_cover_every_row_once(length: int) -> None:
    parts = [shard(length, World(rank=r, world_size=3)) for r in range(3)]
    rows = [i for part in parts for i in range(length)[part]]
    assert rows == list(range(length))
    assert max(len(range(length)[p]) for p in parts) - min(len(range(length)[p]) for p in parts) <= 1


def test_revert_sync_batchnorm_restores_each_layer_class_and_keeps_the_trained_state() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.BatchNorm1d(4 * 9))
    kinds = batchnorm_kinds(model)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with torch.no_grad():
        for layer in synced.modules():
            if isinstance(layer, torch.nn.SyncBatchNorm):
                layer.running_mean.add_(1.5)
                layer.weight.mul_(2)
    state = {k: v.clone() for k, v in synced.state_dict().items()}
    reverted = revert_sync_batchnorm(synced, kinds)
    assert [type(m) for m in reverted.modules()] == [torch.nn.Sequential, torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Flatten, torch.nn.BatchNorm1d]
    assert all(torch.equal(state[k], v) for k, v in reverted.state_dict().items())
    reverted.train()(torch.randn(2, 3, 3, 3))  # plain batch norm: no process group needed


def test_one_process_helpers_do_no_collective() -> None:
    world = World()
    rows = torch.randn(3, 2)
    assert gather_rows(rows, world) is rows
    assert broadcast_object("x", world) == "x" and from_main(world, lambda: 7) == 7 and main_first(world, lambda: 8) == 8
    assert any_rank(True, world) is True and any_rank(False, world) is False
    with pytest.raises(UsageError, match="bad"):
        from_main(world, lambda: _fail(UsageError("bad")))


# --- the command ------------------------------------------------------------------------------------

cli = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(
        tmp_path_factory.mktemp("ddp-inputs"), tiny_synthetic, epochs=2, grid=ONE_CELL_GRID, img_size=(64, 32), eval_batch=16,
    )


def run_args(inputs: dict[str, Path], *extra: str, profile: str = "profile") -> list[str]:
    return ["run", "--grid", str(inputs["grid"]), "--profile", str(inputs[profile]), "--data", f"synthetic:{inputs['data']}",
            "--only", "vit768-none", "--device", "cpu", "--no-progress", *extra]


def torchrun_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD_SIZE), "--standalone", "-m", "reidbench", *args]


def torchrun_env() -> dict[str, str]:
    """The repository on the path of the worker processes, wherever they start."""
    repo = str(Path(reidbench.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}


def start_torchrun(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        torchrun_command(args), cwd=cwd, env=torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop(process: subprocess.Popen) -> str:
    """SIGTERM to torchrun, which passes it to its workers (each in a session of its own, out of reach of killpg)."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def torchrun(args: list[str], cwd: Path) -> tuple[int, str]:
    """Exit code and output of a torchrun command; on a timeout the workers are stopped too, not orphaned."""
    process = start_torchrun(args, cwd)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish in {RUN_TIMEOUT_S} s:\n{stop(process)}")
    return process.returncode, output


def test_torchrun_trains_a_cell_on_two_processes_with_one_writer(inputs, tmp_path: Path) -> None:
    # No --out: rank 0 names the timestamped run directory and the other rank must write nothing of its own.
    # Streamed images: each rank decodes its own batches and shards (the cached path is the resume test's).
    code, output = torchrun(run_args(inputs, "--data-cache", "stream"), cwd=tmp_path)
    assert code == 0, output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    run = RunDir(runs[0])
    records = run.records()
    assert len(records) == 1
    record = records[0].to_dict()
    assert record["status"] == "done" and 0 < record["metrics"]["mAP"] <= 1
    assert record["distributed"] == {"world_size": 2, "backend": "gloo", "sync_bn": False, "global_batch": 8, "per_rank_batch": 4}
    assert record["training"]["image_cache"].startswith("stream")
    assert json.loads(run.environment_json.read_text())["distributed"]["world_size"] == 2
    assert json.loads(run.run_json.read_text())["status"] == "finished"
    table = pd.read_csv(run.results_csv)
    assert list(table["cell"]) == ["vit768-none"] and list(table["status"]) == ["done"]
    log = (run.cell_dir("vit768-none", 0) / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert (run.cell_dir("vit768-none", 0) / "model.pt").exists() and not list(run.root.rglob(".*.tmp-*"))
    # Only rank 0 talks: every line of the run once.
    assert output.count("epoch 1/2:") == output.count("epoch 2/2:") == output.count("results: ") == 1


def test_a_killed_torchrun_run_resumes_under_torchrun_from_its_checkpoint(inputs, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    process = start_torchrun(run_args(inputs, "--out", str(out), profile="long"), cwd=tmp_path)
    checkpoint = out / "cells/vit768-none/seed0/checkpoint.pt"
    wait_for(checkpoint, process, RUN_TIMEOUT_S)
    output = stop(process)  # as a scheduler ends a job: SIGTERM, which the ranks handle like Ctrl-C
    assert checkpoint.exists(), output
    epochs_before = torch.load(checkpoint, weights_only=True)["epoch"]
    run = RunDir(out)
    assert run.read_record("vit768-none", 0).status == "interrupted"
    # Shorten the remaining work: resume reads the profile stored in the run directory.
    shorten_long_profile(out, epochs_before + 1)

    code, output = torchrun(["run", "--resume", str(out), "--no-progress"], cwd=tmp_path)
    assert code == 0, output
    record = run.read_record("vit768-none", 0).to_dict()
    assert record["status"] == "done" and record["training"]["resumed_from_epoch"] == epochs_before
    assert record["distributed"]["world_size"] == 2
    log = (run.cell_dir("vit768-none", 0) / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == list(range(1, epochs_before + 2))


def test_sync_bn_on_the_cpu_is_a_usage_error(inputs, tmp_path: Path) -> None:
    result = cli.invoke(app, [*run_args(inputs, "--out", str(tmp_path / "sync")), "--sync-bn"])
    assert result.exit_code == 2, result.output
    assert "--sync-bn needs CUDA" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sync").exists()


def test_a_p_that_does_not_split_over_the_ranks_is_found_before_the_run_starts(inputs) -> None:
    from reidbench.profiles import load_profile
    from reidbench.harness.plan import RunPlan, check_plan
    from reidbench.variants.grid import load_grid

    plan = RunPlan(
        grid=load_grid(str(inputs["grid"])), grid_text=ONE_CELL_GRID, profile=load_profile(str(inputs["profile"])), profile_text="",
        dataset=f"synthetic:{inputs['data']}", device=torch.device("cpu"), dtype="fp32", seeds=1,
    )
    with pytest.raises(UsageError, match="cannot be split over 3 processes"):
        check_plan(plan, World(rank=0, world_size=3))
