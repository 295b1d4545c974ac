"""Query-vs-gallery retrieval metrics under the Market-1501 protocol: mAP, CMC, mINP.

Why it looks the way it does:

* **Chunked.** Queries are processed a chunk at a time, so only a
  ``[chunk, G]`` slab of distances exists at once. MSMT17 (11,659 × 82,161)
  as a whole distance matrix is 3.8 GB in float32 and its argsort another
  7.7 GB; a chunk is about 256 MB by default.
* **No gallery sort.** Every metric here depends only on the rank of each
  *correct* match, and a query has few of those (tens) against a gallery of
  tens of thousands. So the matches are sorted, each gallery entry is dropped
  into the bucket between consecutive matches with one ``searchsorted`` and
  the buckets are counted: O(G log m) per query instead of the O(G log G) of
  an argsort, with integer ranks that are exact.
* **Pessimistic ties.** A wrong gallery entry at exactly the same distance as a
  correct one is ranked ahead of it. That makes the result independent of the
  gallery's file order, and collapsed features (everything at one distance)
  score the worst possible instead of whatever the file order happens to give.
* **Tensor ops only.** No Python loop over queries, so it runs unchanged on CPU
  or CUDA.
* **Rank lists from the same pass.** Each query's first :data:`TOP_K` gallery
  images are kept (`QueryScores.top`), so a report can show what a model
  retrieved. They come from the same slab and the same removals as the
  metrics: a ``topk`` of the wrong answers merged with the correct matches at
  the ranks the metrics gave them, so the first correct entry of a rank list is
  at exactly the query's recorded first correct rank, ties included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F

from reidbench.data.records import JUNK_PID
from reidbench.errors import UsageError
from reidbench.schema import DISTANCES, QueryScores

ArrayLike = Union[torch.Tensor, np.ndarray]


#: Working memory one chunk may use for its [chunk, G] tensors (distances + bucket indices).
CHUNK_BUDGET_BYTES = 256 * 2**20

#: How many gallery images of each query's ranking are kept (`QueryScores.top`): what a rank list shows.
TOP_K = 10


@dataclass(frozen=True, eq=False)
class RankResult:
    """Retrieval accuracy of one query set against one gallery.

    ``cmc[k]`` is the fraction of valid queries whose first correct match is
    within the top ``k + 1``. ``mAP``, ``cmc`` and ``mINP`` are averaged over
    the ``num_valid_queries`` queries that had at least one correct match left
    after the protocol's removals; the ``num_skipped_queries`` others are not
    in any average, so a low count of valid queries is visible rather than
    silently inflating or deflating the scores.

    ``queries`` holds every query's own identity, AP, first correct rank and
    INP (skipped queries with NaN AP and INP and rank 0), in the order of the
    query set: the averages above are their means over the valid queries, and
    an interval over query identities resamples them. Not in ``to_dict``: the
    record keeps the averages, queries.npz the per-query values.
    """

    mAP: float
    cmc: np.ndarray
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    metric: str
    queries: QueryScores

    def _cmc_at(self, k: int) -> float:
        if k > len(self.cmc):
            raise UsageError(
                f"rank{k} needs max_rank >= {k}, but this result was computed "
                f"with max_rank={len(self.cmc)}; pass a larger max_rank to evaluate_rank"
            )
        return float(self.cmc[k - 1])

    @property
    def rank1(self) -> float:
        return self._cmc_at(1)

    @property
    def rank5(self) -> float:
        return self._cmc_at(5)

    @property
    def rank10(self) -> float:
        return self._cmc_at(10)

    def to_dict(self) -> dict:
        """Plain Python types only, so the record can go straight into JSON."""
        record: dict = {
            "metric": self.metric,
            "mAP": float(self.mAP),
            "mINP": float(self.mINP),
        }
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                record[f"rank{k}"] = float(self.cmc[k - 1])
        record["cmc"] = [float(v) for v in self.cmc]
        record["num_valid_queries"] = int(self.num_valid_queries)
        record["num_skipped_queries"] = int(self.num_skipped_queries)
        return record


def evaluate_rank(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: str = "euclidean",
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    top_k: int = TOP_K,
) -> RankResult:
    """Score a query set against a gallery with the Market-1501 protocol.

    For every query, gallery images of the same identity *and* the same camera
    are removed (finding yourself from the same viewpoint proves nothing), and
    gallery images with pid -1 (junk: too little of the person visible to
    count as right or wrong) are removed for everyone. pid 0 distractors stay:
    they are the wrong answers the model must rank below the right ones.
    Queries left with no correct match are skipped and counted.

    ``metric="euclidean"`` ranks by squared euclidean distance on the features
    exactly as given (no normalization); the per-query constant ``|q|^2`` is
    left out because it cannot change a query's ranking and would only add
    rounding. ``metric="cosine"`` ranks by ``1 - cos(q, g)``, i.e. it
    L2-normalizes both sides for this metric only (a zero vector stays zero and
    is at distance 1 from everything). Normalize beforehand yourself if that is
    what the euclidean run should see.

    AP is the mean, over a query's correct matches, of the precision at each
    match's rank (as in the Market-1501 / TorchReID / fast-reid evaluators, not
    the older trapezoid rule). INP is (number of correct matches) / (rank of
    the last one), from Ye et al., "Deep Learning for Person
    Re-identification: A Survey and Outlook".

    Float64 features are compared in float64; anything else in float32, which
    is plenty to rank and twice as fast. ``chunk_size`` queries are scored at
    a time (default: as many as fit in about 256 MB); ``device=None`` uses
    ``qf``'s device when it is a tensor, else the CPU.

    ``queries.top`` holds each query's first ``top_k`` gallery indices (into
    ``gf`` as given, junk included), closest first, after the same removals;
    -1 fills the places of a query that has fewer gallery images left.
    """
    _check_settings(metric, max_rank, chunk_size, top_k)
    if device is None:
        device = qf.device if isinstance(qf, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    qf_t, gf_t, q_pids_t, q_cams_t, g_pids_t, g_cams_t = _checked_inputs(
        qf, gf, q_pids, g_pids, q_camids, g_camids
    )
    num_q = qf_t.shape[0]

    dtype = torch.float64 if torch.float64 in (qf_t.dtype, gf_t.dtype) else torch.float32
    with torch.inference_mode():
        qf_t = qf_t.to(device=device, dtype=dtype)
        gf_t = gf_t.to(device=device, dtype=dtype)
        q_pids_t, q_cams_t, g_pids_t, g_cams_t = (
            t.to(device=device, dtype=torch.int64)
            for t in (q_pids_t, q_cams_t, g_pids_t, g_cams_t)
        )
        gf_t, g_pids_t, g_cams_t, kept = _drop_junk(gf_t, g_pids_t, g_cams_t)
        num_g = gf_t.shape[0]
        if chunk_size is None:
            chunk_size = _default_chunk_size(num_g, dtype)

        qf_t, gf_rows, bias, alpha = _distance_operands(qf_t, gf_t, metric)
        scores = _score_all(
            lambda start, stop: torch.addmm(bias, qf_t[start:stop], gf_rows, alpha=alpha),
            num_q, q_pids_t, q_cams_t, g_pids_t, g_cams_t, chunk_size, top_k,
        )

    return _summarize(scores, q_pids_t, num_g, max_rank, metric, kept)


def evaluate_distances(
    dist: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    chunk_size: int | None = None,
    metric: str = "distance matrix",
    top_k: int = TOP_K,
) -> RankResult:
    """Score a ready [q, g] distance matrix (e.g. re-ranked) with the same protocol as :func:`evaluate_rank`.

    Smaller is closer. The matrix is read, never changed; it is scored a chunk
    of query rows at a time on its own device. ``metric`` names what the
    distances are, for the record.
    """
    _check_settings("euclidean", max_rank, chunk_size, top_k)
    dist_t = _as_tensor("dist", dist)
    if dist_t.ndim != 2 or not dist_t.is_floating_point():
        raise UsageError(f"dist must be a [q, g] matrix of floating-point distances, got shape {tuple(dist_t.shape)}")
    num_q, num_g = dist_t.shape
    with torch.inference_mode():
        device = dist_t.device
        q_pids_t, q_cams_t = (_ids(n, v, num_q, "dist rows").to(device) for n, v in (("q_pids", q_pids), ("q_camids", q_camids)))
        g_pids_t, g_cams_t = (_ids(n, v, num_g, "dist columns").to(device) for n, v in (("g_pids", g_pids), ("g_camids", g_camids)))
        keep = g_pids_t != JUNK_PID
        columns = None if bool(keep.all()) else keep
        if columns is not None:
            g_pids_t, g_cams_t = g_pids_t[keep], g_cams_t[keep]
        chunk_size = chunk_size or _default_chunk_size(int(g_pids_t.numel()), dist_t.dtype)

        def rows(start: int, stop: int) -> torch.Tensor:
            block = dist_t[start:stop]
            return (block[:, columns] if columns is not None else block).clone()  # the scoring writes into its slab

        scores = _score_all(rows, num_q, q_pids_t, q_cams_t, g_pids_t, g_cams_t, chunk_size, top_k)
        kept = None if columns is None else columns.nonzero().squeeze(1)
    return _summarize(scores, q_pids_t, int(g_pids_t.numel()), max_rank, metric, kept)


def _check_settings(metric: str, max_rank: int, chunk_size: int | None, top_k: int = TOP_K) -> None:
    """Reject a bad ``metric``, ``max_rank``, ``chunk_size`` or ``top_k`` before any work is done."""
    if metric not in DISTANCES:
        raise UsageError(
            f"unknown metric {metric!r}; choose one of: {', '.join(repr(m) for m in DISTANCES)}"
        )
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
        raise UsageError(f"max_rank must be a positive integer, got {max_rank!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"top_k must be a positive integer, got {top_k!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise UsageError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _checked_inputs(
    qf: ArrayLike,
    gf: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inputs as tensors, in the order (qf, gf, q_pids, q_camids, g_pids, g_camids), checked to fit together."""
    qf_t = feature_matrix("qf", qf)
    gf_t = feature_matrix("gf", gf)
    if qf_t.shape[1] != gf_t.shape[1]:
        raise UsageError(
            f"qf has {qf_t.shape[1]}-d features but gf has {gf_t.shape[1]}-d; "
            "query and gallery features must come from the same model head"
        )
    num_q, num_g = qf_t.shape[0], gf_t.shape[0]
    q_pids_t = _ids("q_pids", q_pids, num_q, "qf")
    q_cams_t = _ids("q_camids", q_camids, num_q, "qf")
    g_pids_t = _ids("g_pids", g_pids, num_g, "gf")
    g_cams_t = _ids("g_camids", g_camids, num_g, "gf")
    return qf_t, gf_t, q_pids_t, q_cams_t, g_pids_t, g_cams_t


def _drop_junk(
    gf: torch.Tensor, g_pids: torch.Tensor, g_cams: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The gallery without its junk images, and the original index of each kept one (None when it has none:
    the gallery is then returned as is, not copied)."""
    keep = g_pids != JUNK_PID
    if bool(keep.all()):
        return gf, g_pids, g_cams, None
    return gf[keep], g_pids[keep], g_cams[keep], keep.nonzero().squeeze(1)


def _default_chunk_size(num_g: int, dtype: torch.dtype) -> int:
    """Queries per chunk within :data:`CHUNK_BUDGET_BYTES`: a distance and a bucket index per gallery image each."""
    per_row = max(num_g, 1) * (dtype.itemsize + torch.int64.itemsize)
    return max(1, CHUNK_BUDGET_BYTES // per_row)


def _summarize(
    scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    q_pids: torch.Tensor,
    num_g: int,
    max_rank: int,
    metric: str,
    kept: torch.Tensor | None = None,
) -> RankResult:
    """Average the per-query scores of :func:`_score_all` over the queries that have a correct match.

    ``kept``, the original gallery index of each scored (non-junk) image, maps the rank lists back to the gallery
    as given; None when no image was dropped."""
    num_matches, ap, inp, first_rank, top = scores
    if kept is not None:
        top = torch.where(top >= 0, kept[top.clamp(min=0)], top)
    num_q = int(q_pids.numel())
    valid = num_matches > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise UsageError(
            f"none of the {num_q} queries has a correct match in the gallery "
            f"({num_g} non-junk images) once same-id same-camera images are removed; "
            "check that query and gallery come from the same split and that the ids line up"
        )
    cmc = cmc_curve(first_rank[valid] + 1, max_rank)
    return RankResult(
        mAP=float(ap[valid].mean()),
        cmc=cmc,
        mINP=float(inp[valid].mean()),
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
        metric=metric,
        queries=_per_query(q_pids, valid, ap, inp, first_rank, top),
    )


def cmc_curve(first_rank: ArrayLike, max_rank: int) -> np.ndarray:
    """The CMC curve from each query's 1-based rank of its first correct match, as `QueryScores.first_rank` keeps it:
    entry k - 1 is the share of the scored queries whose first correct match is within the top k. A rank of 0 (a
    query the protocol skipped) is in no share, as in `evaluate_rank`, which computes its `cmc` with this function."""
    ranks = first_rank if isinstance(first_rank, torch.Tensor) else torch.from_numpy(np.array(first_rank, dtype=np.int64))
    ranks = ranks[ranks > 0] - 1
    if max_rank < 1 or not len(ranks):
        raise UsageError(f"a CMC curve needs max_rank >= 1 (got {max_rank}) and at least one scored query (got {len(ranks)}).")
    hits = torch.bincount(ranks[ranks < max_rank], minlength=max_rank)
    cmc = (hits.to(torch.float64).cumsum(0) / len(ranks)).cpu().numpy()
    cmc.flags.writeable = False
    return cmc


def _per_query(
    q_pids: torch.Tensor, valid: torch.Tensor, ap: torch.Tensor, inp: torch.Tensor, first_rank: torch.Tensor,
    top: torch.Tensor,
) -> QueryScores:
    """Every query's scores as numpy arrays in query order; a skipped query's AP and INP NaN, its rank 0."""
    nan = torch.tensor(math.nan, dtype=torch.float64, device=ap.device)
    arrays = (
        q_pids.to(torch.int64),
        torch.where(valid, ap, nan),
        torch.where(valid, first_rank + 1, torch.zeros_like(first_rank)),
        torch.where(valid, inp, nan),
    )
    pid, ap_np, rank_np, inp_np, top_np = (a.cpu().numpy() for a in (*arrays, top.to(torch.int32)))
    for array in (pid, ap_np, rank_np, inp_np, top_np):
        array.flags.writeable = False
    return QueryScores(pid=pid, ap=ap_np, first_rank=rank_np, inp=inp_np, top=top_np)


@dataclass(frozen=True, eq=False)
class _Gallery:
    """The gallery side of the scoring, prepared once and shared by every chunk of queries."""

    cams: torch.Tensor  # [G]
    id_order: torch.Tensor  # [G] gallery indices sorted (stably) by identity


def _score_all(
    rows: Callable[[int, int], torch.Tensor],
    num_q: int,
    q_pids: torch.Tensor,
    q_cams: torch.Tensor,
    g_pids: torch.Tensor,
    g_cams: torch.Tensor,
    chunk_size: int,
    top_k: int = TOP_K,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query (number of correct matches, AP, INP, 0-based rank of the first match, [Q, top_k] rank list).

    `rows(start, stop)` gives the [stop - start, G] distances of those queries,
    a slab the scoring may write into. Per-query values are kept (Q floats,
    negligible) and averaged once at the end, so the result does not depend on
    where the chunk boundaries fall.
    """
    device = q_pids.device
    id_order, id_start, id_count = _group_by_identity(g_pids, q_pids)
    gallery = _Gallery(cams=g_cams, id_order=id_order)

    num_matches = torch.zeros(num_q, dtype=torch.int64, device=device)
    ap = torch.zeros(num_q, dtype=torch.float64, device=device)
    inp = torch.zeros(num_q, dtype=torch.float64, device=device)
    first_rank = torch.zeros(num_q, dtype=torch.int64, device=device)
    top = torch.full((num_q, top_k), -1, dtype=torch.int64, device=device)

    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        n_match, rank, top[start:stop] = _rank_matches(
            rows(start, stop), q_cams[start:stop], id_start[start:stop], id_count[start:stop], gallery, top_k)
        num_matches[start:stop] = n_match
        if rank is None:
            continue
        ap[start:stop], inp[start:stop], first_rank[start:stop] = _query_scores(n_match, rank)

    return num_matches, ap, inp, first_rank, top


def _distance_operands(
    qf: torch.Tensor, gf: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(qf, gf transposed, bias, alpha) such that ``addmm(bias, q, gf_t, alpha=alpha)`` ranks the gallery."""
    if metric == "cosine":
        qf = F.normalize(qf, dim=1)
        gf = F.normalize(gf, dim=1)
        # 1 - q·g, as one fused addmm per chunk.
        bias, alpha = torch.ones((), dtype=qf.dtype, device=qf.device), -1.0
    else:
        # |g|^2 - 2 q·g: the squared distance minus the per-query constant |q|^2.
        bias, alpha = (gf * gf).sum(dim=1), -2.0
    return qf, gf.t(), bias, alpha


def _group_by_identity(
    g_pids: torch.Tensor, q_pids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(id_order, id_start, id_count): gallery indices grouped by identity, and where each query's group is.

    A query's same-id images are the slice [id_start, id_start + id_count) of
    id_order, found without any [Q, G] mask.
    """
    g_pids_sorted, id_order = torch.sort(g_pids, stable=True)
    id_start = torch.searchsorted(g_pids_sorted, q_pids)
    id_count = torch.searchsorted(g_pids_sorted, q_pids, right=True) - id_start
    return id_order, id_start, id_count


def _rank_matches(
    dist: torch.Tensor,
    q_cams: torch.Tensor,
    id_start: torch.Tensor,
    id_count: torch.Tensor,
    gallery: _Gallery,
    top_k: int = TOP_K,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """For one chunk of queries: (number of correct matches, [chunk, width] 0-based rank of each match,
    [chunk, top_k] rank list: the gallery index at each of the first places, -1 past the kept gallery).

    Column k of the rank table is the rank of each query's (k + 1)-th closest
    correct match among the kept gallery; columns past a query's number of
    matches are padding. The table is None when no query of the chunk has a
    match. The [chunk, G] distances and bucket indices are freed as soon as
    they have been used, which keeps a chunk within the memory that
    :func:`_default_chunk_size` planned for.
    """
    rows_in_chunk = dist.shape[0]
    device = dist.device
    match_row, match_dist, match_col = _take_same_id(dist, q_cams, id_start, id_count, gallery)
    # The closest wrong answers: every same-id entry is at inf now, and a correct match joins them below.
    wrong = dist.topk(min(top_k, dist.shape[1]), dim=1, largest=False, sorted=True)

    n_match = torch.bincount(match_row, minlength=rows_in_chunk)
    width = int(n_match.max()) if match_row.numel() else 0
    if width == 0:
        return n_match, None, _rank_list(wrong, None, None, n_match, top_k)
    match_table, match_cols = _match_table(match_row, match_dist, match_col, n_match, width)

    # Bucket j of a wrong answer = how many matches are strictly closer, so
    # the wrong answers ranked before match k are those in buckets 0..k
    # (ties go before the match: the pessimistic rule). Removed entries sit
    # at inf and land in a bucket past the last real match.
    bucket = torch.searchsorted(match_table, dist)
    del dist
    per_bucket = torch.zeros(rows_in_chunk, width + 1, dtype=torch.int64, device=device)
    per_bucket.scatter_add_(1, bucket, torch.ones((), dtype=torch.int64, device=device).expand_as(bucket))
    del bucket
    wrong_before = per_bucket[:, :width].cumsum(dim=1)

    rank = torch.arange(width, device=device) + wrong_before  # 0-based rank of match k among the kept gallery
    return n_match, rank, _rank_list(wrong, match_cols, rank, n_match, top_k)


def _rank_list(
    wrong: tuple[torch.Tensor, torch.Tensor], match_cols: torch.Tensor | None, rank: torch.Tensor | None,
    n_match: torch.Tensor, top_k: int,
) -> torch.Tensor:
    """[chunk, top_k] gallery indices, closest first: each correct match at the rank the metrics gave it, the wrong
    answers (``wrong``: values and indices of a sorted topk) in order in the places between; -1 where none is left.

    Built from the rank table rather than re-sorted, so a rank list never disagrees with the query's scores.
    """
    values, indices = wrong
    rows_in_chunk = n_match.shape[0]
    device = n_match.device
    out = torch.full((rows_in_chunk, top_k), -1, dtype=torch.int64, device=device)
    taken = torch.zeros(rows_in_chunk, top_k, dtype=torch.bool, device=device)
    if rank is not None and match_cols is not None:
        first = min(rank.shape[1], top_k)
        rank, cols = rank[:, :first], match_cols[:, :first]
        shown = (torch.arange(first, device=device) < n_match[:, None]) & (rank < top_k)
        row = torch.arange(rows_in_chunk, device=device)[:, None].expand_as(rank)[shown]
        out[row, rank[shown]] = cols[shown]
        taken[row, rank[shown]] = True
    if indices.shape[1] == 0:  # an empty gallery
        return out
    # The p-th free place takes the p-th closest wrong answer.
    slot = (~taken).cumsum(dim=1) - 1
    found = slot < indices.shape[1]
    slot = slot.clamp(0, indices.shape[1] - 1)
    fill = ~taken & found & torch.isfinite(values.gather(1, slot))
    return torch.where(fill, indices.gather(1, slot), out)


def _take_same_id(
    dist: torch.Tensor,
    q_cams: torch.Tensor,
    id_start: torch.Tensor,
    id_count: torch.Tensor,
    gallery: _Gallery,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, distance, gallery index) of every correct match in ``dist``, a [chunk, G] slab; all same-id entries
    become inf.

    Same-id images are either correct matches (ranked separately) or
    same-camera images the protocol removes: neither competes as a wrong answer.
    """
    device = dist.device
    # Every (query, gallery image) pair with the same id, flattened.
    row = torch.repeat_interleave(torch.arange(dist.shape[0], device=device), id_count)
    offset_in_row = torch.arange(row.numel(), device=device) - (id_count.cumsum(0) - id_count)[row]
    col = gallery.id_order[id_start[row] + offset_in_row]
    is_match = gallery.cams[col] != q_cams[row]
    match_dist = dist[row, col][is_match]
    match_row = row[is_match]
    dist[row, col] = math.inf
    return match_row, match_dist, col[is_match]


def _match_table(
    match_row: torch.Tensor, match_dist: torch.Tensor, match_col: torch.Tensor, n_match: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[chunk, width] tables of each query's match distances, ascending, padded with inf, and of the gallery
    index of each (padded with -1)."""
    device = match_dist.device
    slot = torch.arange(match_row.numel(), device=device) - (n_match.cumsum(0) - n_match)[match_row]
    table = torch.full((n_match.shape[0], width), math.inf, dtype=match_dist.dtype, device=device)
    table[match_row, slot] = match_dist
    cols = torch.full((n_match.shape[0], width), -1, dtype=torch.int64, device=device)
    cols[match_row, slot] = match_col
    table, order = table.sort(dim=1)
    return table, cols.gather(1, order)


def _query_scores(
    n_match: torch.Tensor, rank: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(AP, INP, 0-based rank of the first match) per query, from the rank table of :func:`_rank_matches`."""
    k = torch.arange(rank.shape[1], device=rank.device)
    is_real = k < n_match[:, None]
    precision = (k + 1).to(torch.float64) / (rank + 1).to(torch.float64)
    denom = n_match.clamp(min=1).to(torch.float64)
    ap = (precision * is_real).sum(dim=1) / denom
    last_rank = rank.gather(1, (n_match - 1).clamp(min=0)[:, None]).squeeze(1)
    inp = n_match.to(torch.float64) / (last_rank + 1).to(torch.float64)
    return ap, inp, rank[:, 0]


def _as_tensor(name: str, value: object) -> torch.Tensor:
    """View numpy input as a tensor without copying (the gallery can be GBs)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        array = np.ascontiguousarray(value)
        return torch.from_numpy(array)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"{name} must be a torch tensor or a numpy array of numbers, "
            f"got {type(value).__name__} ({exc})"
        ) from exc


def feature_matrix(name: str, value: object) -> torch.Tensor:
    """`value` as a non-empty 2-D tensor of finite real numbers, not copied; a UsageError naming `name` otherwise."""
    features = _as_tensor(name, value)
    if features.ndim != 2:
        raise UsageError(
            f"{name} must be 2-D [num_images, feature_dim], got shape {tuple(features.shape)}"
        )
    if features.shape[0] == 0:
        raise UsageError(f"{name} is empty (shape {tuple(features.shape)}); nothing to evaluate")
    if features.dtype == torch.bool or features.dtype.is_complex:
        raise UsageError(f"{name} must hold real numbers, got dtype {features.dtype}")
    if features.dtype.is_floating_point and not bool(torch.isfinite(features).all()):
        raise UsageError(
            f"{name} contains NaN or infinite values; the model diverged or the "
            "features were read wrongly"
        )
    return features


def _ids(name: str, value: object, expected: int, features_name: str) -> torch.Tensor:
    ids = _as_tensor(name, value)
    if ids.ndim != 1:
        raise UsageError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
    if ids.shape[0] != expected:
        raise UsageError(
            f"{name} has {ids.shape[0]} entries but {features_name} has {expected} rows; "
            "there must be one id per image"
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise UsageError(f"{name} must hold integers, got dtype {ids.dtype}")
    return ids


@dataclass(frozen=True)
class ChanceLevel:
    """What a model that ranks the gallery at random scores, on average, under the protocol of `evaluate_rank`."""

    mAP: float
    rank1: float
    scored_queries: int
    skipped_queries: int
    """Queries without a correct match once the protocol's removals are made (not scored, as in `evaluate_rank`)."""


def chance_level(q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike, g_camids: ArrayLike) -> ChanceLevel:
    """The expected mAP and rank-1 of a uniformly random ranking: the floor a trained model must clear.

    Per query, after junk and its identity's same-camera entries are removed, a
    gallery of N entries holds R correct matches. Over all N! orders equally
    likely, rank-1 is R / N and the expected AP (the mean over the matches of the
    precision at each one's rank) is (H_N + (R - 1) / (N - 1) (N - H_N)) / N, with
    H_N the N-th harmonic number (the match at rank k brings 1 / k for itself and
    (k - 1)(R - 1) / ((N - 1) k) for the matches expected above it). The
    averages are over the queries `evaluate_rank` scores. Random features (any
    continuous distribution, independent of the identities) rank at random, so
    this is also their expected score, without the luck of one draw.
    """
    q_pid, q_cam, g_pid, g_cam = (np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.int64).ravel()
                                  for x in (q_pids, q_camids, g_pids, g_camids))
    keep = g_pid != JUNK_PID
    g_pid, g_cam = g_pid[keep], g_cam[keep]
    per_pid = dict(zip(*np.unique(g_pid, return_counts=True)))
    pairs, pair_counts = np.unique(np.stack([g_pid, g_cam]), axis=1, return_counts=True)
    per_pair = dict(zip(map(tuple, pairs.T.tolist()), pair_counts.tolist()))
    same = np.array([per_pair.get((p, c), 0) for p, c in zip(q_pid.tolist(), q_cam.tolist())], dtype=np.int64)
    matches = np.array([per_pid.get(p, 0) for p in q_pid.tolist()], dtype=np.int64) - same
    gallery = g_pid.size - same
    scored = matches > 0
    if not scored.any():
        raise UsageError(
            f"none of the {q_pid.size} queries has a correct match in the gallery ({g_pid.size} non-junk images) once "
            "same-id same-camera images are removed; check that query and gallery come from the same split and that the ids line up"
        )
    n, r = gallery[scored].astype(np.float64), matches[scored].astype(np.float64)
    harmonic = np.cumsum(1.0 / np.arange(1, int(n.max()) + 1))[n.astype(np.int64) - 1]
    others = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1) * (n - harmonic), 0.0)
    return ChanceLevel(mAP=float(np.mean((harmonic + others) / n)), rank1=float(np.mean(r / n)),
                       scored_queries=int(scored.sum()), skipped_queries=int((~scored).sum()))
