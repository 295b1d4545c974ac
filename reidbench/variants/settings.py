"""The settings every variant of a grid shares, and their validation.

These dataclass defaults are the single source of the default values: the
default grid file states none of them, and `reidbench list` prints them
resolved. Impossible combinations are refused here, before any model is built,
so the error names the setting instead of surfacing as a shape error deep in a
forward pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from reidbench.config import from_mapping
from reidbench.errors import UsageError

PATCH_SIZE = 16
"""ViT-B/16's patch: the kernel of the patch embedding in every backbone here."""

NECK_WIDTH = 768
"""The multi-scale neck's input and output width, hard-wired as in the design under study."""

FEATURE_CHOICES = ("before", "after")
MODALITY_NAMES = ("rgb", "nir", "tir")
"""Modalities a multi-modal sample may hold: visible, near-infrared and thermal (RGBNT201, RGBNT100, MSVR310)."""
MODALITY_WEIGHTS = ("shared", "separate")
HEADS = ("bnneck", "clipreid")


@dataclass(frozen=True)
class VariantSettings:
    """Grid-wide settings; a grid file's `[settings]` table overrides these defaults.

    A size-like setting's `max` (and a list's `max_length`) is its upper bound, checked where a user's value is read
    (`reidbench.config.from_mapping`): far beyond ViT-B's recipes (ViT-g has 40 blocks; 4096 pixels a side;
    the largest ReID sets hold some 10^5 identities), yet small enough that one typo cannot exhaust the host.
    """

    img_size: tuple[int, int] = field(default=(256, 128), metadata={"length": 2, "max": 4096})
    """Input (height, width); must be divisible by the 16-pixel patch."""
    stride: int = 16
    """Patch-embedding stride; below 16 the patches overlap (TransReID uses 12)."""
    depth: int = field(default=12, metadata={"max": 64})
    """Transformer blocks; lower it for quick CPU runs and unit tests."""
    camera_embedding_scale: float = 3.0
    """Scale of the camera embedding: TransReID's SIE coefficient (its `sie_xishu`, still accepted as an alias)
    and CLIP-ReID's cv_embed scale. 0 (or num_cameras = 0) switches the embedding off."""
    num_cameras: int = field(default=6, metadata={"max": 10_000})
    """Rows of the camera embedding; 0 switches the camera embedding off."""
    num_classes: int = field(default=751, metadata={"max": 1_000_000})
    """Training identities, i.e. the ID classifier's outputs (Market-1501 has 751)."""
    neck_scales: tuple[int, ...] = field(default=(4, 8, 16), metadata={"max": 256, "max_length": 8})
    """Window sizes, in patches, of the multi-scale neck."""
    feature: str = "before"
    """Which feature inference returns: 'before' or 'after' the BNNeck batch norm."""
    drop_path_rate: float = 0.1
    """Stochastic depth during training (no effect at inference)."""
    clip_quick_gelu: bool = True
    """CLIP towers use QuickGELU, as OpenAI's CLIP weights were trained with it."""
    modalities: tuple[str, ...] = ("rgb",)
    """What a sample holds, set from the dataset: ("rgb",), or ("rgb", "nir", "tir") for multi-modal ReID, where
    every modality goes through the backbone and neck and the ReID feature is their concatenation."""
    modality_weights: str = "shared"
    """Multi-modal only: one backbone and neck for every modality, told apart by a learned modality embedding
    (MambaPro's shared backbone), or a separate backbone and neck per modality."""

    head: str = "bnneck"
    """'bnneck': one BNNeck and ID classifier on the cell's feature. 'clipreid': CLIP-ReID's two (the cell's feature
    and the 512-d projected CLS) beside a text-feature classifier learned from identity prompts first
    (`reidbench.variants.clipreid`; CLIP towers only)."""

    ALIASES = {"sie_xishu": "camera_embedding_scale"}
    """Older names a grid, profile or --set may still use, and the setting each names now."""

    def __post_init__(self) -> None:
        h, w = self.img_size
        if h <= 0 or w <= 0:
            raise UsageError(f"img_size {h}x{w} must be positive on both axes, e.g. 256x128 (height x width).")
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise UsageError(
                f"img_size {h}x{w} is not divisible by the patch size {PATCH_SIZE}; "
                f"use a multiple of {PATCH_SIZE} on both axes, e.g. 256x128."
            )
        if not 1 <= self.stride <= PATCH_SIZE:
            raise UsageError(
                f"stride {self.stride} is impossible: it must be between 1 and the patch size "
                f"{PATCH_SIZE} (a larger stride would skip pixels between patches); TransReID uses 12 or 16."
            )
        if self.depth < 1:
            raise UsageError(f"depth {self.depth} is impossible: a backbone needs at least 1 block.")
        if self.num_cameras < 0:
            raise UsageError(f"num_cameras {self.num_cameras} is negative; use 0 to switch the camera embedding off.")
        if self.num_classes < 1:
            raise UsageError(f"num_classes {self.num_classes} is impossible: the ID classifier needs at least 1 class.")
        if self.camera_embedding_scale < 0:
            raise UsageError(f"camera_embedding_scale {self.camera_embedding_scale} is negative; use 0 or num_cameras = 0 to disable it.")
        if not self.neck_scales or any(s < 1 for s in self.neck_scales):
            raise UsageError(f"neck_scales {list(self.neck_scales)} must be a non-empty list of positive window sizes.")
        if self.head not in HEADS:
            raise UsageError(f"head {self.head!r} is unknown; choose one of {', '.join(HEADS)}.")
        if self.feature not in FEATURE_CHOICES:
            raise UsageError(f"feature {self.feature!r} is unknown; choose one of {', '.join(FEATURE_CHOICES)}.")
        self._check_modalities()
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise UsageError(f"drop_path_rate {self.drop_path_rate} must lie in [0, 1).")

    def _check_modalities(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITY_NAMES]
        if not self.modalities or unknown or len(set(self.modalities)) != len(self.modalities):
            raise UsageError(
                f"modalities {list(self.modalities)} must be distinct names out of {', '.join(MODALITY_NAMES)}, e.g. "
                "[\"rgb\", \"nir\", \"tir\"]; a run takes them from its dataset."
            )
        if self.modality_weights not in MODALITY_WEIGHTS:
            raise UsageError(f"modality_weights {self.modality_weights!r} is unknown; choose one of {', '.join(MODALITY_WEIGHTS)}.")

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid (rows, cols) of the overlapping patch embedding: 16x8 at stride 16, 21x10 at 12."""
        h, w = self.img_size
        return (h - PATCH_SIZE) // self.stride + 1, (w - PATCH_SIZE) // self.stride + 1

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "overrides") -> "VariantSettings":
        return from_mapping(VariantSettings, overrides, source, base=self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["img_size"] = list(self.img_size)
        data["neck_scales"] = list(self.neck_scales)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str) -> "VariantSettings":
        return from_mapping(cls, values, source)

