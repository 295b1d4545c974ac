"""TensorBoard logs: epoch curves from the trainer's hook, a resume that repeats no epoch, final metrics as hparams,
and a missing tensorboard package that costs one line, not the run."""
from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import torch

from reidbench.data.images import ImageSet
from reidbench.harness import tensorboard as tb
from reidbench.harness import train as train_module
from reidbench.harness.train import EpochLog, TrainOptions
from reidbench.profiles import TrainConfig
from reidbench.runtime.progress import Progress
from reidbench.schema import CellRecord, CellState, EpochEntry
from reidbench.variants.factory import create_variant

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="pip install tensorboard")

CELL, SEED = "vit768-none", 0
EPOCHS = 4
TRAINER = train_module.Trainer


class Stop(Exception):
    """Ends training after an epoch, as a kill would."""


def _train(run_root: Path, monkeypatch: pytest.MonkeyPatch, stop_after: Optional[int] = None) -> list[str]:
    """Train a depth-1 model on random 32x16 images with the TensorBoard hook placed after the epoch log (as a run wires it)."""
    messages: list[str] = []
    hook = tb.tensorboard_hook(run_root, CELL, SEED, messages.append)
    assert hook is not None

    def with_hook(ctx, step, sampler, train_set, progress, hooks):
        at = next(i for i, h in enumerate(hooks) if isinstance(h, EpochLog)) + 1
        return TRAINER(ctx, step, sampler, train_set, progress, hooks[:at] + [hook] + hooks[at:])

    monkeypatch.setattr(train_module, "Trainer", with_hook)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 16), dtype=torch.uint8, generator=generator)
    pids = torch.arange(16) % 4
    train_set = ImageSet(images=images, pids=pids, camids=pids % 2, paths=[f"x/{i}" for i in range(16)])
    model = create_variant(CELL, depth=1, img_size=(32, 16), num_classes=4, num_cameras=2)
    cfg = TrainConfig(epochs=EPOCHS, p=2, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1, checkpoint_every=2, checkpoint_minutes=1e6)

    def on_epoch(epoch: int) -> None:
        if epoch == stop_after:
            raise Stop

    cell_dir = run_root / "cells" / CELL / f"seed{SEED}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    train_module.train_model(
        model, train_set, cfg, TrainOptions(seed=SEED, device=torch.device("cpu"), dtype="fp32"), cell_dir,
        Progress(lambda message: None, bars=False), on_epoch=on_epoch,
    )
    return messages


EVERY_EPOCH = {key: tag for key, tag in tb.EPOCH_TAGS.items() if not key.startswith("val_")}
"""The tags every epoch writes; the periodic evaluation's (val_*) only where a cell has eval.period
(tests/test_validation_period.py)."""


def _accumulator(run_root: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tb.tensorboard_dir(run_root, CELL, SEED)))
    accumulator.Reload()
    return accumulator


def _written_points(run_root: Path) -> Counter:
    """(tag, step) -> how many times it was written, over every event file of the cell."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    counts: Counter = Counter()
    for path in sorted(tb.tensorboard_dir(run_root, CELL, SEED).glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            counts.update((value.tag, event.step) for value in event.summary.value)
    return counts


@needs_tensorboard
def test_the_hook_writes_every_epoch_entry_as_scalars_per_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _train(tmp_path, monkeypatch) == []
    log = [json.loads(line) for line in (tmp_path / "cells" / CELL / f"seed{SEED}" / "train_log.jsonl").read_text().splitlines()]
    accumulator = _accumulator(tmp_path)
    assert sorted(accumulator.Tags()["scalars"]) == sorted(EVERY_EPOCH.values())
    for key, tag in EVERY_EPOCH.items():
        points = accumulator.Scalars(tag)
        assert [p.step for p in points] == list(range(1, EPOCHS + 1))
        assert [p.value for p in points] == pytest.approx([entry[key] for entry in log], rel=1e-6)


@needs_tensorboard
def test_a_resumed_cell_continues_its_curves_without_repeating_an_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Stop):
        _train(tmp_path, monkeypatch, stop_after=3)  # checkpoint at epoch 2; epoch 3 was logged, then lost
    assert _written_points(tmp_path)[("train/loss", 3)] == 1
    _train(tmp_path, monkeypatch)  # resumes at epoch 2: trains 3 and 4 again
    written = _written_points(tmp_path)
    assert [written[("train/loss", step)] for step in range(1, EPOCHS + 1)] == [1, 1, 2, 1]  # 1 and 2 never rewritten
    for tag in EVERY_EPOCH.values():
        assert [p.step for p in _accumulator(tmp_path).Scalars(tag)] == [1, 2, 3, 4]  # the lost epoch 3 is purged


@needs_tensorboard
def test_a_cell_resumed_before_tensorboard_wrote_anything_gets_its_checkpointed_epochs_once(tmp_path: Path) -> None:
    hook = tb.tensorboard_hook(tmp_path, CELL, SEED, print)
    entries = [EpochEntry(e, loss=1.0 / e, id_loss=0.5 / e, triplet_loss=0.5 / e, accuracy=0.1 * e, lr=1e-3, seconds=1.0, img_per_s=100.0)
               for e in (1, 2, 3)]
    ctx = SimpleNamespace(start_epoch=2, cfg=SimpleNamespace(epochs=3), log=entries[:2])  # the checkpoint's log
    hook.on_start(ctx)
    hook.on_epoch(ctx, entries[2])
    assert [p.step for p in _accumulator(tmp_path).Scalars("train/loss")] == [1, 2, 3]
    assert set(_written_points(tmp_path).values()) == {1}


def _record(**metrics: float) -> CellRecord:
    settings = create_variant(CELL, depth=1, img_size=(32, 16), num_classes=4).settings.to_dict()
    return CellRecord(
        CELL, "vit768", "none", CellState.DONE, seed=SEED, settings=settings,
        metrics=metrics, training={"epochs_done": EPOCHS},
    )


@needs_tensorboard
def test_final_metrics_are_written_with_the_cells_settings_as_hparams(tmp_path: Path) -> None:
    record = _record(mAP=0.25, rank1=0.3, rank5=0.5, rank10=0.6, mINP=0.1)
    recipe = TrainConfig(optimizer="adamw", lr=1e-3, milestones=())
    assert tb.write_cell_hparams(tmp_path, record, print, extra=tb.train_hparams(recipe, "quick"))
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    accumulator = _accumulator(tmp_path)
    for name, value in record.metrics.items():
        (point,) = accumulator.Scalars(f"final/{name}")
        assert (point.step, point.value) == (EPOCHS, pytest.approx(value))
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["cell"].string_value == CELL
    assert start.hparams["depth"].number_value == 1 and start.hparams["img_size"].string_value == "32x16"
    assert start.hparams["clip_quick_gelu"].string_value == "true" and start.hparams["train.optimizer"].string_value == "adamw"
    assert start.hparams["profile"].string_value == "quick" and start.hparams["train.lr"].number_value == pytest.approx(1e-3)
    assert start.hparams["train.milestones"].string_value == "-" and "train.checkpoint_every" not in start.hparams
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert sorted(m.name.tag for m in experiment.metric_infos) == sorted(f"final/{n}" for n in tb.FINAL_METRICS)


@needs_tensorboard
def test_a_cell_without_metrics_writes_no_hparams(tmp_path: Path) -> None:
    assert not tb.write_cell_hparams(tmp_path, _record(), print)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_without_tensorboard_no_hook_is_built_and_one_line_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import now fails, as without the package
    messages: list[str] = []
    assert tb.tensorboard_hook(tmp_path, CELL, SEED, messages.append) is None
    assert tb.tensorboard_hook(tmp_path, "clip512-none", SEED, messages.append) is None
    assert not tb.write_cell_hparams(tmp_path, _record(mAP=0.5), messages.append)
    assert messages == [tb.INSTALL_HINT] and "pip install tensorboard" in messages[0]
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_run_writes_event_files_per_cell_and_seed(tiny_synthetic: Path, tmp_path: Path) -> None:
    """`tensorboard --logdir RUN` sees every cell and seed: per-epoch scalars and the final metrics with the settings."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from typer.testing import CliRunner

    from reidbench.cli import app
    from tiny_run import run_args, write_inputs

    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", "--seeds", "2"))
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        events = EventAccumulator(str(out / "cells" / "vit768-none" / f"seed{seed}"))
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
        assert "final/mAP" in events.Tags()["scalars"]
