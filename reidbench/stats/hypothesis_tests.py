"""Is A better than B, or the same within a margin? Over seeds: paired t when seeds are shared, Welch when not."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from reidbench.errors import UsageError
from reidbench.stats.inputs import ArrayLike, margin as check_margin, paired as paired_sample, probability, sample
from reidbench.stats.power import seeds_needed

Method = Literal["paired-t", "welch", "bootstrap"]


@dataclass(frozen=True)
class Comparison:
    """A − B on one metric: the difference, its (1 − alpha) interval, the test's p and the equivalence test's p.

    `p_improvement` is P(A > B): the chance that a run of A beats a run of B (ties count half).
    `seeds_needed` is the seeds per arm a t test needs to detect max(|diff|, margin) at power 0.8
    (None from the bootstrap, and when both are 0).
    """

    test: Method
    diff: float
    ci_low: float
    ci_high: float
    p: float
    n_a: int
    n_b: int
    p_improvement: float
    margin: float
    tost_p: float
    seeds_needed: int | None
    alpha: float


@dataclass(frozen=True)
class TStatistic:
    """A difference, its standard error and degrees of freedom: all a t test, its interval and TOST need."""

    diff: float
    standard_error: float
    df: float


def probability_of_improvement(a: np.ndarray, b: np.ndarray, *, paired: bool) -> float:
    """Paired: the share of seeds where A beat B. Unpaired: Mann–Whitney U / (n_a·n_b). Ties count half."""
    if paired:
        return float(np.mean((a > b) + 0.5 * (a == b)))
    return float(np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))


def t_test(statistic: TStatistic, alpha: float, margin: float) -> tuple[float, float, float, float]:
    """(ci_low, ci_high, two-sided p, TOST p). Zero spread: the difference is exact and the tests decide outright."""
    diff, se, df = statistic.diff, statistic.standard_error, statistic.df
    if se == 0:
        return diff, diff, float(diff == 0), float(abs(diff) >= margin)
    half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    p = 2 * float(sps.t.sf(abs(diff) / se, df))
    above_lower = float(sps.t.sf((diff + margin) / se, df))
    below_upper = float(sps.t.cdf((diff - margin) / se, df))
    return diff - half, diff + half, min(p, 1.0), max(above_lower, below_upper)


def welch(a: np.ndarray, b: np.ndarray) -> TStatistic:
    """Welch's t: unequal variances, Welch–Satterthwaite degrees of freedom."""
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else a.size + b.size - 2
    return TStatistic(float(a.mean() - b.mean()), se, float(df))


def pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))


def compare(a: ArrayLike, b: ArrayLike, *, paired: bool, margin: float, alpha: float = 0.05) -> Comparison:
    """Compare per-seed values of A and B (paired: position i of both from seed i).

    Seeds fix the sampler, augmentations and initialisation, so cells trained with the same
    seeds are paired and their differences cancel the seed's shared luck.
    """
    level, margin = probability(alpha, "alpha"), check_margin(margin)
    x, y = paired_sample(a, b, 1) if paired else (sample(a, "A's values"), sample(b, "B's values"))
    if min(x.size, y.size) < 2:
        raise UsageError(
            f"a t test over seeds needs at least 2 seeds per arm (A has {x.size}, B has {y.size}); "
            "with one seed, compare per-query values with the hierarchical bootstrap."
        )
    if paired:
        d = x - y
        sigma = float(d.std(ddof=1))
        statistic = TStatistic(float(d.mean()), sigma / math.sqrt(d.size), d.size - 1)
    else:
        statistic, sigma = welch(x, y), pooled_sd(x, y)
    low, high, p, tost_p = t_test(statistic, level, margin)
    return Comparison(
        "paired-t" if paired else "welch", statistic.diff, low, high, p, int(x.size), int(y.size),
        probability_of_improvement(x, y, paired=paired), margin, tost_p,
        seeds_needed(max(abs(statistic.diff), margin), sigma, paired=paired, alpha=level), level,
    )
