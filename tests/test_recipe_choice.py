"""A recipe belongs to the initialisation it was written for; the dry run shows each cell's choice; MambaPro's
recipe per dataset; a frozen backbone; the input size per dataset.

The datasets here are trees of empty files: a dry run lists a dataset and never opens an image, so any
decoding would fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.profiles import TrainConfig, load_profile, load_recipe
from reidbench.training.step import build_optimizer
from reidbench.variants.factory import create_variant

runner = CliRunner()


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def market_tree(root: Path, ids: int = 16) -> Path:
    """Market-1501 layout, `ids` training identities over two cameras: enough for full's 16 identities per batch."""
    _touch(root / "bounding_box_train", [f"{pid:04d}_c{cam}s1_{pid * 10 + cam:06d}_01.jpg" for pid in range(1, ids + 1) for cam in (1, 2)])
    _touch(root / "query", [f"{pid:04d}_c1s1_{pid:06d}_01.jpg" for pid in range(100, 104)])
    _touch(root / "bounding_box_test", [f"{pid:04d}_c2s1_{pid:06d}_01.jpg" for pid in range(100, 104)])
    return root


def rgbnt100_tree(root: Path, ids: int = 16) -> Path:
    """RGBNT100 layout (three modalities side by side per file), `ids` training vehicles over two cameras."""
    rgbir = root / "rgbir"
    _touch(rgbir / "bounding_box_train", [f"{pid:04d}_c{cam:04d}_{pid * 10 + cam:03d}.jpg" for pid in range(1, ids + 1) for cam in (1, 2)])
    _touch(rgbir / "query", [f"{pid:04d}_c0001_{pid:03d}.jpg" for pid in range(100, 104)])
    _touch(rgbir / "bounding_box_test", [f"{pid:04d}_c0002_{pid:03d}.jpg" for pid in range(100, 104)])
    return root


def dry_run(*args: str) -> dict:
    result = runner.invoke(app, ["run", "--dry-run", "--json", "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_from_random_initialisation_every_cell_of_the_default_grid_shares_the_profiles_recipe(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = dry_run("--grid", "default", "--profile", "full", "--data", f"market1501:{market_tree(tmp_path / 'market')}")
    cells = plan["cells"]
    assert [c["id"] for c in cells] == ["vit768-none", "vit768-ms", "clip512-none", "clip512-ms", "clip512proj-none", "clip512proj-ms"]
    assert {c["init"] for c in cells} == {"scratch"} and {json.dumps(c["train"]) for c in cells} == {json.dumps(cells[0]["train"])}
    assert {c["recipe"]["profile"] for c in cells} == {"full"} and cells[0]["train"]["optimizer"] == "sgd"
    clip = cells[2]["recipe"]
    assert clip["asked"] == "clipreid" and clip["why"].startswith(
        "clipreid recipe not used: it fine-tunes pretrained weights (openai) and this cell starts from random initialisation")
    assert "run here from random initialisation" in cells[0]["recipe"]["why"]
    assert plan["seeds"] == [0] and cells[0]["settings"]["img_size"] == [256, 128] and cells[0]["settings"]["depth"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["market"]  # no run directory


def test_with_weights_each_backbone_gets_its_upstreams_recipe(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    # A dry run builds no model: any readable file passes the weights check (full's depth 12 is never built).
    for name in ("jx_vit_base_p16_224-80ecf9dd.pth", "ViT-B-16.pt", "other.pt"):
        (tmp_path / name).write_bytes(b"not read by a dry run")
    plan = dry_run("--grid", "default", "--profile", "full", "--data", f"market1501:{market_tree(tmp_path / 'market')}",
                   "--weights", f"vit768={tmp_path / 'jx_vit_base_p16_224-80ecf9dd.pth'}",
                   "--weights", f"clip512={tmp_path / 'ViT-B-16.pt'}", "--weights", f"clip512proj={tmp_path / 'other.pt'}")
    by_id = {c["id"]: c for c in plan["cells"]}
    vit, clip, proj = by_id["vit768-ms"], by_id["clip512-none"], by_id["clip512proj-none"]
    assert {c["init"] for c in plan["cells"]} == {"pretrained"}
    assert vit["recipe"]["profile"] == "full" and vit["train"]["optimizer"] == "sgd" and vit["train"]["lr"] == 0.008
    assert vit["recipe"]["why"].endswith("this cell starts from them")
    assert clip["recipe"]["profile"] == "full+clipreid" and (clip["train"]["optimizer"], clip["train"]["lr"]) == ("adam", 5e-6)
    assert clip["origins"]["train.lr"] == "builtin-recipe:clipreid" and clip["recipe"]["follows"].startswith("CLIP-ReID stage 2")
    assert proj["recipe"]["profile"] == "full+clipreid" and "other pretrained weights" in proj["recipe"]["why"]


def test_a_dry_run_prints_the_plan_and_creates_no_run_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = market_tree(tmp_path / "market")
    result = runner.invoke(app, ["run", "--dry-run", "--device", "cpu", "--profile", "full", "--data", f"market1501:{data}",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "cell clip512-ms (expected xfail): clipreid recipe not used" in result.output
    assert "no run directory was created" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["market"]
    refused = runner.invoke(app, ["run", "--json", "--device", "cpu"])
    assert refused.exit_code == 2 and "add --dry-run" in refused.output


def test_the_multimodal_grid_on_a_vehicle_set_follows_its_input_size_and_mambapros_recipe(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = f"rgbnt100:{rgbnt100_tree(tmp_path / 'rgbnt100')}"
    quick = dry_run("--grid", "multimodal", "--profile", "quick", "--data", data)
    assert quick["dataset"]["native_size"] == [128, 256] and quick["dataset"]["follow_dataset_size"]
    assert {tuple(c["settings"]["img_size"]) for c in quick["cells"]} == {(32, 64)}  # quick's 64x32, as for persons
    full = dry_run("--grid", "multimodal", "--profile", "full", "--data", data)
    assert {tuple(c["settings"]["img_size"]) for c in full["cells"]} == {(128, 256)}
    assert {c["recipe"]["profile"] for c in full["cells"]} == {"full"}  # from scratch: mambapro is not used
    (tmp_path / "ViT-B-16.pt").write_bytes(b"")
    weighted = dry_run("--grid", "multimodal", "--profile", "full", "--data", data, "--weights", f"clip768={tmp_path / 'ViT-B-16.pt'}")
    clip = next(c for c in weighted["cells"] if c["id"] == "clip768-none")
    train = clip["train"]
    assert clip["recipe"]["profile"] == "full+mambapro" and clip["recipe"]["follows"] == "MambaPro on RGBNT100 (configs/RGBNT100/MambaPro.yml)"
    assert (train["epochs"], train["p"], train["k"], train["warmup_epochs"], train["lr"], train["freeze_backbone"]) == (30, 8, 16, 5, 3.5e-4, True)
    assert any("DIRECT 0" in d for d in clip["recipe"]["departures"]) and clip["settings"]["camera_embedding_scale"] == 1.0


def test_a_grid_may_keep_the_stated_size(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "pinned.toml"
    grid.write_text('follow_dataset_size = false\nbackbones = ["vit768"]\nnecks = ["none"]\n[settings]\nmodalities = ["rgb", "nir", "tir"]\n')
    plan = dry_run("--grid", str(grid), "--profile", "quick", "--data", f"rgbnt100:{rgbnt100_tree(tmp_path / 'v')}")
    assert plan["cells"][0]["settings"]["img_size"] == [64, 32] and not plan["dataset"]["follow_dataset_size"]


def test_mambapros_recipe_reads_its_configs() -> None:
    recipe = load_recipe("mambapro")
    assert (recipe.init.kind, recipe.init.weights, recipe.init.weights_file) == ("pretrained", "openai", "ViT-B-16.pt")
    base = TrainConfig(**{**recipe.train, "milestones": ()})
    assert (base.optimizer, base.lr, base.id_weight, base.label_smoothing, base.triplet, base.lr_floor) == ("adam", 3.5e-4, 0.25, 0.1, "soft", 0.001)
    assert (base.epochs, base.p, base.k, base.warmup_epochs, base.freeze_backbone) == (60, 16, 4, 10, True)
    msvr = recipe.for_dataset("msvr310")
    assert msvr.train == recipe.train and msvr.follows.endswith("configs/MSVR310/MambaPro.yml)") and len(msvr.departures) == len(recipe.departures) + 1
    assert recipe.for_dataset("rgbnt201") is recipe


def test_recipes_and_profiles_declare_their_initialisation(tmp_path: Path) -> None:
    assert load_profile("quick").init.kind == "scratch" and load_profile("full").init.owns("/m/jx_vit_base_p16_224-80ecf9dd.pth")
    assert load_recipe("clipreid").init.owns("openai") and not load_recipe("clipreid").init.owns("/m/other.pt")
    (tmp_path / "bare.toml").write_text('follows = "x"\n[train]\nlr = 0.1\n')
    with pytest.raises(UsageError, match="state the initialisation it was written for"):
        load_recipe(str(tmp_path / "bare.toml"))
    (tmp_path / "odd.toml").write_text('init = "scratch"\nweights = "openai"\n')
    with pytest.raises(UsageError, match="takes no weights"):
        load_recipe(str(tmp_path / "odd.toml"))
    stored = tmp_path / "stored.toml"
    stored.write_text(load_profile("quick").to_toml())
    assert load_profile(str(stored)).init == load_profile("quick").init and load_profile(str(stored)).follow_dataset_size


def test_a_frozen_backbone_gets_no_gradient_and_no_update_while_the_rest_trains() -> None:
    torch.manual_seed(0)
    model = create_variant("vit768-ms", depth=1, img_size=(64, 32), neck_scales=(1, 2, 4), num_classes=4, num_cameras=2)
    optimizer = build_optimizer(model, TrainConfig(optimizer="adam", lr=1e-2, freeze_backbone=True))
    frozen = dict(model.backbone.vit.named_parameters())
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert frozen and not in_groups & {id(p) for p in frozen.values()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    model(model.example_input(4), torch.tensor([0, 1, 0, 1])).logits.sum().backward()
    optimizer.step()
    assert all(p.grad is None and torch.equal(p, before[f"backbone.vit.{n}"]) for n, p in frozen.items())
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("neck.") for n in moved) and "head.classifier.weight" in moved
    assert any(n.startswith("backbone.") and not n.startswith("backbone.vit.") for n in moved)  # the camera embedding
