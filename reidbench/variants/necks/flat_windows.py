"""The public fork's multi-scale module: Conv1d windows over the flattened tokens, fused by an MLP."""
from __future__ import annotations

import torch
from torch import nn

from reidbench.variants.necks.base import Neck, NeckCost
from reidbench.variants.necks.windows import FlatWindow

FUSION_DROPOUT = 0.1
"""The fork's dropout between the two fusion layers (training only)."""


def flat_windows_cost(width: int, grid_size: tuple[int, int], scales: tuple[int, ...]) -> NeckCost:
    """Per window k: D^2 k + D parameters and, when k <= N, floor(N/k) D^2 k MACs; the fusion MLP
    Linear(S D, D) + Linear(D, D): (S + 1) D^2 + 2 D parameters and (S + 1) D^2 MACs."""
    windows = [FlatWindow(s, grid_size) for s in scales]
    fusion = NeckCost((len(scales) + 1) * width * width + 2 * width, (len(scales) + 1) * width * width)
    return NeckCost(sum(w.params(width) for w in windows), sum(w.macs(width) for w in windows)) + fusion


class FlatMultiScaleNeck(Neck):
    """Conv1d(D, D, k, stride=k) per scale over the patch tokens flattened row by row, pooled, fused, added to CLS.

    The module of the public fork of the design under study
    (Crdothebest/AboutReid, modeling/fusion_part/clip_multi_scale_sliding_window.py,
    `CLIPMultiScaleSlidingWindow`): each window's output is average-pooled to a
    D-d vector (a window longer than the sequence gives the tokens' mean instead),
    the vectors are concatenated and fused by Linear(S D, D) -> ReLU ->
    Dropout(0.1) -> Linear(D, D); here the result is added to the CLS token as the
    `ms` neck's is. D follows the backbone. Its submodule names and initialisation
    are the fork's, so a state dict of the fork's module loads. A window of k
    flattened tokens is k consecutive tokens of a row or of several rows, not a
    k x k square; the notes say what each covered.
    """

    def __init__(self, scales: tuple[int, ...], grid_size: tuple[int, int], width: int, name: str = "ms1d") -> None:
        super().__init__()
        self.grid_size = grid_size
        self.scales = tuple(scales)
        self.width = width
        self.sliding_windows = nn.ModuleList(nn.Conv1d(width, width, kernel_size=k, stride=k) for k in self.scales)
        self.fusion = nn.Sequential(
            nn.Linear(width * len(self.scales), width), nn.ReLU(), nn.Dropout(FUSION_DROPOUT), nn.Linear(width, width)
        )
        self._init_as_the_fork()
        self.input_width = None
        self.out_dim = width
        self.notes = [f"{name} neck: {FlatWindow(k, grid_size).note()}" for k in self.scales]

    def _init_as_the_fork(self) -> None:
        """Xavier-uniform linear layers and He-normal (fan-out, ReLU) windows, zero biases, as the fork initialises."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            else:
                continue
            nn.init.zeros_(module.bias)

    def cost(self) -> NeckCost:
        return flat_windows_cost(self.width, self.grid_size, self.scales)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        sequence = tokens[:, 1:].transpose(1, 2)  # [B, D, N], row-major over the grid
        pooled = [
            conv(sequence).mean(dim=2) if sequence.shape[2] >= conv.kernel_size[0] else sequence.mean(dim=2)
            for conv in self.sliding_windows
        ]
        return tokens[:, 0] + self.fusion(torch.cat(pooled, dim=1))
