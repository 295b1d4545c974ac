"""How precisely a metric is known from a handful of seeds: the Student t interval of the mean."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from reidbench.stats.inputs import ArrayLike, probability, sample


@dataclass(frozen=True)
class MeanInterval:
    """The mean over seeds and its confidence interval; with one seed there is no interval (None)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    half_width: float | None
    confidence: float


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> MeanInterval:
    """Seeds are few, so the interval uses Student's t with n−1 degrees of freedom, not the normal."""
    array = sample(values, "the per-seed values")
    level = probability(confidence, "the confidence")
    mean = float(array.mean())
    if array.size == 1:
        return MeanInterval(mean, None, None, 1, None, level)
    standard_error = float(array.std(ddof=1)) / math.sqrt(array.size)
    half = float(sps.t.ppf(0.5 + level / 2, array.size - 1)) * standard_error
    return MeanInterval(mean, mean - half, mean + half, int(array.size), half, level)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval: the middle `confidence` of the resampled statistic."""
    low, high = np.quantile(draws, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)
