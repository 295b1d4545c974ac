"""CLIP-ReID's image-side model: two BNNeck heads, a 1280-d test feature, and the identity text features as a classifier.

Following Syliz517/CLIP-ReID, model/make_model_clipreid.py (build_transformer):
the visual tower gives the CLS after the next-to-last block, the 768-d CLS
after `ln_post` (`img_feature`) and that CLS times CLIP's `proj`, 512-d
(`img_feature_proj`); each of the last two has a BNNeck (bias frozen) and a
bias-free ID classifier (N(0, 0.001)); training returns both classifiers'
logits and all three features (processor/processor_clipreid_stage2.py adds
`img_feature_proj @ text_features.T` as the image-to-text logits); inference
returns the two features concatenated, before BN (TEST.NECK_FEAT 'before')
or after. The text features are the stage-1 prompts' features
(`reidbench.training.clipreid`), held here as a buffer: a classifier that
never trains.

How it maps onto reidbench's cells, decided here:

- the cell's own feature (its neck on the backbone's tokens) takes the place
  of upstream's 768-d `img_feature`; on clip768-none that is upstream's
  feature exactly (the ln_post CLS), on clip512 and clip512proj it is built
  from the projected tokens, and any other neck replaces the CLS by its own
  output;
- the 512-d projected CLS is always the ln_post CLS times CLIP's `proj`,
  whatever tokens the cell's neck reads, since the text side needs it in
  CLIP's joint space. clip768 has no `proj` in its backbone, so this head owns
  one (CLIP's initialisation, or the file's `visual.proj` when weights are
  loaded) and trains it, as upstream's image encoder trains its `proj`;
- the triplet loss's third feature, the next-to-last block's CLS, is the
  tower's own, whatever the neck.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import NamedTuple, Optional

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.variants.backbones import CLIPReIDViT
from reidbench.variants.head import BNNeckHead
from reidbench.variants.model import ReidModel
from reidbench.variants.settings import VariantSettings
from reidbench.variants.weights import read_checkpoint

TEXT_DIM = 512
"""CLIP ViT-B-16's joint embedding width: the projected CLS and the text features."""


class ClipReidOutput(NamedTuple):
    """What CLIP-ReID's stage-2 losses read; `logits` and `features` are the cell's own, as in `TrainOutput`."""

    logits: torch.Tensor
    features: torch.Tensor
    proj_logits: torch.Tensor
    proj_features: torch.Tensor
    """[B, 512] the ln_post CLS times CLIP's proj, before its BNNeck."""
    penultimate: torch.Tensor
    """[B, 768] the next-to-last block's CLS."""
    i2t_logits: torch.Tensor
    """[B, identities] proj_features @ text_features.T, unnormalised, as upstream."""


class ClipReidHead(nn.Module):
    """The cell feature's BNNeck, the projected CLS's BNNeck, clip768's own `proj`, and the frozen text classifier."""

    def __init__(self, in_dim: int, num_classes: int, own_proj: Optional[int]) -> None:
        """`own_proj`: the tower width when the backbone has no `proj` of its own (clip768), else None."""
        super().__init__()
        self.feature = BNNeckHead(in_dim, num_classes)
        self.projected = BNNeckHead(TEXT_DIM, num_classes)
        self.proj = nn.Parameter(own_proj**-0.5 * torch.randn(own_proj, TEXT_DIM)) if own_proj else None
        self.register_buffer("text_features", torch.zeros(num_classes, TEXT_DIM))


class ClipReidModel(ReidModel):
    """A ReidModel whose head is CLIP-ReID's; inference returns [cell feature, projected CLS] side by side."""

    head: ClipReidHead
    backbone: CLIPReIDViT

    @property
    def feature_dim(self) -> int:
        return self.neck.out_dim + TEXT_DIM

    @property
    def notes(self) -> list[str]:
        proj = "its own proj (clip768's backbone has none)" if self.head.proj is not None else "the tower's proj"
        return [*super().notes, (
            f"CLIP-ReID head: BNNeck + ID classifier on the cell's feature ({self.neck.out_dim}-d) and on the ln_post CLS "
            f"x {proj} (512-d); image-to-text logits against stage 1's identity text features; ReID feature = both, "
            f"{self.feature_dim}-d"
        )]

    def projection(self) -> torch.Tensor:
        return self.head.proj if self.head.proj is not None else self.backbone.visual.proj

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None):
        tokens, penultimate, cls = self.backbone.clip_features(images, cam_ids)
        features = self.neck(tokens)
        projected = cls @ self.projection().to(cls.dtype)
        head = self.head
        if self.training:
            _, logits = head.feature(features)
            _, proj_logits = head.projected(projected)
            i2t = projected @ head.text_features.to(projected.dtype).T
            return ClipReidOutput(logits, features, proj_logits, projected, penultimate, i2t)
        if self.settings.feature == "after":
            return torch.cat([head.feature.bottleneck(features), head.projected.bottleneck(projected)], dim=1)
        return torch.cat([features, projected], dim=1)


def build_clipreid_model(cell_id: str, backbone: nn.Module, neck: nn.Module, settings: VariantSettings) -> ClipReidModel:
    """CLIP-ReID's model around a CLIP tower; other backbones and multi-modal cells are refused with the reason."""
    if not isinstance(backbone, CLIPReIDViT):
        raise UsageError(
            f"cell {cell_id}: head = \"clipreid\" needs a CLIP tower (clip512, clip512proj or clip768): CLIP-ReID's text "
            "side and its projected CLS come from CLIP; train this backbone with head = \"bnneck\"."
        )
    if settings.num_modalities > 1:
        raise UsageError(f"cell {cell_id}: head = \"clipreid\" trains on one modality; this dataset has {settings.num_modalities}.")
    own_proj = backbone.visual.conv1.out_channels if backbone.visual.proj is None else None
    head = ClipReidHead(neck.out_dim, settings.num_classes, own_proj)
    return ClipReidModel(cell_id, backbone, neck, head, settings)


def take_clip_weights(model: ClipReidModel, path: str | os.PathLike) -> None:
    """After the backbone's load: clip768's `proj` from the same file, and the text tower's keys marked as stage 1's.

    The backbone's load lists CLIP's text tower as ignored and clip768's `proj`
    as unused; under CLIP-ReID's head stage 1 reads the first and this head
    loads the second (see the module docstring).
    """
    report = model.weights_report
    if report is None:
        return
    stage1 = "text tower: CLIP-ReID's stage 1 loads it to learn the identity prompts; not kept in the model"
    ignored = {key: stage1 if reason == "text tower" else reason for key, reason in report.ignored.items()}
    notes = report.notes
    if model.head.proj is not None:
        tensors = read_checkpoint(path).tensors
        key = "visual.proj" if "visual.proj" in tensors else "proj"
        if key not in tensors or tuple(tensors[key].shape) != tuple(model.head.proj.shape):
            raise UsageError(f"weights file {path} holds no CLIP proj of shape {tuple(model.head.proj.shape)} for CLIP-ReID's projected CLS.")
        with torch.no_grad():
            model.head.proj.copy_(tensors[key])
        ignored.pop(key, None)
        notes = (*notes, f"{key} loaded into the CLIP-ReID head (head.proj) for the 512-d projected CLS")
    model.weights_report = replace(report, ignored=ignored, notes=notes)
