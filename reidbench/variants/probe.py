"""Build a cell and run its forward pass for real, classifying the outcome.

This is where the grid's expectations meet reality: a cell expected to fail
must fail with a matching message (`xfail`); one that passes is an unexpected
pass (`xpass`), which the commands turn into a non-zero exit; any other
exception is `failed`, with its traceback kept, and the grid moves on.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reidbench.errors import ReidbenchError
from reidbench.schema import CellRecord, CellState
from reidbench.variants.grid import Cell
from reidbench.variants.model import ReidModel
from reidbench.variants.params import count_parameters
from reidbench.variants.settings import VariantSettings

PROBE_BATCH = 2


@dataclass
class Probe:
    status: CellState
    model: Optional[ReidModel]
    error: Optional[str] = None
    traceback: Optional[str] = None

    def record(self, cell: Cell, settings: VariantSettings, seed: Optional[int] = None) -> CellRecord:
        """The cell's record as far as probing tells: how it ended, and what the built model says without running."""
        record = CellRecord(
            cell=cell.id, backbone=cell.backbone, neck=cell.neck, seed=seed, status=self.status, error=self.error,
            traceback=self.traceback, expected=None if cell.expect is None else vars(cell.expect), settings=settings.to_dict(),
        )
        if self.model is not None:
            record.notes = self.model.notes
            record.params = count_parameters(self.model)
            record.feature_dim = self.model.feature_dim
            if self.model.weights_report is not None:
                record.weights = self.model.weights_report.to_dict()
        return record


def probe_cell(cell: Cell, build: Callable[[], ReidModel], device: torch.device) -> Probe:
    """Build the model and run one eval forward pass on random images on `device`."""
    model: Optional[ReidModel] = None
    try:
        model = build().to(device).eval()
        with torch.no_grad():
            model(model.example_input(PROBE_BATCH, device))
    except ReidbenchError:
        raise  # bad input (e.g. a weights file for the wrong network) stops the command with its message
    except Exception as exc:  # noqa: BLE001 - every failure of a cell is recorded, none escapes
        return _classify_failure(cell, model, exc)
    if cell.expect is not None:
        return Probe(
            CellState.XPASS,
            model,
            error=f"expected to fail ({cell.expect.reason or cell.expect.match}) but the forward pass succeeded",
        )
    return Probe(CellState.DONE, model)


def _classify_failure(cell: Cell, model: Optional[ReidModel], exc: Exception) -> Probe:
    message = str(exc)
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if cell.expect is None:
        return Probe(CellState.FAILED, model, error=f"{type(exc).__name__}: {message}", traceback=trace)
    if cell.expect.matches(message):
        return Probe(CellState.XFAIL, model, error=message)
    return Probe(
        CellState.FAILED,
        model,
        error=f"failed, but not as expected (wanted a match for {cell.expect.match!r}): {type(exc).__name__}: {message}",
        traceback=trace,
    )
