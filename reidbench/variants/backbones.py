"""Backbones: images (+ camera ids) -> token sequence [B, 1 + N, D].

Each backbone owns the pretrained network it wraps (timm or open_clip) as a
submodule under that library's own parameter names, so checkpoints in those
libraries' formats map onto it, and adds the ReID parts on top (overlapping
patch embedding, camera embedding, token projection).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from reidbench.variants.registry import Registry
from reidbench.variants.settings import PATCH_SIZE, VariantSettings


TRANSREID_PIXEL_MEAN = TRANSREID_PIXEL_STD = (0.5, 0.5, 0.5)
"""TransReID's input normalization (its INPUT.PIXEL_MEAN / PIXEL_STD)."""
CLIP_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
"""The normalization CLIP was trained with; its weights expect it."""


class Backbone(nn.Module):
    """What necks rely on: `embed_dim` (token width D) and `grid_size` (rows, cols of patch tokens).

    `pixel_mean` / `pixel_std` are the input normalization the backbone's
    pretrained weights expect; the data pipeline reads them from here.
    """

    embed_dim: int
    grid_size: tuple[int, int]
    notes: list[str]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The repeated transformer blocks, in order: the regions `reidbench.bench.compiled` compiles once for all."""
        raise NotImplementedError(f"{type(self).__name__} does not name its repeated blocks")


BACKBONES: Registry = Registry("backbone")


def _patch_conv(width: int, stride: int, bias: bool) -> nn.Conv2d:
    """ViT-B/16's 16x16 patch kernel with the variant's stride: overlapping patches when stride < 16."""
    return nn.Conv2d(3, width, kernel_size=PATCH_SIZE, stride=stride, bias=bias)


def _camera_embedding(settings: VariantSettings, shape: tuple[int, ...]) -> Optional[nn.Parameter]:
    if settings.num_cameras == 0:
        return None
    table = nn.Parameter(torch.zeros(settings.num_cameras, *shape))
    nn.init.trunc_normal_(table, std=0.02)
    return table


class TransReIDViT(Backbone):
    """TransReID-style ViT-B/16: timm's ViT, overlapping patch embedding, SIE on every token."""

    def __init__(self, settings: VariantSettings) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        width = 768
        self.vit = VisionTransformer(
            img_size=settings.img_size,
            patch_size=PATCH_SIZE,
            embed_dim=width,
            depth=settings.depth,
            num_heads=12,
            num_classes=0,
            drop_path_rate=settings.drop_path_rate,
        )
        self.grid_size = settings.grid_size
        num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
        if settings.stride != PATCH_SIZE:
            self.vit.patch_embed.proj = _patch_conv(width, settings.stride, bias=True)
            self.vit.patch_embed.grid_size = self.grid_size
            self.vit.patch_embed.num_patches = num_tokens - 1
            self.vit.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))
            nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)
        self.sie_embed = _camera_embedding(settings, (1, width))
        self.sie_xishu = settings.sie_xishu
        self.embed_dim = width
        self.pixel_mean, self.pixel_std = TRANSREID_PIXEL_MEAN, TRANSREID_PIXEL_STD
        self.notes = [
            f"vit768: timm ViT-B/16, depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, "
            f"stride {settings.stride} -> {self.grid_size[0]}x{self.grid_size[1]} grid, {num_tokens} tokens; "
            + (f"SIE {settings.sie_xishu} x E[cam] on every token" if self.sie_embed is not None else "no camera embedding")
        ]

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
        if self.sie_embed is not None and cam_ids is not None:
            x = x + self.sie_xishu * self.sie_embed[cam_ids]
        x = vit.pos_drop(x)
        x = vit.blocks(x)
        return vit.norm(x)

    def blocks(self) -> list[nn.Module]:
        return list(self.vit.blocks)


class CLIPReIDViT(Backbone):
    """CLIP-ReID-style CLIP ViT-B/16 visual tower whose every output token is projected by `proj`.

    The encoder is 768 wide, but `ln_post` and CLIP's `proj` (768 -> 512) are applied to
    all tokens, so the sequence leaving the backbone is 512-d, as in CLIP-ReID. With
    `project_to`, a learned linear layer maps the tokens on to that width (clip512proj).
    """

    def __init__(self, settings: VariantSettings, project_to: Optional[int] = None) -> None:
        super().__init__()
        import open_clip
        from open_clip.transformer import QuickGELU, VisionTransformer

        config = open_clip.get_model_config("ViT-B-16")
        vision = config["vision_cfg"]
        width = vision["width"]
        self.visual = VisionTransformer(
            image_size=settings.img_size,
            patch_size=vision["patch_size"],
            width=width,
            layers=settings.depth,
            heads=width // vision.get("head_width", 64),
            mlp_ratio=vision.get("mlp_ratio", 4.0),
            output_dim=config["embed_dim"],
            act_layer=QuickGELU if settings.clip_quick_gelu else nn.GELU,
        )
        self.grid_size = settings.grid_size
        num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
        if settings.stride != PATCH_SIZE:
            self.visual.conv1 = _patch_conv(width, settings.stride, bias=False)
            self.visual.grid_size = self.grid_size
            self.visual.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(num_tokens, width))
        self.cv_embed = _camera_embedding(settings, (width,))
        self.sie_xishu = settings.sie_xishu
        clip_dim = config["embed_dim"]
        self.token_proj = nn.Linear(clip_dim, project_to) if project_to else None
        self.embed_dim = project_to or clip_dim
        self.pixel_mean, self.pixel_std = CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
        act = "QuickGELU" if settings.clip_quick_gelu else "GELU"
        self.notes = [
            f"clip512: open_clip ViT-B-16 visual, depth {settings.depth}, {act}, "
            f"{settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride} -> "
            f"{self.grid_size[0]}x{self.grid_size[1]} grid, {num_tokens} tokens; all tokens ln_post + proj -> {clip_dim}-d; "
            + (f"cv_embed {settings.sie_xishu} x E[cam] on the CLS token" if self.cv_embed is not None else "no camera embedding")
            + (f"; learned {clip_dim}->{project_to} token projection" if project_to else "")
        ]

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if self.cv_embed is not None and cam_ids is not None:
            cls = cls + (self.sie_xishu * self.cv_embed[cam_ids]).unsqueeze(1).to(x.dtype)
        # Cast as open_clip does: adding the float32 parameter as it is would promote the whole
        # residual stream to float32 under autocast -- 6 more casts per block (forward and backward)
        # than the library, and twice the activation traffic.
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        x = v.ln_post(v.transformer(x))
        x = x @ v.proj
        return self.token_proj(x) if self.token_proj is not None else x

    def blocks(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)


@BACKBONES.register("vit768", "TransReID-style timm ViT-B/16, 768-d tokens, overlapping patches, SIE camera embedding")
def vit768(settings: VariantSettings) -> Backbone:
    return TransReIDViT(settings)


@BACKBONES.register("clip512", "CLIP-ReID-style open_clip ViT-B/16 visual tower, every token projected to 512-d")
def clip512(settings: VariantSettings) -> Backbone:
    return CLIPReIDViT(settings)


@BACKBONES.register("clip512proj", "clip512 followed by a learned 512->768 projection of every token")
def clip512proj(settings: VariantSettings) -> Backbone:
    return CLIPReIDViT(settings, project_to=768)
