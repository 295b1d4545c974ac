"""FLOP counts against analytic formulas written here, independently of the counters.

A ViT block over N tokens of width D costs 12*N*D^2 MACs in its linear layers
(qkv 3, out-projection 1, MLP 4+4) and 2*N^2*D in attention (Q K^T and A V);
the 16x16 patch embedding costs D*3*16*16 per patch.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from reidbench import create_variant
from reidbench.bench import flops as flops_module
from reidbench.bench.flops import count_flops, fvcore_macs


def vit_macs(depth: int, rows: int, cols: int, width: int = 768) -> int:
    patches = rows * cols
    tokens = patches + 1
    blocks = depth * (12 * tokens * width**2 + 2 * tokens**2 * width)
    return blocks + patches * width * 3 * 16 * 16


def ms_neck_macs(rows: int, cols: int, scales=(4, 8, 16), width: int = 768) -> int:
    total = 0
    for s in scales:
        kh, kw = min(s, rows), min(s, cols)
        total += (rows // kh) * (cols // kw) * width * width * kh * kw
    return total


def test_vit768_none_at_256x128_is_11_35_gmacs_and_22_68_gflops_in_both_counters() -> None:
    model = create_variant("vit768-none")
    count = count_flops(model, model.example_input(1))
    expected = vit_macs(12, 16, 8)
    assert count.gmacs == pytest.approx(11.35, rel=0.005)
    assert count.gflops / 2 == pytest.approx(11.35, rel=0.005)
    assert count.gmacs * 1e9 == pytest.approx(expected, rel=1e-6)
    assert count.gflops * 1e9 == pytest.approx(2 * expected, rel=1e-6)
    assert count.gmacs_by_part == pytest.approx({"backbone": expected / 1e9, "neck": 0.0, "head": 0.0})
    assert count.warnings == [] and count.relative_gap < 1e-6


def test_vit768_at_stride_12_counts_211_tokens() -> None:
    model = create_variant("vit768-none", stride=12)
    count = count_flops(model, model.example_input(1))
    assert count.gmacs * 1e9 == pytest.approx(vit_macs(12, 21, 10), rel=1e-6)
    assert count.gflops * 1e9 == pytest.approx(2 * vit_macs(12, 21, 10), rel=1e-6)


@pytest.mark.parametrize(
    "cell, extra_per_token", [("clip512-none", 768 * 512), ("clip512proj-none", 768 * 512 + 512 * 768), ("clip768-none", 0)]
)
def test_clip_towers_count_the_projections_of_every_token_they_apply(cell: str, extra_per_token: int) -> None:
    model = create_variant(cell, depth=2)
    count = count_flops(model, model.example_input(1))
    expected = vit_macs(2, 16, 8) + 129 * extra_per_token
    assert count.gmacs * 1e9 == pytest.approx(expected, rel=1e-6)
    assert count.gflops * 1e9 == pytest.approx(2 * expected, rel=1e-6)


@pytest.mark.parametrize("stride, rows, cols", [(16, 16, 8), (12, 21, 10)])
def test_ms_neck_macs_per_part(stride: int, rows: int, cols: int) -> None:
    model = create_variant("vit768-ms", depth=1, stride=stride)
    count = count_flops(model, model.example_input(1))
    assert count.gmacs_by_part["neck"] * 1e9 == pytest.approx(ms_neck_macs(rows, cols), rel=1e-6)
    assert count.gmacs_by_part["backbone"] * 1e9 == pytest.approx(vit_macs(1, rows, cols), rel=1e-6)
    assert count.gflops * 1e9 == pytest.approx(2 * (ms_neck_macs(rows, cols) + vit_macs(1, rows, cols)), rel=1e-6)


def test_batch_size_scales_the_count_linearly() -> None:
    model = create_variant("vit768-none", depth=1)
    one = count_flops(model, model.example_input(1))
    three = count_flops(model, model.example_input(3))
    assert three.gmacs == pytest.approx(3 * one.gmacs, rel=1e-9)
    assert three.batch_size == 3


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("fastpath", [True, False])
def test_multihead_attention_is_fully_counted_with_or_without_the_fast_path(fastpath: bool) -> None:
    batch, tokens, width = 2, 10, 64
    module = SelfAttention(width, heads=4).eval()
    expected = batch * tokens * 4 * width * width + 2 * batch * tokens * tokens * width
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with torch.no_grad():
            macs, _ = fvcore_macs(module, torch.randn(batch, tokens, width))
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    assert macs == expected


def test_native_mha_handler_counts_projections_and_attention() -> None:
    class Value:
        def __init__(self, shape):
            self.shape = shape

        def isCompleteTensor(self):
            return True

        def type(self):
            return self

        def sizes(self):
            return self.shape

    q = Value([2, 10, 64])
    assert flops_module.native_mha_macs([q, q, q], []) == 2 * 10 * 4 * 64 * 64 + 2 * 2 * 10 * 10 * 64


def test_disagreeing_counters_are_recorded_as_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_variant("vit768-none", depth=1)
    monkeypatch.setattr(flops_module, "flop_counter_flops", lambda m, x: 2 * 0.9 * fvcore_macs(m, x)[0])
    count = count_flops(model, model.example_input(1))
    assert count.relative_gap == pytest.approx(0.1, rel=1e-6)
    assert len(count.warnings) == 1 and "FLOP counters disagree by 10.00%" in count.warnings[0]
