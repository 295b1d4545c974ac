"""Settings and names an adversarial user gives: sizes beyond the machine, axes that would lie in a cell id,
re-ranking at the edge of floating point, names that are not UTF-8. Their catalogue rows are in test_faults.py."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.harness import tensorboard as tensorboard_module
from reidbench.evaluation.rerank import rerank
from reidbench.variants import create_variant
from reidbench.variants.footprint import parameter_count
from reidbench.variants.params import count_parameters
from reidbench.variants.settings import VariantSettings
from test_faults import expect
from tiny_run import run_args, write_inputs

cli = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    return write_inputs(tmp_path_factory.mktemp("settings-inputs"), tiny_synthetic, epochs=2)


def run(inputs: dict[str, Path], out: Path, *extra: str):
    return cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--only", "vit768-none", *extra))


def test_size_settings_over_their_limit_are_refused_naming_it(inputs, tmp_path: Path) -> None:
    result = run(inputs, tmp_path / "a", "--axis", "k=1000000,4")
    expect(result, "setting-over-its-limit")
    assert "1024" in result.output
    result = run(inputs, tmp_path / "b", "--axis", "depth=1,100000000")
    expect(result, "setting-over-its-limit")
    assert "64" in result.output
    scales = ",".join(["4"] * 200)
    expect(run(inputs, tmp_path / "c", "--set", f"neck_scales=[{scales}]"), "setting-over-its-limit")
    expect(run(inputs, tmp_path / "d", "--set", "img_size=[16,100000]"), "setting-over-its-limit")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_a_cell_that_cannot_fit_in_memory_is_refused_with_its_estimate(inputs, tmp_path: Path) -> None:
    result = run(inputs, tmp_path / "big", "--set", "img_size=[4096,4096]", "--set", "stride=1")
    expect(result, "cell-too-big-for-memory")
    assert "TiB" in result.output and "vit768-none" in result.output
    assert not (tmp_path / "big").exists()


@pytest.mark.parametrize("cell, modalities", [("vit768-none", ("rgb",)), ("clip768-none", ("rgb",)), ("vit768-none", ("rgb", "nir", "tir"))])
def test_the_memory_estimate_counts_the_parameters_a_built_model_has(cell: str, modalities: tuple[str, ...]) -> None:
    """The estimate is made without building (necks left out); held against a built shallow model, it is a tight lower bound."""
    settings = VariantSettings(depth=1, img_size=(64, 32), stride=12, modalities=modalities, modality_weights="separate")
    built = count_parameters(create_variant(cell, settings=settings))["total"]
    assert 0.8 * built <= parameter_count(settings) <= built


def features(rows: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(rows, 16, generator=torch.Generator().manual_seed(rows), dtype=dtype)


@pytest.mark.parametrize("scale, dtype", [(1e20, torch.float32), (1e19, torch.float32), (3e18, torch.float32),
                                          (1e-30, torch.float32), (1e200, torch.float64)])
def test_rerank_of_large_or_tiny_finite_features_is_finite_and_scale_free(scale: float, dtype: torch.dtype) -> None:
    qf, gf = features(5, dtype), features(12, dtype)
    plain = rerank(qf, gf, k1=4, k2=2)
    scaled = rerank(qf * scale, gf * scale, k1=4, k2=2)
    assert bool(torch.isfinite(scaled).all())
    torch.testing.assert_close(scaled, plain, rtol=1e-4, atol=1e-5)


def test_rerank_takes_numpy_integers_at_their_extremes_as_lists_cut_to_all_samples() -> None:
    qf, gf = features(5), features(12)
    cut = rerank(qf, gf, k1=40, k2=30)  # 17 samples: every list is cut to all of them
    torch.testing.assert_close(rerank(qf, gf, k1=np.int64(2**63 - 1), k2=30), cut)
    torch.testing.assert_close(rerank(qf, gf, k1=np.uint64(2**64 - 1), k2=np.uint64(2**64 - 1)), cut)
    torch.testing.assert_close(rerank(qf, gf, k1=40, k2=30, chunk_size=np.uint64(2**64 - 1)), cut)
    with pytest.raises(UsageError, match="k2=9223372036854775807 is larger than k1=40"):
        rerank(qf, gf, k1=40, k2=np.int64(2**63 - 1))
    with pytest.raises(UsageError, match="k1 must be an integer"):
        rerank(qf, gf, k1=np.int64(0))


def test_a_run_directory_and_grid_whose_names_are_not_utf8_train_with_their_curves(inputs, tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    grid = Path(os.fsdecode(bytes(tmp_path) + b"/grid-\xff.toml"))
    grid.write_text(inputs["grid"].read_text())
    result = cli.invoke(app, run_args({**inputs, "grid": grid}, odd, "--device", "cpu", "--only", "vit768-none"))
    expect(result, "non-utf8-run-name")
    assert "TensorBoard" not in result.output
    assert list((odd / "cells" / "vit768-none" / "seed0").glob("events.out.tfevents.*"))


def test_a_failure_to_write_events_warns_once_and_the_cells_train_on(inputs, tmp_path: Path, monkeypatch) -> None:
    class BrokenWriter:
        def __init__(self, *args, **kwargs) -> None:
            raise OSError("the event file cannot be opened")

    monkeypatch.setattr(tensorboard_module, "summary_writer_class", lambda run_root, log: BrokenWriter)
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--only", "vit768-none", "--seeds", "2"))
    assert result.exit_code == 0, result.output
    assert result.output.count("the event file cannot be opened") == 1, result.output


def test_an_axis_the_dataset_dictates_is_refused_before_the_run_starts(inputs, tmp_path: Path) -> None:
    result = run(inputs, tmp_path / "a", "--axis", 'modalities=["rgb"],["rgb","nir","tir"]')
    expect(result, "axis-the-dataset-dictates")
    assert "rgb" in result.output
    expect(run(inputs, tmp_path / "b", "--axis", "num_classes=10,20"), "axis-the-dataset-dictates")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_axis_values_equal_when_parsed_are_duplicates(inputs, tmp_path: Path) -> None:
    expect(run(inputs, tmp_path / "a", "--axis", "lr=1,1.0"), "axis-value-twice")
    expect(run(inputs, tmp_path / "b", "--axis", "camera_embedding_scale=3,3.0"), "axis-value-twice")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_over_long_cell_id_is_refused_before_anything_is_created(inputs, tmp_path: Path) -> None:
    milestones = ",".join(str(m) for m in range(1, 90))
    result = run(inputs, tmp_path / "a", "--axis", f"milestones=[{milestones}],[1]")
    expect(result, "cell-id-too-long")
    assert not (tmp_path / "a").exists()
