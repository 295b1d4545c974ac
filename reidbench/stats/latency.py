"""Is a latency change beyond noise? Timings are skewed and carry outliers, so medians and ranks, not means."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from reidbench.errors import UsageError
from reidbench.stats.inputs import ArrayLike, probability, resamples, sample
from reidbench.stats.intervals import percentile_interval


@dataclass(frozen=True)
class LatencyChange:
    """median(B)/median(A) with its bootstrap interval and the Mann–Whitney p: above 1, B is slower."""

    ratio: float
    low: float
    high: float
    p: float
    n_a: int
    n_b: int
    confidence: float

    @property
    def beyond_noise(self) -> bool:
        """Both agree: the interval leaves out 1 and the rank test rejects at 1 − confidence."""
        return (self.low > 1 or self.high < 1) and self.p < 1 - self.confidence


def median_ratio_interval(
    times_a: ArrayLike, times_b: ArrayLike, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> LatencyChange:
    """Bootstrap each timing run on its own (they are independent), take the ratio of medians."""
    a, b = sample(times_a, "the baseline timings", 2), sample(times_b, "the new timings", 2)
    if np.any(a <= 0) or np.any(b <= 0):
        raise UsageError("timings must all be positive durations; a zero or negative time is a measuring error.")
    rounds, level = resamples(n_resamples), probability(confidence, "the confidence")
    rng = np.random.default_rng(seed)
    medians_a = np.median(a[rng.integers(0, a.size, size=(rounds, a.size))], axis=1)
    medians_b = np.median(b[rng.integers(0, b.size, size=(rounds, b.size))], axis=1)
    low, high = percentile_interval(medians_b / medians_a, level)
    p = float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return LatencyChange(float(np.median(b) / np.median(a)), low, high, p, int(a.size), int(b.size), level)
