"""The multi-scale sliding-window neck under study: Conv2d windows over the patch-token grid."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from reidbench.variants.necks.base import Neck, NeckCost
from reidbench.variants.necks.tiled import TiledConv2d
from reidbench.variants.necks.windows import GridWindow, repeated_windows_notes
from reidbench.variants.settings import NECK_WIDTH


def grid_windows_cost(width: int, grid_size: tuple[int, int], scales: tuple[int, ...]) -> NeckCost:
    """Per window k (clamped to kr x kc): D^2 kr kc + D parameters, floor(R/kr) floor(C/kc) D^2 kr kc MACs."""
    windows = [GridWindow(s, grid_size) for s in scales]
    return NeckCost(sum(w.params(width) for w in windows), sum(w.macs(width) for w in windows))


class MultiScaleWindowNeck(Neck):
    """Sliding windows of several sizes over the patch-token grid, pooled, fused, added to CLS.

    One Conv2d(D, D, kernel=k, stride=k) per scale (a `TiledConv2d`); each output map is
    average-pooled to a D-d vector, the vectors are averaged, and the result is
    added to the CLS token. As studied (`ms`), D is hard-wired to 768: 512-d tokens
    fail inside the first Conv2d with PyTorch's own channel-mismatch error, which
    the grid records as an expected failure. With `follows_input` (`ms-auto`), D is
    the backbone's width; with one scale (`ms4`, `ms8`, `ms16`) it is a single window.
    Windows tile the grid without overlap (stride = kernel); rows or columns left
    over when the grid is not a multiple of the window are not covered (Conv2d's
    floor rule). The notes say, per window, its shape, what it left uncovered and
    whether it reads out the whole grid.
    """

    def __init__(
        self, scales: tuple[int, ...], grid_size: tuple[int, int], width: int = NECK_WIDTH, name: str = "ms",
        follows_input: bool = False,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.scales = tuple(scales)
        self.width = width
        placed = [GridWindow(s, grid_size) for s in self.scales]
        self.windows = [w.shape for w in placed]
        self.convs = nn.ModuleList(TiledConv2d(width, width, k) for k in self.windows)
        self.input_width: Optional[int] = None if follows_input else width
        self.out_dim = width
        notes = [w.note() for w in placed] + repeated_windows_notes(self.scales, self.windows)
        self.notes = [f"{name} neck: {n}" for n in notes]

    def cost(self) -> NeckCost:
        return grid_windows_cost(self.width, self.grid_size, self.scales)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, dim = tokens.shape
        rows, cols = self.grid_size
        grid = tokens[:, 1:].transpose(1, 2).reshape(batch, dim, rows, cols)
        pooled = [conv(grid).mean(dim=(2, 3)) for conv in self.convs]
        return tokens[:, 0] + torch.stack(pooled).mean(dim=0)
