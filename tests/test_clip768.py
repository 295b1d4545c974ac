"""clip768: CLIP-ReID's tower stopped after ln_post, checked against open_clip's own VisionTransformer (depth 1)."""
from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU, VisionTransformer

from reidbench import create_variant

SHALLOW = dict(depth=1, num_classes=10)


def _perturbed(cell: str, **settings):
    """A shallow variant with every tensor moved off its initialisation, so a misplaced one shows."""
    model = create_variant(cell, **{**SHALLOW, **settings}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_tokens_are_open_clips_ln_post_output_for_the_same_weights() -> None:
    model = _perturbed("clip768-none", num_cameras=0)
    assert model.backbone.embed_dim == 768 and model.backbone.visual.proj is None
    assert not any(k.endswith("visual.proj") for k in model.state_dict())
    reference = VisionTransformer(
        image_size=(256, 128), patch_size=16, width=768, layers=1, heads=12, mlp_ratio=4.0, output_dim=512,
        act_layer=QuickGELU, output_tokens=True,
    ).eval()
    missing, unexpected = reference.load_state_dict(model.backbone.visual.state_dict(), strict=False)
    assert missing == ["proj"] and unexpected == []
    images = model.example_input(2)
    with torch.no_grad():
        tokens = model.backbone(images)
        pooled, patches = reference(images)  # CLS after ln_post, times proj; patch tokens after ln_post
        torch.testing.assert_close(tokens[:, 1:], patches, atol=1e-5, rtol=0)
        torch.testing.assert_close(tokens[:, 0] @ reference.proj, pooled, atol=1e-5, rtol=0)
        reference.proj = None  # open_clip's own forward, stopped before proj
        torch.testing.assert_close(tokens[:, 0], reference(images)[0], atol=1e-5, rtol=0)


def test_clip512_is_clip768_times_proj_camera_embedding_included() -> None:
    """Same tower, same camera embedding on the CLS token: only the last step, proj, differs."""
    clip512 = _perturbed("clip512-none")
    clip768 = create_variant("clip768-none", **SHALLOW).eval()
    state = clip512.backbone.state_dict()
    proj = state.pop("visual.proj")
    clip768.backbone.load_state_dict(state)
    images, cams = clip512.example_input(2), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(clip768.backbone(images, cams) @ proj, clip512.backbone(images, cams), atol=1e-5, rtol=1e-5)
    assert "ln_post (before proj) -> 768-d; cv_embed 3.0 x E[cam] on the CLS token" in clip768.notes[0]
