"""One model class joining backbone -> neck -> head, for every cell of every grid."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional

import torch
from torch import nn

from reidbench.variants.backbones import Backbone
from reidbench.variants.head import BNNeckHead
from reidbench.variants.modalities import concat_modalities, modality_ids, repeat_per_modality, stack_modalities
from reidbench.variants.settings import VariantSettings

if TYPE_CHECKING:
    from reidbench.variants.weights import WeightsReport

PARTS = ("backbone", "neck", "head")
"""The submodules a parameter or FLOP count is split into."""


class TrainOutput(NamedTuple):
    """What the losses need: ID logits for cross-entropy, the pre-BN feature for the triplet loss."""

    logits: torch.Tensor
    features: torch.Tensor


class ReidModel(nn.Module):
    """Inference (eval mode) returns the ReID feature; training returns `TrainOutput`."""

    def __init__(self, cell_id: str, backbone: Backbone, neck: nn.Module, head: BNNeckHead, settings: VariantSettings) -> None:
        super().__init__()
        self.cell_id = cell_id
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.settings = settings
        # Which file filled the backbone's pretrained network; None: random initialisation.
        self.weights_report: Optional[WeightsReport] = None

    @property
    def notes(self) -> list[str]:
        """Facts a reader of the results must know (clamped windows, uncovered rows, projections)."""
        weights = [self.weights_report.summary()] if self.weights_report is not None else []
        modalities = self.settings.modalities
        multimodal = [
            f"multi-modal: {', '.join(modalities)} each through the {self.settings.modality_weights} backbone and neck; "
            f"ReID feature = their {len(modalities)} features concatenated ({self.feature_dim}-d)",
            "multi-modal training: one flip, crop and erasing draw per sample, applied to all its modalities "
            "(MambaPro draws them per modality)",
        ] if len(modalities) > 1 else []
        return [*self.backbone.notes, *getattr(self.neck, "notes", []), *multimodal, *weights]

    @property
    def feature_dim(self) -> int:
        """The ReID feature's width: the neck's, times the number of modalities (their features side by side)."""
        return self.neck.out_dim * self.settings.num_modalities

    def forward(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None):
        count = self.settings.num_modalities
        if count == 1:
            features = self.neck(self.backbone(images, cam_ids))
        else:
            stacked = stack_modalities(images, count)
            cams = repeat_per_modality(cam_ids, count) if cam_ids is not None else None
            tokens = self.backbone(stacked, cams, modality_ids(count, images))
            features = concat_modalities(self.neck(tokens), count)
        if self.training:
            _, logits = self.head(features)
            return TrainOutput(logits, features)
        if self.settings.feature == "after":
            return self.head.bottleneck(features)
        return features

    def example_input(self, batch_size: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        """Random images of the variant's input size (three channels per modality), for probing and measuring."""
        h, w = self.settings.img_size
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, 3 * self.settings.num_modalities, h, w, generator=generator).to(device)
