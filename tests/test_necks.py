"""The necks beside ms: closed-form costs held against the counters, the fork's ms1d, the controls, the naming rule.

Costs need no training, so they are checked on full-width necks at 256x128 over
a one-block backbone; forward checks use random tokens.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reidbench import create_variant
from reidbench.bench.flops import count_flops
from reidbench.errors import UsageError
from reidbench.variants import BACKBONES, NECKS, VariantSettings, split_cell_id
from reidbench.variants.necks import FlatMultiScaleNeck, MultiScaleWindowNeck, NeckCost, flat_windows_cost, grid_windows_cost
from reidbench.variants.params import count_parameters
from reidbench.variants.registry import Registry

D = 768
STRIDES = [(16, (16, 8)), (12, (21, 10))]


@pytest.mark.parametrize("stride, grid", STRIDES)
@pytest.mark.parametrize("backbone", ["vit768", "clip512"])
@pytest.mark.parametrize("neck", NECKS.names())
def test_closed_form_cost_equals_the_parameter_and_flop_counters(neck: str, backbone: str, stride: int, grid) -> None:
    model = create_variant(f"{backbone}-{neck}", depth=1, stride=stride, num_classes=10)
    assert model.backbone.grid_size == grid
    assert model.neck.out_dim > 0 and isinstance(model.neck.notes, list)
    cost = model.neck.cost()
    assert count_parameters(model)["neck"] == cost.params
    if model.neck.input_width not in (None, model.backbone.embed_dim):
        return  # its forward fails with PyTorch's error (test_variants); its parameters are still reported
    count = count_flops(model, model.example_input(1))
    assert count.gmacs_by_part["neck"] * 1e9 == pytest.approx(cost.macs, rel=1e-9, abs=0.5)
    assert count.relative_gap < 1e-6


def test_the_formulas_by_hand_at_256x128() -> None:
    """Windows that tile the grid exactly each cost N D^2 MACs whatever their size; leftovers cost nothing."""
    assert grid_windows_cost(D, (16, 8), (4, 8, 16)) == NeckCost(D * D * (16 + 64 + 128) + 3 * D, 3 * 128 * D * D)
    assert grid_windows_cost(D, (16, 8), (4, 8, 16)).params == 122_685_696  # the 122.7 M of the README
    assert grid_windows_cost(D, (21, 10), (4, 8, 16)) == NeckCost(D * D * (16 + 64 + 160) + 3 * D, (160 + 128 + 160) * D * D)
    assert grid_windows_cost(512, (16, 8), (16,)) == NeckCost(512 * 512 * 128 + 512, 128 * 512 * 512)
    fusion = NeckCost(4 * D * D + 2 * D, 4 * D * D)
    assert flat_windows_cost(D, (16, 8), (4, 8, 16)) == NeckCost(28 * D * D + 3 * D, 3 * 128 * D * D) + fusion
    assert flat_windows_cost(D, (21, 10), (4, 8, 16)) == NeckCost(28 * D * D + 3 * D, 3 * 208 * D * D) + fusion
    assert flat_windows_cost(D, (4, 2), (4, 8, 16)) == NeckCost(28 * D * D + 3 * D, 2 * 8 * D * D) + fusion  # 16 > N = 8: a mean


def reference_ms1d(neck: FlatMultiScaleNeck, tokens: torch.Tensor) -> torch.Tensor:
    """The fork's forward written out: Conv1d per window, pooled (or the mean when N < k), concatenated, MLP, + CLS."""
    sequence = tokens[:, 1:].transpose(1, 2)
    pooled = []
    for conv in neck.sliding_windows:
        k = conv.kernel_size[0]
        if sequence.shape[2] < k:
            pooled.append(sequence.mean(dim=2))
        else:
            pooled.append(F.adaptive_avg_pool1d(F.conv1d(sequence, conv.weight, conv.bias, stride=k), 1).squeeze(-1))
    first, second = neck.fusion[0], neck.fusion[3]
    return tokens[:, 0] + F.linear(F.relu(F.linear(torch.cat(pooled, dim=1), first.weight, first.bias)), second.weight, second.bias)


@pytest.mark.parametrize("grid", [(16, 8), (21, 10), (4, 2)])
def test_ms1d_is_the_forks_module_added_to_cls(grid) -> None:
    neck = FlatMultiScaleNeck((4, 8, 16), grid, width=32).eval()
    tokens = torch.randn(3, 1 + grid[0] * grid[1], 32)
    with torch.no_grad():
        torch.testing.assert_close(neck(tokens), reference_ms1d(neck, tokens))
    keys = {k for k in neck.state_dict()}
    assert keys == {f"sliding_windows.{i}.{p}" for i in range(3) for p in ("weight", "bias")} | {
        f"fusion.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")
    }
    assert all(not b.any() for n, b in neck.named_parameters() if n.endswith("bias"))
    assert neck.fusion[2].p == 0.1 and neck.input_width is None and neck.out_dim == 32


def test_ms1d_notes_say_what_each_window_covered() -> None:
    at16 = FlatMultiScaleNeck((4, 8, 16), (16, 8), width=4).notes
    assert at16[0] == "ms1d neck: window 4 on the 128 tokens of the 16x8 grid, row by row: 32 positions, 1/2 of a row each, every token covered"
    assert at16[2].endswith("8 positions, 2 whole rows each, every token covered")
    at12 = FlatMultiScaleNeck((4, 8, 16), (21, 10), width=4).notes
    assert at12[1].endswith("26 positions, straddling row ends (10 tokens a row), leaves the last 2 tokens uncovered")
    small = FlatMultiScaleNeck((4, 8, 16), (4, 2), width=4).notes
    assert "2 positions, 2 whole rows each, every token covered" in small[0]
    assert "1 position, 4 whole rows each, every token covered -- a whole-grid readout" in small[1]
    assert "is longer than the sequence: the tokens' mean instead (its Conv1d is unused)" in small[2]


def test_ms_auto_takes_the_token_width_and_is_ms_at_768() -> None:
    auto = create_variant("clip512-ms-auto", depth=1, num_classes=10).neck
    assert auto.input_width is None and auto.out_dim == 512
    assert [tuple(c.weight.shape) for c in auto.convs] == [(512, 512, 4, 4), (512, 512, 8, 8), (512, 512, 16, 8)]
    assert auto.notes[2].startswith("ms-auto neck: window 16x16 clamped per axis to 16x8")
    ms = MultiScaleWindowNeck((4, 8, 16), (16, 8))
    same = MultiScaleWindowNeck((4, 8, 16), (16, 8), width=D, follows_input=True)
    same.load_state_dict(ms.state_dict())
    tokens = torch.randn(2, 129, D)
    with torch.no_grad():
        torch.testing.assert_close(same(tokens), ms(tokens))


def test_ms_is_the_mean_of_its_single_windows_and_gap_is_cls_plus_the_mean_token() -> None:
    settings = VariantSettings(img_size=(64, 32), neck_scales=(1, 2, 4))  # the quick profile's 4x2 grid and windows
    ms = NECKS.get("ms").builder(D, settings)
    singles = [NECKS.get(name).builder(D, settings) for name in ("ms4", "ms8", "ms16")]
    for single, conv in zip(singles, ms.convs):
        assert single.input_width == D and single.windows == [tuple(conv.kernel_size)]
        single.convs[0].load_state_dict(conv.state_dict())
    assert singles[2].notes == [ms.notes[2].replace("ms neck", "ms16 neck")]
    tokens = torch.randn(2, 9, D)
    with torch.no_grad():
        parts = torch.stack([s(tokens) - tokens[:, 0] for s in singles])
        torch.testing.assert_close(ms(tokens), tokens[:, 0] + parts.mean(dim=0), rtol=1e-4, atol=1e-4)
        gap = NECKS.get("gap").builder(D, settings)
        torch.testing.assert_close(gap(tokens), tokens[:, 0] + tokens[:, 1:].mean(dim=1))
    assert gap.cost() == NeckCost(0, 0) and gap.input_width is None


def test_single_windows_follow_neck_scales_and_refuse_a_missing_entry() -> None:
    neck = create_variant("vit768-ms8", depth=1, num_classes=10, neck_scales=(1, 2, 4), img_size=(64, 32)).neck
    assert neck.windows == [(2, 2)]
    with pytest.raises(UsageError, match=r"neck ms16 is window 3 of neck_scales, which has 2: \[4, 8\]"):
        create_variant("vit768-ms16", depth=1, neck_scales=(4, 8))


def test_neck_names_may_contain_a_dash_and_backbone_names_may_not() -> None:
    assert split_cell_id("clip768-ms-auto") == ("clip768", "ms-auto")
    assert all("-" not in name for name in BACKBONES.names())
    with pytest.raises(ValueError, match="backbone name 'vit-b' may not contain '-': cell ids are '<backbone>-<neck>'"):
        BACKBONES.register("vit-b", "refused")
    assert "vit-b" not in BACKBONES
    Registry("neck").register("with-dash", "accepted")
    with pytest.raises(UsageError, match="unknown neck 'ms-nope'"):
        split_cell_id("vit768-ms-nope")

