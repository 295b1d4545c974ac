"""From p-values to the words a report prints: Holm over the family of comparisons, then a verdict each."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from reidbench.errors import UsageError
from reidbench.stats.hypothesis_tests import Comparison
from reidbench.stats.inputs import ArrayLike, probability

Verdict = Literal["a-better", "b-better", "equivalent", "undecided"]


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment: family-wise error ≤ alpha over every comparison a report makes.

    The i-th smallest p (from 1) is multiplied by m − i + 1, made non-decreasing, capped at 1;
    returned in the input order.
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise UsageError(f"Holm's correction takes p-values between 0 and 1, got {p.tolist()}.")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * np.arange(p.size, 0, -1)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def verdict(p_holm: float, tost_p: float, diff: float, alpha: float = 0.05) -> Verdict:
    """Better when the Holm-adjusted p is below alpha (the sign of A − B says which); else equivalent when
    the Holm-adjusted TOST p is below alpha; else undecided: "no difference found" is not "equal"."""
    probability(alpha, "alpha")
    if p_holm < alpha:
        return "a-better" if diff > 0 else "b-better"
    if tost_p < alpha:
        return "equivalent"
    return "undecided"


def decide(comparisons: Sequence[Comparison], alpha: float = 0.05) -> tuple[Verdict, ...]:
    """The verdicts of a report's declared comparisons, one family.

    Both kinds of claim are Holm-corrected over the family, each kind on its own: a reader acts
    on "equivalent" (drop the costlier backbone) as on "better", so a table of equivalence claims
    must not hold a false one more often than alpha, just as a table of "better" claims. Each kind
    is held at alpha; a false claim of either kind anywhere in the table is at most 2·alpha (pass
    alpha/2 to hold that at alpha).
    """
    p_holm = holm([c.p for c in comparisons])
    tost_holm = holm([c.tost_p for c in comparisons])
    return tuple(verdict(p, t, c.diff, alpha) for p, t, c in zip(p_holm, tost_holm, comparisons))
