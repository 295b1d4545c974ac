"""Stabilising settings of the training step: the weights' moving average (train.ema_decay) and gradient clipping (train.grad_clip_norm)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from reidbench.data.images import ImageSet
from reidbench.errors import UsageError
from reidbench.harness import train as train_module
from reidbench.harness.checkpoints import CheckpointDamaged
from reidbench.harness.train import TrainOptions
from reidbench.profiles import TrainConfig
from reidbench.runtime.progress import Progress
from reidbench.training.average import RAMP
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, epoch_batches
from reidbench.variants.factory import create_variant

CFG = dict(epochs=3, p=2, k=2, optimizer="adamw", lr=1e-3, warmup_epochs=1, checkpoint_minutes=0)


def _train_set() -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 16), dtype=torch.uint8, generator=generator)
    pids = torch.arange(16) % 4
    return ImageSet(images=images, pids=pids, camids=pids % 2, paths=[f"x/{i}" for i in range(16)])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=4, num_cameras=2)


def _train(model: torch.nn.Module, cfg: TrainConfig, cell_dir: Path, on_epoch: Optional[Callable[[int], None]] = None) -> None:
    train_module.train_model(
        model, _train_set(), cfg, TrainOptions(seed=0, device=torch.device("cpu"), dtype="fp32"), cell_dir,
        Progress(lambda message: None, bars=False), on_epoch=on_epoch,
    )


def _floats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}


def test_the_trained_model_is_the_moving_average_of_the_weights_after_every_step(tmp_path: Path, monkeypatch) -> None:
    """Recorded independently of the average: the weights after each optimizer step, averaged here by hand."""
    decay = 0.8
    snapshots: list[dict[str, torch.Tensor]] = []
    model = _model()
    real_build = train_module.build_optimizer

    def recording_optimizer(module, cfg, graph_safe_on=None):
        optimizer = real_build(module, cfg, graph_safe_on)
        optimizer.register_step_post_hook(lambda *_: snapshots.append(_floats(module)))
        return optimizer

    monkeypatch.setattr(train_module, "build_optimizer", recording_optimizer)
    expected = _floats(model)
    _train(model, TrainConfig(**CFG, ema_decay=decay), tmp_path)
    for t, weights in enumerate(snapshots, start=1):
        d = min(decay, (1 + t) / (RAMP + t))
        expected = {name: d * expected[name] + (1 - d) * weights[name] for name in expected}
    got = _floats(model)
    assert len(snapshots) > 3
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    last = snapshots[-1]
    assert any(not torch.allclose(got[name], last[name]) for name in last), "the model kept its last weights, not their average"
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.testing.assert_close(saved["model"]["head.classifier.weight"], last["head.classifier.weight"])


def test_a_resumed_training_continues_the_same_average(tmp_path: Path) -> None:
    cfg = TrainConfig(**{**CFG, "epochs": 4}, ema_decay=0.8)
    whole = _model()
    _train(whole, cfg, tmp_path / "whole")

    def stop_after_two(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(_model(), cfg, tmp_path / "split", on_epoch=stop_after_two)
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["average"] is not None
    resumed = _model()
    _train(resumed, cfg, tmp_path / "split")
    expected, got = _floats(whole), _floats(resumed)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_a_checkpoint_without_an_average_is_refused_when_the_recipe_keeps_one(tmp_path: Path) -> None:
    def stop_after_one(epoch: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(_model(), TrainConfig(**CFG), tmp_path, on_epoch=stop_after_one)
    with pytest.raises(CheckpointDamaged, match="moving average"):
        _train(_model(), TrainConfig(**CFG, ema_decay=0.8), tmp_path)


def _gradient_norm_after_a_step(grad_clip_norm: float) -> float:
    model = _model().train()
    cfg = TrainConfig(**CFG, grad_clip_norm=grad_clip_norm)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    step = TrainStep(model, cfg, optimizer, scheduler, torch.Generator().manual_seed(0), StepOptions(torch.device("cpu"), "fp32"))
    train_set = _train_set()
    batches = epoch_batches(PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0), train_set.index_device)
    step.begin_epoch(batches)
    step(0, next(iter(train_set.batches(batches))))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees() -> None:
    unclipped = _gradient_norm_after_a_step(0.0)
    bound = unclipped / 10
    assert _gradient_norm_after_a_step(bound) == pytest.approx(bound, rel=1e-4)


@pytest.mark.parametrize("settings", [{"ema_decay": 1.0}, {"ema_decay": -0.1}, {"grad_clip_norm": -1.0}])
def test_out_of_range_stabilising_settings_are_refused_by_name(settings: dict) -> None:
    (name, value), = settings.items()
    with pytest.raises(UsageError, match=f"{name} {value}"):
        TrainConfig(**settings)
