"""CLIP-ReID's two stages: the prompt's token layout, stage 1's contrastive learning, stage 2's fixed text classifier,
and a grid trained with the clipreid recipe end to end."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data.images import ImageSet
from reidbench.errors import UsageError
from reidbench.profiles import TrainConfig, load_recipe
from reidbench.rundir import RunDir
from reidbench.training.clipreid import prompt_lr, supervised_contrastive, train_prompts
from reidbench.training.step import StepOptions, TrainStep, build_optimizer
from reidbench.variants.clipreid import ClipReidModel
from reidbench.variants.factory import create_variant
from reidbench.variants.text import CONTEXT_TOKENS, PREFIX_TOKENS, PromptLearner, TextTower
from tests.tiny_run import profile_toml, run_args

CPU = torch.device("cpu")


def tiny_clipreid(cell: str = "clip768-none", classes: int = 4) -> ClipReidModel:
    return create_variant(cell, depth=1, img_size=(32, 16), num_classes=classes, head="clipreid")


def identity_images(classes: int = 4, per_id: int = 4) -> ImageSet:
    """Images whose identity shows in their colours, so that a frozen random tower still tells identities apart."""
    generator = torch.Generator().manual_seed(0)
    pids = torch.arange(classes * per_id) % classes
    base = torch.rand(classes, 3, 32, 16, generator=generator)[pids] * 200
    images = (base + torch.rand(len(pids), 3, 32, 16, generator=generator) * 50).to(torch.uint8)
    return ImageSet(images, pids, torch.zeros(len(pids), dtype=torch.long), [""] * len(pids))


def test_the_prompt_is_upstreams_template_with_learned_vectors_in_place_of_the_xs() -> None:
    template = open_clip.tokenize("A photo of a X X X X person.")
    tower = TextTower(depth=1)
    prompts = PromptLearner(3, tower.token_embedding)
    assert torch.equal(prompts.token_ids, template)
    x = open_clip.tokenize("X")[0, 1]
    assert (template[0, PREFIX_TOKENS:PREFIX_TOKENS + CONTEXT_TOKENS] == x).all() and (template[0, :PREFIX_TOKENS] != x).all()
    assert prompts.end_of_text == int((template[0] == 49407).nonzero()) == 11  # the feature is read at end-of-text
    embedded = tower.token_embedding(template)
    built = prompts(torch.tensor([2, 0]))
    assert built.shape == (2, 77, 512)
    torch.testing.assert_close(built[:, :PREFIX_TOKENS], embedded[:, :PREFIX_TOKENS].expand(2, -1, -1))
    torch.testing.assert_close(built[:, PREFIX_TOKENS + CONTEXT_TOKENS:], embedded[:, PREFIX_TOKENS + CONTEXT_TOKENS:].expand(2, -1, -1))
    torch.testing.assert_close(built[0, PREFIX_TOKENS:PREFIX_TOKENS + CONTEXT_TOKENS], prompts.identity_context[2])
    trainable = [name for name, p in prompts.named_parameters() if p.requires_grad]
    assert trainable == ["identity_context"]  # prefix and suffix are frozen buffers


def test_supervised_contrastive_is_supcons_formula() -> None:
    a, b = torch.randn(5, 8), torch.randn(6, 8)
    la, lb = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 0, 1])
    logits = a @ b.T
    log_prob = logits - logits.exp().sum(1, keepdim=True).log()
    mask = (la[:, None] == lb[None, :]).float()
    expected = -((mask * log_prob).sum(1) / mask.sum(1)).mean()
    torch.testing.assert_close(supervised_contrastive(a, b, la, lb), expected)


def test_stage_ones_schedule_is_upstreams_cosine_with_warm_up() -> None:
    cfg = TrainConfig()
    assert prompt_lr(1, cfg) == pytest.approx(1e-5 + (3.5e-4 - 1e-5) / 5)
    assert prompt_lr(5, cfg) == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + torch.cos(torch.tensor(torch.pi * 5 / 120)).item()))
    assert prompt_lr(120, cfg) == pytest.approx(1e-6)


def test_stage_one_learns_the_prompts_and_leaves_the_image_tower_untouched() -> None:
    model = tiny_clipreid()
    before = {k: v.clone() for k, v in model.state_dict().items() if k != "head.text_features"}
    cfg = TrainConfig(prompt_epochs=8, prompt_batch_size=16, prompt_warmup_epochs=0, prompt_lr=0.0001)
    stage = train_prompts(model, identity_images(), cfg, CPU, "fp32", seed=0)
    losses = [e.loss for e in stage.entries]
    assert len(losses) == 8 and all(e.stage == 1 for e in stage.entries)
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < min(losses[:4]), losses
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # both encoders frozen
    assert model.head.text_features.abs().sum() > 0 and stage.images == 16


def test_stage_two_classifies_against_the_frozen_text_features() -> None:
    model = tiny_clipreid()
    model.head.text_features.copy_(torch.randn(4, 512))
    cfg = TrainConfig(p=2, k=2, optimizer="adam", lr=1e-3, triplet="margin", label_smoothing=0.1, augment=False)
    optimizer = build_optimizer(model, cfg)
    assert not any(p is model.head.text_features for g in optimizer.param_groups for p in g["params"])
    step = TrainStep(model, cfg, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                     torch.Generator().manual_seed(0), StepOptions(CPU, "fp32"))
    text = model.head.text_features.clone()
    images = torch.randint(0, 255, (4, 3, 32, 16), dtype=torch.uint8)
    pids, cams = torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.long)
    step.begin_epoch(torch.arange(4)[None])
    stats = step(0, (images, pids, cams))
    assert step.stat_names[-1] == "i2t_loss" and len(stats) == 5 and stats[-1] > 0
    assert torch.equal(model.head.text_features, text) and not model.head.text_features.requires_grad
    model.train()
    output = model(torch.randn(4, 3, 32, 16))
    torch.testing.assert_close(output.i2t_logits, output.proj_features @ text.T)  # upstream's logits, unnormalised
    model.eval()
    assert model(torch.randn(2, 3, 32, 16)).shape == (2, 768 + 512) == (2, model.feature_dim)


def test_clip768s_head_owns_the_proj_its_backbone_skips_and_other_backbones_are_refused() -> None:
    assert tiny_clipreid("clip768-none").head.proj is not None
    assert tiny_clipreid("clip512-none").head.proj is None
    with pytest.raises(UsageError, match="needs a CLIP tower"):
        tiny_clipreid("vit768-none")


def small_clipreid_recipe(folder: Path) -> Path:
    """The built-in clipreid recipe with its epochs, batches and schedule shrunk to a tiny set's size."""
    recipe = load_recipe("clipreid")
    train = {**recipe.train, "epochs": 2, "p": 4, "k": 2, "warmup_epochs": 1, "milestones": [], "lr": 1e-4,
             "prompt_epochs": 3, "prompt_batch_size": 16, "prompt_warmup_epochs": 1}
    lines = ["follows = \"the clipreid recipe, shrunk\"", 'init = "pretrained"', f"weights = {json.dumps(recipe.init.weights)}", "[model]", *(f"{k} = {json.dumps(v)}" for k, v in recipe.model.items()),
             "[train]", *(f"{k} = {json.dumps(v)}" for k, v in train.items())]
    path = folder / "clipreid-small.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pretrained_shaped_clip(folder: Path) -> Path:
    """A whole CLIP ViT-B-16 state dict (image and text towers, full widths) at depth 1, random: what the recipe starts from."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(5)
    model = CLIP(embed_dim=512, vision_cfg=CLIPVisionCfg(layers=1, width=768, patch_size=16, image_size=224),
                 text_cfg=CLIPTextCfg(layers=1), quick_gelu=True)
    path = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path


def test_a_grid_with_the_clipreid_recipe_runs_both_stages_and_reports_them(tiny_synthetic: Path, tmp_path: Path) -> None:
    """The recipe fine-tunes pretrained CLIP, so the cell starts from a (pretrained-shaped) CLIP file."""
    small_clipreid_recipe(tmp_path)
    weights = pretrained_shaped_clip(tmp_path)
    (tmp_path / "grid.toml").write_text(
        'backbones = ["clip768"]\nnecks = ["none"]\n[backbone.clip768]\nrecipe = { profile = "clipreid-small.toml" }\n')
    (tmp_path / "profile.toml").write_text(profile_toml(2))
    inputs = {"grid": tmp_path / "grid.toml", "profile": tmp_path / "profile.toml", "data": tiny_synthetic}
    out = tmp_path / "run"
    result = CliRunner().invoke(app, run_args(inputs, out, "--weights", f"clip768={weights}"))
    assert result.exit_code == 0, result.output
    assert "stage 1 done" in result.output
    record = RunDir(out).read_record("clip768-none", 0)
    assert record.status.value == "done", record.error
    stage1 = record.training["stage1"]
    assert stage1["epochs_done"] == 3 and stage1["seconds"] > 0 and stage1["final_loss"] > 0
    assert record.feature_dim == 1280 and record.recipe["train"]["prompt_epochs"] == 3
    assert record.recipe["init"] == "pretrained" and record.recipe["profile"].endswith("+clipreid-small")
    lines = [json.loads(line) for line in (out / "cells" / "clip768-none" / "seed0" / "train_log.jsonl").read_text().splitlines()]
    assert [(e.get("stage"), e["epoch"]) for e in lines] == [(1, 1), (1, 2), (1, 3), (None, 1), (None, 2)]
    assert all("i2t_loss" in e for e in lines[3:])
    report = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "the loss of stage 1 (prompt learning" in md and "Stage 1 (CLIP-ReID identity prompts" in md
