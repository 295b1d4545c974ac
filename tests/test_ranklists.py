"""Rank lists: the top-k the evaluation keeps, the report's section and `reidbench inspect`."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.data.reopen import reopen
from reidbench.data.synthetic import MultimodalParams, generate_multimodal_synthetic
from reidbench.errors import UsageError
from reidbench.evaluation.metrics import TOP_K, evaluate_distances, evaluate_rank
from reidbench.reports.ranklists import PREDATES, shown_queries, worst_queries
from reidbench.rundir import RunDir
from reidbench.schema import QueryScores, SchemaError, query_scores_bytes, query_scores_from_npz

from tiny_run import ONE_CELL_GRID, profile_toml, run_args, write_inputs

cli = CliRunner()


# --------------------------------------------------------------------------- the stored top-k


def brute_force_top(qf, gf, q_pids, g_pids, q_cams, g_cams, k: int) -> np.ndarray:
    """Every query's gallery sorted by squared euclidean distance, junk and same-id same-camera images removed."""
    dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    rows = []
    for i in range(len(qf)):
        kept = np.flatnonzero((g_pids != -1) & ~((g_pids == q_pids[i]) & (g_cams == q_cams[i])))
        order = kept[np.argsort(dist[i, kept], kind="stable")][:k]
        rows.append(np.pad(order, (0, k - len(order)), constant_values=-1))
    return np.array(rows)


@pytest.mark.parametrize("trial", range(6))
def test_the_stored_top_k_is_the_brute_force_ranking_with_the_protocols_removals(trial: int) -> None:
    rng = np.random.default_rng(trial)
    num_q, num_g = int(rng.integers(3, 25)), int(rng.integers(4, 40))  # some galleries smaller than TOP_K: padding
    qf, gf = rng.normal(size=(num_q, 6)), rng.normal(size=(num_g, 6))
    q_pids, g_pids = rng.integers(1, 5, num_q), rng.integers(-1, 5, num_g)  # -1: junk, dropped for every query
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    g_pids[0], g_cams[0] = q_pids[0], (q_cams[0] + 1) % 3  # at least one query has a match
    expected = brute_force_top(qf, gf, q_pids, g_pids, q_cams, g_cams, TOP_K)

    for chunk in (1, 4, None):  # chunk boundaries must not matter
        result = evaluate_rank(qf, gf, q_pids, g_pids, q_cams, g_cams, chunk_size=chunk)
        assert result.queries.top.dtype == np.int32 and result.queries.top.shape == (num_q, TOP_K)
        np.testing.assert_array_equal(result.queries.top, expected)
    distances = torch.cdist(torch.from_numpy(qf), torch.from_numpy(gf))
    reranked = evaluate_distances(distances, q_pids, g_pids, q_cams, g_cams, chunk_size=3)
    np.testing.assert_array_equal(reranked.queries.top, expected)

    for i in range(num_q):  # the first correct entry sits at the recorded first correct rank
        hits = [place + 1 for place, g in enumerate(expected[i]) if g >= 0 and g_pids[g] == q_pids[i]]
        rank = int(result.queries.first_rank[i])
        assert (hits[0] if hits else None) == (rank if 1 <= rank <= TOP_K else None)


def test_ties_put_the_wrong_answers_first_in_the_rank_list_as_in_the_scores() -> None:
    """Collapsed features: every image at the same distance; the pessimistic rule ranks all wrong ones first."""
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3, 3, 1])
    q_cams, g_cams = np.array([0, 0]), np.array([1, 1, 1, 1, 1])
    result = evaluate_rank(np.ones((2, 4)), np.ones((5, 4)), q_pids, g_pids, q_cams, g_cams, top_k=5)
    for i in range(2):
        entries = result.queries.top[i]
        correct = [place + 1 for place, g in enumerate(entries) if g >= 0 and g_pids[g] == q_pids[i]]
        assert correct[0] == result.queries.first_rank[i]
        assert all(g_pids[g] != q_pids[i] for g in entries[: correct[0] - 1])


def test_a_bad_top_k_is_refused() -> None:
    with pytest.raises(UsageError, match="top_k must be a positive integer"):
        evaluate_rank(np.ones((2, 3)), np.ones((2, 3)), [1, 2], [1, 2], [0, 0], [1, 1], top_k=0)


def _scores(n: int, top: bool = True) -> QueryScores:
    rng = np.random.default_rng(0)
    first_rank = rng.integers(0, 5, n)
    ap = np.where(first_rank > 0, rng.uniform(0, 1, n), np.nan)
    return QueryScores(pid=np.arange(n), ap=ap, first_rank=first_rank, inp=ap,
                       top=rng.integers(-1, 50, (n, TOP_K)).astype(np.int32) if top else None)


def _npz(content: bytes) -> np.lib.npyio.NpzFile:
    return np.load(io.BytesIO(content), allow_pickle=False)


def test_queries_npz_keeps_the_rank_lists_and_reads_a_file_without_them() -> None:
    with_lists, without = _scores(7), _scores(7, top=False)
    back = query_scores_from_npz(_npz(query_scores_bytes({"test": with_lists, "test/rr": without})), "q.npz")
    np.testing.assert_array_equal(back["test"].top, with_lists.top)
    assert back["test/rr"].top is None
    bad = {"test/pid": np.arange(3), "test/ap": np.ones(3), "test/first_rank": np.ones(3, int), "test/inp": np.ones(3),
           "test/top": np.arange(3)}
    buffer = io.BytesIO()
    np.savez(buffer, **bad)
    with pytest.raises(SchemaError, match="test/top"):
        query_scores_from_npz(_npz(buffer.getvalue()), "q.npz")


def test_the_shown_queries_are_spread_over_the_scored_ones_by_index_and_the_worst_have_the_lowest_ap() -> None:
    scores = _scores(40)
    picks = shown_queries(scores, 4)
    scored = np.flatnonzero(scores.valid)
    assert len(picks) == 4 and picks == sorted(picks) and all(scores.valid[q] for q in picks)
    assert picks[0] < scored[len(scored) // 4] and picks[-1] > scored[len(scored) * 3 // 4 - 1]
    assert picks == shown_queries(QueryScores(scores.pid, scores.ap[::-1].copy(), scores.first_rank, scores.inp))  # not by score
    worst = worst_queries(scores, 5)
    assert [scores.ap[q] for q in worst] == sorted(scores.ap[scored])[:5]


# --------------------------------------------------------------------------- runs, the report and inspect


@pytest.fixture(scope="module")
def one_cell_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranklists")
    inputs = write_inputs(folder, tiny_synthetic, epochs=2, grid=ONE_CELL_GRID, img_size=(64, 32))
    out = folder / "run"
    result = cli.invoke(app, run_args(inputs, out, "--device", "cpu"))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def multimodal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ranklists-mm")
    data = generate_multimodal_synthetic(folder / "set", MultimodalParams(
        num_ids_train=8, num_ids_test=6, num_cameras=3, images_per_id_per_camera=2, size=(64, 32)))
    (folder / "profile.toml").write_text(profile_toml(2, (64, 32)))
    result = cli.invoke(app, ["run", "--grid", "multimodal", "--only", "vit768-none", "--profile", str(folder / "profile.toml"),
                              "--data", f"synthetic-rgbnt:{data}", "--device", "cpu", "--out", str(folder / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_a_runs_rank_lists_honour_the_protocol_and_agree_with_its_first_correct_ranks(one_cell_run: Path) -> None:
    scores = RunDir(one_cell_run).read_queries("vit768-none", 0)["test"]
    dataset = reopen(RunDir(one_cell_run).meta().dataset)
    assert scores.top.shape == (len(dataset.query), TOP_K)
    for q, entries in enumerate(scores.top):
        asked = dataset.query[q]
        shown = [dataset.gallery[g] for g in entries if g >= 0]
        assert not any(g.pid == asked.pid and g.camid == asked.camid for g in shown)  # removed by the protocol
        hits = [place + 1 for place, g in enumerate(shown) if g.pid == asked.pid]
        rank = int(scores.first_rank[q])
        assert (hits[0] if hits else None) == (rank if 1 <= rank <= TOP_K else None)


def _report(run: Path, out: Path) -> str:
    result = cli.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "report.md").read_text()


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


def test_the_report_draws_each_cells_rank_lists_and_lists_its_worst_queries(one_cell_run: Path, tmp_path: Path) -> None:
    markdown = _report(one_cell_run, tmp_path / "report")
    section = markdown.split("## Rank lists", 1)[1].split("\n## ", 1)[0]
    assert "![Rank lists: vit768-none (seed 0)](ranklist-vit768-none.png)" in section
    assert "the 5 queries of lowest AP" in section and "| query | identity | AP % | first correct rank |" in section
    width, height = _png_size(tmp_path / "report" / "ranklist-vit768-none.png")
    assert width > 600 and height > 4 * 150  # four queries, each a row of eleven pictures
    assert "ranklist-vit768-none.png" not in (tmp_path / "report" / "report.html").read_text()  # embedded instead
    assert "<h2>Rank lists</h2>" in (tmp_path / "report" / "report.html").read_text()


def test_a_multimodal_runs_rank_lists_show_every_modality(multimodal_run: Path, tmp_path: Path) -> None:
    markdown = _report(multimodal_run, tmp_path / "report")
    assert "its modalities one per row (RGB, then near-infrared, then thermal)" in markdown
    _, height = _png_size(tmp_path / "report" / "ranklist-vit768-none.png")
    single = _png_size(_inspect_ok(multimodal_run, tmp_path / "one.png", "--query", "0"))[1]
    assert height > 3 * single  # four queries of three rows each
    assert single > 3 * 100  # one query: three modalities stacked


def _strip_rank_lists(run: Path) -> None:
    path = RunDir(run).queries_path("vit768-none", 0)
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/top.npy")}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in kept.items():
            archive.writestr(name, content)


def test_a_run_made_before_rank_lists_still_reports_and_says_so(one_cell_run: Path, tmp_path: Path) -> None:
    old = Path(shutil.copytree(one_cell_run, tmp_path / "old", ignore=shutil.ignore_patterns("*.pt", "report")))
    _strip_rank_lists(old)
    markdown = _report(old, tmp_path / "report")
    assert PREDATES in markdown and "ranklist-" not in markdown
    result = cli.invoke(app, ["inspect", str(old), "--cell", "vit768-none", "--query", "0"])
    assert result.exit_code == 2 and "before reidbench kept rank lists" in result.output


def test_a_run_whose_dataset_is_gone_reports_without_images(one_cell_run: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(one_cell_run, tmp_path / "moved", ignore=shutil.ignore_patterns("*.pt", "report")))
    meta = json.loads((moved / "run.json").read_text())
    meta["dataset"]["root"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(meta))
    markdown = _report(moved, tmp_path / "report")
    assert f"Images not shown: the run's dataset {meta['dataset']['spec']} is no longer at {tmp_path / 'gone'}" in markdown
    assert "the 5 queries of lowest AP" in markdown  # the numbers need no image
    result = cli.invoke(app, ["inspect", str(moved), "--cell", "vit768-none", "--query", "0"])
    assert result.exit_code == 2 and "is no longer at" in result.output and "Traceback" not in result.output


def test_a_changed_dataset_is_refused_rather_than_drawn_wrong(one_cell_run: Path, tmp_path: Path) -> None:
    facts = RunDir(one_cell_run).meta().dataset
    copy = Path(shutil.copytree(facts["root"], tmp_path / "data"))
    reopen({**facts, "root": str(copy)})  # the same files: fine
    victim = next(path for path in sorted((copy / "bounding_box_test").iterdir()) if not path.name.startswith("-1"))  # not junk
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(UsageError, match="changed since the run"):
        reopen({**facts, "root": str(copy)})
    with pytest.raises(UsageError, match="1 gallery images .* could not be read"):
        reopen({**facts, "unreadable": {"gallery": 1}})


def _inspect_ok(run: Path, out: Path, *args: str) -> Path:
    result = cli.invoke(app, ["inspect", str(run), "--cell", "vit768-none", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    return out


def test_inspect_writes_one_rank_list_and_prints_its_path(one_cell_run: Path, tmp_path: Path) -> None:
    width, height = _png_size(_inspect_ok(one_cell_run, tmp_path / "q3.png", "--query", "3"))
    assert width > 600 and 150 < height < 500
    narrow, _ = _png_size(_inspect_ok(one_cell_run, tmp_path / "q3-top5.png", "--query", "3", "--top", "5"))
    assert narrow < width * 0.75
    default = cli.invoke(app, ["inspect", str(one_cell_run), "--cell", "vit768-none", "--query", "1", "--seed", "0"])
    assert default.exit_code == 0 and Path(default.output.strip()) == one_cell_run / "report" / "ranklist-vit768-none-seed0-query1.png"
    assert Path(default.output.strip()).is_file()


@pytest.mark.parametrize("args, message", [
    (["--cell", "nope", "--query", "0"], "the run has no such cell; its cells are vit768-none"),
    (["--cell", "vit768-none", "--query", "0", "--seed", "4"], "--seed 4: vit768-none has seed(s) 0"),
    (["--cell", "vit768-none", "--query", "9999"], "--query 9999 is out of range"),
    (["--cell", "vit768-none", "--query", "-1"], "--query -1 is out of range"),
    (["--cell", "vit768-none", "--query", "0", "--top", "11"], "--top 11: the run kept each query's first 10"),
])
def test_inspect_refuses_bad_input_in_one_paragraph(one_cell_run: Path, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["inspect", str(one_cell_run), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_inspect_refuses_a_cell_without_per_query_results(one_cell_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(one_cell_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.pt", "report")))
    RunDir(run).queries_path("vit768-none", 0).unlink()
    result = cli.invoke(app, ["inspect", str(run), "--cell", "vit768-none", "--query", "0"])
    assert result.exit_code == 2 and "evaluated before reidbench kept per-query results" in result.output
    record = json.loads(RunDir(run).record_path("vit768-none", 0).read_text())
    RunDir(run).record_path("vit768-none", 0).write_text(json.dumps({**record, "status": "failed", "error": "diverged"}))
    result = cli.invoke(app, ["inspect", str(run), "--cell", "vit768-none", "--query", "0"])
    assert result.exit_code == 2 and "has no per-query results (its status: failed)" in result.output


def test_inspect_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = cli.invoke(app, ["inspect", str(tmp_path), "--cell", "a", "--query", "0"])
    assert result.exit_code == 2 and "is not a reidbench run directory" in result.output
