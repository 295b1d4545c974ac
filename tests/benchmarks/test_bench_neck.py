"""The ms neck's windows, forward and backward: `TiledConv2d` (one GEMM) beside `nn.Conv2d`.

The ms cells' training time on the CPU is dominated by these three 768 x 768
window convolutions; the tiled form computes the same thing as a matrix
multiply, and this is where its speed is checked (`tests/test_ms_neck.py`
checks that it is the same thing).

    python3 -m pytest tests/benchmarks/test_bench_neck.py --benchmark-enable
"""
from __future__ import annotations

import pytest
import torch

from reidbench.variants.necks import TiledConv2d, clamp_window

SHAPES = {
    # (grid, batch, windows): the quick profile's 64x32 input at its training batch, with its neck_scales;
    # the full 256x128 input at batch 16 with the design's 4/8/16.
    "quick-4x2-bs64": ((4, 2), 64, (1, 2, 4)),
    "full-16x8-bs16": ((16, 8), 16, (4, 8, 16)),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", ["tiled", "conv2d"])
def test_bench_ms_windows_forward_backward(benchmark, shape: str, kind: str) -> None:
    grid, batch, scales = SHAPES[shape]
    windows = [clamp_window(s, grid) for s in scales]
    if kind == "tiled":
        convs = [TiledConv2d(768, 768, w) for w in windows]
    else:
        convs = [torch.nn.Conv2d(768, 768, kernel_size=w, stride=w) for w in windows]
    x = torch.randn(batch, 768, *grid, requires_grad=True)

    def step() -> torch.Tensor:
        x.grad = None
        pooled = [conv(x).mean(dim=(2, 3)) for conv in convs]
        sum(p.sum() for p in pooled).backward()
        return torch.stack(pooled)

    benchmark.extra_info.update(kind=kind, grid=f"{grid[0]}x{grid[1]}", batch=batch, windows=[f"{r}x{c}" for r, c in windows],
                                threads=torch.get_num_threads())
    pooled = benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    assert pooled.shape == (len(windows), batch, 768)
    # every input position lies in some window of the largest (whole-grid) scale, so each one gets a gradient
    assert x.grad is not None and x.grad.shape == x.shape and bool((x.grad != 0).all())
    assert all(conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all() for conv in convs)
