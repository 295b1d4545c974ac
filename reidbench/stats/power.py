"""How many seeds an experiment needs: planned from the spread already seen, before looking at p."""
from __future__ import annotations

import math

from scipy import stats as sps

from reidbench.errors import UsageError
from reidbench.stats.inputs import probability

LARGE = 10_000
"""Seeds per arm beyond which t and normal agree to well under one seed: the normal count is used as is."""


def normal_seeds_needed(delta: float, sigma: float, *, paired: bool, alpha: float = 0.05, power: float = 0.8) -> float:
    """n ≈ (z₁₋α/₂ + z_power)² σ² / δ², twice that for two arms (15.7 σ²/δ² at α 0.05, power 0.8)."""
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return (1 if paired else 2) * z * z * sigma * sigma / (delta * delta)


def t_test_power(n: int, delta: float, sigma: float, *, paired: bool, alpha: float = 0.05) -> float:
    """Power of the two-sided t test with n seeds per arm, from the noncentral t distribution."""
    df = n - 1 if paired else 2 * n - 2
    noncentrality = delta / sigma * math.sqrt(n if paired else n / 2)
    critical = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(critical, df, noncentrality) + sps.nct.cdf(-critical, df, noncentrality))


def seeds_needed(
    delta: float, sigma: float, *, paired: bool, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """The fewest seeds per arm whose t test reaches `power` against a true difference `delta`.

    The normal approximation undercounts (it ignores that σ is estimated), so the search starts
    there and steps up until the noncentral t power is reached. None when delta is 0: no number
    of seeds detects a difference of nothing.
    """
    probability(alpha, "alpha")
    probability(power, "the power")
    if not (math.isfinite(delta) and math.isfinite(sigma)) or sigma < 0:
        raise UsageError(f"seeds needed takes a finite difference and a standard deviation ≥ 0, got {delta}, {sigma}.")
    delta = abs(delta)
    if delta == 0:
        return None
    if sigma == 0:
        return 2
    normal = normal_seeds_needed(delta, sigma, paired=paired, alpha=alpha, power=power)
    if normal > LARGE:
        return math.ceil(normal)
    n = max(2, math.floor(normal))
    while t_test_power(n, delta, sigma, paired=paired, alpha=alpha) < power:
        n += 1
    return n
