"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) at MSMT17 scale, from sparse neighbour lists, on the CPU or the GPU.

Why it looks the way it does:

* **No (q + g)² matrix.** The usual implementations build the dense
  distance matrix of query ∪ gallery and a dense V of the same size: for
  MSMT17 (93,820 samples) that is 35 GB each in float32. Here the only
  dense things are the [q, g] result (which the caller asked for) and one
  chunk of distance rows at a time; everything else is k-nearest-neighbour
  lists and sparse rows (:mod:`reidbench.evaluation.rerank_sparse`).
* **Half the matrix products.** Distances are symmetric, so each chunk of
  rows is compared only with itself and the samples after it
  (:mod:`reidbench.evaluation.rerank_knn`).
* **The authors' definitions, stated.** Where the paper leaves a detail to
  its code (which distance goes into the kernel, how k1/2 rounds, > or ≥),
  :func:`rerank` says which one is used and why.
"""
from __future__ import annotations

from numbers import Real

import numpy as np
import torch

from reidbench.errors import UsageError
from reidbench.evaluation.metrics import feature_matrix
from reidbench.evaluation.rerank_knn import nearest_neighbours
from reidbench.evaluation.rerank_sparse import (
    SparseRows,
    average_neighbours,
    blend_jaccard,
    encode,
    expanded_sets,
    reciprocal_masks,
)

WORK_BUDGET_BYTES = 256 * 2**20
"""Working memory one step may use besides the result: a chunk of distance rows, a block of sparse entries."""

BYTES_PER_SPARSE_ENTRY = 64
"""Temporaries per gathered sparse entry or accumulated product (indices, values, sort keys)."""


def rerank(
    qf: torch.Tensor | np.ndarray,
    gf: torch.Tensor | np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The re-ranked [q, g] query × gallery distances (float32), k-reciprocal encoding of Zhong et al.

    ``qf`` [q, d] and ``gf`` [g, d] are compared by euclidean distance **as
    given**: nothing is normalised here (all features are scaled by one power
    of two, which changes no ranking and no distance after the division by the
    row's maximum below, only keeps them in range). L2-normalise them first if that is
    what the ranking should see (reidbench's evaluation does, see
    docs/evaluation.md); the caller decides, as for ``evaluate_rank``.

    Definitions, over all N = q + g samples (queries first):

    * d(p, i) = |x_p - x_i|² / max_j |x_p - x_j|², j over all N. Squared,
      because the paper's d (eq. 1) is a Mahalanobis distance
      (x_p - x_i)ᵀ M (x_p - x_i), i.e. squared euclidean for M = I, and the
      authors' code squares the euclidean distance; divided by the row's
      maximum, as that code does (the paper is silent on it), which keeps
      exp(-d) in [1/e, 1] whatever the features' scale. This one d ranks the
      neighbours, goes into the kernel exp(-d(p, i)) and is the original
      distance of the final blend (eq. 13).
    * N(p, k) = p and its k nearest other samples, k + 1 in all as the
      authors' code slices them (p first even if another sample coincides
      with it); R(p, k) = {i ∈ N(p, k) : p ∈ N(i, k)} (section 3.2).
    * R*(p, k1) = R(p, k1) ∪ R(i, k1/2) for every i ∈ R(p, k1) with
      |R(p, k1) ∩ R(i, k1/2)| > 2/3 |R(i, k1/2)| (section 3.2; the strict >
      of the authors' code), with k1/2 rounded as that code does,
      int(round(k1/2)): half to even, so k1 = 5 gives 2 and k1 = 7 gives 4.
    * V_p,i = exp(-d(p, i)) on R*(p, k1), 0 elsewhere, scaled to sum to 1
      (section 3.3); then local query expansion V_p ← mean of V_i over the k2
      nearest samples of p, p included (eq. 12).
    * d_J(p, g) = 1 - Σ_j min(V_pj, V_gj) / Σ_j max(V_pj, V_gj) (section 3.3),
      j over all N; d*(p, g) = (1 - λ) d_J(p, g) + λ d(p, g) (eq. 13).

    Neighbour lists longer than N are cut to N, as slicing a ranking would.
    Exact ties between distances are broken arbitrarily (as the original's
    unstable sort does), which can change which neighbour is the k-th.

    The work runs on ``device`` (default: ``qf``'s device when it is a
    tensor, else the CPU), in float64 when either input is float64 and in
    float32 otherwise. ``chunk_size`` rows of the N samples are compared at a
    time (default: as many as fit in about 256 MB); memory beyond the result
    stays within a few such chunks. Cost: about N² d / 2 multiply-adds.
    """
    k1, k2, chunk_size = _check_parameters(k1, k2, lambda_value, chunk_size)
    feats, num_query = _stacked_features(qf, gf, device)
    num_all = feats.shape[0]
    rows = chunk_size or max(1, WORK_BUDGET_BYTES // (num_all * feats.element_size()))
    with torch.no_grad():
        out = torch.empty(num_query, num_all - num_query, dtype=torch.float32, device=feats.device)
        knn, row_max = nearest_neighbours(feats, min(k1 + 1, num_all), num_query, out, rows)
        row_max.clamp_(min=torch.finfo(row_max.dtype).tiny)
        v = _encoding(feats, knn, row_max, half_k(k1), rows)
        max_entries = WORK_BUDGET_BYTES // BYTES_PER_SPARSE_ENTRY
        v = average_neighbours(v, knn, min(k2, num_all), rows, max_entries)
        blend_jaccard(out, v, row_max, float(lambda_value), rows, max_entries)
    return out


def half_k(k1: int) -> int:
    """k1/2 rounded as the authors' code rounds it (numpy's round half to even)."""
    return int(round(k1 / 2))


def _encoding(
    feats: torch.Tensor, knn: torch.Tensor, row_max: torch.Tensor, k_half: int, rows: int
) -> SparseRows:
    """V before query expansion, from the neighbour lists: R(p, k1), R*(p, k1), kernel weights."""
    k = knn.shape[1]
    k_half_list = min(k_half + 1, k)
    per_row = k * k * 8 + k * k_half_list * 24
    block_rows = max(1, min(rows, WORK_BUDGET_BYTES // per_row))
    full, half = reciprocal_masks(knn, k_half_list, block_rows)
    row, col = expanded_sets(knn, full, half, block_rows)
    max_pairs = max(1, WORK_BUDGET_BYTES // (3 * feats.shape[1] * feats.element_size()))
    return encode(feats, row, col, row_max, max_pairs)


def _check_parameters(k1: object, k2: object, lambda_value: object, chunk_size: object) -> tuple[int, int, int | None]:
    """Reject settings the method has no meaning for, before any work is done; (k1, k2, chunk_size) as Python ints.

    Why Python ints: numpy's integers wrap around (np.int64(2**63 - 1) + 1 is negative) and mix badly
    with Python's (np.uint64 with an int is a float), so the values are checked and used as exact ints.
    """
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(
                f"{name} must be an integer >= 1, got {value!r}; the paper's setting is "
                "k1=20, k2=6 (k1 neighbours define the reciprocal sets, k2 the query expansion)"
            )
    k1, k2 = int(k1), int(k2)  # type: ignore[call-overload]
    if k2 > k1:
        raise UsageError(
            f"k2={k2} is larger than k1={k1}; the query expansion averages over the k2 nearest "
            "neighbours, which must lie within the k1 used for the encoding: pass k2 <= k1 (paper: k1=20, k2=6)"
        )
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, Real) or not 0.0 <= lambda_value <= 1.0:
        raise UsageError(
            f"lambda_value must be a number in [0, 1], got {lambda_value!r}; it weighs the original "
            "distance against the Jaccard distance (0 = Jaccard only, 1 = original only, paper: 0.3)"
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise UsageError(
            f"chunk_size must be a positive integer (rows of query + gallery compared at a time) "
            f"or None for about {WORK_BUDGET_BYTES // 2**20} MB per chunk, got {chunk_size!r}"
        )
    return k1, k2, None if chunk_size is None else int(chunk_size)  # type: ignore[call-overload]


def _stacked_features(
    qf: object, gf: object, device: str | torch.device | None
) -> tuple[torch.Tensor, int]:
    """(query rows then gallery rows as one [N, d] tensor on the working device and dtype, q)."""
    q_t, g_t = _features("qf", qf), _features("gf", gf)
    if q_t.shape[1] != g_t.shape[1]:
        raise UsageError(
            f"qf has {q_t.shape[1]}-d features but gf has {g_t.shape[1]}-d; query and gallery "
            "features must come from the same model head, so pass features of the same width"
        )
    if device is None:
        device = q_t.device
    dtype = torch.float64 if torch.float64 in (q_t.dtype, g_t.dtype) else torch.float32
    device = torch.device(device)
    feats = torch.cat([q_t.to(device=device, dtype=dtype), g_t.to(device=device, dtype=dtype)])
    return _unit_scale(feats), q_t.shape[0]


def _unit_scale(feats: torch.Tensor) -> torch.Tensor:
    """`feats` times the power of two that brings its largest magnitude into [0.5, 1).

    Every distance here is divided by its row's largest, so one scale for all features changes
    nothing but the range: features of 1e20 would square to infinity in float32 (and of 1e200 in
    float64), and of 1e-30 to zero. A power of two scales exactly, so ordinary features give the
    same distances to the last bit. It is applied in two halves, each a representable factor.
    """
    largest = feats.abs().max()
    if not bool(largest > 0):
        return feats
    exponent = -int(torch.frexp(largest).exponent)
    half = exponent // 2
    return feats * 2.0**half * 2.0 ** (exponent - half)


def _features(name: str, value: object) -> torch.Tensor:
    """The evaluation's feature check, plus at least one feature per image (re-ranking needs a distance)."""
    features = feature_matrix(name, value)
    if features.shape[1] == 0:
        raise UsageError(f"{name} has 0-d features (shape {tuple(features.shape)}); re-ranking needs at least one feature per image")
    return features
