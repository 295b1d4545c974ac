"""What every neck promises the model and the reports, and its cost in closed form."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass(frozen=True)
class NeckCost:
    """A neck's parameters and its multiply-adds for one image, from its arithmetic rather than by counting.

    Tests hold these against `count_parameters` and the FLOP counters, so a table can
    say what a neck costs at any width and grid without building it.
    """

    params: int
    macs: int

    def __add__(self, other: NeckCost) -> NeckCost:
        return NeckCost(self.params + other.params, self.macs + other.macs)


NO_COST = NeckCost(0, 0)


class Neck(nn.Module):
    """Tokens [B, 1 + N, D] (CLS first) -> one feature per image [B, out_dim].

    `input_width` is the token width the neck was built for when it is fixed (the
    design under study hard-wires 768), None when it follows the backbone. `notes`
    are facts a reader of the neck's numbers must know: what each window covered.
    """

    input_width: Optional[int]
    out_dim: int
    notes: list[str]

    def cost(self) -> NeckCost:
        """Parameters and MACs per image, in closed form from the width, the grid and the windows."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
