"""An exponential moving average of a model's weights, the copy that is evaluated when `train.ema_decay` is on.

A short training from scratch ends wherever its last steps left it, and two
runs that differ only in a seed or in how a sum was ordered end in different
places. Averaging the weights over the last stretch of steps evaluates the
middle of that stretch instead of its random end point.

The update is a handful of in-place `_foreach` kernels whose decay is computed
on the device from a step counter held there, so the step needs nothing from
the host and a CUDA-graph replay of the step (`graph_step`) updates the
average as an eager step does.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

#: The decay after t updates is min(decay, (1 + t) / (RAMP + t)): early on the average follows the
#: weights closely, so the random initial weights do not linger in it (as TensorFlow's and timm's EMAs).
RAMP = 10.0


class WeightAverage:
    """The averaged copy of `model`'s floating-point parameters and buffers (integer buffers are copied as they are)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model, self.decay = model, decay
        state = model.state_dict(keep_vars=True)
        self.names = [name for name, t in state.items() if t.is_floating_point()]
        self.live = [state[name].detach() for name in self.names]
        self.average = [t.clone() for t in self.live]
        device = self.live[0].device if self.live else torch.device("cpu")
        self.updates = torch.zeros((), device=device)

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (after an optimizer step)."""
        self.updates.add_(1)
        decay = ((1 + self.updates) / (RAMP + self.updates)).clamp(max=self.decay)
        torch._foreach_lerp_(self.average, self.live, 1 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the average into the model, which is then what is evaluated, measured and saved."""
        torch._foreach_copy_(self.live, self.average)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The average in the model for the duration (a periodic evaluation scores what the final one would), the
        live weights put back exactly afterwards, so training goes on from where it was."""
        with torch.no_grad():
            live = [t.clone() for t in self.live]
            torch._foreach_copy_(self.live, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, live)

    def state_dict(self) -> dict[str, Any]:
        return {"average": dict(zip(self.names, self.average)), "updates": self.updates}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, tensor in zip(self.names, self.average):
            tensor.copy_(state["average"][name])
        self.updates.copy_(state["updates"])
