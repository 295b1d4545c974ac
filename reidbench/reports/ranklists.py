"""Rank lists: what each cell retrieved for a few queries, right and wrong, and its worst queries; `reidbench inspect`.

A number is trusted once its failures have been looked at. Every evaluated cell
keeps each query's first gallery indices (queries.npz's `test/top`, from the
same pass as its metrics); this module turns them into pictures, with the
images of the dataset the run names, opened again (`reidbench.data.reopen`).

* **The same queries in every cell.** They are picked by index, spread evenly
  over the queries the protocol scores, never by how well a model did: whether
  a query is scored depends on the data alone, so every cell shows the same
  ones and two cells can be compared picture by picture.
* **The worst queries by number.** Each cell's lowest-AP queries are listed
  with identity, AP and first correct rank, images or not; `inspect` draws any one.
* **Absent pieces say so in one line.** A run made before rank lists were
  kept, or whose dataset is gone or changed, still reports: the section says
  which, and why no image is shown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from reidbench.data.images import decode_sample
from reidbench.data.records import ReidDataset
from reidbench.data.reopen import reopen
from reidbench.errors import UsageError
from reidbench.harness.evaluate import queries_key
from reidbench.reports.load import LoadedRun
from reidbench.reports.plots import Plot
from reidbench.reports.ranklist_figure import Entry, RankList, rank_list_png
from reidbench.reports.render import Section
from reidbench.reports.tables import Table, TableCell
from reidbench.rundir import RunDir
from reidbench.schema import QueryScores

SHOWN_QUERIES = 4
"""How many queries the report draws per cell."""
WORST_QUERIES = 5
"""How many of each cell's lowest-AP queries the report lists."""
THUMBNAIL_HEIGHT = 128
"""Pixels of a picture's height in a rank list (its width follows the dataset's native aspect)."""
TITLE = "Rank lists"
PREDATES = ("This run predates rank lists: its cells' queries.npz files hold no test/top (each query's first gallery "
            "images, which newer runs keep); run the cells again to see what they retrieve.")


def shown_queries(scores: QueryScores, count: int = SHOWN_QUERIES) -> list[int]:
    """`count` query rows spread evenly over the scored queries (the middle of `count` equal parts), by index alone."""
    candidates = np.flatnonzero(scores.valid)
    if candidates.size == 0:
        candidates = np.arange(len(scores.pid))
    picks = ((np.arange(min(count, candidates.size)) + 0.5) * candidates.size / max(count, 1)).astype(int)
    return [int(candidates[i]) for i in dict.fromkeys(picks.tolist())]


def worst_queries(scores: QueryScores, count: int = WORST_QUERIES) -> list[int]:
    """The scored queries of lowest AP, lowest first (ties by query row)."""
    scored = np.flatnonzero(scores.valid)
    order = np.lexsort((scored, scores.ap[scored]))
    return [int(q) for q in scored[order[:count]]]


def rank_list(scores: QueryScores, dataset: ReidDataset, query: int, top: int) -> RankList:
    """Query row `query`'s first `top` stored gallery entries, each marked right (the query's identity) or wrong."""
    assert scores.top is not None
    asked = dataset.query[query]
    entries = [Entry(int(g), dataset.gallery[g].pid, dataset.gallery[g].camid, dataset.gallery[g].pid == asked.pid)
               for g in scores.top[query, :top] if g >= 0]
    return RankList(query, asked.pid, asked.camid, float(scores.ap[query]), int(scores.first_rank[query]), entries)


@dataclass
class Thumbnails:
    """A dataset's query and gallery pictures at rank-list size, decoded once each (every cell shows the same queries)."""

    dataset: ReidDataset
    cache: dict[tuple[str, int], list[Optional[np.ndarray]]] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.dataset.native_size
        return THUMBNAIL_HEIGHT, max(1, round(THUMBNAIL_HEIGHT * width / height))

    def __call__(self, split: str, row: int) -> list[Optional[np.ndarray]]:
        if (split, row) not in self.cache:
            record = getattr(self.dataset, split)[row]
            views = len(record.sources())
            try:
                array, _, _ = decode_sample(record.sources(), self.size)
                self.cache[(split, row)] = [array[:, :, 3 * v: 3 * v + 3] for v in range(views)]
            except Exception:  # noqa: BLE001 - a file unreadable now is drawn as such, like the loaders skip one
                self.cache[(split, row)] = [None] * views
        return self.cache[(split, row)]


def lines_up(scores: QueryScores, dataset: ReidDataset) -> Optional[str]:
    """Why the stored rows do not fit this dataset's query and gallery (None when they do): counts and identities."""
    if len(dataset.query) != len(scores.pid) or not np.array_equal(np.array([r.pid for r in dataset.query]), scores.pid):
        return (f"the dataset's query set ({len(dataset.query)} images) is not the one the run scored "
                f"({len(scores.pid)} queries, with their identities)")
    if scores.top is not None and scores.top.size and int(scores.top.max()) >= len(dataset.gallery):
        return f"the dataset's gallery ({len(dataset.gallery)} images) is smaller than the one the run ranked"
    return None


@dataclass
class CellLists:
    """One cell's seed whose rank lists are shown, and its per-query scores of the test split."""

    cell: str
    seed: int
    scores: QueryScores


def _cells(run: LoadedRun) -> list[CellLists]:
    """Per cell (the grid's order), its lowest done seed with per-query scores of the test split."""
    found: dict[str, CellLists] = {}
    for record in sorted(run.records, key=lambda r: int(r.get("seed") or 0)):
        cell, seed = record.get("cell"), int(record.get("seed") or 0)
        if record.get("status") != "done" or cell in found:
            continue
        scores = (run.queries(cell, seed) or {}).get(queries_key())
        if scores is not None:
            found[cell] = CellLists(cell, seed, scores)
    order = {cell: i for i, cell in enumerate(run.cell_order)}
    return sorted(found.values(), key=lambda c: order.get(c.cell, len(order)))


def rank_list_section(run: LoadedRun) -> Optional[Section]:
    """The report's section: one figure per cell (the same queries), and each cell's worst queries; None for a run
    with no evaluated cell (or an archived one, which keeps no queries.npz)."""
    if run.archived is not None or not any(r.get("status") == "done" for r in run.records):
        return None
    cells = _cells(run)
    shown = [c for c in cells if c.scores.top is not None]
    if not shown:
        return Section(TITLE, "", [PREDATES])
    items = [f"{c.cell} seed {c.seed}: made before rank lists were kept (no test/top in its queries.npz)."
             for c in cells if c.scores.top is None]
    picks = shown_queries(shown[0].scores)
    try:
        dataset: Optional[ReidDataset] = reopen(run.meta.get("dataset") or {})
    except UsageError as exc:
        dataset = None
        items.insert(0, f"Images not shown: {exc}")
    figures = [] if dataset is None else _figures(shown, picks, dataset, items)
    exclusion = str((run.meta.get("dataset") or {}).get("exclusion") or "camera")
    return Section(TITLE, _intro(picks, dataset, exclusion), items, figures=figures, tables=[_worst_table(c) for c in shown])


def _figures(shown: list[CellLists], picks: list[int], dataset: ReidDataset, items: list[str]) -> list[Plot]:
    """One PNG per cell whose stored rows fit the dataset; a line in `items` for each that does not."""
    thumbnails, figures = Thumbnails(dataset), []
    for lists in shown:
        problem = lines_up(lists.scores, dataset)
        if problem:
            items.append(f"{lists.cell} seed {lists.seed}: images not shown: {problem}.")
            continue
        assert lists.scores.top is not None
        top = lists.scores.top.shape[1]
        ranked = [rank_list(lists.scores, dataset, q, top) for q in picks]
        title = f"{lists.cell}, seed {lists.seed}: queries {', '.join(map(str, picks))}, each with its first {top} gallery images"
        figures.append(Plot(f"ranklist-{_file_safe(lists.cell)}.png", f"Rank lists: {lists.cell} (seed {lists.seed})",
                            _caption(dataset), rank_list_png(ranked, thumbnails, dataset.modalities, title)))
    return figures


def _file_safe(cell: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", cell)


def _intro(picks: list[int], dataset: Optional[ReidDataset], exclusion: str) -> str:
    modal = (" A multi-modal sample is one column, its modalities one per row (RGB, then near-infrared, then thermal)."
             if dataset is not None and dataset.multimodal else "")
    return (f"What each cell retrieved on the test split: the same queries in every cell (rows {', '.join(map(str, picks))} "
            "of the query set, spread evenly over the scored queries by index, not chosen by score), each followed by its "
            f"first gallery images in rank order, after the protocol's removals (same identity and same {exclusion}; junk). "
            "A correct image (the query's identity) has a thick green frame and ✓, a wrong one a thin red frame and ✗."
            f"{modal} Below, each cell's worst queries by AP; `reidbench inspect RUN --cell CELL --query N` draws any query.")


def _caption(dataset: ReidDataset) -> str:
    return (f"Labels: rank, ✓ correct or ✗ wrong, identity ('distr.': a distractor) and camera (as the file names number it) of each image of "
            f"{dataset.name}; under each query its AP and the rank of its first correct match.")


def _worst_table(lists: CellLists) -> tuple[str, Table]:
    scores, worst = lists.scores, worst_queries(lists.scores)
    rows = [[TableCell(str(q)), TableCell(str(int(scores.pid[q]))), TableCell(f"{100 * scores.ap[q]:.1f}"),
             TableCell(str(int(scores.first_rank[q])))] for q in worst]
    caption = f"{lists.cell} seed {lists.seed}: the {len(rows)} queries of lowest AP"
    return caption, Table(["query", "identity", "AP %", "first correct rank"], rows, [lists.cell] * len(rows))


def inspect_png(run_root: Path, cell: str, query: int, seed: Optional[int] = None, top: Optional[int] = None) -> tuple[bytes, int]:
    """`reidbench inspect`: one query's rank list in one cell as a PNG, and the seed it is from; a UsageError saying
    what to change for an unknown cell or seed, a query out of range, a run without rank lists or its dataset gone."""
    run = RunDir(run_root)
    meta = run.meta()
    seed = _seed(run, cell, seed)
    scores = (run.read_queries(cell, seed) or {}).get(queries_key())
    if scores is None:
        record = run.read_record(cell, seed)
        status = str(record.status) if record is not None else "no record yet"
        if status == "done":
            raise UsageError(f"{cell} seed {seed} was evaluated before reidbench kept per-query results (it has no "
                             "queries.npz), so it has no rank lists. Run the cell again to see what it retrieves.")
        raise UsageError(f"{cell} seed {seed} has no per-query results (its status: {status}); only a cell that was "
                         "trained and evaluated has rank lists.")
    if scores.top is None:
        raise UsageError(f"{cell} seed {seed} was evaluated before reidbench kept rank lists: its queries.npz has no "
                         "test/top. Run the cell again (e.g. reidbench run --only CELL) to see what it retrieves.")
    if not 0 <= query < len(scores.pid):
        raise UsageError(f"--query {query} is out of range: {cell} was scored on {len(scores.pid)} queries, "
                         f"numbered 0 to {len(scores.pid) - 1} (the report's tables use the same numbers).")
    width = scores.top.shape[1]
    if top is not None and not 1 <= top <= width:
        raise UsageError(f"--top {top}: the run kept each query's first {width} gallery images; give 1 to {width}.")
    dataset = reopen(meta.dataset)
    problem = lines_up(scores, dataset)
    if problem:
        raise UsageError(f"{problem}; the images cannot be matched to the run's rank lists.")
    ranked = rank_list(scores, dataset, query, top or width)
    title = f"{cell}, seed {seed}: query {query}, its first {len(ranked.entries)} gallery images"
    return rank_list_png([ranked], Thumbnails(dataset), dataset.modalities, title), seed


def _seed(run: RunDir, cell: str, seed: Optional[int]) -> int:
    """The seed asked for, or the cell's lowest; an unknown cell or seed names the ones there are."""
    slots = run.slots_on_disk()
    seeds = sorted(s for c, s in slots if c == cell)
    if not seeds:
        cells = sorted({c for c, _ in slots})
        raise UsageError(f"--cell {cell!r}: the run has no such cell; its cells are {', '.join(cells) or 'none yet'}.")
    if seed is None:
        return seeds[0]
    if seed not in seeds:
        raise UsageError(f"--seed {seed}: {cell} has seed(s) {', '.join(map(str, seeds))} in this run.")
    return seed
