"""Scoring during training (eval.period, eval.split): the hook, the carved validation split, the curves and the CMC."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data import load_dataset
from reidbench.data.images import load_images
from reidbench.data.stream import stream_images
from reidbench.data.validation import VAL_MIN_IDS, carve_validation, scorable_identities
from reidbench.errors import UsageError
from reidbench.evaluation.metrics import cmc_curve, evaluate_rank
from reidbench.harness import runner as runner_module
from reidbench.harness.evaluate import evaluate_model
from reidbench.harness.tensorboard import EPOCH_TAGS
from reidbench.harness.train import TrainOptions, train_model
from reidbench.harness.trainer import TrainContext, TrainHook
from reidbench.harness.validation import PeriodicEvaluation
from reidbench.profiles import EvalConfig, TrainConfig, load_profile, split_sets, with_sets
from reidbench.reports.build import make_report
from reidbench.reports.curves import cell_cmc
from reidbench.reports.load import load_run
from reidbench.rundir import RunDir
from reidbench.runtime.progress import Progress
from reidbench.schema import EpochEntry
from reidbench.variants.factory import create_variant
from reidbench.variants.model import ReidModel
from tiny_run import ONE_CELL_GRID, run_args, write_inputs

cli = CliRunner()
SIZE = (64, 32)
QUIET = Progress(lambda message: None, bars=False)


# ------------------------------------------------------------------ settings


def test_period_and_split_resolve_per_dataset_and_bad_values_are_refused() -> None:
    assert EvalConfig().validation_split("market1501") is None  # period 0: nothing scored, nothing carved
    periodic = EvalConfig(period=5)
    assert periodic.validation_split("market1501") == "val" and periodic.validation_split("msvr310") == "val"
    assert periodic.validation_split("synthetic") == "test" and periodic.validation_split("synthetic-rgbnt") == "test"
    assert EvalConfig(period=5, split="test").validation_split("market1501") == "test"
    assert EvalConfig(period=5, split="val").validation_split("synthetic") == "val"
    with pytest.raises(UsageError, match="eval period -1"):
        EvalConfig(period=-1)
    with pytest.raises(UsageError, match="'holdout'"):
        EvalConfig(split="holdout")


def test_set_eval_period_and_split_reach_the_profile() -> None:
    _, tables = split_sets({"eval.period": 2, "eval.split": "test"})
    profile = with_sets(load_profile("quick"), tables)
    assert (profile.eval.period, profile.eval.split) == (2, "test")
    assert load_profile("quick").eval.period == 0  # the default stays the final evaluation alone


# ------------------------------------------------------------------ the carved validation split


def test_the_validation_split_is_carved_from_training_identities_the_same_way_every_time(tiny_synthetic: Path) -> None:
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    carved = carve_validation(dataset)
    again = carve_validation(load_dataset(f"synthetic:{tiny_synthetic}"))
    val = carved.validation
    assert val is not None and val.pids == again.validation.pids and len(val.pids) == VAL_MIN_IDS  # 10 % of 8, at least 2
    original = {label: pid for pid, label in dataset.train_pid_map.items()}
    assert set(val.pids) <= set(scorable_identities([replace(r, pid=original[r.pid]) for r in dataset.train]))
    # every image of those identities left training, the rest is relabelled 0..N-1
    assert not set(val.pids) & set(carved.train_pid_map)
    assert sorted({r.pid for r in carved.train}) == list(range(dataset.num_train_pids - len(val.pids)))
    assert len(carved.train) + len(val.query) + len(val.gallery) == len(dataset.train)
    # one query per identity and camera, the others in the gallery
    assert len(val.query) == len({(r.pid, r.camid) for r in val.query})
    assert {(r.pid, r.camid) for r in val.gallery} <= {(r.pid, r.camid) for r in val.query}
    assert carved.facts()["validation"]["pids"] == list(val.pids)
    # the test split is untouched
    assert carved.query == dataset.query and carved.gallery == dataset.gallery


def test_too_few_identities_for_a_validation_split_is_refused_by_name(tiny_synthetic: Path) -> None:
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    keep = sorted({r.pid for r in dataset.train})[:3]
    small = replace(dataset, train=[r for r in dataset.train if r.pid in keep], train_pid_map={p: p for p in keep})
    with pytest.raises(UsageError, match="eval.split=\"test\""):
        carve_validation(small)


# ------------------------------------------------------------------ the hook leaves training as it was


class ModesSeen(TrainHook):
    """After the periodic evaluation: is every module back in train mode, with gradients on?"""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        self.seen.append((all(m.training for m in ctx.model.modules()), torch.is_grad_enabled()))


def _train(
    tiny: Path, cell_dir: Path, cfg: TrainConfig, depth: int, hooks: list[TrainHook],
) -> tuple[ReidModel, list[EpochEntry]]:
    """A model of `depth` blocks at 64x32 on the tiny set's training split, trained; with its train log."""
    dataset = load_dataset(f"synthetic:{tiny}")
    cell_dir.mkdir()
    torch.manual_seed(0)
    model = create_variant("vit768-none", depth=depth, img_size=SIZE, num_classes=dataset.num_train_pids,
                           num_cameras=dataset.num_cameras)
    train_model(model, load_images(dataset.train, SIZE), cfg, TrainOptions(seed=0, device=torch.device("cpu"), dtype="fp32"),
                cell_dir, QUIET, before_log=hooks)
    entries = [EpochEntry.from_dict(json.loads(line)) for line in (cell_dir / "train_log.jsonl").read_text().splitlines()]
    return model, entries


@pytest.mark.parametrize("depth, ema_decay", [(1, 0.0), (2, 0.9)])
def test_periodic_scoring_leaves_the_final_weights_bit_identical(
    tiny_synthetic: Path, tmp_path: Path, depth: int, ema_decay: float,
) -> None:
    """Same seed, period 0 and period 1 on the test split: the same weights, bit for bit. The test split is streamed,
    and its DataLoader draws from torch's global generator, which the second block's drop path draws from in training
    (the first block's rate is 0); with a weight average, the average is scored and the live weights go on training."""
    cfg = TrainConfig(epochs=2, p=4, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1, ema_decay=ema_decay)
    plain, plain_log = _train(tiny_synthetic, tmp_path / "plain", cfg, depth, [])
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    query, gallery = (stream_images(getattr(dataset, split), SIZE, workers=0) for split in ("query", "gallery"))
    modes = ModesSeen()
    eval_cfg = EvalConfig(period=1, batch_size=8)
    scoring = PeriodicEvaluation(query, gallery, eval_cfg, "test", "fp32", QUIET, log=False)
    scored, scored_log = _train(tiny_synthetic, tmp_path / "scored", cfg, depth, [scoring, modes])
    before, after = plain.state_dict(), scored.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert [e.val_map for e in plain_log] == [None, None]
    assert [e.loss for e in scored_log] == [e.loss for e in plain_log]
    assert modes.seen == [(True, True), (True, True)]
    # the last epoch's score is the final evaluation's: the weights (or their average) that training ends with
    final = evaluate_model(scored, query, gallery, eval_cfg, torch.device("cpu"), "fp32", QUIET).metrics
    assert (scored_log[-1].val_map, scored_log[-1].val_rank1) == (final["mAP"], final["rank1"])
    assert scoring.record(cfg.epochs) == {"split": "test", "period": 1, "epochs": [1, 2], "num_query": len(query),
                                          "num_gallery": len(gallery)}


# ------------------------------------------------------------------ CMC: one formula


def test_the_cmc_curve_from_per_query_ranks_is_the_evaluations_own() -> None:
    generator = torch.Generator().manual_seed(3)
    qf, gf = torch.randn(30, 16, generator=generator), torch.randn(80, 16, generator=generator)
    q_pids, g_pids = torch.arange(30) % 10, torch.arange(80) % 12
    result = evaluate_rank(qf, gf, q_pids, g_pids, torch.zeros(30, dtype=torch.long), torch.ones(80, dtype=torch.long), max_rank=20)
    curve = cmc_curve(result.queries.first_rank, 20)
    assert np.array_equal(curve, result.cmc) and curve[0] == result.rank1
    by_hand = [np.mean(result.queries.first_rank[result.queries.valid] <= k) for k in range(1, 21)]
    assert np.allclose(curve, by_hand)
    with pytest.raises(UsageError, match="at least one scored query"):
        cmc_curve(np.zeros(4, dtype=np.int64), 5)


# ------------------------------------------------------------------ a run, its resume and its report


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("inputs"), tiny_synthetic, epochs=3, grid=ONE_CELL_GRID)


def test_a_run_validates_on_a_carved_split_keeps_its_curve_through_a_resume_and_reports_it(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    args = run_args(inputs, out, "--device", "cpu", "--set", "eval.period=1", "--set", 'eval.split="val"')
    original = runner_module.execute

    def stop_after_second_epoch(cell: str, seed: int, epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "execute", lambda *a, **kw: original(*a, **{**kw, "on_epoch": stop_after_second_epoch}))
    assert cli.invoke(app, args).exit_code == 130
    monkeypatch.undo()
    resumed = cli.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    run = RunDir(out)
    record = run.read_record("vit768-none", 0)
    assert record.training["resumed_from_epoch"] == 2
    log = run.cell("vit768-none", 0).read_train_log().entries
    assert [e.epoch for e in log] == [1, 2, 3] and all(e.val_map is not None for e in log)  # epochs 1-2 from before the resume
    val = run.meta().dataset["validation"]
    assert record.validation == {"split": "val", "period": 1, "epochs": [1, 2, 3], "num_query": val["query"],
                                 "num_gallery": val["gallery"]}
    assert run.meta().dataset["used"]["train"]["ids"] == 8 - val["ids"]

    if importlib.util.find_spec("tensorboard") is not None:  # the curve in TensorBoard, a point per scored epoch
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run.cell("vit768-none", 0).events))
        events.Reload()
        points = events.Scalars(EPOCH_TAGS["val_map"])
        assert [p.step for p in points] == [1, 2, 3]
        assert [p.value for p in points] == pytest.approx([e.val_map for e in log], rel=1e-6)

    report = make_report(out, tmp_path / "report")
    names = {f.name for f in report.files}
    assert {"validation_curves.png", "cmc_curves.png"} <= names
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Validation during training" in markdown and f"{val['ids']} identities" in markdown
    curve = cell_cmc(load_run(out), "vit768-none")
    assert curve is not None and len(curve) == 20 and curve[0] == record.metrics["rank1"]


def test_a_period_longer_than_the_training_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--set", "eval.period=4"))
    assert result.exit_code == 2 and "eval.period 4 is longer than train.epochs 3" in result.output
