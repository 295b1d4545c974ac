"""BNNeck head: batch norm between the metric feature and the ID classifier."""
from __future__ import annotations

import torch
from torch import nn


class BNNeckHead(nn.Module):
    """Triplet loss sees the feature before BN, cross-entropy the classifier on the feature after it.

    The BN bias is frozen at zero and the classifier has no bias (Luo et al., "Bag
    of Tricks"), so the normalized feature stays centred for the cosine-like
    geometry the classifier learns.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = nn.BatchNorm1d(in_dim)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalized = self.bottleneck(features)
        return normalized, self.classifier(normalized)
