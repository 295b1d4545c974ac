"""Evaluation beyond one test split, in real runs: k-reciprocal re-ranking beside the plain metrics, and cross-domain test sets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data import generate_synthetic
from reidbench.data.formats import load_dataset, synthetic_seed
from reidbench.rundir import RunDir
from tiny_run import ONE_CELL_GRID, run_args, write_inputs

cli = CliRunner()
RR = ("mAP_rr", "rank1_rr", "rank5_rr", "rank10_rr", "mINP_rr")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-inputs")
    written = write_inputs(folder, tiny_synthetic, grid=ONE_CELL_GRID)
    reranked = folder / "reranked.toml"
    reranked.write_text(written["profile"].read_text().replace("[eval]", "[eval]\nrerank = true\nrerank_k1 = 6\nrerank_k2 = 3"))
    return {**written, "reranked": reranked}


@pytest.fixture(scope="module")
def other_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another synthetic world (seed 1): other identities, backgrounds and cameras, the same tiny size."""
    return generate_synthetic(
        tmp_path_factory.mktemp("other") / "seed1", num_ids_train=4, num_ids_test=6, num_cameras=3,
        images_per_id_per_camera=2, num_distractors=2, num_junk=0, size=(64, 32), seed=1,
    )


@pytest.fixture(scope="module")
def run_dir(inputs: dict[str, Path], other_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval-runs") / "run"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu", "--test-data", f"synthetic:{other_world}", profile="reranked"))
    assert result.exit_code == 0, result.output
    assert f"test set synthetic:{other_world}" in result.output
    return out


def test_a_reranked_run_records_both_and_the_report_shows_both(run_dir: Path, tmp_path: Path) -> None:
    record = RunDir(run_dir).read_record("vit768-none", 0)
    metrics = record.metrics
    assert all(0 <= metrics[key] <= 1 for key in ("mAP", *RR)) and metrics["cmc_rr"][0] == metrics["rank1_rr"]
    assert metrics["protocol"]["rerank"] == {"k1": 6, "k2": 3, "lambda": 0.3, "standard": False,
                                             "distance": "euclidean on the features (L2-normalised)"}
    table = pd.read_csv(run_dir / "results.csv")
    assert table.loc[0, "mAP_rr"] == pytest.approx(metrics["mAP_rr"])
    result = cli.invoke(app, ["report", str(run_dir), "--baseline", str(run_dir), "--out", str(tmp_path / "r"), "--fail-on", "mAP_rr:-1"])
    assert result.exit_code == 0 and "passed" in result.output, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "mAP % re-ranked" in md and "NOT the standard k1 20, k2 6, λ 0.3" in md


def test_every_trained_cell_is_also_scored_on_the_test_sets(run_dir: Path, other_world: Path, tmp_path: Path) -> None:
    spec = f"synthetic:{other_world}"
    cross = RunDir(run_dir).read_record("vit768-none", 0).cross_domain
    assert list(cross) == [spec] and 0 <= cross[spec]["mAP"] <= 1 and cross[spec]["protocol"]["num_query"] > 0
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["test_data"] == [spec] and meta["test_sets"][spec]["chance"]["mAP"] > 0
    assert cli.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r")]).exit_code == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Cross-domain: trained on" in md and f"vit768-none → {spec}: mAP" in md


def test_queries_npz_keeps_every_evaluations_per_query_scores(run_dir: Path, other_world: Path) -> None:
    spec = f"synthetic:{other_world}"
    run = RunDir(run_dir)
    record, queries = run.read_record("vit768-none", 0), run.read_queries("vit768-none", 0)
    assert set(queries) == {"test", "test/rr", f"cross/{spec}", f"cross/{spec}/rr"}
    cross = record.cross_domain[spec]
    for key, metrics, suffix in (("test", record.metrics, ""), ("test/rr", record.metrics, "_rr"),
                                 (f"cross/{spec}", cross, ""), (f"cross/{spec}/rr", cross, "_rr")):
        scores = queries[key]
        assert len(scores.pid) == metrics["protocol"]["num_query"], key
        assert np.nanmean(scores.ap) == pytest.approx(metrics[f"mAP{suffix}"], abs=1e-9), key
        assert np.nanmean(scores.inp) == pytest.approx(metrics[f"mINP{suffix}"], abs=1e-9), key
        assert (scores.first_rank[scores.valid] == 1).mean() == pytest.approx(metrics[f"rank1{suffix}"]), key
    np.testing.assert_array_equal(queries["test"].pid, queries["test/rr"].pid)


def test_resume_keeps_the_test_sets_it_was_planned_with(run_dir: Path, other_world: Path) -> None:
    result = cli.invoke(app, ["run", "--resume", str(run_dir), "--test-data", f"synthetic:{other_world}"])
    assert result.exit_code == 2 and "--test-data would change it" in result.output


@pytest.mark.parametrize("line, message", [
    ("rerank_k1 = 0", "rerank_k1 >= 1 (got 0)"),
    ("rerank_k2 = 30", "1 <= rerank_k2 <= rerank_k1 (got 30)"),
    ("rerank_lambda = 1.5", "rerank_lambda in [0, 1] (got 1.5)"),
])
def test_bad_rerank_settings_exit_2_naming_them(inputs, tmp_path: Path, line: str, message: str) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text(inputs["profile"].read_text().replace("[eval]", f"[eval]\nrerank = true\n{line}"))
    result = cli.invoke(app, run_args({**inputs, "bad": profile}, tmp_path / "run", "--device", "cpu", profile="bad"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_test_set_that_can_score_no_query_is_refused(inputs, other_world: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(other_world, tmp_path / "broken"))
    for image in (broken / "bounding_box_test").iterdir():
        if image.name.split("_")[0] != "0000":  # only distractors stay: no query has a match
            image.unlink()
    result = cli.invoke(app, run_args(inputs, tmp_path / "run", "--device", "cpu", "--test-data", f"synthetic:{broken}"))
    assert result.exit_code == 2 and "no query can be scored" in result.output and f"test set synthetic:{broken}" in result.output
    assert not (tmp_path / "run").exists()


def test_another_synthetic_world_is_named_by_its_seed(monkeypatch, tmp_path: Path) -> None:
    from reidbench.data import formats

    class Asked(Exception):
        """Where and with which seed the set would be generated (generating the full-size set is not this test's job)."""

    def ask(root: Path, seed: int) -> Path:
        raise Asked(root, seed)

    monkeypatch.setenv("REIDBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(formats, "ensure_synthetic", ask)
    assert synthetic_seed("synthetic:seed=1") == 1 and synthetic_seed("synthetic:/data/x") is None
    with pytest.raises(Asked) as asked:
        load_dataset("synthetic:seed=1")
    assert asked.value.args == (tmp_path / "synthetic-v1-seed1", 1)
