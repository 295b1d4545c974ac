"""Recipes as their upstream code defines them: schedules, bias learning rates, what an epoch covers."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from reidbench.errors import UsageError
from reidbench.profiles import TrainConfig, load_profile, load_recipe, with_recipe
from reidbench.training.sampler import PKSampler
from reidbench.training.step import build_optimizer, lr_factor
from reidbench.variants.factory import create_variant


def transreid_lr(epoch: int, base: float = 0.008, epochs: int = 120, warmup: int = 5) -> float:
    """TransReID's solver/scheduler_factory.py + cosine_lr.py, written out: warm-up from 0.01 x base, floor 0.002 x base,
    t = the 1-based epoch (scheduler.step(epoch) before each), no warm-up prefix, the last epoch at the floor."""
    lr_min, init = 0.002 * base, 0.01 * base
    if epoch < warmup:
        return init + epoch * (base - init) / warmup
    if epoch >= epochs:
        return lr_min
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


def clipreid_lr(epoch: int, base: float = 5e-6) -> float:
    """CLIP-ReID's WarmupMultiStepLR (stage 2: 10 warm-up epochs from 0.1, x0.1 at 30 and 50), last_epoch = the 1-based epoch."""
    warm = 0.1 * (1 - epoch / 10) + epoch / 10 if epoch < 10 else 1.0
    return base * warm * 0.1 ** sum(epoch >= m for m in (30, 50))


def test_the_full_profile_steps_transreids_schedule_per_epoch() -> None:
    cfg = load_profile("full").train
    steps = 7
    for epoch in range(1, cfg.epochs + 1):
        for step in ((epoch - 1) * steps, epoch * steps - 1):  # the first and the last step of the epoch
            assert cfg.lr * lr_factor(step, steps, cfg) == pytest.approx(transreid_lr(epoch), rel=1e-12)


def test_the_clipreid_recipe_steps_clipreids_schedule_per_epoch() -> None:
    cfg = with_recipe(load_profile("full"), load_recipe("clipreid")).train
    for epoch in range(1, cfg.epochs + 1):
        assert cfg.lr * lr_factor((epoch - 1) * 5 + 2, 5, cfg) == pytest.approx(clipreid_lr(epoch), rel=1e-12)


def test_the_default_schedule_is_unchanged_per_step_cosine_to_zero() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2)
    assert lr_factor(0, 4, cfg) == pytest.approx(0.01) and lr_factor(4, 4, cfg) == pytest.approx(0.01 + 0.99 / 2)
    assert lr_factor(8, 4, cfg) == pytest.approx(1.0) and lr_factor(40, 4, cfg) == pytest.approx(0.0, abs=1e-12)


def test_biases_train_at_the_recipes_factor_with_their_own_decay() -> None:
    model = create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=4)
    cfg = load_profile("full").train
    weights, biases = build_optimizer(model, cfg).param_groups
    assert (weights["lr"], biases["lr"]) == (cfg.lr, 2 * cfg.lr) and biases["weight_decay"] == cfg.weight_decay_bias
    assert all(name.endswith("bias") for name, p in model.named_parameters() if any(p is q for q in biases["params"]))
    assert len(weights["params"]) + len(biases["params"]) == sum(p.requires_grad for p in model.parameters())
    (single,) = build_optimizer(model, TrainConfig()).param_groups  # the default recipe: one group, as before
    adam = build_optimizer(model, with_recipe(load_profile("full"), load_recipe("clipreid")).train)
    assert isinstance(adam, torch.optim.Adam) and not isinstance(adam, torch.optim.AdamW)


def test_an_image_covering_epoch_takes_every_identitys_images_in_chunks_of_k() -> None:
    sizes = [3, 9, 4, 12, 5, 2, 7, 8, 4, 6, 10, 4]
    pids = torch.tensor([i for i, n in enumerate(sizes) for _ in range(n)])
    sampler = PKSampler(pids, p=3, k=4, seed=0, covers="images")
    chunks = sum(max(n, 4) // 4 for n in sizes)
    assert len(sampler) == chunks // 3
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) and all(len(b) == 12 for b in batches)
        assert all(len({pids[i].item() for i in b}) == 3 for b in batches)  # P distinct identities, K images each
        seen = Counter(pids[i].item() for b in batches for i in b)
        assert len(seen) >= len(sizes) - 2  # nearly every identity, more often the ones with more images
    identities = PKSampler(pids, p=3, k=4, seed=0)
    assert len(identities) == math.ceil(len(sizes) / 3) < len(sampler)


def test_bad_schedule_settings_are_refused_by_name() -> None:
    with pytest.raises(UsageError, match="milestones"):
        TrainConfig(epochs=10, schedule="multistep", milestones=(5, 3))
    with pytest.raises(UsageError, match="schedule_unit 'week'"):
        TrainConfig(schedule_unit="week")
    with pytest.raises(UsageError, match="unknown recipe 'nosuch'"):
        load_recipe("nosuch")
