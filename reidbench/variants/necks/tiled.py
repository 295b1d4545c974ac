"""Non-overlapping Conv2d windows as one matrix multiply."""
from __future__ import annotations

import torch
from torch import nn

from reidbench.variants.fixed_order import fixed_order_linear


class TiledConv2d(nn.Conv2d):
    """A Conv2d whose windows tile the input (stride = kernel), computed as one matrix multiply.

    Same parameters, state-dict keys, initialisation, output and MACs as
    `nn.Conv2d(c, c, k, stride=k)`; only the kernel that computes it differs.
    Why: non-overlapping windows are a patchify followed by a GEMM, but convolution
    libraries do not treat them as one. The ms neck's windows are 768 x 768 x
    (up to 16 x 8) kernels over a 16 x 8 grid, and convolution kernels ran their
    forward and backward several times slower than the GEMM
    (`tests/benchmarks/test_bench_neck.py`; figures in docs/benchmarks).
    An input the GEMM cannot take (wrong channel count, too small) goes to
    `nn.Conv2d` itself, so errors -- the 512-vs-768 channel mismatch under study
    among them -- are PyTorch's own.
    """

    fixed_order_reductions: bool = False
    """Sum the GEMM's inner dimension in fixed chunks (set by `use_fixed_order_reductions`)."""

    def __init__(self, channels_in: int, channels_out: int, window: tuple[int, int]) -> None:
        super().__init__(channels_in, channels_out, kernel_size=window, stride=window)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        kr, kc = self.kernel_size
        if grid.dim() != 4 or grid.shape[1] != self.in_channels or grid.shape[2] < kr or grid.shape[3] < kc:
            return super().forward(grid)
        batch, channels, height, width = grid.shape
        rows, cols = height // kr, width // kc
        # Conv2d's floor rule: rows and columns beyond the last whole window are not covered.
        windows = grid[:, :, : rows * kr, : cols * kc].reshape(batch, channels, rows, kr, cols, kc)
        windows = windows.permute(0, 2, 4, 1, 3, 5).reshape(batch * rows * cols, channels * kr * kc)
        out = fixed_order_linear(windows, self.weight.reshape(self.out_channels, -1), self.bias, self.fixed_order_reductions)
        return out.reshape(batch, rows, cols, self.out_channels).permute(0, 3, 1, 2)

