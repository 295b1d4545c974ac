"""A checkpoint's position embedding, learned on a square grid, resized to a variant's patch grid."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from reidbench.variants.weights.spec import PositionTable

POS_EMBED_RESIZE = "bilinear, align_corners=False, no antialias, CLS position kept"
"""How the position-embedding grid is resized: as TransReID (model/backbones/vit_pytorch.py resize_pos_embed) and
CLIP-ReID (model/clip/model.py) do when they load their weights, F.interpolate(mode='bilinear')."""


def resize_position_embedding(table: torch.Tensor, new_grid: tuple[int, int], old_grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """[1 + H*W, C] -> [1 + h*w, C]: the CLS row kept, the grid rows resized bilinearly (`POS_EMBED_RESIZE`).

    `old_grid` defaults to the square grid the row count implies (14x14 for 197
    rows). The result is float32, whatever the table's dtype.
    """
    cls, grid = table[:1].float(), table[1:].float()
    if old_grid is None:
        side = int(round(grid.shape[0] ** 0.5))
        old_grid = (side, side)
    rows, cols = old_grid
    if rows * cols != grid.shape[0]:
        raise ValueError(f"{grid.shape[0]} position rows do not form a {rows}x{cols} grid")
    image = grid.reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(new_grid), mode="bilinear", align_corners=False)
    return torch.cat([cls, image.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])])


def fit_position_table(
    value: torch.Tensor, layout: PositionTable, grid: tuple[int, int], expected: tuple[int, ...]
) -> Optional[tuple[torch.Tensor, tuple[int, int]]]:
    """The file's table resized to the variant's grid, and the file's grid; None if it cannot be made to fit.

    It fits when both tables have the declared layout and the same width, the
    file's rows form a CLS row plus a square grid, and the model's a CLS row plus
    the variant's grid.
    """
    lead = (1,) if layout.batch_axis else ()
    if tuple(value.shape[:-2]) != lead or tuple(expected[:-2]) != lead or value.ndim != len(expected):
        return None
    if value.shape[-1] != expected[-1]:
        return None
    table = value.reshape(-1, value.shape[-1])
    side = int(round((table.shape[0] - 1) ** 0.5))
    if side * side != table.shape[0] - 1 or 1 + grid[0] * grid[1] != expected[-2]:
        return None
    return resize_position_embedding(table, grid, (side, side)).reshape(expected), (side, side)
