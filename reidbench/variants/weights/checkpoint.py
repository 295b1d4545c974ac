"""What a reader makes of a weights file: its tensors under their own names, and what it learned about the file."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Checkpoint:
    """A file's tensors under its own names, and what the reader learned about it."""

    kind: str
    """The reader: torch, safetensors, npz or torchscript."""
    format: str
    tensors: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    script_classes: set[str] = field(default_factory=set)
    """TorchScript archives: the scripted module classes it names (to tell QuickGELU from GELU)."""
