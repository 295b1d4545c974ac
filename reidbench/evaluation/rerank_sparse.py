"""Sparse k-reciprocal encodings and their Jaccard distances, a bounded block of rows at a time.

Every vector V_p of the method is nonzero only on p's expanded k-reciprocal
set (tens of samples out of N), so the vectors are stored as compressed rows
(CSR) and no step ever holds an [N, N] matrix. The blocks of rows that each
step processes are planned from the work each row will cause (entries
gathered, products accumulated), not only from a row count, because a few
"hub" samples sit in the neighbour lists of very many others.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SparseRows:
    """Compressed rows of a nonnegative [num_rows, num_cols] matrix; columns ascending within a row."""

    crow: torch.Tensor  # [num_rows + 1] int64 offsets into col / val
    col: torch.Tensor  # [nnz] int64
    val: torch.Tensor  # [nnz]
    num_cols: int

    @classmethod
    def from_sorted_coo(
        cls, row: torch.Tensor, col: torch.Tensor, val: torch.Tensor, num_rows: int, num_cols: int
    ) -> "SparseRows":
        """Build from entries already ordered by row (and by column within a row)."""
        counts = torch.bincount(row, minlength=num_rows)
        crow = torch.zeros(num_rows + 1, dtype=torch.int64, device=row.device)
        crow[1:] = counts.cumsum(0)
        return cls(crow=crow, col=col, val=val, num_cols=num_cols)

    def lengths(self) -> torch.Tensor:
        return self.crow[1:] - self.crow[:-1]

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(owner, col, val) of every entry of the listed rows; owner indexes ``rows``, repeats allowed."""
        lengths = self.lengths()[rows]
        owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
        first = self.crow[rows] - (lengths.cumsum(0) - lengths)
        position = first[owner] + torch.arange(owner.numel(), device=rows.device)
        return owner, self.col[position], self.val[position]


def row_blocks(cost: torch.Tensor, max_rows: int, max_cost: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) blocks of rows with at most ``max_rows`` rows and, unless a
    single row alone exceeds it, at most ``max_cost`` total cost."""
    cumulative = np.cumsum(cost.cpu().numpy().astype(np.int64))
    blocks, start, num = [], 0, len(cumulative)
    while start < num:
        before = int(cumulative[start - 1]) if start else 0
        stop = int(np.searchsorted(cumulative, before + max_cost, side="right"))
        stop = min(max(stop, start + 1), start + max_rows, num)
        blocks.append((start, stop))
        start = stop
    return blocks


def reciprocal_masks(knn: torch.Tensor, k_half: int, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, k] mask of knn entries i with p ∈ N(i, k), [N, k_half] the same for the first k_half).

    Entry (p, j) of the first mask says whether knn[p, j] is in R(p, k1): it
    is among p's k1 + 1 nearest and p is among its k1 + 1 nearest. The second
    answers the same for R(p, k1/2) with lists of k_half = round(k1/2) + 1.
    """
    num_all, k = knn.shape
    full = torch.empty(num_all, k, dtype=torch.bool, device=knn.device)
    half = torch.empty(num_all, k_half, dtype=torch.bool, device=knn.device)
    for start in range(0, num_all, max_rows):
        stop = min(start + max_rows, num_all)
        rows = torch.arange(start, stop, device=knn.device)[:, None, None]
        back = knn[knn[start:stop]]
        full[start:stop] = (back == rows).any(dim=2)
        half[start:stop] = (back[:, :k_half, :k_half] == rows).any(dim=2)
    return full, half


def expanded_sets(
    knn: torch.Tensor, full: torch.Tensor, half: torch.Tensor, max_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every member of every R*(p, k1), ordered by row then column.

    R*(p, k1) = R(p, k1) ∪ R(i, k1/2) for each i ∈ R(p, k1) with
    |R(p, k1) ∩ R(i, k1/2)| > 2/3 |R(i, k1/2)|, the strict inequality of the
    authors' code, tested in integers (3·overlap > 2·size) so that no float
    rounding can tip it.
    """
    rows_out, cols_out = [], []
    for start in range(0, knn.shape[0], max_rows):
        members = _expanded_block(knn, full, half, start, min(start + max_rows, knn.shape[0]))
        members, _ = members.sort(dim=1)
        first = torch.ones_like(members, dtype=torch.bool)
        first[:, 1:] = members[:, 1:] != members[:, :-1]
        row, slot = torch.nonzero(first & (members >= 0), as_tuple=True)
        rows_out.append(row + start)
        cols_out.append(members[row, slot])
    return torch.cat(rows_out), torch.cat(cols_out)


def _expanded_block(
    knn: torch.Tensor, full: torch.Tensor, half: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """[rows, k + k·k_half] members of R*(p, k1) for p in [start, stop), -1 padded, with repeats."""
    k_half = half.shape[1]
    candidates = knn[start:stop]
    reciprocal = torch.where(full[start:stop], candidates, -1)
    cand_half = half[candidates]
    cand_sets = torch.where(cand_half, knn[candidates, :k_half], -1)
    ordered, _ = reciprocal.sort(dim=1)
    flat = cand_sets.flatten(1)
    found = ordered.gather(1, torch.searchsorted(ordered, flat).clamp_(max=ordered.shape[1] - 1))
    overlap = ((found == flat) & (flat >= 0)).view_as(cand_sets).sum(dim=2)
    size = cand_half.sum(dim=2)
    accept = full[start:stop] & (3 * overlap > 2 * size)
    added = torch.where(accept[:, :, None], cand_sets, -1)
    return torch.cat([reciprocal, added.flatten(1)], dim=1)


def encode(
    feats: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    row_max: torch.Tensor,
    max_pairs: int,
) -> SparseRows:
    """V: exp(-d(p, i)) on each R*(p, k1), rows scaled to sum to 1.

    d(p, i) = |x_p - x_i|² / max_j |x_p - x_j|², the distance the ranking
    used (computed here from the difference, not the expanded product, so
    nearby pairs keep their digits).
    """
    weight = torch.empty(row.numel(), dtype=feats.dtype, device=feats.device)
    for start in range(0, row.numel(), max_pairs):
        r, c = row[start : start + max_pairs], col[start : start + max_pairs]
        diff = feats[r] - feats[c]
        weight[start : start + max_pairs] = diff.pow_(2).sum(dim=1).div_(row_max[r]).neg_().exp_()
    num_all = feats.shape[0]
    total = torch.zeros(num_all, dtype=weight.dtype, device=weight.device).index_add_(0, row, weight)
    return SparseRows.from_sorted_coo(row, col, weight / total[row], num_all, num_all)


def average_neighbours(v: SparseRows, knn: torch.Tensor, k2: int, max_rows: int, max_entries: int) -> SparseRows:
    """Local query expansion: V_p ← mean of V_i over p's k2 nearest neighbours (p included)."""
    if k2 == 1:
        return v
    num_all = knn.shape[0]
    neighbours = knn[:, :k2]
    cost = v.lengths()[neighbours].sum(dim=1)
    rows, cols, vals = [], [], []
    for start, stop in row_blocks(cost, max_rows, max_entries):
        owner, col, val = v.gather(neighbours[start:stop].flatten())
        key = torch.div(owner, k2, rounding_mode="floor") * num_all + col
        unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        total = torch.zeros(unique_key.numel(), dtype=val.dtype, device=val.device).index_add_(0, inverse, val)
        rows.append(torch.div(unique_key, num_all, rounding_mode="floor") + start)
        cols.append(unique_key % num_all)
        vals.append(total / k2)
    return SparseRows.from_sorted_coo(torch.cat(rows), torch.cat(cols), torch.cat(vals), num_all, num_all)


def gallery_columns(v: SparseRows, num_query: int) -> SparseRows:
    """The gallery rows of V by column (CSC, an inverted index): for feature j, the galleries using it."""
    num_all = v.crow.numel() - 1
    lengths = v.lengths()[num_query:]
    first = int(v.crow[num_query])
    gallery = torch.repeat_interleave(torch.arange(num_all - num_query, device=v.col.device), lengths)
    col = v.col[first:]
    order = torch.argsort(col, stable=True)
    return SparseRows.from_sorted_coo(col[order], gallery[order], v.val[first:][order], num_all, num_all - num_query)


def blend_jaccard(
    out: torch.Tensor,
    v: SparseRows,
    row_max: torch.Tensor,
    lambda_value: float,
    max_rows: int,
    max_products: int,
) -> None:
    """out ← λ · out / row_max + (1 - λ) · d_J, in place, for the [q, g] query × gallery block.

    ``out`` holds squared distances on entry. d_J(p, g) = 1 - S / (2 - S) with
    S = Σ_j min(V_pj, V_gj): every V sums to 1, and min + max = a + b, so
    Σ_j max(V_pj, V_gj) = 2 - S. S is accumulated only over the features j
    that p uses, through the inverted index, one block of queries at a time.
    """
    num_query, num_gallery = out.shape
    index = gallery_columns(v, num_query)
    per_entry = index.lengths()[v.col[: int(v.crow[num_query])]]
    query_of_entry = torch.repeat_interleave(torch.arange(num_query, device=out.device), v.lengths()[:num_query])
    cost = torch.zeros(num_query, dtype=torch.int64, device=out.device).index_add_(0, query_of_entry, per_entry)
    for start, stop in row_blocks(cost, max_rows, max_products):
        overlap = _min_sums(v, index, start, stop, num_gallery)
        ratio = overlap.div_(2.0 - overlap)
        block = out[start:stop]
        block.mul_(lambda_value / row_max[start:stop, None])
        block.add_(ratio, alpha=-(1.0 - lambda_value)).add_(1.0 - lambda_value)


def _min_sums(v: SparseRows, index: SparseRows, start: int, stop: int, num_gallery: int) -> torch.Tensor:
    """[stop - start, g] S(p, g) = Σ_j min(V_pj, V_gj) for the queries p in [start, stop)."""
    device = v.col.device
    query, feature, query_val = v.gather(torch.arange(start, stop, device=device))
    entry, gallery, gallery_val = index.gather(feature)
    overlap = torch.zeros((stop - start) * num_gallery, dtype=v.val.dtype, device=device)
    overlap.index_add_(0, query[entry] * num_gallery + gallery, torch.minimum(query_val[entry], gallery_val))
    return overlap.view(stop - start, num_gallery)
