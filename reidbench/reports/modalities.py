"""The missing-modality section of a multi-modal run's report: per cell, each modality subset x metric.

The subsets and the rule for an absent modality come from the evaluation
(`reidbench.evaluation.modality_subsets`); this module only tabulates what the
records hold, as the mean over the seeds that have it with its 95 % interval (Student's t over seeds; one
seed: the bootstrap over query identities where queries.npz holds the subset's per-query scores).
"""
from __future__ import annotations

from typing import Optional

from reidbench.evaluation.modality_subsets import ABSENT_RULE, SUBSET_METRICS
from reidbench.reports.load import LoadedRun
from reidbench.reports.render import Section
from reidbench.reports.statistics import CONFIDENCE, Operand, seed_queries, seed_values
from reidbench.stats import identity_bootstrap_interval, mean_interval
from reidbench.reports.tables import Table, TableCell
from reidbench.schema import is_number

LABELS = {"mAP": "mAP %", "rank1": "R-1 %", "rank5": "R-5 %", "rank10": "R-10 %", "mINP": "mINP %"}


def _collect(run: LoadedRun) -> dict[str, dict[str, dict[str, list[float]]]]:
    """cell -> subset -> metric -> values over seeds, in record order."""
    found: dict[str, dict[str, dict[str, list[float]]]] = {}
    for record in run.records:
        subsets = (record.get("metrics") or {}).get("modality_subsets")
        if not isinstance(subsets, dict):
            continue
        for subset, metrics in subsets.items():
            for key in SUBSET_METRICS:
                value = (metrics or {}).get(key)
                if is_number(value):
                    found.setdefault(record["cell"], {}).setdefault(subset, {}).setdefault(key, []).append(value)
    return found


def _text(run: LoadedRun, operand: Operand, metric: str, values: Optional[list[float]]) -> str:
    """'mean [low, high]' in percent: t over seeds, or the identity bootstrap of the one seed's queries."""
    if not values:
        return "—"
    if len(values) > 1:
        interval = mean_interval(values, CONFIDENCE)
        low, high = interval.low, interval.high
    else:
        found = seed_values(run, operand, metric)
        queries = seed_queries(run, operand, metric, found) if len(found) == 1 else None
        if queries is None:
            return f"{100 * values[0]:.1f}"
        bootstrap = identity_bootstrap_interval(*next(iter(queries.values())), confidence=CONFIDENCE)
        low, high = bootstrap.low, bootstrap.high
    return f"{100 * sum(values) / len(values):.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def modality_section(run: LoadedRun) -> Optional[Section]:
    """One table per multi-modal cell (rows: subsets R ... RNT; columns: the metrics); None for a single-modal run."""
    found = _collect(run)
    if not found:
        return None
    tables: list[tuple[str, Table]] = []
    for cell, subsets in found.items():
        seeds = max(len(v) for metrics in subsets.values() for v in metrics.values())
        rows = [[TableCell(subset), *(TableCell(_text(run, Operand(cell, subset), key, metrics.get(key))) for key in SUBSET_METRICS)]
                for subset, metrics in subsets.items()]
        caption = cell + (f" (mean [95 % interval] over {seeds} seeds)" if seeds > 1 else " (one seed)")
        tables.append((caption, Table(["present", *(LABELS[k] for k in SUBSET_METRICS)], rows, list(subsets))))
    intro = (f"Each cell scored with only some modalities present at test time (R = RGB, N = near-infrared, T = thermal): "
             f"{ABSENT_RULE}. The model is the one trained on all modalities; the last row is the full evaluation.")
    return Section("Missing modalities at test time", intro, tables=tables)
