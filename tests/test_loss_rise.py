"""A cell whose loss climbs back up finishes, but its record and report say so."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.harness import cell as cell_module
from reidbench.harness.train import loss_rise_warnings
from reidbench.schema import EpochEntry
from tiny_run import ONE_CELL_GRID, run_args, write_inputs


def _log(triplets: list[float], ids: list[float], epochs: list[int] | None = None) -> list[EpochEntry]:
    epochs = epochs or list(range(1, len(triplets) + 1))
    return [EpochEntry(e, loss=i + t, id_loss=i, triplet_loss=t, accuracy=0.5, lr=3.5e-4, seconds=1.0, img_per_s=100.0)
            for e, t, i in zip(epochs, triplets, ids)]


def test_the_h200_vit768_ms_shape_is_flagged_and_ordinary_training_is_not():
    # Epochs of vit768-ms on the H200 (docs/benchmarks/2026-11-27-run-default-full-h200-cudnn-benchmark-on.log).
    climbing = _log([12.434, 0.987, 1.055, 5.954, 8.788, 10.163, 8.357], [4.605, 4.490, 4.396, 3.111, 1.840, 1.302, 1.167],
                    epochs=[1, 5, 6, 30, 60, 90, 120])
    (warning,) = loss_rise_warnings(climbing)  # the total (5.45 -> 9.52) stays under the factor; the triplet does not
    assert warning.startswith("triplet loss rose from 0.987 (epoch 5) to 8.357 (epoch 120)") and "train.lr" in warning
    # What a normal run looks like (the quick CPU grid: last = lowest), and a tiny loss that doubles.
    assert loss_rise_warnings(_log([12.2, 3.0, 1.0, 0.8, 0.76], [4.6, 2.0, 1.3, 0.9, 0.86])) == []
    assert loss_rise_warnings(_log([0.5, 0.02, 0.01, 0.03], [2.0, 1.0, 0.9, 0.8])) == []
    assert loss_rise_warnings(climbing[:2]) == []  # too short to tell


def test_a_cell_that_trained_upwards_carries_the_warning_into_its_record(tiny_synthetic: Path, tmp_path: Path, monkeypatch):
    original = cell_module.train_model

    def training_that_climbed(*args, **kwargs):
        summary = original(*args, **kwargs)
        summary.warnings.append("triplet loss rose from 0.990 (epoch 1) to 8.400 (epoch 2): training partly diverged")
        return summary

    monkeypatch.setattr(cell_module, "train_model", training_that_climbed)
    inputs = write_inputs(tmp_path / "inputs", tiny_synthetic, grid=ONE_CELL_GRID, epochs=2)
    result = CliRunner().invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu"))
    assert result.exit_code == 0, result.output
    assert "warning: triplet loss rose from 0.990" in result.output
    record = json.loads((tmp_path / "run/cells/vit768-none/seed0/record.json").read_text())
    assert any(w.startswith("triplet loss rose") for w in record["warnings"])
    assert record["training"]["warnings"] == record["warnings"][-1:]
