"""Necks without parameters: the CLS token alone, and the CLS token plus the patch tokens' mean."""
from __future__ import annotations

import torch

from reidbench.variants.necks.base import NO_COST, Neck, NeckCost


class ClsNeck(Neck):
    """The CLS token is the feature."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.input_width = None  # any token width
        self.out_dim = in_dim
        self.notes: list[str] = []

    def cost(self) -> NeckCost:
        return NO_COST

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


class MeanTokenNeck(ClsNeck):
    """CLS plus the mean of the patch tokens: the window necks' fusion with no window at all.

    The control that tells what a window neck's parameters buy over simply pooling
    every token: same addition to CLS, no weights, no MACs (a mean is not counted).
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] + tokens[:, 1:].mean(dim=1)
