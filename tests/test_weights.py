"""Pretrained weights from local files: every format, checked against timm and open_clip themselves.

Checkpoints are written at 224 with random weights by the libraries (full width,
depth 2, a tiny CLIP text tower), loaded into 256x128 variants, and compared with
the library's own network built at 256x128 from the same file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import open_clip
import pytest
import safetensors.torch
import timm
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, resize_pos_embed
from timm.layers import resample_abs_pos_embed as timm_resample
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from reidbench import create_variant
from reidbench.errors import UsageError
from reidbench.variants import BACKBONES, Backbone, VariantSettings, factory, load_grid
from reidbench.variants.factory import parse_weights_options
from reidbench.variants.registry import Registry
from reidbench.variants.weights import (
    PositionTable,
    PretrainedSpec,
    WeightsMismatchError,
    compact_keys,
    load_weights,
    resize_position_embedding,
    take_prefix,
)

DEPTH = 2
VARIANT = dict(depth=DEPTH, num_cameras=0, num_classes=10)
TEXT = CLIPTextCfg(context_length=8, vocab_size=100, width=64, heads=1, layers=1)
ATOL = 1e-5


def resample_abs_pos_embed(posemb: torch.Tensor, new_size: list[int] | tuple[int, int]) -> torch.Tensor:
    """timm's resampling as TransReID and CLIP-ReID resize when they load weights: bilinear, no antialiasing."""
    return timm_resample(posemb, list(new_size), interpolation="bilinear", antialias=False)


timm_filter = functools.partial(checkpoint_filter_fn, interpolation="bilinear", antialias=False)
clip_resize = functools.partial(resize_pos_embed, interpolation="bilinear", antialias=False)
"""timm's and open_clip's loaders' resize, as TransReID's and CLIP-ReID's: bilinear, no antialiasing."""


def _perturb(model: nn.Module) -> nn.Module:
    """Move every tensor off its initialisation (LayerNorm ones and zeros included), so a misplaced one shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 256, 128, generator=torch.Generator().manual_seed(1))


def _timm_to_jax(state: dict[str, torch.Tensor], big_vision: bool = False) -> dict[str, np.ndarray]:
    """A timm ViT state dict in Google's vit_jax (or big_vision) .npz naming; read back by timm's own _load_weights."""
    width, heads = state["cls_token"].shape[-1], 12
    a = lambda t: t.detach().numpy().copy()  # noqa: E731
    prefix, attn, mlp, norm2 = ("params/", 0, 0, 1) if big_vision else ("", 1, 3, 2)
    out = {
        "embedding/kernel": a(state["patch_embed.proj.weight"].permute(2, 3, 1, 0)),
        "embedding/bias": a(state["patch_embed.proj.bias"]),
        "cls": a(state["cls_token"]),
        ("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"): a(state["pos_embed"]),
        "Transformer/encoder_norm/scale": a(state["norm.weight"]),
        "Transformer/encoder_norm/bias": a(state["norm.bias"]),
        "head/kernel": a(state["head.weight"].T),
        "head/bias": a(state["head.bias"]),
    }
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    for i in blocks:
        b, j = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        out[j + "LayerNorm_0/scale"], out[j + "LayerNorm_0/bias"] = a(state[b + "norm1.weight"]), a(state[b + "norm1.bias"])
        for name, w, bias in zip(("query", "key", "value"), state[b + "attn.qkv.weight"].chunk(3), state[b + "attn.qkv.bias"].chunk(3)):
            out[f"{j}MultiHeadDotProductAttention_{attn}/{name}/kernel"] = a(w.T.reshape(width, heads, -1))
            out[f"{j}MultiHeadDotProductAttention_{attn}/{name}/bias"] = a(bias.reshape(heads, -1))
        out[f"{j}MultiHeadDotProductAttention_{attn}/out/kernel"] = a(state[b + "attn.proj.weight"].T.reshape(heads, -1, width))
        out[f"{j}MultiHeadDotProductAttention_{attn}/out/bias"] = a(state[b + "attn.proj.bias"])
        out[f"{j}LayerNorm_{norm2}/scale"], out[f"{j}LayerNorm_{norm2}/bias"] = a(state[b + "norm2.weight"]), a(state[b + "norm2.bias"])
        for r in (0, 1):
            out[f"{j}MlpBlock_{mlp}/Dense_{r}/kernel"] = a(state[f"{b}mlp.fc{r + 1}.weight"].T)
            out[f"{j}MlpBlock_{mlp}/Dense_{r}/bias"] = a(state[f"{b}mlp.fc{r + 1}.bias"])
    if big_vision:  # big_vision stacks the blocks along a leading axis ("scanned")
        per_block = [k for k in out if k.startswith("Transformer/encoderblock_0/")]
        for key in per_block:
            name = key.split("/", 2)[2]
            out[f"Transformer/encoderblock/{name}"] = np.stack([out.pop(f"Transformer/encoderblock_{i}/{name}") for i in blocks])
    return {prefix + k: v for k, v in out.items()}


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(1)
    state = _perturb(VisionTransformer(img_size=224, depth=DEPTH, num_classes=1000)).state_dict()
    folder = tmp_path_factory.mktemp("vit")
    files = {
        "pth": folder / "jx_vit_base_p16_224-80ecf9dd.pth",
        "bin": folder / "pytorch_model.bin",
        "safetensors": folder / "model.safetensors",
        "npz": folder / "ViT-B_16.npz",
    }
    torch.save(state, files["pth"])
    torch.save(state, files["bin"], _use_new_zipfile_serialization=False)  # the legacy (non-zip) torch format
    safetensors.torch.save_file(state, str(files["safetensors"]))
    np.savez(files["npz"], **_timm_to_jax(state))
    return files


def _clip(image_size, quick_gelu: bool = True) -> CLIP:
    vision = CLIPVisionCfg(layers=DEPTH, width=768, patch_size=16, image_size=image_size)
    return CLIP(embed_dim=512, vision_cfg=vision, text_cfg=TEXT, quick_gelu=quick_gelu).eval()


def _openai_archive(model: CLIP, path: Path) -> None:
    """An OpenAI-style ViT-B-16.pt: the whole CLIP traced to TorchScript, stored in float16."""
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(1, 3, 224, 224), torch.randint(0, TEXT.vocab_size, (1, TEXT.context_length))), check_trace=False)
    traced.half().save(str(path))


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(2)
    model = _perturb(_clip(224))
    state = model.state_dict()
    folder = tmp_path_factory.mktemp("clip")
    files = {
        "openai": folder / "ViT-B-16.pt",
        "bin": folder / "open_clip_pytorch_model.bin",
        "safetensors": folder / "open_clip_model.safetensors",
        "train": folder / "epoch_32.pt",
    }
    _openai_archive(model, files["openai"])
    torch.save(state, files["bin"])
    safetensors.torch.save_file(state, str(files["safetensors"]))
    torch.save({"epoch": 32, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, files["train"])
    return files


# --------------------------------------------------------------------------- equality with the libraries


def _timm_reference(path: Path, img_size=(256, 128)) -> VisionTransformer:
    """timm's ViT at 256x128 filled from the file by timm itself (its .npz reader, or its checkpoint filter)."""
    reference = VisionTransformer(img_size=img_size, depth=DEPTH, num_classes=1000).eval()
    if path.suffix == ".npz":
        native = VisionTransformer(img_size=224, depth=DEPTH, num_classes=1000)
        native.load_pretrained(str(path))
        reference.load_state_dict(timm_filter(native.state_dict(), reference))
    else:
        timm.models.load_checkpoint(reference, str(path), filter_fn=timm_filter)
    return reference


def _open_clip_reference(path: Path, image_size=(256, 128)) -> CLIP:
    """open_clip's CLIP at 256x128 with QuickGELU, filled from the file by open_clip (jit-loaded here for the archive)."""
    reference = _clip(image_size)
    if path.name == "ViT-B-16.pt":
        state = {k: v.float() for k, v in torch.jit.load(str(path)).state_dict().items() if k != "attn_mask"}
        clip_resize(state, reference)
        reference.load_state_dict(state)
    else:
        with mock.patch.object(open_clip.factory, "resize_pos_embed", clip_resize):
            open_clip.load_checkpoint(reference, str(path))
    reference.visual.output_tokens = True
    return reference


@pytest.mark.parametrize("fmt", ["pth", "bin", "safetensors", "npz"])
def test_vit768_from_every_format_equals_timm(vit_files: dict[str, Path], fmt: str) -> None:
    path = vit_files[fmt]
    model = create_variant("vit768-none", weights=path, **VARIANT).eval()
    reference = _timm_reference(path)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(_images()), reference.forward_features(_images()), atol=ATOL, rtol=0)
    report = model.weights_report
    assert report.path == str(path.resolve()) and report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.loaded == 2 + 2 + 2 + 12 * DEPTH  # cls, pos, patch kernel + bias, final norm, 12 per block
    assert set(report.ignored) == ({"head/kernel", "head/bias"} if fmt == "npz" else {"head.weight", "head.bias"})
    assert set(report.ignored.values()) == {"ImageNet classifier head"}
    assert report.resized == {
        "backbone.vit.pos_embed": {
            "from": [1, 197, 768], "to": [1, 129, 768], "grid_from": [14, 14], "grid_to": [16, 8],
            "method": "bilinear, align_corners=False, no antialias, CLS position kept",
        }
    }
    assert all(k.startswith(("neck.", "head.")) for k in report.new) and "head.classifier.weight" in report.new


@pytest.mark.parametrize("fmt", ["openai", "bin", "safetensors", "train"])
def test_clip512_from_every_format_equals_open_clip(clip_files: dict[str, Path], fmt: str) -> None:
    path = clip_files[fmt]
    model = create_variant("clip512-none", weights=path, **VARIANT).eval()
    reference = _open_clip_reference(path)
    with torch.no_grad():
        pooled, tokens = reference.visual(_images())
        expected = torch.cat([pooled[:, None], tokens @ reference.visual.proj], dim=1)
        torch.testing.assert_close(model.backbone(_images()), expected, atol=ATOL, rtol=0)
    report = model.weights_report
    assert report.loaded == 8 + 12 * DEPTH  # class/pos embeddings, proj, conv1, ln_pre and ln_post (2 each); 12 per block
    assert report.activation == "QuickGELU"
    assert report.resized["backbone.visual.positional_embedding"]["to"] == [129, 768]
    assert report.ignored["logit_scale"] == "contrastive logit scale"
    assert report.ignored["token_embedding.weight"] == "text tower"
    assert report.ignored["transformer.resblocks.0.attn.in_proj_weight"] == "text tower"
    assert not any(k.startswith("visual.") for k in report.ignored)
    if fmt == "openai":
        assert report.format.startswith("TorchScript") and any("float16" in n for n in report.notes)
    if fmt == "train":
        assert any("'module.' prefix" in n for n in report.notes)


@pytest.mark.parametrize("fmt", ["openai", "bin", "safetensors", "train"])
def test_clip768_takes_clip512s_files_leaves_proj_and_equals_open_clip_before_proj(clip_files: dict[str, Path], fmt: str) -> None:
    path = clip_files[fmt]
    model = create_variant("clip768-none", weights=path, **VARIANT).eval()
    reference = _open_clip_reference(path)
    reference.visual.proj = None  # open_clip's forward stopped after ln_post
    with torch.no_grad():
        pooled, tokens = reference.visual(_images())
        torch.testing.assert_close(model.backbone(_images()), torch.cat([pooled[:, None], tokens], dim=1), atol=ATOL, rtol=0)
    report = model.weights_report
    assert report.loaded == 7 + 12 * DEPTH  # clip512's tensors less proj
    assert report.ignored["visual.proj"] == "CLIP's 768->512 image projection: clip768 takes the tokens before it"
    assert [k for k in report.ignored if k.startswith("visual.")] == ["visual.proj"]
    assert "CLIP's 768->512 image projection" in report.summary()


def test_clip768_takes_a_visual_tower_saved_on_its_own(clip_files: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(clip_files["bin"], weights_only=True)
    path = tmp_path / "visual.pth"
    torch.save({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}, path)
    report = create_variant("clip768-none", weights=path, **VARIANT).weights_report
    assert report.loaded == 7 + 12 * DEPTH and set(report.ignored) == {"proj"}


def test_clip512proj_lists_its_projection_and_camera_embedding_as_new(clip_files: dict[str, Path]) -> None:
    model = create_variant("clip512proj-ms", weights=clip_files["safetensors"], depth=DEPTH, num_classes=10)
    new = set(model.weights_report.new)
    assert {"backbone.cv_embed", "backbone.token_proj.weight", "backbone.token_proj.bias", "head.classifier.weight"} <= new
    assert any(k.startswith("neck.convs.") for k in new)
    assert not any(k.startswith("backbone.visual.") for k in new)
    assert model.weights_report.summary() in model.notes


@pytest.mark.parametrize("backbone", ["vit768", "clip512"])
def test_overlapping_patch_embedding_uses_the_loaded_kernel_at_stride_12(vit_files, clip_files, backbone: str) -> None:
    """Stride 12: the 16x16 kernel loads unchanged, the positions go to 21x10, and the libraries' forward agrees."""
    path = vit_files["safetensors"] if backbone == "vit768" else clip_files["bin"]
    model = create_variant(f"{backbone}-none", weights=path, stride=12, **VARIANT).eval()
    file = safetensors.torch.load_file(str(path)) if backbone == "vit768" else torch.load(path, weights_only=True)
    if backbone == "vit768":
        reference = _timm_reference(path)
        reference.patch_embed.proj = nn.Conv2d(3, 768, 16, stride=12)
        reference.patch_embed.proj.load_state_dict({"weight": file["patch_embed.proj.weight"], "bias": file["patch_embed.proj.bias"]})
        reference.pos_embed = nn.Parameter(resample_abs_pos_embed(file["pos_embed"], (21, 10)))
        torch.testing.assert_close(model.backbone.vit.patch_embed.proj.weight, file["patch_embed.proj.weight"], atol=0, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(model.backbone(_images()), reference.forward_features(_images()), atol=ATOL, rtol=0)
    else:
        reference = _open_clip_reference(path)
        reference.visual.conv1 = nn.Conv2d(3, 768, 16, stride=12, bias=False)
        reference.visual.conv1.weight = nn.Parameter(file["visual.conv1.weight"])
        reference.visual.positional_embedding = nn.Parameter(
            resample_abs_pos_embed(file["visual.positional_embedding"][None], (21, 10))[0]
        )
        torch.testing.assert_close(model.backbone.visual.conv1.weight, file["visual.conv1.weight"], atol=0, rtol=0)
        with torch.no_grad():
            pooled, tokens = reference.visual(_images())
            expected = torch.cat([pooled[:, None], tokens @ reference.visual.proj], dim=1)
            torch.testing.assert_close(model.backbone(_images()), expected, atol=ATOL, rtol=0)
    assert model.backbone.grid_size == (21, 10)
    assert list(model.weights_report.resized.values())[0]["grid_to"] == [21, 10]


@pytest.mark.parametrize("grid", [(16, 8), (21, 10)])
def test_position_embedding_resize_equals_timm_and_open_clip(grid: tuple[int, int]) -> None:
    table = torch.randn(197, 768)
    ours = resize_position_embedding(table, grid)
    assert ours.shape == (1 + grid[0] * grid[1], 768)
    assert torch.equal(ours[0], table[0])  # the CLS position is kept as it is
    torch.testing.assert_close(ours, resample_abs_pos_embed(table[None], list(grid))[0], atol=1e-6, rtol=0)
    state = {"visual.positional_embedding": table}

    class _Visual:
        grid_size = grid

    clip_resize(state, type("M", (), {"visual": _Visual()})())
    torch.testing.assert_close(ours, state["visual.positional_embedding"], atol=1e-6, rtol=0)


def test_loaded_position_embedding_equals_the_library_resize(vit_files, clip_files) -> None:
    vit = create_variant("vit768-none", weights=vit_files["pth"], **VARIANT)
    file = torch.load(vit_files["pth"], weights_only=True)
    torch.testing.assert_close(vit.backbone.vit.pos_embed.detach(), resample_abs_pos_embed(file["pos_embed"], [16, 8]), atol=1e-6, rtol=0)
    clip = create_variant("clip512-none", weights=clip_files["openai"], **VARIANT)
    half = torch.jit.load(str(clip_files["openai"])).state_dict()["visual.positional_embedding"].float()
    expected = resample_abs_pos_embed(half[None], [16, 8])[0]
    torch.testing.assert_close(clip.backbone.visual.positional_embedding.detach(), expected, atol=1e-6, rtol=0)


def test_npz_in_big_vision_scanned_layout_loads_the_same_weights(vit_files, tmp_path: Path) -> None:
    state = torch.load(vit_files["pth"], weights_only=True)
    path = tmp_path / "big_vision.npz"
    np.savez(path, **_timm_to_jax(state, big_vision=True))
    a = create_variant("vit768-none", weights=path, **VARIANT).backbone.vit.state_dict()
    b = create_variant("vit768-none", weights=vit_files["npz"], **VARIANT).backbone.vit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- QuickGELU


def test_openai_archive_refuses_a_gelu_variant(clip_files: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="QuickGELU.*clip_quick_gelu = false.*Set clip_quick_gelu = true") as info:
        create_variant("clip512-none", weights=clip_files["openai"], clip_quick_gelu=False, **VARIANT)
    assert str(clip_files["openai"]) in str(info.value)


def test_archive_traced_with_gelu_needs_clip_quick_gelu_false(tmp_path: Path) -> None:
    path = tmp_path / "gelu.pt"
    _openai_archive(_clip(224, quick_gelu=False), path)
    with pytest.raises(UsageError, match="MLPs use GELU"):
        create_variant("clip512-none", weights=path, **VARIANT)
    model = create_variant("clip512-none", weights=path, clip_quick_gelu=False, **VARIANT)
    assert model.weights_report.activation == "GELU"


def test_open_clip_files_use_the_setting_and_say_so(clip_files: dict[str, Path]) -> None:
    model = create_variant("clip512-none", weights=clip_files["bin"], clip_quick_gelu=False, **VARIANT)
    assert model.weights_report.activation == "GELU"
    assert any("do not record" in n for n in model.weights_report.notes)


# --------------------------------------------------------------------------- strict and loud


def test_clip_checkpoint_into_vit768_fails_with_every_key_and_loads_nothing(clip_files: dict[str, Path]) -> None:
    model = create_variant("vit768-none", **VARIANT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        load_weights(model, "vit768", clip_files["bin"])
    error = info.value
    assert "backbone.vit.cls_token" in error.missing and "backbone.vit.blocks.1.mlp.fc2.bias" in error.missing
    assert "visual.conv1.weight" in error.unexpected and "visual.transformer.resblocks.1.mlp.c_proj.bias" in error.unexpected
    message = str(error)
    assert str(clip_files["bin"]) in message and "\n" not in message
    assert "backbone.vit.blocks.{0,1}.attn.qkv.weight" in message and "visual.transformer.resblocks.{0,1}.ln_1.weight" in message
    assert "looks like a CLIP checkpoint" in message and "nothing was loaded" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_depth_and_width_mismatches_are_listed(vit_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsMismatchError, match=r"blocks\.1\.norm1\.weight.*set depth = 2") as info:
        create_variant("vit768-none", weights=vit_files["pth"], depth=1, num_cameras=0)
    assert not info.value.missing and len(info.value.unexpected) == 12
    small = tmp_path / "vit_small.pth"
    torch.save(VisionTransformer(img_size=224, embed_dim=384, num_heads=6, depth=DEPTH).state_dict(), small)
    with pytest.raises(WeightsMismatchError) as info:
        create_variant("vit768-none", weights=small, **VARIANT)
    assert info.value.mismatched["backbone.vit.cls_token"] == ((1, 1, 384), (1, 1, 768))
    assert info.value.mismatched["backbone.vit.pos_embed"] == ((1, 197, 384), (1, 129, 768))
    assert "Shape mismatch (file vs model): backbone.vit.cls_token [1, 1, 384] vs [1, 1, 768]" in str(info.value)


def test_timm_checkpoint_into_clip_is_refused_with_a_hint(vit_files: dict[str, Path]) -> None:
    with pytest.raises(WeightsMismatchError, match="looks like a timm ViT checkpoint: load it into vit768"):
        create_variant("clip512-none", weights=vit_files["safetensors"], **VARIANT)
    with pytest.raises(UsageError, match="JAX ViT .npz, which clip512 does not take"):
        create_variant("clip512-none", weights=vit_files["npz"], **VARIANT)


def test_openai_archive_into_vit768_is_refused(clip_files: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="TorchScript archive .* which vit768 does not take.*clip512"):
        create_variant("vit768-none", weights=clip_files["openai"], **VARIANT)


class Foreign:
    """Any class: a pickle holding one must never be unpickled."""


def _truncate(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return target


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d, f: _truncate(f["vit"]["pth"], d / "cut.pth"), "truncated or corrupt zip archive"),
        (lambda d, f: _truncate(f["vit"]["bin"], d / "cut.bin"), "torch.load failed"),
        (lambda d, f: _truncate(f["vit"]["safetensors"], d / "cut.safetensors"), "safetensors"),
        (lambda d, f: _truncate(f["vit"]["npz"], d / "cut.npz"), "truncated or corrupt zip archive"),
        (lambda d, f: _truncate(f["clip"]["openai"], d / "cut.pt"), "truncated or corrupt zip archive"),
        (lambda d, f: _write(d / "page.pth", b"<!DOCTYPE html><html>404</html>"), "first bytes"),
        (lambda d, f: _write(d / "empty.pth", b""), "the file is empty"),
        (lambda d, f: _save(d / "objects.pth", {"model": Foreign()}), "never unpickles arbitrary objects"),
        (lambda d, f: _save(d / "plain.pth", [1, 2, 3]), "holds a list, not a state dict"),
        (lambda d, f: _save(d / "mixed.pth", {"pos_embed": torch.zeros(1), "epoch": 3}), "entries epoch are not tensors"),
    ],
)
def test_corrupt_and_foreign_files_fail_with_one_line_naming_the_file(vit_files, clip_files, tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path, {"vit": vit_files, "clip": clip_files})
    backbone = "clip512" if path.name == "cut.pt" else "vit768"
    with pytest.raises(UsageError, match=reason) as info:
        create_variant(f"{backbone}-none", weights=path, **VARIANT)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_torchscript_archive_with_foreign_globals_is_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ViT-B-16/data.pkl", pickle.dumps(_Exploit(marker), protocol=2))
        archive.writestr("ViT-B-16/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(UsageError, match=r"refusing to load the global (posix|nt)\.system") as info:
        create_variant("clip512-none", weights=path, **VARIANT)
    assert str(path) in str(info.value) and not marker.exists()


def test_archive_is_read_without_torch_jit_load_and_torch_files_weights_only(vit_files, clip_files, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load must not be called")

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", spy)
    create_variant("clip512-none", weights=clip_files["openai"], **VARIANT)
    create_variant("clip512-none", weights=clip_files["train"], **VARIANT)
    create_variant("vit768-none", weights=vit_files["bin"], **VARIANT)
    assert calls == [True, True]


# --------------------------------------------------------------------------- local files only


@pytest.mark.parametrize("tag, message", [
    ("openai", "is not in the Hugging Face cache .*pass its local path"),
    ("hf-hub:timm/vit_base_patch16_clip_224.openai", "is not in the Hugging Face cache .*pass its local path"),
    ("timm/vit_base_patch16_224.augreg_in21k", "is a timm tag, but clip512 wraps an open_clip ViT-B-16"),
    ("https://example.org/ViT-B-16.pt", "are a URL; reidbench fetches weights by name only.*pass its local path"),
])
def test_names_not_cached_offline_wrong_names_and_urls_are_refused_in_one_line(tag: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        create_variant("clip512-none", weights=tag, **VARIANT)
    assert "\n" not in str(info.value)


def test_missing_file_is_refused() -> None:
    with pytest.raises(UsageError, match="weights file /nowhere/jx_vit.pth for vit768 does not exist"):
        create_variant("vit768-none", weights="/nowhere/jx_vit.pth", **VARIANT)


# --------------------------------------------------------------------------- CLI helper, grid files, report


def test_parse_weights_options(vit_files: dict[str, Path], clip_files: dict[str, Path]) -> None:
    parsed = parse_weights_options([f"vit768={vit_files['pth']}", f"clip512 = {clip_files['openai']}"])
    assert parsed == {"vit768": str(vit_files["pth"].resolve()), "clip512": str(clip_files["openai"].resolve())}
    with pytest.raises(UsageError, match="unknown backbone 'resnet50'; valid backbones are: vit768, clip512, clip512proj"):
        parse_weights_options([f"resnet50={vit_files['pth']}"])
    with pytest.raises(UsageError, match="must be BACKBONE=PATH or BACKBONE=NAME"):
        parse_weights_options([str(vit_files["pth"])])
    with pytest.raises(UsageError, match="names weights for vit768 twice"):
        parse_weights_options([f"vit768={vit_files['pth']}", f"vit768={vit_files['bin']}"])
    with pytest.raises(UsageError, match="does not exist"):
        parse_weights_options(["vit768=/nowhere/x.pth"])
    assert parse_weights_options(["clip512=openai"]) == {"clip512": "openai"}  # a name: checked, not fetched
    with pytest.raises(UsageError, match="neither a local file nor a known weights name"):
        parse_weights_options(["clip512=opnai"])


def _grid(tmp_path: Path, weights: str) -> Path:
    path = tmp_path / "grids" / "mine.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'backbones = ["vit768", "clip512"]\nnecks = ["none"]\n[weights]\n{weights}\n')
    return path


def test_grid_weights_table_resolves_paths_from_the_grid_folder(vit_files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    local = tmp_path / "models" / "jx.pth"
    local.write_bytes(vit_files["pth"].read_bytes())
    grid = load_grid(_grid(tmp_path, 'vit768 = "../models/jx.pth"'))
    assert grid.weights == {"vit768": str(local.resolve())}
    assert grid.to_dict()["weights"] == {"vit768": str(local.resolve())}
    assert load_grid("default").weights == {}


@pytest.mark.parametrize(
    "line, message",
    [
        ('resnet = "x.pth"', "unknown backbone 'resnet'; valid backbones are"),
        ('clip512proj = "x.pth"', "not one of this grid's backbones"),
        ('vit768 = "missing.pth"', "does not exist"),
        ('clip512 = "opnai"', "neither a local file nor a known weights name"),
        ("vit768 = 3", "must be a path or weights-name string"),
    ],
)
def test_grid_weights_errors_name_the_file(tmp_path: Path, line: str, message: str) -> None:
    path = _grid(tmp_path, line)
    with pytest.raises(UsageError, match=message) as info:
        load_grid(path)
    assert str(path) in str(info.value)


def test_report_is_json_with_path_and_sha256(vit_files: dict[str, Path]) -> None:
    model = create_variant("vit768-ms", weights=vit_files["safetensors"], depth=DEPTH, num_classes=10)
    record = json.loads(json.dumps(model.weights_report.to_dict()))
    assert record["path"] == str(vit_files["safetensors"].resolve())
    assert record["sha256"] == hashlib.sha256(vit_files["safetensors"].read_bytes()).hexdigest()
    assert record["format"] == "safetensors" and record["backbone"] == "vit768"
    assert {reason: sorted(keys) for reason, keys in record["ignored"].items()} == {"ImageNet classifier head": ["head.bias", "head.weight"]}
    assert "backbone.sie_embed" in record["new"] and record["resized"]["backbone.vit.pos_embed"]["to"] == [1, 129, 768]
    assert create_variant("vit768-none", **VARIANT).weights_report is None


def test_compact_keys_folds_block_numbers() -> None:
    keys = [f"blocks.{i}.norm1.weight" for i in (0, 1, 2, 3, 5)] + ["cls_token", "Transformer/encoderblock_7/LayerNorm_0/scale"]
    assert compact_keys(keys) == ["blocks.{0-3,5}.norm1.weight", "cls_token", "Transformer/encoderblock_7/LayerNorm_0/scale"]


# --------------------------------------------------------------------------- a backbone declares how it takes weights


class _TinyViT(Backbone):
    """A backbone the loader knows nothing of: a small timm ViT as `encoder`, saved as `trunk.*` beside a decoder."""

    pretrained_spec = PretrainedSpec(
        network="tiny timm ViT",
        attribute="encoder",
        formats=("torch", "safetensors"),
        split=take_prefix("trunk.", lambda key, value: "decoder"),
        position=PositionTable("pos_embed", batch_axis=True),
    )

    def __init__(self, settings: VariantSettings) -> None:
        super().__init__()
        self.encoder = VisionTransformer(img_size=settings.img_size, embed_dim=64, depth=settings.depth, num_heads=2, num_classes=0)
        self.grid_size, self.embed_dim, self.notes = settings.grid_size, 64, []
        self.pixel_mean = self.pixel_std = (0.5, 0.5, 0.5)

    def forward(self, images: torch.Tensor, cam_ids=None) -> torch.Tensor:
        return self.encoder.forward_features(images)


class _NoSpec(_TinyViT):
    pretrained_spec = None


@pytest.fixture
def own_backbones(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """create_variant sees a registry of the two test backbones for one test; the global BACKBONES is not touched."""
    registry = Registry("backbone")
    registry.register("tiny", "small timm ViT declaring its own PretrainedSpec")(_TinyViT)
    registry.register("nospec", "the same backbone without a spec")(_NoSpec)
    monkeypatch.setattr(factory, "BACKBONES", registry)
    return registry


def test_a_new_backbone_takes_weights_through_its_own_spec(own_backbones: Registry, tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = _perturb(VisionTransformer(img_size=224, embed_dim=64, depth=1, num_heads=2, num_classes=0)).state_dict()
    path = tmp_path / "tiny.pth"
    torch.save({**{f"trunk.{k}": v for k, v in state.items()}, "decoder.weight": torch.ones(3)}, path)
    model = create_variant("tiny-none", weights=path, depth=1, num_cameras=0, num_classes=10)
    loaded = model.backbone.encoder.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != "pos_embed")
    torch.testing.assert_close(loaded["pos_embed"], resample_abs_pos_embed(state["pos_embed"], [16, 8]), atol=1e-6, rtol=0)
    report = model.weights_report
    assert report.loaded == len(state) and report.ignored == {"decoder.weight": "decoder"}
    assert report.resized["backbone.encoder.pos_embed"]["grid_from"] == [14, 14]
    assert report.new and not any(k.startswith("backbone.encoder.") for k in report.new)
    with pytest.raises(WeightsMismatchError, match="does not fit tiny's tiny timm ViT .*set depth = 1") as info:
        create_variant("tiny-none", weights=path, depth=2, num_cameras=0, num_classes=10)
    assert "backbone.encoder.blocks.1.norm1.weight" in info.value.missing
    assert "tiny" not in BACKBONES


def test_a_backbone_without_a_spec_takes_no_weights(own_backbones: Registry, vit_files: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match=r"backbone 'nospec' \(_NoSpec\) takes no pretrained weights") as info:
        create_variant("nospec-none", weights=vit_files["pth"], depth=1, num_cameras=0, num_classes=10)
    assert "\n" not in str(info.value)


def test_with_separate_modality_weights_every_modalitys_backbone_starts_from_the_file(vit_files: dict[str, Path]) -> None:
    path = vit_files["pth"]
    model = create_variant("vit768-none", weights=path, modalities=("rgb", "nir", "tir"), modality_weights="separate", **VARIANT).eval()
    reference = _timm_reference(path)
    with torch.no_grad():
        expected = reference.forward_features(_images())
        for copy in model.backbone.copies:
            torch.testing.assert_close(copy(_images()), expected, atol=ATOL, rtol=0)
    assert model.weights_report is not None and model.weights_report.loaded == 2 + 2 + 2 + 12 * DEPTH
    # Copies, not one module three times: each modality's backbone trains on its own.
    first, second = (copy.vit.blocks[0].attn.qkv.weight for copy in model.backbone.copies[:2])
    assert first.data_ptr() != second.data_ptr()
