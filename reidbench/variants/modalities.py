"""Multi-modal ReID (RGB, near-infrared, thermal): every modality through the backbone and neck, features concatenated.

The layout follows MambaPro (924973292/MambaPro, modeling/make_model.py, class
MambaPro): the three modality images of a sample go through one shared
backbone, and the ReID feature -- the BNNeck's input and the test feature -- is
the concatenation of the per-modality features, 3 x D wide. Where reidbench
departs, and why:

* MambaPro tells the modalities apart with modality-specific prompt tokens
  (modeling/backbones/vit_pytorch.py); reidbench adds a learned per-modality
  vector to every token (like the camera embedding), so that the backbone under
  study stays the plain one and the comparison is of backbones and necks.
* It has no fusion module (MambaPro's AAM, its `MODEL.MAMBA` switch): the
  baseline it compares against is the concatenation, which is what is measured.
* ``modality_weights = "separate"`` gives each modality its own backbone and
  neck (TOP-ReID's layout: 924973292/TOP-ReID, modeling/make_model.py) as a
  setting, to show what sharing costs or buys.

A batch arrives as uint8-derived floats [B, 3M, H, W], each modality's three
channels in the dataset's modality order; inside, the modalities are stacked on
the batch axis, modality-major, so a shared backbone runs them in one pass.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from reidbench.variants.backbones import Backbone


def stack_modalities(images: torch.Tensor, count: int) -> torch.Tensor:
    """[B, 3M, H, W] -> [M*B, 3, H, W], modality-major: rows 0..B-1 are the first modality."""
    return images.unflatten(1, (count, -1)).transpose(0, 1).flatten(0, 1)


def modality_ids(count: int, like: torch.Tensor) -> torch.Tensor:
    """Which modality each row of `stack_modalities(like)` shows.

    Written with expand rather than repeat_interleave, so an exported graph keeps the batch size dynamic.
    """
    return torch.arange(count, device=like.device).unsqueeze(1).expand(-1, like.shape[0]).flatten()


def repeat_per_modality(ids: torch.Tensor, count: int) -> torch.Tensor:
    """Per-sample ids (cameras) for every row of the modality-major stack."""
    return ids.unsqueeze(0).expand(count, -1).flatten()


def concat_modalities(features: torch.Tensor, count: int) -> torch.Tensor:
    """[M*B, D] (modality-major) -> [B, M*D]: a sample's feature blocks side by side, in modality order."""
    return features.unflatten(0, (count, -1)).transpose(0, 1).flatten(1)


class SeparateBackbones(Backbone):
    """One backbone per modality (``modality_weights = "separate"``), each on its modality's rows of the stack.

    It answers what necks, the data pipeline and the compiler ask of a backbone from
    its first copy (all copies are built alike); `blocks()` lists every copy's blocks.
    """

    def __init__(self, copies: list[Backbone]) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)
        first = copies[0]
        self.embed_dim, self.grid_size = first.embed_dim, first.grid_size
        self.pixel_mean, self.pixel_std = first.pixel_mean, first.pixel_std
        self.notes = [*first.notes, f"separate backbone weights for each of the {len(copies)} modalities"]

    def forward(
        self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, modality_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        count = len(self.copies)
        image_parts = images.chunk(count)
        cam_parts = cam_ids.chunk(count) if cam_ids is not None else (None,) * count
        return torch.cat([net(x, cams) for net, x, cams in zip(self.copies, image_parts, cam_parts)])

    def blocks(self) -> list[nn.Module]:
        return [block for net in self.copies for block in net.blocks()]


class SeparateNecks(nn.Module):
    """One neck per modality, each on its modality's rows of the stacked tokens."""

    def __init__(self, copies: list[nn.Module]) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.out_dim = copies[0].out_dim
        self.input_width = getattr(copies[0], "input_width", None)
        self.notes = list(getattr(copies[0], "notes", []))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([neck(part) for neck, part in zip(self.copies, tokens.chunk(len(self.copies)))])
