"""A multi-modal run from the command line: data commands, a run of the multimodal grid, its report, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data.synthetic import MultimodalParams, generate_multimodal_synthetic
from reidbench.rundir import RunDir
from tiny_run import profile_toml

runner = CliRunner()
SUBSETS = ["R", "N", "T", "RN", "RT", "NT", "RNT"]


@pytest.fixture(scope="module")
def tiny_rgbnt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-modal synthetic set in RGBNT201 layout: 8 train ids, 6 test ids, 3 cameras, 64x32 images."""
    params = MultimodalParams(num_ids_train=8, num_ids_test=6, num_cameras=3, images_per_id_per_camera=2, size=(64, 32))
    return generate_multimodal_synthetic(tmp_path_factory.mktemp("rgbnt") / "set", params)


@pytest.fixture(scope="module")
def multimodal_run(tiny_rgbnt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mm-run")
    (folder / "profile.toml").write_text(profile_toml(2))
    out = folder / "run"
    result = runner.invoke(app, ["run", "--grid", "multimodal", "--only", "vit768-ms", "--profile", str(folder / "profile.toml"),
                                 "--data", f"synthetic-rgbnt:{tiny_rgbnt}", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "rgb+nir+tir samples" in result.output
    return out


def test_a_multimodal_cell_records_every_modality_subset_beside_the_full_evaluation(multimodal_run: Path) -> None:
    record = json.loads((multimodal_run / "cells/vit768-ms/seed0/record.json").read_text())
    assert record["status"] == "done"
    metrics = record["metrics"]
    assert list(metrics["modality_subsets"]) == SUBSETS
    assert metrics["modality_subsets"]["RNT"]["mAP"] == pytest.approx(metrics["mAP"])
    assert metrics["protocol"]["modalities"]["present"] == ["rgb", "nir", "tir"]
    assert record["settings"]["modalities"] == ["rgb", "nir", "tir"]
    assert any("ReID feature = their 3 features concatenated (2304-d)" in note for note in record["notes"])
    run_json = json.loads((multimodal_run / "run.json").read_text())
    assert run_json["dataset"]["modalities"] == ["rgb", "nir", "tir"] and run_json["dataset"]["spec"].startswith("synthetic-rgbnt:")
    queries = RunDir(multimodal_run).read_queries("vit768-ms", 0)
    assert set(queries) == {"test", *(f"modalities/{name}" for name in SUBSETS)}
    for name in SUBSETS:  # each subset's per-query scores average to the mAP its record keeps
        subset = queries[f"modalities/{name}"]
        assert len(subset.pid) == metrics["protocol"]["num_query"]
        assert np.nanmean(subset.ap) == pytest.approx(metrics["modality_subsets"][name]["mAP"], abs=1e-9)


def test_the_report_shows_a_subset_by_metric_table_per_cell(multimodal_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(multimodal_run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report/report.md").read_text()
    section = text.split("## Missing modalities at test time", 1)[1]
    assert "**vit768-ms (one seed)**" in section and "| present | mAP % | R-1 % | R-5 % | R-10 % | mINP % |" in section
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "present" not in line]
    assert rows[:7] == SUBSETS
    assert "each sample rgb + nir + tir" in text
    html = (tmp_path / "report/report.html").read_text()
    assert "Missing modalities at test time" in html and html.count('data-cell="RNT"') == 1


def test_data_synth_writes_the_multimodal_set_and_data_info_prints_its_counts(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["data", "synth", "--modalities", "rgb,depth", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--modalities 'rgb,depth'" in bad.output
    root = tmp_path / "set"
    generate_multimodal_synthetic(root, MultimodalParams(num_ids_train=3, num_ids_test=2, num_cameras=2,
                                                         images_per_id_per_camera=1, size=(32, 16)))
    (root / "test/TI" / sorted(p.name for p in (root / "test/TI").iterdir())[0]).unlink()  # one thermal image missing
    (root / "test/RGB/Thumbs.db").write_text("junk")
    result = runner.invoke(app, ["data", "info", f"rgbnt201:{root}", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["modalities"] == ["rgb", "nir", "tir"] and facts["exclusion"] == "camera"
    assert facts["incomplete"] == {"train": 0, "query": 1, "gallery": 1}
    assert facts["counts"]["train"] == {"ids": 3, "images": 6, "cameras": 2, "distractors": 0}
    assert facts["counts"]["query"]["images"] == facts["counts"]["gallery"]["images"] == 3
    text = runner.invoke(app, ["data", "info", f"rgbnt201:{root}"]).output
    assert "skipped, a modality's file missing: 1 query, 1 gallery" in text


def test_a_test_set_with_other_modalities_than_the_training_set_is_refused(tiny_rgbnt: Path, tiny_synthetic: Path, tmp_path: Path) -> None:
    (tmp_path / "profile.toml").write_text(profile_toml(2))
    result = runner.invoke(app, ["run", "--grid", "multimodal", "--data", f"synthetic-rgbnt:{tiny_rgbnt}", "--profile",
                                 str(tmp_path / "profile.toml"), "--test-data", f"synthetic:{tiny_synthetic}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--test-data synthetic:" in result.output and "its samples hold rgb" in result.output
    assert not (tmp_path / "run").exists()
