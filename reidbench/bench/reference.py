"""Bare loops: the plain library model, timed with nothing of the harness around it.

A harness number means little alone; beside a bare loop of the same network,
measured in the same process on the same card, the ratio shows what the
harness itself costs. The loop is deliberately naive -- host timer around N
calls, one synchronize at each end -- and shares no timing code with
`timing.py`, so a bug in one does not hide in the other.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch
from torch import nn

from reidbench.bench.environment import autocast
from reidbench.variants.settings import PATCH_SIZE, VariantSettings


def _timm_vit(settings: VariantSettings) -> nn.Module:
    import timm

    return timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=settings.img_size, num_classes=0, depth=settings.depth
    )


def _open_clip_visual(settings: VariantSettings) -> nn.Module:
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(
        image_size=settings.img_size, patch_size=PATCH_SIZE, width=768, layers=settings.depth, heads=12,
        mlp_ratio=4.0, output_dim=512, act_layer=QuickGELU if settings.clip_quick_gelu else nn.GELU,
    )


BARE_MODELS: dict[str, tuple[str, Callable[[VariantSettings], nn.Module]]] = {
    "vit768": ("timm vit_base_patch16_224", _timm_vit),
    "clip512": ("open_clip ViT-B-16 visual", _open_clip_visual),
}
"""Backbone name -> the plain library network it wraps, for cells whose neck is `none`."""


def bare_reference(backbone: str, neck: str) -> Optional[str]:
    if neck != "none" or backbone not in BARE_MODELS:
        return None
    return BARE_MODELS[backbone][0]


def bare_inference_loop(
    backbone: str,
    settings: VariantSettings,
    batch_size: int,
    device: torch.device,
    dtype: str,
    iterations: int,
    warmup: int = 5,
) -> dict[str, Any]:
    """Mean ms per batch of the plain network in inference mode, stride 16 as the library builds it."""
    name, build = BARE_MODELS[backbone]
    model = build(settings).to(device).eval()
    h, w = settings.img_size
    images = torch.randn(batch_size, 3, h, w, device=device)
    with torch.inference_mode(), autocast(device, dtype):
        for _ in range(warmup):
            model(images)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            model(images)
        _sync(device)
        elapsed = time.perf_counter() - start
    ms = elapsed / iterations * 1e3
    return {"model": name, "batch_size": batch_size, "mean_ms": ms, "img_per_s": batch_size / ms * 1e3, "iterations": iterations}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
