"""`create_variant`: a cell id (or Cell) and settings -> a ReidModel."""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Optional

from reidbench.errors import UsageError
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.clipreid import ClipReidModel, build_clipreid_model, take_clip_weights
from reidbench.variants.grid import Cell
from reidbench.variants.head import BNNeckHead
from reidbench.variants.modalities import SeparateBackbones, SeparateNecks
from reidbench.variants.model import ReidModel
from reidbench.variants.necks import NECKS
from reidbench.variants.settings import VariantSettings
from reidbench.variants.pretrained import check_weights_value, weights_file, with_hub
from reidbench.variants.weights import load_weights


def split_cell_id(cell_id: str) -> tuple[str, str]:
    """'clip512proj-ms' -> ('clip512proj', 'ms'), checked against the registries.

    The id is split at its first '-': backbone names contain none (their registry
    refuses it), so a neck name may ('clip768-ms-auto' -> ('clip768', 'ms-auto')).
    """
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
    weights: Optional[str | os.PathLike] = None,
    settings: Optional[VariantSettings] = None,
    **overrides: Any,
) -> ReidModel:
    """Build the model of one cell, e.g. `create_variant("vit768-ms", depth=2, stride=12)`.

    `settings` defaults to the built-in defaults; keyword overrides replace single
    settings. `weights` is a local checkpoint for the cell's backbone or a name
    (a timm tag, an open_clip tag, hf-hub:ORG/REPO; fetched into the Hugging Face
    cache unless cached or offline), loaded strictly (see
    `reidbench.variants.weights`); `model.weights_report` says what was loaded
    from which file (None without weights). The model is returned in training
    mode, as torch modules are.
    """
    backbone_name, neck_name = (cell.backbone, cell.neck) if isinstance(cell, Cell) else split_cell_id(cell)
    resolved = (settings or VariantSettings()).with_overrides(overrides, "create_variant overrides")
    file, hub = weights_file(weights, backbone_name, "create_variant weights=") if weights is not None else (None, None)
    backbone = BACKBONES.get(backbone_name).builder(resolved)
    neck = NECKS.get(neck_name).builder(backbone.embed_dim, resolved)
    cell_id = f"{backbone_name}-{neck_name}"
    if resolved.head == "clipreid":
        model: ReidModel = build_clipreid_model(cell_id, backbone, neck, resolved)
    else:
        model = ReidModel(cell_id, backbone, neck, BNNeckHead(neck.out_dim * resolved.num_modalities, resolved.num_classes), resolved)
    if file is not None:
        report = load_weights(model, backbone_name, file)
        model.weights_report = with_hub(report, hub) if hub is not None else report
        if isinstance(model, ClipReidModel):
            take_clip_weights(model, file)
    if resolved.num_modalities > 1 and resolved.modality_weights == "separate":
        _separate_modalities(model, backbone_name, neck_name, weights is not None)
    return model


def _separate_modalities(model: ReidModel, backbone_name: str, neck_name: str, loaded: bool) -> None:
    """A backbone and neck per modality: copies of the loaded backbone (each starts from the weights file),
    or fresh random ones; the first copy is the one built (and loaded) above."""
    settings, count = model.settings, model.settings.num_modalities
    if loaded:
        backbones = [model.backbone, *(copy.deepcopy(model.backbone) for _ in range(count - 1))]
    else:
        backbones = [model.backbone, *(BACKBONES.get(backbone_name).builder(settings) for _ in range(count - 1))]
    necks = [model.neck, *(NECKS.get(neck_name).builder(model.backbone.embed_dim, settings) for _ in range(count - 1))]
    model.backbone, model.neck = SeparateBackbones(backbones), SeparateNecks(necks)


def parse_weights_options(items: Iterable[str], where: str = "--weights") -> dict[str, str]:
    """`["vit768=/models/jx.pth", "clip512=openai", ...]` -> {backbone: absolute path or name}, for the CLI's
    repeatable --weights.

    Unknown backbones, a backbone named twice, unknown names and missing files are refused; names are not fetched.
    """
    out: dict[str, str] = {}
    for item in items:
        backbone, sep, value = item.partition("=")
        backbone, value = backbone.strip(), value.strip()
        if not sep or not backbone or not value:
            raise UsageError(
                f"{where} {item!r} must be BACKBONE=PATH or BACKBONE=NAME, e.g. {where} vit768=/models/jx_vit_base_p16_224-80ecf9dd.pth; "
                f"backbones: {', '.join(BACKBONES.names())}."
            )
        if backbone not in BACKBONES:
            raise UsageError(f"{where} {item!r}: unknown backbone {backbone!r}; valid backbones are: {', '.join(BACKBONES.names())}.")
        if backbone in out:
            raise UsageError(f"{where} names weights for {backbone} twice; give one file per backbone.")
        out[backbone] = check_weights_value(value, backbone, f"{where} {backbone}")
    return out
