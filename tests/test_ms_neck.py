"""The multi-scale neck on non-square grids: clamping, coverage, parameters, and its arithmetic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidbench import create_variant
from reidbench.variants.params import count_parameters
from reidbench.variants import VariantSettings
from reidbench.variants.necks import MultiScaleWindowNeck, TiledConv2d, clamp_window


@pytest.mark.parametrize(
    "grid, expected",
    [((16, 8), [(4, 4), (8, 8), (16, 8)]), ((21, 10), [(4, 4), (8, 8), (16, 10)]), ((2, 3), [(2, 3), (2, 3), (2, 3)])],
)
def test_windows_larger_than_the_grid_are_clamped_per_axis(grid, expected) -> None:
    assert [clamp_window(s, grid) for s in (4, 8, 16)] == expected
    neck = MultiScaleWindowNeck((4, 8, 16), grid, width=8)
    assert [tuple(c.kernel_size) for c in neck.convs] == expected
    assert [tuple(c.stride) for c in neck.convs] == expected


def test_notes_say_what_each_window_covered() -> None:
    at16 = MultiScaleWindowNeck((4, 8, 16), (16, 8), width=8).notes
    assert at16 == [
        "ms neck: window 4x4 on the 16x8 grid: 4x2 position(s), every token covered",
        "ms neck: window 8x8 on the 16x8 grid: 2x1 position(s), every token covered",
        "ms neck: window 16x16 clamped per axis to 16x8 on the 16x8 grid: 1x1 position(s), every token covered"
        " -- a whole-grid readout (one position-specific linear map of every token)",
    ]
    at12 = MultiScaleWindowNeck((4, 8, 16), (21, 10), width=8).notes
    assert at12[0] == "ms neck: window 4x4 on the 21x10 grid: 5x2 position(s), leaves the last 1 row(s) and 2 column(s) uncovered"
    assert at12[2].startswith("ms neck: window 16x16 clamped per axis to 16x10 on the 21x10 grid: 1x1 position(s), "
                              "leaves the last 5 row(s) and 0 column(s) uncovered -- one position")
    assert "whole-grid readout" not in " | ".join(at12)


def test_quick_profile_windows_stay_distinct_where_the_full_size_ones_collapse() -> None:
    """At 64x32 (a 4x2 grid) the full-size 4/8/16 are one window three times; the quick profile's scales are not."""
    from reidbench.profiles import load_profile

    quick = load_profile("quick").model
    settings = VariantSettings().with_overrides(quick)
    assert settings.grid_size == (4, 2) and settings.neck_scales == (1, 2, 4)
    neck = MultiScaleWindowNeck(settings.neck_scales, settings.grid_size, width=8)
    assert neck.windows == [(1, 1), (2, 2), (4, 2)]
    assert [n.split(": ", 2)[2].split(",")[0] for n in neck.notes] == ["4x2 position(s)", "2x1 position(s)", "1x1 position(s)"]
    assert "whole-grid readout" in neck.notes[2] and not any("copies of one window" in n for n in neck.notes)
    collapsed = MultiScaleWindowNeck((4, 8, 16), (4, 2), width=8)
    assert collapsed.windows == [(4, 2)] * 3
    assert collapsed.notes[-1] == "ms neck: scales 4, 8, 16 all give the 4x2 window: 3 copies of one window, not distinct scales"


@pytest.mark.parametrize("stride, grid", [(16, (16, 8)), (12, (21, 10))])
def test_forward_equals_pooled_convolutions_added_to_cls(stride: int, grid: tuple[int, int]) -> None:
    neck = create_variant("vit768-ms", depth=1, stride=stride).neck
    rows, cols = grid
    tokens = torch.randn(2, 1 + rows * cols, 768)
    feature_map = tokens[:, 1:].reshape(2, rows, cols, 768).permute(0, 3, 1, 2)
    pooled = []
    for conv, s in zip(neck.convs, (4, 8, 16)):
        k = (min(s, rows), min(s, cols))
        out = F.conv2d(feature_map, conv.weight, conv.bias, stride=k)
        assert out.shape[-2:] == (rows // k[0], cols // k[1])
        pooled.append(out.mean(dim=(2, 3)))
    expected = tokens[:, 0] + sum(pooled) / 3
    with torch.no_grad():
        torch.testing.assert_close(neck(tokens), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride, window_area", [(16, 4 * 4 + 8 * 8 + 16 * 8), (12, 4 * 4 + 8 * 8 + 16 * 10)])
def test_neck_parameters_follow_the_clamped_windows_and_outweigh_the_backbone(stride: int, window_area: int) -> None:
    model = create_variant("vit768-ms", stride=stride)
    params = count_parameters(model)
    assert params["neck"] == 768 * 768 * window_area + 3 * 768
    assert params["neck"] > params["backbone"] > 85_000_000
    if stride == 16:
        assert round(params["neck"] / 1e6) == 123  # 198 M if the 16x16 window were not clamped


@pytest.mark.parametrize("grid, window", [((16, 8), (4, 4)), ((16, 8), (16, 8)), ((21, 10), (4, 4)), ((21, 10), (16, 10)), ((3, 5), (2, 2))])
def test_tiled_convolution_equals_conv2d_forward_and_backward(grid, window) -> None:
    """Same output and the same gradients for input, weight and bias, uncovered remainders included."""
    tiled = TiledConv2d(6, 5, window).double()
    plain = torch.nn.Conv2d(6, 5, kernel_size=window, stride=window).double()
    plain.load_state_dict(tiled.state_dict())  # same keys: checkpoints of either load into the other
    x = torch.randn(3, 6, *grid, dtype=torch.float64, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_()
    out, expected = tiled(x), plain(x_plain)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn_like(expected)
    out.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(x.grad, x_plain.grad)
    torch.testing.assert_close(tiled.weight.grad, plain.weight.grad)
    torch.testing.assert_close(tiled.bias.grad, plain.bias.grad)


def test_tiled_convolution_initialises_as_conv2d() -> None:
    torch.manual_seed(3)
    tiled = TiledConv2d(8, 8, (4, 2))
    torch.manual_seed(3)
    plain = torch.nn.Conv2d(8, 8, kernel_size=(4, 2), stride=(4, 2))
    torch.testing.assert_close(tiled.weight, plain.weight, rtol=0, atol=0)
    torch.testing.assert_close(tiled.bias, plain.bias, rtol=0, atol=0)


def test_tiled_convolution_raises_conv2d_own_errors() -> None:
    """The studied failure -- 512-d tokens into the 768-channel window -- keeps PyTorch's message."""
    tiled = TiledConv2d(768, 768, (4, 2))
    plain = torch.nn.Conv2d(768, 768, kernel_size=(4, 2), stride=(4, 2))
    for shape in [(2, 512, 4, 2), (2, 768, 3, 2)]:  # wrong channels; smaller than one window
        with pytest.raises(RuntimeError) as raised_plain:
            plain(torch.randn(shape))
        with pytest.raises(RuntimeError) as raised_tiled:
            tiled(torch.randn(shape))
        assert str(raised_tiled.value) == str(raised_plain.value)
