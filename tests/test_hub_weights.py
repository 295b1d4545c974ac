"""Weights by name through the real huggingface_hub code path, on a cache laid out here: offline, no network.

Each test lays small checkpoints (depth 1, full width, the real files' keys) in
the exact layout huggingface_hub reads -- models--ORG--NAME/refs/main,
snapshots/REVISION/FILE linking to blobs/SHA256 -- under its own HF_HOME.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import safetensors.torch
import timm
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from timm.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from reidbench import create_variant
from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.harness.plan import merged_weights
from reidbench.reports.build import _initialisation_item, what_was_trained
from reidbench.variants import BACKBONES, load_grid

VIT_TAG = "timm/vit_base_patch16_224.orig_in21k_ft_in1k"
VIT_REPO = "timm/vit_base_patch16_224.orig_in21k_ft_in1k"
OPENAI_REPO = "timm/vit_base_patch16_clip_224.openai"
LAION_REPO = "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
REV = "0123456789abcdef0123456789abcdef01234567"
VARIANT = dict(depth=1, num_cameras=0, num_classes=10)
runner = CliRunner()


def _bytes(state: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({k: v.contiguous() for k, v in state.items()})


@pytest.fixture(scope="module")
def vit_bytes() -> bytes:
    torch.manual_seed(1)
    return _bytes(VisionTransformer(img_size=224, depth=1, num_classes=1000).state_dict())


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    torch.manual_seed(2)
    text = CLIPTextCfg(context_length=8, vocab_size=100, width=64, heads=1, layers=1)
    model = CLIP(embed_dim=512, vision_cfg=CLIPVisionCfg(layers=1, width=768, patch_size=16, image_size=224), text_cfg=text)
    return _bytes(model.state_dict())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache of this test's own, found through HF_HOME (set after huggingface_hub was imported)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def lay(cache: Path, repo: str, files: dict[str, bytes], revision: str = REV, ref: str | None = "main", blob_of: dict[str, bytes] | None = None) -> Path:
    """Files as huggingface_hub stores them: a blob named by its SHA-256, a snapshot link to it, a ref to the revision.

    `blob_of` names a blob by other bytes than it holds (a truncated download).
    """
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    if ref:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(revision)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256((blob_of or {}).get(name, data)).hexdigest()
        blob.write_bytes(data)
        link = folder / "snapshots" / revision / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return folder / "snapshots" / revision


def test_upstream_mapping_is_declared_on_the_registry_and_the_timm_tag_is_transreids_file() -> None:
    assert {e.name: e.upstream.default for e in BACKBONES} == {"vit768": VIT_TAG, "clip512": "openai", "clip512proj": "openai", "clip768": "openai"}
    cfg = timm.models.get_pretrained_cfg(VIT_TAG.removeprefix("timm/"))
    assert cfg.url.endswith("/jx_vit_base_p16_224-80ecf9dd.pth") and cfg.hf_hub_id == VIT_REPO
    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"] == OPENAI_REPO + "/"
    listed = runner.invoke(app, ["list"]).output
    assert f"--pretrained: {VIT_TAG}" in listed and "--pretrained: openai" in listed


def test_a_timm_tag_loads_the_cached_file_and_the_report_names_tag_revision_and_sha256(cache: Path, vit_bytes: bytes) -> None:
    snapshot = lay(cache, VIT_REPO, {"model.safetensors": vit_bytes})
    model = create_variant("vit768-none", weights=VIT_TAG, **VARIANT)
    report = model.weights_report
    assert report.hub == {"spec": VIT_TAG, "repo": VIT_REPO, "revision": REV, "file": "model.safetensors"}
    assert report.path == str(snapshot / "model.safetensors") and report.sha256 == hashlib.sha256(vit_bytes).hexdigest()
    state = safetensors.torch.load(vit_bytes)
    assert torch.equal(model.backbone.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert f"{VIT_TAG} ({VIT_REPO}@{REV}, model.safetensors)" in report.summary()


def test_open_clip_tags_and_hf_hub_names_resolve_through_open_clips_config(cache: Path, clip_bytes: bytes) -> None:
    lay(cache, OPENAI_REPO, {"open_clip_model.safetensors": clip_bytes})
    report = create_variant("clip512-none", weights="openai", **VARIANT).weights_report
    assert report.hub["repo"] == OPENAI_REPO and report.hub["file"] == "open_clip_model.safetensors"
    assert report.activation == "QuickGELU"
    pinned = "b" * 40
    lay(cache, "someone/clip-copy", {"weights/visual.safetensors": clip_bytes}, revision=pinned, ref=None)
    spec = f"hf-hub:someone/clip-copy/weights/visual.safetensors@{pinned}"
    report = create_variant("clip768-none", weights=spec, **VARIANT).weights_report
    assert report.hub == {"spec": spec, "repo": "someone/clip-copy", "revision": pinned, "file": "weights/visual.safetensors"}


def test_a_laion_tag_needs_gelu_as_open_clips_config_says(cache: Path, clip_bytes: bytes) -> None:
    lay(cache, LAION_REPO, {"open_clip_model.safetensors": clip_bytes})
    with pytest.raises(UsageError, match="trained with GELU .*set clip_quick_gelu = false"):
        create_variant("clip512-none", weights="laion2b_s34b_b88k", **VARIANT)
    assert create_variant("clip512-none", weights="laion2b_s34b_b88k", clip_quick_gelu=False, **VARIANT).weights_report.activation == "GELU"


def _refusal(spec: str, backbone: str = "vit768") -> str:
    with pytest.raises(UsageError) as info:
        create_variant(f"{backbone}-none", weights=spec, **VARIANT)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_name_that_is_not_cached_is_refused_offline_naming_the_cache_pull_and_a_local_file(cache: Path, vit_bytes: bytes) -> None:
    message = _refusal(VIT_TAG)
    for part in (repr(VIT_TAG), str(cache), "HF_HUB_OFFLINE", f"reidbench weights pull vit768={VIT_TAG}", "--weights vit768=/models/"):
        assert part in message
    lay(cache, VIT_REPO, {"config.json": b"{}"})  # the repository is cached, its weights file is not
    assert "is not in the Hugging Face cache" in _refusal(VIT_TAG)
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes})
    message = _refusal(VIT_TAG + "@v2")  # a revision that is not cached
    assert "revision v2" in message and "is not in the Hugging Face cache" in message


def test_a_truncated_or_interrupted_download_is_never_loaded(cache: Path, vit_bytes: bytes) -> None:
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes[: len(vit_bytes) // 2]}, blob_of={"model.safetensors": vit_bytes})
    message = _refusal(VIT_TAG)
    assert "is damaged -- truncated or corrupt" in message and hashlib.sha256(vit_bytes).hexdigest() in message
    folder = cache / "models--timm--vit_base_patch16_clip_224.openai" / "blobs"
    folder.mkdir(parents=True)
    (folder / f"{'c' * 64}.incomplete").write_bytes(b"partial")
    assert "An interrupted download" in _refusal("openai", "clip512")


@pytest.mark.parametrize("spec, message", [
    ("timm/vit_base_patch16_clip_224.openai", "is a timm tag, but clip512 wraps an open_clip ViT-B-16"),
    ("laion9000", "open_clip's ViT-B-16 tags are openai, laion400m_e31"),
    ("hf-hub:onlyorg", "must be hf-hub:ORG/REPO"),
    ("https://example.org/ViT-B-16.pt", "are a URL"),
])
def test_bad_names_are_refused_before_any_cache_is_read(cache: Path, spec: str, message: str) -> None:
    assert message in _refusal(spec, "clip512")
    assert not cache.exists()


def test_weights_list_shows_name_revision_file_size_sha256_and_backbones(cache: Path, vit_bytes: bytes, clip_bytes: bytes) -> None:
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes, "config.json": b"{}"})
    lay(cache, OPENAI_REPO, {"open_clip_model.safetensors": clip_bytes})
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0, result.output
    vit_line = next(line for line in result.output.splitlines() if VIT_REPO + " " in line)
    assert f"revision {REV} (main)" in vit_line and "model.safetensors" in vit_line and f"{len(vit_bytes)} bytes" in vit_line
    assert f"sha256 {hashlib.sha256(vit_bytes).hexdigest()}" in vit_line and f"backbones: vit768 as {VIT_TAG}" in vit_line
    clip_line = next(line for line in result.output.splitlines() if OPENAI_REPO in line)
    assert "backbones: clip512, clip512proj, clip768 as openai" in clip_line
    assert "config.json" not in result.output


def test_weights_pull_checks_each_file_loads_and_fails_offline_for_a_name_not_cached(cache: Path, vit_bytes: bytes) -> None:
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes})
    result = runner.invoke(app, ["weights", "pull", f"vit768={VIT_TAG}", "--set", "depth=1"])
    assert result.exit_code == 0, result.output
    assert f"{VIT_REPO}@{REV} model.safetensors" in result.output and hashlib.sha256(vit_bytes).hexdigest() in result.output
    deep = runner.invoke(app, ["weights", "pull", f"vit768={VIT_TAG}"])  # a depth-1 file does not fit ViT-B's 12 blocks
    assert deep.exit_code == 2 and "set depth = 1" in deep.output
    missing = runner.invoke(app, ["weights", "pull", "--pretrained", "--set", "depth=1"])
    assert missing.exit_code == 2 and "'openai' for clip512" in missing.output and "Traceback" not in missing.output


def test_bench_with_pretrained_records_tag_revision_and_sha256(cache: Path, vit_bytes: bytes, clip_bytes: bytes, tmp_path: Path) -> None:
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes})
    lay(cache, OPENAI_REPO, {"open_clip_model.safetensors": clip_bytes})
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--only", "vit768-none", "--only", "clip512-none", "--pretrained", "--device", "cpu",
                                 "--set", "depth=1", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    vit, clip = (record["weights"] for record in json.loads(out.read_text()))
    assert vit["hub"] == {"spec": VIT_TAG, "repo": VIT_REPO, "revision": REV, "file": "model.safetensors"}
    assert vit["sha256"] == hashlib.sha256(vit_bytes).hexdigest()
    assert clip["hub"]["spec"] == "openai" and clip["sha256"] == hashlib.sha256(clip_bytes).hexdigest()
    run = SimpleNamespace(records=[{"backbone": "vit768", "status": "done", "weights": vit}], meta={"dataset": {"spec": "market1501:/d"}}, archived=None)
    assert what_was_trained(run) == f"The backbone vit768 started from pretrained weights (vit768 from {VIT_TAG} ({VIT_REPO}@{REV[:12]}, model.safetensors))."
    assert _initialisation_item(run) == ("Initialisation", f"vit768: {VIT_TAG} ({VIT_REPO}@{REV}, model.safetensors, SHA-256 {vit['sha256']})")


def test_run_offline_without_the_cached_file_exits_2_before_a_run_directory_exists(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--pretrained", "--only", "vit768-none", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2 and f"{VIT_TAG!r} for vit768" in result.output and "reidbench weights pull" in result.output
    assert not out.exists() and "Traceback" not in result.output


def test_the_default_grid_stays_random_and_offline_and_a_grid_may_ask_for_pretrained(cache: Path, tmp_path: Path, vit_bytes: bytes) -> None:
    assert merged_weights(load_grid("default"), []) == {} and not cache.exists()
    lay(cache, VIT_REPO, {"model.safetensors": vit_bytes})
    local = tmp_path / "clip.safetensors"
    local.write_bytes(b"not read here")
    grid = tmp_path / "mine.toml"
    grid.write_text(f'backbones = ["vit768", "clip512"]\nnecks = ["none"]\npretrained = true\n[weights]\nclip512 = "{local.name}"\n')
    assert merged_weights(load_grid(grid), []) == {"vit768": VIT_TAG, "clip512": str(local)}
    assert merged_weights(load_grid(grid), [], pretrained=False) == {"clip512": str(local)}
    assert merged_weights(load_grid("default"), [], pretrained=True, only=["vit768-none"]) == {"vit768": VIT_TAG}  # clip: not cached
    assert load_grid(grid).to_dict()["pretrained"] is True


def test_online_a_name_not_cached_is_downloaded_once_and_a_failed_download_exits_2(cache: Path, vit_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's download is replaced by one that lays the file as the hub would, or fails as without network."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def download(repo_id: str, filename: str, revision=None, cache_dir=None) -> str:
        calls.append((repo_id, filename, revision, cache_dir))
        return str(lay(Path(cache_dir), repo_id, {filename: vit_bytes}) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    for _ in range(2):
        result = runner.invoke(app, ["weights", "pull", f"vit768={VIT_TAG}", "--set", "depth=1"])
        assert result.exit_code == 0, result.output
    assert calls == [(VIT_REPO, "model.safetensors", None, str(cache))]  # the second pull found it in the cache

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot reach https://huggingface.co: no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    failed = runner.invoke(app, ["weights", "pull", "clip512=openai", "--set", "depth=1"])
    assert failed.exit_code == 2 and "the download failed (LocalEntryNotFoundError: Cannot reach" in failed.output
