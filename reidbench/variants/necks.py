"""Necks: token sequence [B, 1 + N, D] -> one feature vector per image."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.variants.registry import Registry
from reidbench.variants.settings import NECK_WIDTH, VariantSettings

NECKS: Registry = Registry("neck")


class ClsNeck(nn.Module):
    """The CLS token is the feature."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.input_width = None  # any token width
        self.out_dim = in_dim
        self.notes: list[str] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]


def clamp_window(scale: int, grid_size: tuple[int, int]) -> tuple[int, int]:
    """A window larger than the token grid along an axis covers the whole axis.

    At 256x128 with stride 16 the grid is 16x8, so a literal 16x16 window cannot
    slide over the width (PyTorch: "Kernel size can't be greater than actual input
    size"). Clamping per axis keeps the window's intent -- as coarse as the image
    allows -- and gives 16x8 there, 16x10 on the 21x10 grid of stride 12.
    """
    rows, cols = grid_size
    return min(scale, rows), min(scale, cols)


class TiledConv2d(nn.Conv2d):
    """A Conv2d whose windows tile the input (stride = kernel), computed as one matrix multiply.

    Same parameters, state-dict keys, initialisation, output and MACs as
    `nn.Conv2d(c, c, k, stride=k)`; only the kernel that computes it differs.
    Why: non-overlapping windows are a patchify followed by a GEMM, but convolution
    libraries do not treat them as one. The ms neck's windows are 768 x 768 x
    (up to 16 x 8) kernels over a 16 x 8 grid, and on this project's 2-core CPU
    oneDNN took ~3x longer for their forward and backward than the GEMM (median
    288 vs 95 ms at the quick profile's batch 64, 1,816 vs 636 ms at 256x128 and
    batch 16: `tests/benchmarks/test_bench_neck.py`); on an H200 cuDNN's default
    pick trained the ms cells 2.7x slower than with cudnn.benchmark, which runs
    keep off (the GEMM there is not measured yet).
    An input the GEMM cannot take (wrong channel count, too small) goes to
    `nn.Conv2d` itself, so errors -- the 512-vs-768 channel mismatch under study
    among them -- are PyTorch's own.
    """

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
        out = F.linear(windows, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.reshape(batch, rows, cols, self.out_channels).permute(0, 3, 1, 2)


class MultiScaleWindowNeck(nn.Module):
    """Sliding windows of several sizes over the patch-token grid, pooled, fused, added to CLS.

    One Conv2d(768, 768, kernel=k, stride=k) per scale (a `TiledConv2d`); each output map is
    average-pooled to a 768-d vector, the vectors are averaged, and the result is
    added to the CLS token. The input width is hard-wired to 768 as in the design
    under study: 512-d tokens fail inside the first Conv2d with PyTorch's own
    channel-mismatch error, which the grid records as an expected failure.
    Windows tile the grid without overlap (stride = kernel); rows or columns left
    over when the grid is not a multiple of the window are not covered (Conv2d's
    floor rule), and the notes say so.
    """

    def __init__(self, scales: tuple[int, ...], grid_size: tuple[int, int], width: int = NECK_WIDTH) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.windows = [clamp_window(s, grid_size) for s in scales]
        self.convs = nn.ModuleList(TiledConv2d(width, width, k) for k in self.windows)
        self.input_width = width
        self.out_dim = width
        self.notes = _window_notes(scales, self.windows, grid_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, dim = tokens.shape
        rows, cols = self.grid_size
        grid = tokens[:, 1:].transpose(1, 2).reshape(batch, dim, rows, cols)
        pooled = [conv(grid).mean(dim=(2, 3)) for conv in self.convs]
        return tokens[:, 0] + torch.stack(pooled).mean(dim=0)


def _window_notes(scales: tuple[int, ...], windows: list[tuple[int, int]], grid_size: tuple[int, int]) -> list[str]:
    rows, cols = grid_size
    notes = []
    for scale, (kr, kc) in zip(scales, windows):
        parts = []
        if (kr, kc) != (scale, scale):
            parts.append(f"window {scale}x{scale} clamped per axis to {kr}x{kc} on the {rows}x{cols} grid")
        left_rows, left_cols = rows % kr, cols % kc
        if left_rows or left_cols:
            parts.append(
                f"window {kr}x{kc} leaves the last {left_rows} row(s) and {left_cols} column(s) uncovered"
            )
        notes.extend(f"ms neck: {p}" for p in parts)
    return notes


@NECKS.register("none", "CLS token -> head")
def none(in_dim: int, settings: VariantSettings) -> nn.Module:
    return ClsNeck(in_dim)


@NECKS.register("ms", "multi-scale sliding-window Conv2d extractor (768-d input, hard-wired), added to CLS")
def ms(in_dim: int, settings: VariantSettings) -> nn.Module:
    # in_dim is deliberately ignored: the studied design hard-wires 768 input channels.
    return MultiScaleWindowNeck(settings.neck_scales, settings.grid_size)
