"""Comparing A and B with both sources of variance: the seeds and the test set.

With one seed or few seeds a t test over seeds cannot be made (or has little power), yet each
seed's per-query scores still say how much the test set's draw of identities moves the metric.
The hierarchical bootstrap resamples seeds, then identities, and compares A and B on each
resample, as Bouthillier et al. (MLSys 2021) estimate P(A > B) under data and seed variance.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reidbench.errors import UsageError
from reidbench.stats.bootstrap import draw_identities, identity_counts, identity_sums
from reidbench.stats.hypothesis_tests import Comparison
from reidbench.stats.inputs import (
    ArrayLike, identities, margin as check_margin, per_seed_queries, probability, resamples,
)
from reidbench.stats.intervals import percentile_interval


def resampled_metrics(values: np.ndarray, index: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each seed's mean over the queries of the drawn identities, per resample (resamples × seeds)."""
    sizes = counts @ np.bincount(index, minlength=counts.shape[1]).astype(float)
    return counts @ identity_sums(values, index, counts.shape[1]).T / sizes[:, None]


def runs_won(drawn_a: np.ndarray, drawn_b: np.ndarray, paired: bool) -> float:
    """The share of (run of A, run of B) pairs on the same resampled test set where A wins; ties count half."""
    if not paired:
        drawn_a, drawn_b = drawn_a[:, :, None], drawn_b[:, None, :]
    return float(np.mean((drawn_a > drawn_b) + 0.5 * (drawn_a == drawn_b)))


def bootstrap_p(diffs: np.ndarray, margin: float) -> tuple[float, float]:
    """Two-sided p of no difference and the TOST p, by inverting the percentile interval; never below 1/(R+1)."""
    def share(hits: np.ndarray) -> float:
        return (1 + int(np.count_nonzero(hits))) / (diffs.size + 1)

    p = min(1.0, 2 * min(share(diffs <= 0), share(diffs >= 0)))
    return p, max(share(diffs <= -margin), share(diffs >= margin))


def hierarchical_bootstrap_compare(
    a_seeds_queries: Sequence[ArrayLike] | np.ndarray,
    b_seeds_queries: Sequence[ArrayLike] | np.ndarray,
    query_ids: ArrayLike,
    *,
    paired: bool,
    margin: float,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """A − B on the mean per-query metric, resampling seeds, then query identities within.

    Paired seeds are drawn jointly for A and B; identities are drawn once per resample for both,
    since A and B are scored on the same test set.
    """
    level, margin, rounds = probability(alpha, "alpha"), check_margin(margin), resamples(n_resamples)
    a, b = per_seed_queries(a_seeds_queries, "A's values"), per_seed_queries(b_seeds_queries, "B's values")
    if a.shape[1] != b.shape[1] or (paired and a.shape[0] != b.shape[0]):
        raise UsageError(
            f"A ({a.shape[0]} seeds × {a.shape[1]} queries) and B ({b.shape[0]} × {b.shape[1]}) must be scored "
            "on the same queries in the same order" + (", with the same seeds when paired." if paired else ".")
        )
    index, n_identities = identities(query_ids, a.shape[1])
    rng = np.random.default_rng(seed)
    counts = identity_counts(draw_identities(rng, n_identities, rounds), n_identities)
    seeds_a = rng.integers(0, a.shape[0], size=(rounds, a.shape[0]))
    seeds_b = seeds_a if paired else rng.integers(0, b.shape[0], size=(rounds, b.shape[0]))
    drawn_a = np.take_along_axis(resampled_metrics(a, index, counts), seeds_a, axis=1)
    drawn_b = np.take_along_axis(resampled_metrics(b, index, counts), seeds_b, axis=1)
    diffs = drawn_a.mean(axis=1) - drawn_b.mean(axis=1)
    low, high = percentile_interval(diffs, 1 - level)
    p, tost_p = bootstrap_p(diffs, margin)
    return Comparison(
        "bootstrap", float(a.mean() - b.mean()), low, high, p, int(a.shape[0]), int(b.shape[0]),
        runs_won(drawn_a, drawn_b, paired), margin, tost_p, None, level,
    )
