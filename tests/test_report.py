"""`reidbench report` on tiny real runs: table, plots, Markdown/HTML/CSV, seeds, baseline deltas, the CI gate, damaged input."""
from __future__ import annotations

import base64
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reidbench.cli import app
from reidbench.errors import UsageError
from reidbench.schema import RESULT_COLUMN_NAMES as RESULT_COLUMNS, EpochEntry
from reidbench.reports.compare import Delta, parse_fail_on
from reidbench.reports.plots import pareto_frontier
from reidbench.reports.quantities import QUANTITIES

cli = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
CELLS = ["vit768-none", "vit768-ms", "clip512-none", "clip512-ms", "clip512proj-none", "clip512proj-ms"]
XFAIL_MESSAGE = "to have 768 channels, but got 512 channels instead"
PLOTS = 6
"""Figures of a run without eval.period: accuracy, latency, memory, parameters, training curves and CMC curves."""
RANK_LISTS = len(CELLS) - 1
"""One rank-list figure per cell that was evaluated (all but the expected failure)."""

GRID = """
backbones = ["vit768", "clip512", "clip512proj"]
necks = ["none", "ms"]
[expect.clip512-ms]
status = "xfail"
match = "to have 768 channels, but got 512 channels instead"
reason = "the ms neck is hard-wired to 768 input channels"
"""

PROFILE = """
description = "report-test-sized"
[model]
depth = 1
img_size = [32, 16]
[train]
epochs = 1
p = 4
k = 2
optimizer = "adamw"
lr = 0.001
warmup_epochs = 0
[eval]
batch_size = 64
[measure]
batch_sizes = [1, 2]
train_batch_size = 2
repeats = 1
warmup = 0
max_seconds = 0.5
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-inputs")
    data = tiny_synthetic
    (root / "grid.toml").write_text(GRID)
    (root / "profile.toml").write_text(PROFILE)
    return {"data": data, "grid": root / "grid.toml", "profile": root / "profile.toml"}


def make_run(inputs: dict[str, Path], out: Path, *extra: str) -> Path:
    result = cli.invoke(app, ["run", "--grid", str(inputs["grid"]), "--profile", str(inputs["profile"]),
                              "--data", f"synthetic:{inputs['data']}", "--device", "cpu", "--out", str(out),
                              "--no-progress", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def grid_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole 3 x 2 grid, one seed."""
    return make_run(inputs, tmp_path_factory.mktemp("runs") / "grid")


@pytest.fixture(scope="module")
def seeds_run(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained cell and the expected failure, two seeds each (the noise rule itself is tested on numbers below)."""
    return make_run(inputs, tmp_path_factory.mktemp("runs") / "seeds", "--only", "vit768-none", "--only", "clip512-ms", "--seeds", "2")


def copy_run(run: Path, dest: Path) -> Path:
    """A copy without the model weights (all a report reads is JSON)."""
    return Path(shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.pt", "report")))


def edit_record(run: Path, cell: str, **changes: object) -> None:
    path = run / "cells" / cell / "seed0" / "record.json"
    record = json.loads(path.read_text())
    for key, value in changes.items():
        target = record
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(record))


def report(*args: str, rank_lists: bool = False) -> object:
    """`reidbench report ARGS`; without rank lists unless asked (tests/test_ranklists.py covers them, and drawing them
    is most of a report's time)."""
    result = cli.invoke(app, ["report", *args, *([] if rank_lists else ["--no-rank-lists"])])
    assert "Traceback" not in result.output, result.output
    return result


def markdown_rows(text: str, heading: str = "All columns") -> dict[str, dict[str, str]]:
    """A table of report.md, the full one unless `heading` names the short one ("Results"): cell id -> {column: text}."""
    lines = text.split(f"## {heading}", 1)[1].strip().splitlines()

    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    columns, rows = split(lines[0]), {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = split(line)
        assert len(cells) == len(columns), line
        rows[cells[0]] = dict(zip(columns, cells))
    return rows


class HTMLReport(HTMLParser):
    """What a test needs from report.html: the results tables' row ids, image sources, external references, visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables = 0
        self.rows: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tables += tag == "table"
        if tag == "tr" and a.get("data-cell") and self.tables <= 2:  # the short and the full results table, not a section's
            self.rows.append(a["data-cell"])
        if tag == "img":
            self.images.append(a.get("src") or "")
        for name in ("src", "href"):
            if (a.get(name) or "").startswith(("http:", "https:", "//")) or tag in ("link", "script"):
                self.external.append(f"<{tag} {name}={a.get(name)}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_writes_the_table_the_plots_and_three_formats(grid_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = report(str(grid_run), "--out", str(out), rank_lists=True)
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == PLOTS + RANK_LISTS and all(p.read_bytes().startswith(PNG) for p in pngs)
    assert len([p for p in pngs if p.name.startswith("ranklist-")]) == RANK_LISTS

    md = (out / "report.md").read_text()
    rows = markdown_rows(md)
    assert list(rows) == CELLS
    assert rows["clip512-ms"]["status"].startswith("**xfail**: ") and XFAIL_MESSAGE in rows["clip512-ms"]["status"]
    assert all(rows[c]["status"] == "**done**" for c in CELLS if c != "clip512-ms")
    assert rows["clip512-ms"]["mAP %"] == "—" and rows["clip512-ms"]["params M total (backbone / neck / head)"] != "—"
    for png in pngs:
        assert f"]({png.name})" in md
    for fact in ("**Device**: cpu", "torch 2.", "dtype fp32", "32×16, stride 16", "synthetic", "report-test-sized",
                 "1 MAC = 2 FLOPs", "chance level"):
        assert fact in md, fact
    assert "clip512-ms is expected to fail: the ms neck is hard-wired to 768 input channels" in md

    page = HTMLReport((out / "report.html").read_text())
    assert page.rows == CELLS + CELLS  # the short table, then all columns
    assert len(page.images) == PLOTS + RANK_LISTS and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG) for src in page.images)
    assert page.external == []
    assert XFAIL_MESSAGE in "".join(page.text)

    table = pd.read_csv(out / "results.csv")
    assert list(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert list(table["cell"]) == CELLS
    assert {"latency_ms@1", "latency_ms@2", "img_per_s@2", "peak_infer_mib", "peak_train_mib"} <= set(table.columns)
    assert table.set_index("cell").loc["vit768-ms", "params_neck"] > 0


def test_numbers_in_the_table_are_the_records(grid_run: Path, tmp_path: Path) -> None:
    result = report(str(grid_run), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    row = markdown_rows((tmp_path / "report.md").read_text())["vit768-ms"]
    record = json.loads((grid_run / "cells/vit768-ms/seed0/record.json").read_text())
    for column, key in (("mAP %", "mAP"), ("R-10 %", "rank10")):
        # one seed with its queries.npz: the mean, then the bootstrap interval over query identities around it
        mean, _, interval = row[column].removesuffix(" (below chance)").partition(" [")  # one epoch: it may be
        low, high = (float(x) for x in interval.rstrip("]").split(", "))
        assert mean == f"{record['metrics'][key] * 100:.1f}" and low <= float(mean) <= high
    params = record["params"]
    assert row["params M total (backbone / neck / head)"] == (
        f"{params['total'] / 1e6:.1f} ({params['backbone'] / 1e6:.2f} / {params['neck'] / 1e6:.2f} / "
        + (f"{params['head']:,} params)" if params["head"] < 10_000 else f"{params['head'] / 1e6:.3g})")  # a small head whole
    )
    latency = record["latency"][1]
    shown = row["bs2 ms median / p90"]
    assert shown.endswith(" (noisy)") == bool(latency["noisy"])  # one repeat per batch size: too few to trust
    median, p90 = (float(x) for x in shown.removesuffix(" (noisy)").split(" / "))
    assert median == pytest.approx(latency["median_ms"], rel=0.01) and p90 == pytest.approx(latency["p90_ms"], rel=0.01)


def test_compiled_and_graph_numbers_stand_beside_the_eager_headline(grid_run: Path, tmp_path: Path) -> None:
    plain = report(str(grid_run), "--out", str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    before = markdown_rows((tmp_path / "plain" / "report.md").read_text())
    assert not any("graph" in c or "compile" in c for c in before["vit768-none"])  # no faster modes: no new columns
    run = copy_run(grid_run, tmp_path / "run")
    path = run / "cells/vit768-none/seed0/record.json"
    record = json.loads(path.read_text())
    record["latency"] += [
        {"batch_size": 1, "mode": "graph", "median_ms": 0.5, "p90_ms": 0.6, "img_per_s": 2000.0},
        {"batch_size": 2, "mode": "graph", "median_ms": 0.8, "p90_ms": 0.9, "img_per_s": 2500.0},
        {"batch_size": 1, "mode": "compiled", "median_ms": 0.9, "p90_ms": 1.0, "img_per_s": 1111.0},
        {"batch_size": 2, "mode": "compiled", "median_ms": 1.0, "p90_ms": 1.1, "img_per_s": 2000.0},
        {"batch_size": 1, "mode": "compiled+graph", "skipped": "CUDA graphs need a CUDA device; this runs on cpu"},
    ]
    record["compile"] = {"backend": "inductor", "seconds": 7.5}
    path.write_text(json.dumps(record))
    result = report(str(run), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    rows = markdown_rows((tmp_path / "report" / "report.md").read_text())
    row = rows["vit768-none"]
    assert (row["bs1 ms graph"], row["bs2 img/s graph"]) == ("0.5", "2500")
    assert (row["bs1 ms compiled"], row["bs2 img/s compiled"], row["compile s"]) == ("0.9", "2000", "7.50")
    assert "bs1 ms compiled+graph" not in row  # skipped everywhere: no column
    assert row["bs1 ms median / p90"] == before["vit768-none"]["bs1 ms median / p90"]  # eager stays the headline
    assert rows["vit768-ms"]["bs1 ms graph"] == "—"
    table = pd.read_csv(tmp_path / "report" / "results.csv").set_index("cell")
    assert table.loc["vit768-none", "latency_ms_graph@1"] == 0.5 and table.loc["vit768-none", "compile_seconds"] == 7.5
    assert table.loc["vit768-none", "latency_ms@1"] == pytest.approx(record["latency"][0]["median_ms"])
    assert [t.quantity.name for t in parse_fail_on("img_per_s_compiled:-5%,latency_ms_graph@1:+10%")] == [
        "img_per_s_compiled", "latency_ms_graph"]


def test_the_report_says_where_each_cells_time_went(grid_run: Path, tmp_path: Path) -> None:
    result = report(str(grid_run), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Where the time went", 1)[1]
    record = json.loads((grid_run / "cells/vit768-ms/seed0/record.json").read_text())
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in record["phase_seconds"].items())
    assert f"- vit768-ms seed 0: {record['wall_seconds']:.0f} s ({phases}); slowest measurements: " in section
    assert "clip512-ms seed 0: " in section  # an expected failure still took its probe's time
    assert "Where the time went" in "".join(HTMLReport((tmp_path / "report.html").read_text()).text)


def test_the_header_says_how_the_cells_were_trained(grid_run: Path, tmp_path: Path) -> None:
    """Train img/s depends on eager vs graph-replayed steps and on DDP: the header names each way and its cells."""
    run = copy_run(grid_run, tmp_path / "run")
    record = json.loads((run / "cells/vit768-none/seed0/record.json").read_text())
    edit_record(run, "vit768-none", training={**record["training"], "graphed": True, "image_cache": "cuda:0"})
    edit_record(run, "clip512-none", training__world_size=2)
    ms = json.loads((run / "cells/vit768-ms/seed0/record.json").read_text())
    edit_record(run, "vit768-ms", training={**ms["training"], "compiled": True, "graphed": True})
    result = report(str(run), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    trained = sum(1 for p in run.glob("cells/*/seed0/record.json") if json.loads(p.read_text()).get("training"))
    line = next(l for l in (tmp_path / "r" / "report.md").read_text().splitlines() if l.startswith("- **Training**: "))
    assert line == (
        f"- **Training**: steps replayed as CUDA graphs, images from cuda:0 (1 cell); compiled blocks, steps replayed as "
        f"CUDA graphs, images from cpu (1 cell); eager steps, DDP over 2 processes, images from cpu (1 cell); eager steps, "
        f"images from cpu ({trained - 3} cells)"
    )


def test_report_defaults_to_the_latest_run_under_runs(grid_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    empty = report()
    assert empty.exit_code == 2 and "reidbench run" in empty.output
    (tmp_path / "runs").mkdir()
    older = copy_run(grid_run, tmp_path / "runs" / "older")
    newer = copy_run(grid_run, tmp_path / "runs" / "newer")
    os.utime(older / "run.json", (1_000_000, 1_000_000))
    os.utime(newer / "run.json", (2_000_000, 2_000_000))
    result = report()
    assert result.exit_code == 0, result.output
    assert (newer / "report" / "report.html").exists() and not (older / "report").exists()


def test_baseline_shows_deltas_and_cells_present_in_one_run_only(grid_run: Path, seeds_run: Path, tmp_path: Path) -> None:
    result = report(str(seeds_run), "--baseline", str(grid_run), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    assert "Only in the baseline: vit768-ms, clip512-none, clip512proj-none, clip512proj-ms" in md
    row = markdown_rows(md)["vit768-none"]
    assert row["params M total (backbone / neck / head)"].endswith("(0.0%)")  # the same model as in the baseline
    assert " pp " in row["mAP %"] and "% " in row["bs1 img/s"]
    html = (tmp_path / "report.html").read_text()
    assert 'class="delta' in html


def test_fail_on_passes_between_two_runs_of_the_same_models(grid_run: Path, seeds_run: Path, tmp_path: Path) -> None:
    result = report(str(seeds_run), "--baseline", str(grid_run), "--out", str(tmp_path), "--fail-on", "gflops:+0%,params:+0%,gmacs:+0")
    assert result.exit_code == 0, result.output
    assert "regression gate --fail-on gflops:+0%,params:+0%,gmacs:+0: passed" in result.output


@pytest.fixture(scope="module")
def better_baseline(grid_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid run, except that vit768-ms had 5 points more mAP and 10 % fewer GFLOPs."""
    base = copy_run(grid_run, tmp_path_factory.mktemp("baseline") / "base")
    record = json.loads((grid_run / "cells/vit768-ms/seed0/record.json").read_text())
    edit_record(base, "vit768-ms", metrics__mAP=record["metrics"]["mAP"] + 0.05, gflops=record["gflops"] * 0.9)
    return base


@pytest.mark.parametrize("spec, code, expected", [
    ("mAP:-1.0", 1, "vit768-ms: mAP"),
    ("mAP:-1.0,latency_ms:+1000%", 1, "FAILED, 1 regression(s)"),
    ("mAP:-6.0", 0, "passed"),
    ("gflops:+0%", 1, "vit768-ms: gflops"),
    ("gflops:+12%", 0, "passed"),
    ("mINP:-50,rank1:-100,img_per_s:-99%,latency_ms@2:+1000%", 0, "passed"),
])
def test_fail_on_is_a_regression_gate(grid_run: Path, better_baseline: Path, tmp_path: Path, spec: str, code: int, expected: str) -> None:
    result = report(str(grid_run), "--baseline", str(better_baseline), "--out", str(tmp_path), "--fail-on", spec)
    assert result.exit_code == code, result.output
    assert expected in result.output
    md = (tmp_path / "report.md").read_text()
    assert "Regression gate" in md and ("FAILED" in md) == (code == 1)
    assert markdown_rows(md)["vit768-ms"]["mAP %"].endswith("(-5.0 pp ✗)")  # marked as a regression in the table


def test_the_gate_compares_training_speed_without_the_first_epoch(grid_run: Path, tmp_path: Path) -> None:
    """train_img_per_s_steady: a compile or capture in the first epoch does not hide a slower step."""
    run, base = copy_run(grid_run, tmp_path / "run"), copy_run(grid_run, tmp_path / "base")  # trained one epoch: no steady speed
    for cell in ("vit768-none", "vit768-ms"):
        edit_record(base, cell, training__steady_img_per_s=1000.0)
        edit_record(run, cell, training__steady_img_per_s=1000.0 if cell == "vit768-none" else 800.0)
    result = report(str(run), "--baseline", str(base), "--out", str(tmp_path / "r"), "--fail-on", "train_img_per_s_steady:-10%")
    assert result.exit_code == 1, result.output
    assert "vit768-ms: train_img_per_s_steady" in result.output and "1 regression(s)" in result.output


def test_a_cell_that_stopped_working_fails_the_gate(grid_run: Path, tmp_path: Path) -> None:
    broken = copy_run(grid_run, tmp_path / "broken")
    edit_record(broken, "vit768-none", status="failed", error="RuntimeError: boom")
    result = report(str(broken), "--baseline", str(grid_run), "--out", str(tmp_path / "r"), "--fail-on", "mAP:-100")
    assert result.exit_code == 1, result.output
    assert "vit768-none: status done in the baseline, failed now (RuntimeError: boom)" in result.output
    assert markdown_rows((tmp_path / "r" / "report.md").read_text())["vit768-none"]["status"] == "**failed**: RuntimeError: boom"


@pytest.mark.parametrize("spec, message", [
    ("mAP", "malformed"),
    ("mAP:1.0", "malformed"),
    ("mAP:-one", "malformed"),
    ("speed:+10%", "unknown metric 'speed'"),
    ("gflops@8:+1%", "gflops has no batch size"),
    (",", "names no threshold"),
])
def test_a_malformed_fail_on_exits_2_and_lists_the_metrics(grid_run: Path, tmp_path: Path, spec: str, message: str) -> None:
    result = report(str(grid_run), "--baseline", str(grid_run), "--out", str(tmp_path), "--fail-on", spec)
    assert result.exit_code == 2, result.output
    assert message in result.output and "latency_ms" in result.output and "peak_train_mib" in result.output
    assert not (tmp_path / "report.md").exists()


def test_fail_on_needs_a_baseline(grid_run: Path) -> None:
    result = report(str(grid_run), "--fail-on", "mAP:-1")
    assert result.exit_code == 2 and "--baseline" in result.output


def test_a_damaged_run_is_reported_as_far_as_it_goes(grid_run: Path, tmp_path: Path) -> None:
    run = copy_run(grid_run, tmp_path / "damaged")
    (run / "cells/vit768-ms/seed0/record.json").unlink()
    (run / "cells/clip512-none/seed0/record.json").write_text('{"cell": "clip512-none", "stat')
    shutil.rmtree(run / "cells/clip512proj-ms")
    edit_record(run, "clip512proj-none", metrics="not a dict")
    entry = EpochEntry(1, loss=3.0, id_loss=2.0, triplet_loss=1.0, accuracy=0.1, lr=3.5e-4, seconds=1.0, img_per_s=100.0)
    (run / "cells/vit768-none/seed0/train_log.jsonl").write_text(json.dumps(entry.to_dict()) + '\n{"epoch": 2, "loss": "high"}\n{"epo')
    result = report(str(run), "--out", str(tmp_path / "r"), rank_lists=True)
    assert result.exit_code == 0, result.output
    assert "missing: vit768-ms seed 0" in result.output
    assert "damaged: clip512-none seed 0 — cells/clip512-none/seed0/record.json does not parse as JSON" in result.output
    assert "missing: clip512proj-ms seed 0" in result.output and "not started" in result.output
    assert "damaged: clip512proj-none seed 0 — cells/clip512proj-none/seed0/record.json has a malformed field" in result.output
    assert "train_log.jsonl: 2 line(s) are not epoch entries and were skipped" in result.output
    md = (tmp_path / "r" / "report.md").read_text()
    rows = markdown_rows(md)
    assert list(rows) == CELLS
    assert rows["vit768-ms"]["status"].startswith("**missing**") and rows["clip512-none"]["status"].startswith("**damaged**")
    assert "## Missing or damaged cells" in md
    assert len([p for p in (tmp_path / "r").glob("*.png") if not p.name.startswith("ranklist-")]) == PLOTS
    assert [p.name for p in (tmp_path / "r").glob("ranklist-*.png")] == ["ranklist-vit768-none.png"]  # the one readable done cell


def test_a_cell_missing_one_seed_names_that_seed(seeds_run: Path, tmp_path: Path) -> None:
    """Seeds come out of pandas as numpy integers; the row must still say which seed is missing, not 'seed ?'."""
    run = copy_run(seeds_run, tmp_path / "one-seed-missing")
    (run / "cells/vit768-none/seed1/record.json").unlink()
    result = report(str(run), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    status = markdown_rows((tmp_path / "r" / "report.md").read_text())["vit768-none"]["status"]
    assert status.startswith("**missing**: seed 1: cells/vit768-none/seed1/record.json is missing"), status


def test_a_run_without_run_json_still_reports_its_records(grid_run: Path, tmp_path: Path) -> None:
    run = copy_run(grid_run, tmp_path / "no-meta")
    (run / "run.json").unlink()
    (run / "environment.json").write_text("{not json")
    result = report(str(run), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "run.json is missing" in result.output and "environment.json is damaged" in result.output
    assert set(markdown_rows((tmp_path / "r" / "report.md").read_text())) == set(CELLS)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "holds no readable cell record"),
    (lambda p: None, "is not a directory"),
    (lambda p: (p / "cells/vit768-ms/seed0").mkdir(parents=True), "vit768-ms seed 0: missing"),
])
def test_a_directory_without_records_exits_2_naming_it(tmp_path: Path, make, message: str) -> None:
    target = tmp_path / "not-a-run"
    make(target)
    result = report(str(target))
    assert result.exit_code == 2, result.output
    assert message in result.output and str(target) in result.output


def test_seeds_show_the_mean_and_its_interval(seeds_run: Path, tmp_path: Path) -> None:
    result = report(str(seeds_run), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    rows = markdown_rows(md)
    assert list(rows) == ["vit768-none", "clip512-ms"] and rows["clip512-ms"]["seeds"] == "2"
    row = rows["vit768-none"]
    assert row["seeds"] == "2" and " [" in row["mAP %"] and " [" in row["train s"]
    assert " [" not in row["GFLOPs"] and row["GFLOPs"] != "—"  # deterministic: the same for every seed
    assert rows["clip512-ms"]["status"].startswith("**xfail**: ") and rows["clip512-ms"]["mAP %"] == "—"
    assert "Student's t over the seeds" in md
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame["seed"]) == [0, 1, 0, 1] and list(frame["status"]) == ["done", "done", "xfail", "xfail"]


def test_the_seeds_column_counts_the_seeds_behind_the_numbers() -> None:
    from reidbench.reports.summary import CellSummary, Stat
    from reidbench.reports.tables import report_table

    def cell(name: str, statuses: dict[int, str], n: int) -> CellSummary:
        return CellSummary(name, name, "none", "done", None, statuses=statuses, values={"mAP": Stat(0.5, n)})

    table = report_table([cell("a", {0: "done", 1: "done"}, 2), cell("b", {0: "done", 1: "failed", 2: "done"}, 2)], [])
    seeds = table.columns.index("seeds")
    assert [row[seeds].text for row in table.rows] == ["2", "2 of 3"]
    assert any("'k of n'" in note for note in table.footnotes)


def test_fail_on_grammar() -> None:
    mAP, latency, rate = parse_fail_on("mAP:-1.0, latency_ms@64:+10%,img_per_s:-5%")
    assert (mAP.quantity.name, mAP.sign, mAP.amount, mAP.relative, mAP.batch) == ("mAP", "-", 1.0, False, None)
    assert (latency.batch, latency.relative, latency.amount) == (64, True, 10.0)
    assert rate.quantity.higher_is_better and rate.sign == "-"
    with pytest.raises(UsageError, match="Metrics: mAP, rank1"):
        parse_fail_on("loss:+1")
    assert Delta(10.0, 12.0, higher_is_better=False).relative == pytest.approx(20.0)
    assert Delta(10.0, 12.0, higher_is_better=False).better is False
    assert Delta(0.0, 0.0, higher_is_better=True).better is None


def test_pareto_frontier_keeps_points_no_cheaper_point_beats() -> None:
    points = [(1.0, 10.0), (2.0, 9.0), (2.0, 12.0), (3.0, 11.0), (4.0, 15.0)]
    assert pareto_frontier(points) == [(1.0, 10.0), (2.0, 12.0), (4.0, 15.0)]


def test_a_report_says_first_that_its_numbers_come_from_random_weights_on_synthetic_data(grid_run: Path, tmp_path: Path) -> None:
    result = report(str(grid_run), "--out", str(tmp_path))
    assert result.exit_code == 0 and "read this first:" in result.output
    md = (tmp_path / "report.md").read_text()
    banner = md.splitlines()[2]
    assert banner.startswith("> **Read this first:** The backbones clip512, clip512proj, vit768 started from random initialisation")
    assert "synthetic set" in banner
    assert "neither ReID results nor a comparison of CLIP and ImageNet pretraining" in banner
    assert "- **Initialisation**: vit768: random initialisation" in md
    html = (tmp_path / "report.html").read_text()
    assert html.index('class="banner"') < html.index("<h2>Results</h2>")


def test_the_header_counts_identities_as_data_info_does(grid_run: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    """One count for both: the gallery's distractors are images, not an identity (the header said one more id)."""
    info = cli.invoke(app, ["data", "info", f"synthetic:{inputs['data']}", "--json"])
    gallery = json.loads(info.stdout)["counts"]["gallery"]
    assert gallery["distractors"] > 0
    words = f"({gallery['distractors']} of them distractors)"
    assert words in cli.invoke(app, ["data", "info", f"synthetic:{inputs['data']}"]).output
    assert report(str(grid_run), "--out", str(tmp_path)).exit_code == 0
    header = next(l for l in (tmp_path / "report.md").read_text().splitlines() if l.startswith("- **Dataset**: "))
    assert f"gallery {gallery['ids']} ids / {gallery['images']} images {words}" in header


def test_window_notes_that_change_how_the_table_reads_stand_beside_it(grid_run: Path, tmp_path: Path) -> None:
    assert report(str(grid_run), "--out", str(tmp_path)).exit_code == 0
    md = (tmp_path / "report.md").read_text()
    results, plots = md.index("## Results"), md.index("## Plots")
    assert "Neck: ms neck: window" in md[results:plots]


def test_the_baseline_comparison_names_a_different_set_and_thread_count(tmp_path: Path) -> None:
    from reidbench.reports.compare import setting_differences
    from reidbench.reports.load import LoadedRun

    def run(overrides: dict, threads: int) -> LoadedRun:
        return LoadedRun(tmp_path, {"overrides": overrides}, {"torch_threads": threads}, [], {}, [], [], [])

    same = setting_differences(run({}, 2), run({}, 2))
    differ = setting_differences(run({"train.epochs": 3}, 1), run({}, 2))
    assert same == []
    assert differ == ["--set: none in the baseline, train.epochs=3 here", "torch threads: 2 in the baseline, 1 here"]
