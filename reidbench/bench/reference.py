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

from reidbench.runtime.dispatch import count_dispatches, labeller, total
from reidbench.runtime.device import autocast, synchronize
from reidbench.variants.settings import PATCH_SIZE, VariantSettings


def _timm_vit(settings: VariantSettings) -> nn.Module:
    import timm

    return timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=settings.img_size, num_classes=0, depth=settings.depth,
        drop_path_rate=settings.drop_path_rate,
    )


def _open_clip_visual(settings: VariantSettings) -> nn.Module:
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(
        image_size=settings.img_size, patch_size=PATCH_SIZE, width=768, layers=settings.depth, heads=12,
        mlp_ratio=4.0, output_dim=512, act_layer=QuickGELU if settings.clip_quick_gelu else nn.GELU,
    )


BARE_MODELS: dict[str, tuple[str, Callable[[VariantSettings], nn.Module], int]] = {
    "vit768": ("timm vit_base_patch16_224", _timm_vit, 768),
    "clip512": ("open_clip ViT-B-16 visual", _open_clip_visual, 512),
}
"""Backbone name -> the plain library network it wraps (for cells whose neck is `none`) and its output width."""


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
    name, build, _ = BARE_MODELS[backbone]
    model = build(settings).to(device).eval()
    h, w = settings.img_size
    images = torch.randn(batch_size, 3, h, w, device=device)
    with torch.inference_mode(), autocast(device, dtype):
        elapsed = _naive_seconds(lambda: model(images), warmup, iterations, device)
    ms = elapsed / iterations * 1e3
    return {"model": name, "batch_size": batch_size, "mean_ms": ms, "img_per_s": batch_size / ms * 1e3, "iterations": iterations}


def _naive_seconds(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> float:
    """Host seconds for `repeats` calls after `warmup` ones, with one synchronize at each end."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def bare_classifier(backbone: str, settings: VariantSettings) -> nn.Module:
    """The plain library network with a linear ID classifier on its pooled output: what the bare loop trains."""
    _, build, width = BARE_MODELS[backbone]
    return nn.Sequential(build(settings), nn.Linear(width, settings.num_classes))


def bare_train_step(
    backbone: str, settings: VariantSettings, batch_size: int, device: torch.device, dtype: str, regions: bool = False
) -> Callable[[], torch.Tensor]:
    """One step of the bare loop per call (returning its loss): random images and labels already on the device.

    No sampler, no augmentation, no triplet loss: the library model, a linear
    classifier on its pooled output, cross-entropy, and the recipe's optimizer
    (SGD, momentum 0.9, weight decay 1e-4), under the same autocast. `regions`:
    label forward / losses / backward / optimizer for torch.profiler, as
    `TrainStep` labels its own.
    """
    model = bare_classifier(backbone, settings).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    h, w = settings.img_size
    images = torch.randn(batch_size, 3, h, w, device=device)
    labels = torch.randint(0, settings.num_classes, (batch_size,), device=device)
    region = labeller(regions)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with region("forward"), autocast(device, dtype):
            logits = model(images)
        with region("losses"):
            loss = nn.functional.cross_entropy(logits.float(), labels)
        with region("backward"):
            loss.backward()
        with region("optimizer"):
            optimizer.step()
        return loss.detach()

    return step


def bare_train_loop(
    backbone: str,
    settings: VariantSettings,
    batch_size: int,
    device: torch.device,
    dtype: str,
    steps: int,
    warmup: int = 5,
) -> dict[str, Any]:
    """Training img/s of `bare_train_step`: what the harness adds on top of it is what its ratio to this loop measures."""
    step = bare_train_step(backbone, settings, batch_size, device, dtype)
    seconds = _naive_seconds(step, warmup, steps, device)
    return {
        "model": BARE_MODELS[backbone][0], "batch_size": batch_size, "steps": steps, "seconds": seconds,
        "img_per_s": batch_size * steps / seconds, "optimizer": "SGD(momentum=0.9, weight_decay=1e-4)",
        "ops_per_step": total(count_dispatches(step)[1]),
    }
