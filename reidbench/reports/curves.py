"""Curves over epochs and over ranks: the periodic evaluation's scores per epoch, and each cell's CMC curve.

- `validation_curves`: mAP and rank-1 after every scored epoch (eval.period),
  from the train logs' val_map and val_rank1, one line per cell and seed; drawn
  only where some cell has such entries.
- `cmc_curves`: each cell's CMC curve on the test split, ranks 1 to `CMC_RANKS`
  (fewer where the record's CMC is shorter), mean over its seeds, computed from
  queries.npz's first correct ranks by `evaluation.metrics.cmc_curve`, the same
  function that gave the record its rank-1, -5 and -10.
- `validation_section`: where the periodic evaluation scored, how often, and
  which identities left training for a validation split (run.json's dataset).
"""
from __future__ import annotations

from typing import Any, Optional

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reidbench.errors import UsageError
from reidbench.evaluation.metrics import cmc_curve
from reidbench.reports.load import LoadedRun
from reidbench.reports.plots import STYLE, Plot, Styles, _cell_label, _epoch_axis, _legend_below, _png, _why_absent
from reidbench.reports.render import Section
from reidbench.reports.summary import CellSummary
from reidbench.schema import EpochEntry, is_number

CMC_RANKS = 20
"""The CMC figure's last rank: past it the curves of trained cells are flat against 100 %."""
TEST_KEY = "test"
"""The test split's per-query scores in queries.npz (`harness.evaluate.queries_key()`)."""
SPLIT_NAMES = {"val": "validation split (identities carved from training)", "test": "test split"}


def curve_plots(run: LoadedRun, summaries: list[CellSummary]) -> list[Plot]:
    """The validation curves (where some cell has periodic scores) and the CMC curves (where some cell has queries.npz)."""
    styles = Styles(summaries)
    with matplotlib.rc_context(STYLE):
        plots = [validation_curves(summaries, styles, run.logs, splits(run)), cmc_curves(run, summaries, styles)]
    return [plot for plot in plots if plot is not None]


def splits(run: LoadedRun) -> list[str]:
    """The splits the cells' periodic evaluations scored on (their records' `validation.split`), in first-seen order."""
    return list(dict.fromkeys(str(v["split"]) for r in run.records if isinstance(v := r.get("validation"), dict) and v.get("split")))


def scored_epochs(entries: list[EpochEntry]) -> list[EpochEntry]:
    """A train log's own epochs (not an earlier stage's) that the periodic evaluation scored."""
    return [e for e in entries if e.stage is None and is_number(e.val_map)]


def validation_curves(
    summaries: list[CellSummary], styles: Styles, logs: dict[tuple[str, int], list[EpochEntry]], split_names: list[str],
) -> Optional[Plot]:
    """mAP and rank-1 per scored epoch, one line per cell and seed (the cell's colour, the seed's marker)."""
    scored = {key: scored_epochs(entries) for key, entries in logs.items()}
    if not any(scored.values()):
        return None
    where = " / ".join(SPLIT_NAMES.get(s, s) for s in split_names) or "the periodic evaluation's split"
    fig = Figure(figsize=(12, 5.8))
    map_ax, rank_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    absent, handles = [], []
    for s in summaries:
        runs = [(key[1], scored[key]) for key in sorted(scored) if key[0] == s.cell and scored[key]]
        if not runs:
            absent.append(_why_absent(s, "no periodic evaluation in its train log"))
            continue
        label = _cell_label(s) + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        for index, (seed, entries) in enumerate(runs):
            kw = dict(color=styles.colour(s), marker=styles.marker(seed), linestyle=styles.linestyle(s), markersize=6, linewidth=1.5)
            epochs = [e.epoch for e in entries]
            (line,) = map_ax.plot(epochs, [100 * float(e.val_map) for e in entries], label=label if index == 0 else None, **kw)
            rank_ax.plot(epochs, [100 * float(e.val_rank1) if is_number(e.val_rank1) else np.nan for e in entries], **kw)
            if index == 0:
                handles.append(line)
    last_epoch = max(e.epoch for entries in logs.values() for e in entries if e.stage is None)
    for ax, ylabel, title in ((map_ax, "mAP (%)", "mAP per epoch"), (rank_ax, "rank-1 (%)", "Rank-1 per epoch")):
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _epoch_axis(ax, last_epoch)
    fig.suptitle(f"Scored during training on the {where}", fontsize=12)
    _legend_below(fig, absent, handles + (styles.seed_handles() if len(styles.seeds) > 1 else []), wspace=0.25)
    fig.subplots_adjust(top=0.86)
    return Plot("validation_curves.png", "Validation curves",
                f"mAP and rank-1 on the {where} after every scored epoch (eval.period), one line per seed, from each cell's "
                "train_log.jsonl (val_map, val_rank1). They are curves only: no checkpoint is chosen by them, every cell's "
                "final weights are its last epoch's, scored on the test split in the table.", _png(fig))


def cell_cmc(run: LoadedRun, cell: str, ranks: int = CMC_RANKS) -> Optional[np.ndarray]:
    """The cell's CMC curve on the test split, ranks 1..`ranks` (at most its records' CMC length), mean over the done
    seeds that kept their per-query scores; None where none did."""
    curves = []
    for record in run.records:
        if record.get("cell") != cell or record.get("status") != "done" or record.get("seed") is None:
            continue
        scores = (run.queries(cell, int(record["seed"])) or {}).get(TEST_KEY)
        recorded = ((record.get("metrics") or {}).get("cmc")) or []
        if scores is None:
            continue
        try:
            curves.append(cmc_curve(scores.first_rank, min(ranks, len(recorded) or ranks)))
        except UsageError:
            continue  # no query scored: the record has no rank-1 either
    if not curves:
        return None
    shortest = min(len(c) for c in curves)
    return np.mean([c[:shortest] for c in curves], axis=0)


def cmc_curves(run: LoadedRun, summaries: list[CellSummary], styles: Styles) -> Optional[Plot]:
    """Each cell's CMC on the test split (mean over seeds), one line per cell; None where no cell has per-query scores."""
    curves = {s.cell: cell_cmc(run, s.cell) for s in summaries}
    if all(c is None for c in curves.values()):
        return None
    fig = Figure(figsize=(10, 6.2))
    ax = fig.add_subplot()
    absent, handles = [], []
    for s in summaries:
        curve = curves[s.cell]
        if curve is None:
            absent.append(_why_absent(s, "no per-query scores (queries.npz)"))
            continue
        seeds = sum(1 for r in run.records if r.get("cell") == s.cell and r.get("status") == "done")
        (line,) = ax.plot(range(1, len(curve) + 1), 100 * curve, color=styles.colour(s), marker="o",
                          linestyle=styles.linestyle(s), markersize=5, linewidth=1.5,
                          label=_cell_label(s) + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        handles.append(line)
    longest = max(len(c) for c in curves.values() if c is not None)
    ax.set_xlabel("rank k (gallery entries looked at, best first)")
    ax.set_ylabel("matching rate (%): queries with a correct match in the top k")
    ax.set_title("CMC curves on the test split")
    ax.set_xlim(0.5, longest + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_below(fig, absent, handles, wspace=0.2)
    return Plot("cmc_curves.png", "CMC curves",
                f"Share of the test split's scored queries whose first correct match is within the top k, for k = 1 to "
                f"{longest}, mean over each cell's seeds, from its queries.npz; at k = 1 it is the table's rank-1.", _png(fig))


def validation_section(run: LoadedRun) -> Optional[Section]:
    """How the periodic evaluation scored (split, period) and what it took from training; None where no cell had one."""
    found = [r for r in run.records if isinstance(r.get("validation"), dict)]
    if not found:
        return None
    items = []
    for (split, period, queries, gallery), cells in _by_setting(found).items():
        every = "every epoch" if period == 1 else f"every {period} epochs"
        same = (": the split the table scores, so an epoch read off these curves would be one chosen on the test set "
                "(eval.split = \"val\" scores on identities carved from training instead)") if split == "test" else ""
        items.append(f"{', '.join(cells)}: scored on the {SPLIT_NAMES.get(split, split)} after {every} "
                     f"({queries} queries against {gallery} gallery images), plain distances (no re-ranking){same}")
    carved: dict[str, Any] = (run.meta.get("dataset") or {}).get("validation") or {}
    if carved:
        pids = [str(p) for p in carved.get("pids") or []]
        shown = ", ".join(pids[:40]) + (f" and {len(pids) - 40} more" if len(pids) > 40 else "")
        items.append(f"{carved.get('ids')} identities ({carved.get('images')} images) left the training split for the "
                     f"validation split, so every cell trained on that many fewer identities than the dataset's training "
                     f"split holds: {carved.get('rule')}. Their identity numbers: {shown}")
    return Section(
        "Validation during training",
        "The scores after each scored epoch are in the validation curves below and in each cell's train_log.jsonl. No checkpoint "
        "is chosen by them: the final weights are always the last epoch's, and the table scores them on the test split.",
        items, tone="warn" if carved else "",
    )


def _by_setting(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[str]]:
    grouped: dict[tuple[Any, ...], list[str]] = {}
    for record in records:
        v = record["validation"]
        key = (v.get("split"), v.get("period"), v.get("num_query"), v.get("num_gallery"))
        cells = grouped.setdefault(key, [])
        if record["cell"] not in cells:
            cells.append(record["cell"])
    return grouped
