"""What a load did, and the error for a file that does not fit."""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Optional

from reidbench.errors import UsageError


@dataclass(frozen=True)
class WeightsReport:
    """What was loaded from which file: enough to reproduce a cell and to audit the load."""

    backbone: str
    path: str
    sha256: str
    size_bytes: int
    format: str
    loaded: int
    """Tensors of the pretrained network filled from the file."""
    new: tuple[str, ...]
    """Model keys the variant adds on top of the pretrained network; they keep their initialisation."""
    ignored: dict[str, str]
    """File key -> why it is not used (ImageNet classifier, CLIP text tower, ...)."""
    resized: dict[str, dict[str, Any]]
    """Model key -> {"from": shape, "to": shape, "grid_from", "grid_to", "method"}."""
    activation: Optional[str] = None
    """Backbones whose spec asks the file (CLIP): the MLP activation the weights are used with."""
    notes: tuple[str, ...] = ()
    hub: Optional[dict[str, str]] = None
    """Weights given by name: the name (spec), the hub repo, the revision (commit hash) and the file they resolved to."""

    def to_dict(self) -> dict[str, Any]:
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(key)
        return {
            "backbone": self.backbone,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format": self.format,
            "loaded": self.loaded,
            "new": list(self.new),
            "ignored": by_reason,
            "resized": {k: dict(v) for k, v in self.resized.items()},
            "activation": self.activation,
            "notes": list(self.notes),
            "hub": dict(self.hub) if self.hub else None,
        }

    def summary(self) -> str:
        """One line for a cell's notes."""
        parts = [f"{self.loaded} tensors loaded"]
        for key, change in self.resized.items():
            (fr, fc), (tr, tc) = change["grid_from"], change["grid_to"]
            parts.append(f"{key} resized {fr}x{fc} -> {tr}x{tc} grid")
        reasons = collections.Counter(self.ignored.values())
        parts.extend(f"{count} ignored ({reason})" for reason, count in reasons.items())
        parts.append(f"{len(self.new)} new")
        if self.activation:
            parts.append(self.activation)
        source = self.path if not self.hub else f"{self.hub['spec']} ({self.hub['repo']}@{self.hub['revision']}, {self.hub['file']})"
        return f"weights {self.backbone}: {source} ({self.format}, sha256 {self.sha256[:12]}): " + ", ".join(parts)


class WeightsMismatchError(UsageError):
    """A checkpoint that does not fit the variant's pretrained network; nothing was loaded."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: dict[str, tuple]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
