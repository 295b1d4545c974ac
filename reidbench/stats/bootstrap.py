"""Test-set uncertainty: the cluster bootstrap that resamples query identities, not images.

The queries of one identity share a person (or vehicle), its clothes and its cameras, so their
scores move together; resampling images would treat them as independent and give intervals that
are too narrow whenever an identity has several queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidbench.errors import UsageError
from reidbench.stats.inputs import ArrayLike, identities, probability, resamples, sample
from reidbench.stats.intervals import percentile_interval


@dataclass(frozen=True)
class IdentityInterval:
    """A test-set metric (mean over queries) and its percentile bootstrap interval over query identities."""

    estimate: float
    low: float
    high: float
    n_queries: int
    n_identities: int
    n_resamples: int
    confidence: float

    @property
    def width(self) -> float:
        return self.high - self.low


def draw_identities(rng: np.random.Generator, n_identities: int, n_resamples: int) -> np.ndarray:
    """Row r lists the K identities drawn with replacement for resample r: the one source of the draws."""
    return rng.integers(0, n_identities, size=(n_resamples, n_identities))


def identity_counts(draws: np.ndarray, n_identities: int) -> np.ndarray:
    """How many times each identity was drawn in each resample (resamples × identities)."""
    rows = draws.shape[0]
    flat = (np.arange(rows)[:, None] * n_identities + draws).ravel()
    return np.bincount(flat, minlength=rows * n_identities).reshape(rows, n_identities).astype(float)


def identity_sums(values: np.ndarray, index: np.ndarray, n_identities: int) -> np.ndarray:
    """Per-identity sums of the last axis: a drawn identity brings all its queries' values at once."""
    rows = values.reshape(-1, values.shape[-1])
    sums = np.stack([np.bincount(index, weights=row, minlength=n_identities) for row in rows])
    return sums.reshape(values.shape[:-1] + (n_identities,))


def identity_bootstrap_interval(
    per_query_values: ArrayLike,
    query_ids: ArrayLike,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> IdentityInterval:
    """Percentile interval of the mean over queries (mAP from per-query AP) under identity resampling.

    Each resample draws K identities with replacement and takes the mean over every query of
    every drawn identity, with multiplicity, so an identity with many queries weighs as it does
    in the metric itself.
    """
    values = sample(per_query_values, "the per-query values")
    index, n_identities = identities(query_ids, values.size)
    counts = identity_counts(
        draw_identities(np.random.default_rng(seed), n_identities, resamples(n_resamples)), n_identities
    )
    draws = counts @ identity_sums(values, index, n_identities) / (counts @ np.bincount(index).astype(float))
    level = probability(confidence, "the confidence")
    low, high = percentile_interval(draws, level)
    return IdentityInterval(float(values.mean()), low, high, int(values.size), n_identities, int(n_resamples), level)


def rank_k_indicator(first_correct_ranks: ArrayLike, k: int) -> np.ndarray:
    """1 where a query's first correct match is within the top k (ranks count from 1): rank-k's per-query term."""
    ranks = sample(first_correct_ranks, "the first-correct ranks")
    if k < 1 or np.any(ranks < 1) or np.any(ranks != np.round(ranks)):
        raise UsageError(f"rank-k needs k ≥ 1 and whole first-correct ranks counted from 1; got k={k}.")
    return (ranks <= k).astype(float)


def rank_k_bootstrap_interval(
    first_correct_ranks: ArrayLike,
    query_ids: ArrayLike,
    k: int,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> IdentityInterval:
    """CMC rank-k with its identity-bootstrap interval; one seed gives the same draws for every k."""
    return identity_bootstrap_interval(
        rank_k_indicator(first_correct_ranks, k), query_ids, n_resamples, seed, confidence
    )
