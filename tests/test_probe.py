"""Expected failures are real: the forward pass runs, and the outcome is classified."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from reidbench import create_variant
from reidbench.schema import CellState
from reidbench.variants.probe import probe_cell

DONE, XFAIL, XPASS, FAILED = CellState.DONE, CellState.XFAIL, CellState.XPASS, CellState.FAILED
from reidbench.variants import NECKS, Cell, Expectation, load_grid
from reidbench.variants.registry import Entry

CPU = torch.device("cpu")


def shallow(cell: Cell):
    return lambda: create_variant(cell, depth=1)


def test_clip512_ms_reproduces_pytorchs_channel_mismatch_as_xfail() -> None:
    cell = load_grid("default").cell("clip512-ms")
    probe = probe_cell(cell, shallow(cell), CPU)
    assert probe.status == XFAIL
    assert "expected input[2, 512, 16, 8] to have 768 channels, but got 512 channels instead" in probe.error
    assert probe.model is not None  # built, so its parameters can still be reported


def test_a_cell_expected_to_fail_that_passes_is_xpass() -> None:
    cell = Cell("vit768", "none", Expectation("xfail", "channels", "should fail"))
    probe = probe_cell(cell, shallow(cell), CPU)
    assert probe.status == XPASS
    assert "expected to fail (should fail)" in probe.error


def test_failing_differently_than_expected_is_failed() -> None:
    cell = Cell("clip512", "ms", Expectation("xfail", "something else entirely", "wrong reason"))
    probe = probe_cell(cell, shallow(cell), CPU)
    assert probe.status == FAILED
    assert "not as expected" in probe.error and "768 channels" in probe.error


class BrokenNeck(nn.Module):
    input_width, out_dim, notes = None, 768, []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise ValueError("neck exploded")


def test_an_unexpected_exception_is_failed_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NECKS._entries, "broken", Entry("broken", lambda in_dim, s: BrokenNeck(), "test"))
    cell = Cell("vit768", "broken")
    probe = probe_cell(cell, shallow(cell), CPU)
    assert probe.status == FAILED
    assert probe.error == "ValueError: neck exploded"
    assert "Traceback" in probe.traceback and "neck exploded" in probe.traceback


def test_a_working_cell_is_done() -> None:
    cell = Cell("clip512proj", "ms")
    assert probe_cell(cell, shallow(cell), CPU).status == DONE
