"""Checks on the numbers handed to the statistics, so bad input is a sentence, never NaN in a paper's table."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reidbench.errors import UsageError

ArrayLike = Sequence[float] | np.ndarray


def sample(values: ArrayLike, name: str, minimum: int = 1) -> np.ndarray:
    """`values` as a 1-D float array of at least `minimum` finite numbers."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name} must be a list of numbers; reading it failed: {error}.") from None
    if array.ndim != 1:
        raise UsageError(f"{name} must be a flat list of numbers, got an array of shape {array.shape}.")
    if array.size < minimum:
        raise UsageError(f"{name} needs at least {minimum} value(s), got {array.size}.")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise UsageError(
            f"{name} holds NaN or infinite values (at positions {bad[:5].tolist()}); "
            "a missing or failed measurement must be removed or rerun, not averaged in."
        )
    return array


def per_seed_queries(values: Sequence[ArrayLike] | np.ndarray, name: str) -> np.ndarray:
    """Per-query values of every seed as a seeds × queries array of finite numbers."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name} must hold one list of per-query values per seed, all as long; {error}.") from None
    if array.ndim != 2 or array.size == 0:
        raise UsageError(
            f"{name} must hold one row of per-query values per seed (seeds × queries), got shape {array.shape}."
        )
    for row in array:
        sample(row, f"{name} (one seed's per-query values)")
    return array


def paired(a: ArrayLike, b: ArrayLike, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Two samples aligned by seed: same length, position i of both came from the same seed."""
    first, second = sample(a, "A's values", minimum), sample(b, "B's values", minimum)
    if first.size != second.size:
        raise UsageError(
            f"a paired comparison needs one value per seed in both arms, aligned by seed; "
            f"A has {first.size} values and B has {second.size}. Compare unpaired, or drop the unmatched seeds."
        )
    return first, second


def identities(query_ids: ArrayLike, n_queries: int) -> tuple[np.ndarray, int]:
    """Each query's identity as an index 0..K-1, and K: the clusters the test set is resampled by."""
    ids = np.asarray(query_ids)
    if ids.ndim != 1 or ids.size != n_queries:
        raise UsageError(
            f"query identities must give one identity per query: {n_queries} per-query values "
            f"but {ids.size} identities."
        )
    _, index = np.unique(ids, return_inverse=True)
    return index.reshape(-1), int(index.max()) + 1


def probability(value: float, name: str) -> float:
    """A level such as alpha or a confidence: strictly between 0 and 1."""
    if not 0.0 < float(value) < 1.0:
        raise UsageError(f"{name} must lie strictly between 0 and 1, got {value}.")
    return float(value)


def margin(value: float) -> float:
    """The equivalence margin: the largest difference that does not matter, in the metric's own units."""
    if not np.isfinite(value) or value < 0:
        raise UsageError(f"the equivalence margin must be a finite number ≥ 0 in the metric's units, got {value}.")
    return float(value)


def resamples(value: int) -> int:
    """Bootstrap resamples: enough that a 95% interval's ends are not two or three draws."""
    if int(value) != value or value < 100:
        raise UsageError(f"the bootstrap needs a whole number of at least 100 resamples, got {value}.")
    return int(value)
