"""`create_variant`: a cell id (or Cell) and settings -> a ReidModel."""
from __future__ import annotations

from typing import Any, Optional

from reidbench.errors import UsageError
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.grid import Cell
from reidbench.variants.head import BNNeckHead
from reidbench.variants.model import ReidModel
from reidbench.variants.necks import NECKS
from reidbench.variants.settings import VariantSettings


def split_cell_id(cell_id: str) -> tuple[str, str]:
    """'clip512proj-ms' -> ('clip512proj', 'ms'), checked against the registries."""
    backbone, sep, neck = cell_id.partition("-")
    if not sep:
        raise UsageError(
            f"cell id {cell_id!r} must be '<backbone>-<neck>', e.g. vit768-ms; "
            f"backbones: {', '.join(BACKBONES.names())}; necks: {', '.join(NECKS.names())}."
        )
    BACKBONES.get(backbone)
    NECKS.get(neck)
    return backbone, neck


def create_variant(
    cell: str | Cell,
    weights: Optional[str] = None,
    settings: Optional[VariantSettings] = None,
    **overrides: Any,
) -> ReidModel:
    """Build the model of one cell, e.g. `create_variant("vit768-ms", depth=2, stride=12)`.

    `settings` defaults to the built-in defaults; keyword overrides replace single
    settings. The model is returned in training mode, as torch modules are.
    """
    backbone_name, neck_name = (cell.backbone, cell.neck) if isinstance(cell, Cell) else split_cell_id(cell)
    resolved = (settings or VariantSettings()).with_overrides(overrides, "create_variant overrides")
    if weights is not None:
        raise UsageError(
            "loading pretrained weights is not available yet; build the variant without weights= "
            "(randomly initialised) until weight loading lands."
        )
    backbone = BACKBONES.get(backbone_name).builder(resolved)
    neck = NECKS.get(neck_name).builder(backbone.embed_dim, resolved)
    head = BNNeckHead(neck.out_dim, resolved.num_classes)
    return ReidModel(f"{backbone_name}-{neck_name}", backbone, neck, head, resolved)
