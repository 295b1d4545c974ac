"""When training writes resumable checkpoints: by elapsed time, every N epochs on request, always at the end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidbench.errors import UsageError
from reidbench.harness import checkpoints
from reidbench.harness import train as train_module
from reidbench.harness.train import TrainOptions
from reidbench.data.images import ImageSet
from reidbench.profiles import TrainConfig
from reidbench.runtime.progress import Progress
from reidbench.variants.factory import create_variant


def test_checkpoint_is_due_by_time_by_epoch_count_and_at_the_end() -> None:
    by_time = TrainConfig(epochs=10, warmup_epochs=1)  # defaults: 1 minute, no epoch count
    assert [by_time.checkpoint_due(e, 0.2) for e in range(1, 11)] == [False] * 9 + [True]
    assert by_time.checkpoint_due(3, 1.0) and not by_time.checkpoint_due(3, 0.99)
    every_epoch = TrainConfig(epochs=10, warmup_epochs=1, checkpoint_minutes=0)
    assert all(every_epoch.checkpoint_due(e, 0.0) for e in range(1, 11))
    every_4 = TrainConfig(epochs=10, warmup_epochs=1, checkpoint_every=4)
    assert [e for e in range(1, 11) if every_4.checkpoint_due(e, 0.1)] == [4, 8, 10]


@pytest.mark.parametrize("field, value", [("checkpoint_minutes", -1.0), ("checkpoint_every", -2)])
def test_negative_checkpoint_settings_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(UsageError, match=f"{field} {value}"):
        TrainConfig(**{field: value})


def _saved_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig, minutes_per_epoch: float) -> list[int]:
    """Train a depth-1 model for `cfg.epochs` on random images with a clock that advances
    `minutes_per_epoch` per epoch; the epochs whose checkpoints were written."""
    saved: list[int] = []
    real_save = checkpoints.save_torch_atomic
    monkeypatch.setattr(checkpoints, "save_torch_atomic", lambda state, path: (saved.append(state["epoch"]), real_save(state, path)))
    clock = {"now": 0.0}
    monkeypatch.setattr(checkpoints, "monotonic", lambda: clock["now"])
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 16), dtype=torch.uint8, generator=generator)
    pids = torch.arange(16) % 4
    train_set = ImageSet(images=images, pids=pids, camids=pids % 2, paths=[f"x/{i}" for i in range(16)])
    model = create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=4, num_cameras=2)
    train_module.train_model(
        model, train_set, cfg, TrainOptions(seed=0, device=torch.device("cpu"), dtype="fp32"), tmp_path,
        Progress(lambda message: None, bars=False),
        on_epoch=lambda epoch: clock.__setitem__("now", clock["now"] + 60 * minutes_per_epoch),
    )
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == cfg.epochs
    return saved


def test_training_writes_a_checkpoint_once_a_minute_of_training_has_passed(tmp_path, monkeypatch) -> None:
    cfg = TrainConfig(epochs=5, p=2, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1)
    # on_epoch advances the clock after the checkpoint decision: 0.4 min per epoch -> due after epochs 4 (1.2 min) and 5 (last)
    assert _saved_epochs(tmp_path / "a", monkeypatch, cfg, minutes_per_epoch=0.4) == [4, 5]
    assert _saved_epochs(tmp_path / "b", monkeypatch, cfg, minutes_per_epoch=0.01) == [5]
    every_2 = TrainConfig(epochs=5, p=2, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1, checkpoint_every=2)
    assert _saved_epochs(tmp_path / "c", monkeypatch, every_2, minutes_per_epoch=0.01) == [2, 4, 5]
