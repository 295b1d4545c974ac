"""Backbones: images (+ camera ids) -> token sequence [B, 1 + N, D].

Each backbone owns the pretrained network it wraps (timm or open_clip) as a
submodule under that library's own parameter names, so checkpoints in those
libraries' formats map onto it, and adds the ReID parts on top (overlapping
patch embedding, camera embedding, token projection).
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Optional

import torch
from torch import nn

from reidbench.variants.fixed_order import gather_rows
from reidbench.variants.registry import Registry
from reidbench.variants.settings import PATCH_SIZE, VariantSettings
from reidbench.variants.weights.filters import clip_activation, clip_outside_visual, drop_prefixes, take_prefix
from reidbench.variants.weights.spec import Misfit, PositionTable, PretrainedSpec, Upstream


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
    pretrained_spec: Optional[PretrainedSpec] = None
    """Which submodule is a pretrained network and how checkpoint files map onto it; None: no weights are taken."""
    fixed_order_reductions: bool = False
    """Gather camera and modality rows as a one-hot product (set by `use_fixed_order_reductions`)."""

    def forward(
        self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, modality_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """`modality_ids`: per image, which modality it shows (multi-modal runs with shared weights)."""
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The repeated transformer blocks, in order: the regions `reidbench.runtime.compile` compiles once for all."""
        raise NotImplementedError(f"{type(self).__name__} does not name its repeated blocks")

    def patch_convs(self) -> list[nn.Conv2d]:
        """The patch-embedding convolutions, whose weight gradient `use_fixed_order_reductions` sums in a fixed order."""
        return []

    def rows(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """`table[ids]` for a camera or modality table (see `fixed_order.gather_rows`)."""
        return gather_rows(table, ids, self.fixed_order_reductions)


BACKBONES: Registry = Registry("backbone", forbid="-", why="cell ids are '<backbone>-<neck>', split at the first '-'")


def _patch_conv(width: int, stride: int, bias: bool) -> nn.Conv2d:
    """ViT-B/16's 16x16 patch kernel with the variant's stride: overlapping patches when stride < 16."""
    return nn.Conv2d(3, width, kernel_size=PATCH_SIZE, stride=stride, bias=bias)


def _camera_embedding(settings: VariantSettings, shape: tuple[int, ...]) -> Optional[nn.Parameter]:
    """The camera table, or None when it is off (no cameras, or a scale of 0: no parameters that cannot learn)."""
    if settings.num_cameras == 0 or settings.camera_embedding_scale == 0:
        return None
    table = nn.Parameter(torch.zeros(settings.num_cameras, *shape))
    nn.init.trunc_normal_(table, std=0.02)
    return table


def _modality_embedding(settings: VariantSettings, shape: tuple[int, ...]) -> Optional[nn.Parameter]:
    """One learned vector per modality added to every token, like the camera embedding, so one shared
    backbone can tell RGB from NIR from TIR; None for one modality or separate backbones per modality."""
    if settings.num_modalities == 1 or settings.modality_weights != "shared":
        return None
    table = nn.Parameter(torch.zeros(settings.num_modalities, *shape))
    nn.init.trunc_normal_(table, std=0.02)
    return table


def _modality_note(table: Optional[nn.Parameter]) -> str:
    return f"; learned modality embedding ({table.shape[0]} rows) on every token" if table is not None else ""


class TransReIDViT(Backbone):
    """TransReID-style ViT-B/16: timm's ViT, overlapping patch embedding, SIE on every token."""

    pretrained_spec = PretrainedSpec(
        network="timm ViT-B/16",
        attribute="vit",
        formats=("torch", "safetensors", "npz"),
        split=drop_prefixes(("head.", "pre_logits."), "ImageNet classifier head"),
        position=PositionTable("pos_embed", batch_axis=True),
        misfits=(
            Misfit(("visual.", "conv1.", "transformer.resblocks."), "The file looks like a CLIP checkpoint: load it into clip512, clip512proj or clip768."),
        ),
    )

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
        self.modality_embed = _modality_embedding(settings, (1, width))
        self.camera_embedding_scale = settings.camera_embedding_scale
        self.embed_dim = width
        self.pixel_mean, self.pixel_std = TRANSREID_PIXEL_MEAN, TRANSREID_PIXEL_STD
        self.notes = [
            f"vit768: timm ViT-B/16, depth {settings.depth}, {settings.img_size[0]}x{settings.img_size[1]}, "
            f"stride {settings.stride} -> {self.grid_size[0]}x{self.grid_size[1]} grid, {num_tokens} tokens; "
            + (f"SIE {settings.camera_embedding_scale} x E[cam] on every token" if self.sie_embed is not None else "no camera embedding")
            + _modality_note(self.modality_embed)
        ]

    def forward(
        self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, modality_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
        if self.sie_embed is not None and cam_ids is not None:
            x = x + self.camera_embedding_scale * self.rows(self.sie_embed, cam_ids)
        if self.modality_embed is not None and modality_ids is not None:
            x = x + self.rows(self.modality_embed, modality_ids)
        x = vit.pos_drop(x)
        x = vit.blocks(x)
        return vit.norm(x)

    def blocks(self) -> list[nn.Module]:
        return list(self.vit.blocks)

    def patch_convs(self) -> list[nn.Conv2d]:
        return [self.vit.patch_embed.proj]


class ClipFeatures(NamedTuple):
    """A CLIP tower's outputs for CLIP-ReID's losses (`CLIPReIDViT.clip_features`)."""

    tokens: torch.Tensor
    """What `forward` returns: every token after ln_post (and proj, and the token projection, where the tower has them)."""
    penultimate_cls: torch.Tensor
    """[B, 768] the CLS after the next-to-last block (after ln_pre at depth 1), before ln_post."""
    cls: torch.Tensor
    """[B, 768] the CLS after the last block and ln_post, before proj."""


class CLIPReIDViT(Backbone):
    """CLIP-ReID-style CLIP ViT-B/16 visual tower whose every output token is projected by `proj`.

    The encoder is 768 wide, but `ln_post` and CLIP's `proj` (768 -> 512) are applied to
    all tokens, so the sequence leaving the backbone is 512-d, as in CLIP-ReID. With
    `project_to`, a learned linear layer maps the tokens on to that width (clip512proj).
    """

    label = "clip512"
    """How the notes name the tower."""
    applies_proj = True
    """Whether CLIP's `proj` maps every token to 512-d; `CLIPReIDViTBeforeProj` stops before it."""
    pretrained_spec = PretrainedSpec(
        network="open_clip ViT-B-16 visual tower",
        attribute="visual",
        formats=("torch", "safetensors", "torchscript"),
        split=take_prefix("visual.", clip_outside_visual),
        position=PositionTable("positional_embedding", batch_axis=False),
        activation=clip_activation,
        misfits=(Misfit(("blocks.", "patch_embed."), "The file looks like a timm ViT checkpoint: load it into vit768."),),
    )

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
        if not self.applies_proj:
            self.visual.proj = None  # no parameter, no state-dict key: open_clip's own way to drop the head
        self.cv_embed = _camera_embedding(settings, (width,))
        self.modality_embed = _modality_embedding(settings, (1, width))
        self.camera_embedding_scale = settings.camera_embedding_scale
        tower_dim = config["embed_dim"] if self.applies_proj else width
        self.token_proj = nn.Linear(tower_dim, project_to) if project_to else None
        self.embed_dim = project_to or tower_dim
        self.pixel_mean, self.pixel_std = CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
        self.notes = [self._note(settings, tower_dim, project_to)]

    def _note(self, settings: VariantSettings, tower_dim: int, project_to: Optional[int]) -> str:
        act = "QuickGELU" if settings.clip_quick_gelu else "GELU"
        rows, cols = self.grid_size
        tokens = "ln_post + proj" if self.applies_proj else "ln_post (before proj)"
        return (
            f"{self.label}: open_clip ViT-B-16 visual, depth {settings.depth}, {act}, "
            f"{settings.img_size[0]}x{settings.img_size[1]}, stride {settings.stride} -> "
            f"{rows}x{cols} grid, {1 + rows * cols} tokens; all tokens {tokens} -> {tower_dim}-d; "
            + (f"cv_embed {settings.camera_embedding_scale} x E[cam] on the CLS token" if self.cv_embed is not None else "no camera embedding")
            + (f"; learned {tower_dim}->{project_to} token projection" if project_to else "")
            + _modality_note(self.modality_embed)
        )

    def forward(
        self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, modality_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return self.clip_features(images, cam_ids, modality_ids).tokens

    def clip_features(
        self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, modality_ids: Optional[torch.Tensor] = None
    ) -> "ClipFeatures":
        """The token sequence `forward` returns, and the CLS features CLIP-ReID's losses read along the way.

        CLIP-ReID's visual tower (Syliz517/CLIP-ReID, model/clip/model.py,
        VisionTransformer.forward) returns the tokens after the next-to-last block
        (its triplet loss takes their CLS) and after the last block and `ln_post`
        (its 768-d image feature); the blocks run one by one to keep the first.
        """
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if self.cv_embed is not None and cam_ids is not None:
            cls = cls + (self.camera_embedding_scale * self.rows(self.cv_embed, cam_ids)).unsqueeze(1).to(x.dtype)
        # Cast as open_clip does: adding the float32 parameter as it is would promote the whole
        # residual stream to float32 under autocast -- 6 more casts per block (forward and backward)
        # than the library, and twice the activation traffic.
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if self.modality_embed is not None and modality_ids is not None:
            x = x + self.rows(self.modality_embed, modality_ids).to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        *earlier, last = v.transformer.resblocks
        for block in earlier:
            x = block(x)
        penultimate_cls = x[:, 0]
        x = v.ln_post(last(x))
        cls = x[:, 0]
        if v.proj is not None:
            x = x @ v.proj
        return ClipFeatures(self.token_proj(x) if self.token_proj is not None else x, penultimate_cls, cls)

    def blocks(self) -> list[nn.Module]:
        return list(self.visual.transformer.resblocks)

    def patch_convs(self) -> list[nn.Conv2d]:
        return [self.visual.conv1]


CLIP_PROJ_IGNORED = "CLIP's 768->512 image projection: clip768 takes the tokens before it"
"""Why clip768 leaves a file's `proj` unused, as its weights report says."""


class CLIPReIDViTBeforeProj(CLIPReIDViT):
    """The CLIP-ReID tower with its tokens taken after `ln_post` and before `proj`: 768-d, every token.

    CLIP-ReID's visual tower (Syliz517/CLIP-ReID, model/clip/model.py,
    VisionTransformer.forward, as model/make_model_clipreid.py uses it) returns,
    besides the 11th block's tokens, the last block's tokens after `ln_post` (768-d)
    and the same tokens times `proj` (512-d); the CLS of the first is CLIP-ReID's 768-d
    image feature, with a BNNeck and classifier of its own. clip512 passes on the
    projected tokens; this tower passes on the 768-d ones, so a neck built for 768-d
    tokens takes CLIP without a learned projection. It is the sequence open_clip's
    VisionTransformer (mlfoundations/open_clip, src/open_clip/transformer.py) computes before `proj`: with
    `output_tokens=True` its patch tokens, and its pooled CLS once `proj` is None, the
    way its `prune_intermediate_layers(prune_head=True)` drops the head.

    It loads the same files as clip512; the file's `proj` is listed as ignored.
    """

    label = "clip768"
    applies_proj = False
    pretrained_spec = replace(
        CLIPReIDViT.pretrained_spec, split=take_prefix("visual.", clip_outside_visual, skip={"proj": CLIP_PROJ_IGNORED})
    )


IMAGENET_VIT_B16 = Upstream(
    "timm", "vit_base_patch16_224", "timm/vit_base_patch16_224.orig_in21k_ft_in1k",
    "TransReID's ImageNet-21k -> 1k ViT-B/16 (timm's copy of jx_vit_base_p16_224-80ecf9dd.pth)",
)
OPENAI_CLIP_B16 = Upstream("open_clip", "ViT-B-16", "openai", "OpenAI's CLIP ViT-B/16, as CLIP-ReID starts from")
"""What --pretrained loads: each backbone's upstream starting point (TransReID, CLIP-ReID)."""


@BACKBONES.register("vit768", "TransReID-style timm ViT-B/16, 768-d tokens, overlapping patches, SIE camera embedding", IMAGENET_VIT_B16)
def vit768(settings: VariantSettings) -> Backbone:
    return TransReIDViT(settings)


@BACKBONES.register("clip512", "CLIP-ReID-style open_clip ViT-B/16 visual tower, every token projected to 512-d", OPENAI_CLIP_B16)
def clip512(settings: VariantSettings) -> Backbone:
    return CLIPReIDViT(settings)


@BACKBONES.register("clip512proj", "clip512 followed by a learned 512->768 projection of every token", OPENAI_CLIP_B16)
def clip512proj(settings: VariantSettings) -> Backbone:
    return CLIPReIDViT(settings, project_to=768)


@BACKBONES.register("clip768", "CLIP-ReID's open_clip ViT-B/16 visual tower, every token after ln_post and before proj (768-d)", OPENAI_CLIP_B16)
def clip768(settings: VariantSettings) -> Backbone:
    return CLIPReIDViTBeforeProj(settings)
