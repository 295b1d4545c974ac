"""Parameter counts split by part, so a neck that outweighs its backbone is visible."""
from __future__ import annotations

from torch import nn

from reidbench.variants.model import PARTS


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of backbone, neck and head, and their total (frozen ones included)."""
    counts = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in PARTS}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
