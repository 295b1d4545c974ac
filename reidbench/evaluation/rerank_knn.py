"""The k nearest neighbours of every sample of query ∪ gallery, without the (q + g)² distance matrix.

Re-ranking needs, for all N = q + g samples, the k1 + 1 nearest neighbours
over all N, and the largest distance of each row (the paper's code divides
every row by it). Both are reductions over a row, so a row chunk's distances
are computed, reduced and dropped.

Distances are symmetric, so only the upper triangle is computed: chunk
[s, e) is compared with samples s..N only. Its rows get the columns s..N
from the slab (and the columns 0..s from earlier chunks, where they were
columns); the columns e..N are handed the slab's contribution now. That
halves the matrix products, which are nearly all of the time.

A column's contribution is merged cheaply: once a column holds k
candidates, only slab entries below its current k-th distance can change it,
and after the first chunks those are few. When they are not few (sorted or
clustered data can make every entry a hit) the chunk falls back to a dense
top-k over the column, so memory stays bounded either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SELF_RANK_VALUE = -1.0
"""Stands in for a sample's distance to itself while ranking, so that it is always its own
first neighbour (as in the paper, where p ∈ N(p, k)) even when another sample coincides with it."""

SPARSE_MERGE_FRACTION = 32
"""A column merge goes sparse when fewer than 1/32 of the slab's entries can change a top-k list."""


@dataclass
class NeighbourTable:
    """Running k smallest squared distances of every sample, and their indices, ascending."""

    values: torch.Tensor  # [N, k]
    indices: torch.Tensor  # [N, k] int64, -1 where not filled yet
    row_max: torch.Tensor  # [N] largest squared distance seen in each row

    @classmethod
    def empty(cls, num_all: int, k: int, dtype: torch.dtype, device: torch.device) -> "NeighbourTable":
        return cls(
            values=torch.full((num_all, k), torch.inf, dtype=dtype, device=device),
            indices=torch.full((num_all, k), -1, dtype=torch.int64, device=device),
            row_max=torch.zeros(num_all, dtype=dtype, device=device),
        )


def nearest_neighbours(
    feats: torch.Tensor, k: int, num_query: int, out: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, k] nearest-neighbour indices, self first, [N] largest squared distance per row).

    Distances are squared euclidean on ``feats`` as given. As a by-product the
    query rows' squared distances to the gallery are written to ``out``
    ([q, g]); they are the "original distance" of the final blend and would
    otherwise need a second pass of matrix products.
    """
    num_all = feats.shape[0]
    sq = (feats * feats).sum(dim=1)
    table = NeighbourTable.empty(num_all, k, feats.dtype, feats.device)
    for start in range(0, num_all, chunk_size):
        stop = min(start + chunk_size, num_all)
        slab = squared_distances(feats[start:stop], feats[start:], sq[start:stop], sq[start:])
        if start < num_query:
            rows = min(stop, num_query) - start
            out[start : start + rows] = slab[:rows, num_query - start :]
        _reduce_slab(slab, start, stop, table)
    return table.indices, table.row_max


def squared_distances(
    a: torch.Tensor, b: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor
) -> torch.Tensor:
    """[len(a), len(b)] squared euclidean distances as |a|² + |b|² - 2 a·b, clamped at 0 against rounding."""
    dist = torch.addmm(sq_b, a, b.t(), alpha=-2.0)
    return dist.add_(sq_a[:, None]).clamp_(min=0.0)


def _reduce_slab(slab: torch.Tensor, start: int, stop: int, table: NeighbourTable) -> None:
    """Fold the slab of rows [start, stop) × columns [start, N) into the running table."""
    num_rows = stop - start
    k = table.values.shape[1]
    table.row_max[start:stop] = torch.maximum(table.row_max[start:stop], slab.amax(dim=1))
    tail = slab[:, num_rows:]
    if tail.shape[1]:
        table.row_max[stop:] = torch.maximum(table.row_max[stop:], tail.amax(dim=0))
        _merge_columns(tail, start, table.values[stop:], table.indices[stop:], k)
    slab.diagonal().fill_(SELF_RANK_VALUE)
    values, indices = slab.topk(min(k, slab.shape[1]), dim=1, largest=False)
    _merge_dense(table.values[start:stop], table.indices[start:stop], values, indices + start)


def _merge_dense(
    best_values: torch.Tensor, best_indices: torch.Tensor, values: torch.Tensor, indices: torch.Tensor
) -> None:
    """Replace each row's k best (in place) with the k smallest of the old and the new candidates."""
    k = best_values.shape[1]
    all_values = torch.cat([best_values, values], dim=1)
    all_indices = torch.cat([best_indices, indices], dim=1)
    merged, order = all_values.topk(k, dim=1, largest=False)
    best_values.copy_(merged)
    best_indices.copy_(all_indices.gather(1, order))


def _merge_columns(
    block: torch.Tensor, row_offset: int, best_values: torch.Tensor, best_indices: torch.Tensor, k: int
) -> None:
    """Merge the columns of ``block`` ([rows, n]) into the k best of samples whose rows they are."""
    hit = block < best_values[:, -1]
    num_hits = int(hit.sum())
    if num_hits == 0:
        return
    if num_hits * SPARSE_MERGE_FRACTION > block.numel():
        values, indices = block.topk(min(k, block.shape[0]), dim=0, largest=False)
        _merge_dense(best_values, best_indices, values.t(), indices.t() + row_offset)
        return
    row, col = hit.nonzero(as_tuple=True)
    _merge_sparse(best_values, best_indices, col, block[row, col], row + row_offset)


def _merge_sparse(
    best_values: torch.Tensor,
    best_indices: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
) -> None:
    """Merge a few (column, value, index) candidates into the sorted k best of their columns, in place.

    Each touched column's k current entries and its candidates are sorted by
    (column, value) together; the first k of each column are written back.
    Every touched column has at least k entries in the pool, so every slot of
    it is rewritten.
    """
    k = best_values.shape[1]
    touched = torch.unique(col)
    pool_col = torch.cat([touched.repeat_interleave(k), col])
    pool_values = torch.cat([best_values[touched].flatten(), values])
    pool_indices = torch.cat([best_indices[touched].flatten(), indices])
    by_value = torch.argsort(pool_values, stable=True)
    order = by_value[torch.argsort(pool_col[by_value], stable=True)]
    sorted_col = pool_col[order]
    slot = torch.arange(sorted_col.numel(), device=col.device) - torch.searchsorted(sorted_col, sorted_col)
    keep = slot < k
    best_values[sorted_col[keep], slot[keep]] = pool_values[order][keep]
    best_indices[sorted_col[keep], slot[keep]] = pool_indices[order][keep]
