"""Necks: token sequence [B, 1 + N, D] -> one feature vector per image.

`registered` names them for grid files; the modules say what each computes
(`pooled`: none and gap; `grid_windows`: ms and its variants; `flat_windows`:
the fork's ms1d), `windows` where their windows fall and what they cost, and
`base` what every neck promises (`input_width`, `out_dim`, `notes`, `cost()`).
"""
from reidbench.variants.necks.base import NO_COST, Neck, NeckCost
from reidbench.variants.necks.flat_windows import FlatMultiScaleNeck, flat_windows_cost
from reidbench.variants.necks.grid_windows import MultiScaleWindowNeck, grid_windows_cost
from reidbench.variants.necks.pooled import ClsNeck, MeanTokenNeck
from reidbench.variants.necks.registered import NECKS
from reidbench.variants.necks.tiled import TiledConv2d
from reidbench.variants.necks.windows import FlatWindow, GridWindow, clamp_window

__all__ = [
    "NECKS",
    "NO_COST",
    "ClsNeck",
    "FlatMultiScaleNeck",
    "FlatWindow",
    "GridWindow",
    "MeanTokenNeck",
    "MultiScaleWindowNeck",
    "Neck",
    "NeckCost",
    "TiledConv2d",
    "clamp_window",
    "flat_windows_cost",
    "grid_windows_cost",
]
