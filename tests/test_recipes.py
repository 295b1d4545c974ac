"""Recipes as their upstream code defines them: schedules, bias learning rates, what an epoch covers."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, replace

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


def test_the_per_step_schedule_is_a_cosine_to_zero() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2, schedule_unit="step", lr_floor=0.0)
    assert lr_factor(0, 4, cfg) == pytest.approx(0.01) and lr_factor(4, 4, cfg) == pytest.approx(0.01 + 0.99 / 2)
    assert lr_factor(8, 4, cfg) == pytest.approx(1.0) and lr_factor(40, 4, cfg) == pytest.approx(0.0, abs=1e-12)


def test_biases_train_at_the_recipes_factor_with_their_own_decay() -> None:
    model = create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=4)
    cfg = load_profile("full").train
    weights, biases = build_optimizer(model, cfg).param_groups
    assert (weights["lr"], biases["lr"]) == (cfg.lr, 2 * cfg.lr) and biases["weight_decay"] == weights["weight_decay"] == 1e-4
    assert all(name.endswith("bias") for name, p in model.named_parameters() if any(p is q for q in biases["params"]))
    assert len(weights["params"]) + len(biases["params"]) == sum(p.requires_grad for p in model.parameters())
    (single,) = build_optimizer(model, load_profile("quick").train).param_groups  # one learning rate for biases: one group
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


# The resolved values of the shipped profiles and recipe as they were when every profile file restated the
# defaults: one home per default must not change what any of them trains, evaluates or measures with.
_BEFORE_TRAIN = {
    "epochs": 120, "p": 16, "k": 4, "optimizer": "sgd", "lr": 0.008, "momentum": 0.9, "weight_decay": 0.0001,
    "bias_lr_factor": 2.0, "weight_decay_bias": 0.0001, "epoch_covers": "images", "warmup_epochs": 5, "warmup_from": 0.01,
    "schedule": "cosine", "schedule_unit": "epoch", "lr_floor": 0.002, "milestones": (), "gamma": 0.1, "label_smoothing": 0.0,
    "triplet": "soft", "triplet_margin": 0.3, "id_weight": 1.0, "triplet_weight": 1.0, "augment": True, "erase_p": 0.5,
    "checkpoint_minutes": 1.0, "checkpoint_every": 0, "freeze_backbone": False,
}
_BEFORE_EVAL = {"metric": "euclidean", "normalize": True, "flip": False, "batch_size": 256, "rerank": False, "rerank_k1": 20,
                "rerank_k2": 6, "rerank_lambda": 0.3}
_BEFORE_MEASURE = {"batch_sizes": (1, 64, 256), "train_batch_size": 64, "repeats": 50, "warmup": 3, "max_seconds": 5.0,
                   "compile": False, "cuda_graphs": False, "reference": False, "onnx": False}
# quick's learning rate moved from 1e-3 to 5e-4 on purpose (docs/results/2026-12-07-quick-profile-learning-rate-and-thread-count-cpu.md).
_QUICK_TRAIN = {**_BEFORE_TRAIN, "epochs": 40, "optimizer": "adamw", "lr": 0.0005, "weight_decay": 0.05, "bias_lr_factor": 1.0,
                "weight_decay_bias": None, "epoch_covers": "identities", "warmup_epochs": 3, "schedule_unit": "step",
                "lr_floor": 0.0, "label_smoothing": 0.1, "erase_p": 0.0}
_CLIPREID_TRAIN = {"epochs": 60, "optimizer": "adam", "lr": 5e-06, "weight_decay": 0.0001, "bias_lr_factor": 2.0,
                   "weight_decay_bias": 0.0001, "epoch_covers": "images", "warmup_epochs": 10, "warmup_from": 0.1,
                   "schedule": "multistep", "schedule_unit": "epoch", "milestones": (30, 50), "gamma": 0.1, "label_smoothing": 0.1,
                   "triplet": "margin", "triplet_margin": 0.3, "id_weight": 0.25, "triplet_weight": 1.0}
BEFORE = {
    "full": ({"depth": 12, "img_size": [256, 128]}, _BEFORE_TRAIN, _BEFORE_EVAL, _BEFORE_MEASURE),
    "quick": ({"depth": 1, "img_size": [64, 32], "camera_embedding_scale": 0.3, "neck_scales": [1, 2, 4]}, _QUICK_TRAIN,
              {**_BEFORE_EVAL, "batch_size": 128},
              {**_BEFORE_MEASURE, "batch_sizes": (1, 8), "train_batch_size": 4, "repeats": 10, "warmup": 1, "max_seconds": 1.0}),
    "full+clipreid": ({"depth": 12, "img_size": [256, 128], "camera_embedding_scale": 0.0}, {**_BEFORE_TRAIN, **_CLIPREID_TRAIN},
                      _BEFORE_EVAL, _BEFORE_MEASURE),
    "quick+clipreid": ({"depth": 1, "img_size": [64, 32], "camera_embedding_scale": 0.0, "neck_scales": [1, 2, 4]},
                       {**_QUICK_TRAIN, **_CLIPREID_TRAIN}, {**_BEFORE_EVAL, "batch_size": 128},
                       {**_BEFORE_MEASURE, "batch_sizes": (1, 8), "train_batch_size": 4, "repeats": 10, "warmup": 1, "max_seconds": 1.0}),
}


def _resolved(name: str):
    profile, _, recipe = name.partition("+")
    loaded = load_profile(profile)
    return with_recipe(loaded, load_recipe(recipe)) if recipe else loaded


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_shipped_profiles_resolve_to_the_values_they_had(name: str) -> None:
    model, train, eval_, measure = BEFORE[name]
    resolved = _resolved(name)
    expected_train = dict(train)
    if name == "full":
        # TOML cannot say None: full now leaves the bias decay at the base's "as weight_decay", which is the 1e-4 it stated.
        expected_train["weight_decay_bias"] = None
        module = create_variant("vit768-none", depth=1, img_size=(32, 16), num_classes=4)
        assert {g["weight_decay"] for g in build_optimizer(module, resolved.train).param_groups} == {1e-4}
    # settings added since are new; every setting that existed keeps its value
    assert {k: v for k, v in resolved.model.items() if k in model} == model
    assert {k: v for k, v in asdict(resolved.train).items() if k in expected_train} == expected_train
    assert ({k: v for k, v in asdict(resolved.eval).items() if k in eval_}, asdict(resolved.measure)) == (eval_, measure)
    assert (resolved.eval.period, resolved.eval.split) == (0, "auto")  # added since: the final evaluation alone, as before


def test_every_value_names_where_it_came_from() -> None:
    quick = {key: origin for key, _, origin in load_profile("quick").resolved()}
    assert quick["train.lr"] == quick["model.depth"] == "builtin:quick" and quick["train.momentum"] == "base"
    full = {key: origin for key, _, origin in _resolved("full+clipreid").resolved()}
    assert full["model.depth"] == "builtin:full" and full["train.lr"] == "builtin-recipe:clipreid" and full["eval.metric"] == "base"


def test_a_profile_states_only_what_it_changes_on_what_it_extends(tmp_path) -> None:
    (tmp_path / "mine.toml").write_text('extends = "quick"\n[train]\nepochs = 5\n')
    (tmp_path / "bare.toml").write_text('[train]\nepochs = 30\n')
    mine, bare = load_profile(str(tmp_path / "mine.toml")), load_profile(str(tmp_path / "bare.toml"))
    assert mine.train == replace(load_profile("quick").train, epochs=5) and mine.model == load_profile("quick").model
    # without `extends`: the base alone, which is full's recipe, with the grid's model sizes
    assert bare.train == replace(load_profile("full").train, epochs=30) and bare.model == {}
    (tmp_path / "deeper.toml").write_text('extends = "mine.toml"\n[eval]\nflip = true\n')  # relative to the extending file
    deeper = load_profile(str(tmp_path / "deeper.toml"))
    assert deeper.train.epochs == 5 and deeper.eval.flip and deeper.origins["train.epochs"] == str(tmp_path / "mine.toml")


def test_a_resolved_profile_reads_back_as_itself(tmp_path) -> None:
    quick = load_profile("quick")
    (tmp_path / "stored.toml").write_text(quick.to_toml())
    stored = load_profile(str(tmp_path / "stored.toml"))
    assert (stored.model, stored.train, stored.eval, stored.measure, stored.departures) == (
        quick.model, quick.train, quick.eval, quick.measure, quick.departures)


@pytest.mark.parametrize("text, message", [
    ('extends = "mine.toml"\n', "extends itself"),
    ('extends = 3\n', "extends must name a profile"),
    ('extends = "nosuch"\n', "unknown profile 'nosuch'"),
])
def test_a_bad_extends_is_refused_by_name(tmp_path, text: str, message: str) -> None:
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(UsageError, match=message):
        load_profile(str(tmp_path / "mine.toml"))
