"""evaluate_rank against a per-query textbook implementation, plus protocol and input checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reidbench.errors import UsageError
from reidbench.evaluation.metrics import RankResult, evaluate_distances, evaluate_rank

TOL = 1e-6


def reference_per_query(qf, gf, q_pids, g_pids, q_camids, g_camids, metric):
    """Market-1501 protocol one query at a time, straight from the definitions.

    Ties between a correct and a wrong gallery entry put the wrong one first
    (lexsort on (distance, is_match)), the rule evaluate_rank documents.
    Returns per query (AP, 1-based rank of the first correct match, INP); a
    skipped query (no correct match left) has NaN, 0, NaN.
    """
    qf = np.asarray(qf, dtype=np.float64)
    gf = np.asarray(gf, dtype=np.float64)
    if metric == "cosine":
        qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    aps, first_ranks, inps = np.full(len(qf), np.nan), np.zeros(len(qf), dtype=np.int64), np.full(len(qf), np.nan)
    for i in range(len(qf)):
        if metric == "cosine":
            dist = 1.0 - gf @ qf[i]
        else:
            dist = np.sqrt(((gf - qf[i]) ** 2).sum(axis=1))
        keep = (g_pids != -1) & ~((g_pids == q_pids[i]) & (g_camids == q_camids[i]))
        dist, is_match = dist[keep], g_pids[keep] == q_pids[i]
        if not is_match.any():
            continue
        hits = is_match[np.lexsort((is_match, dist))]
        hit_positions = np.flatnonzero(hits)  # 0-based ranks of the correct matches
        precisions = [(n + 1) / (pos + 1) for n, pos in enumerate(hit_positions)]
        aps[i] = sum(precisions) / len(precisions)
        first_ranks[i] = hit_positions[0] + 1
        inps[i] = len(hit_positions) / (hit_positions[-1] + 1)
    return aps, first_ranks, inps


def reference_rank(qf, gf, q_pids, g_pids, q_camids, g_camids, metric, max_rank):
    """The per-query reference averaged over the valid queries: (mAP, cmc, mINP, num_valid, num_skipped)."""
    aps, first_ranks, inps = reference_per_query(qf, gf, q_pids, g_pids, q_camids, g_camids, metric)
    valid = first_ranks > 0
    cmc = np.mean([[1.0 if rank <= k + 1 else 0.0 for k in range(max_rank)] for rank in first_ranks[valid]], axis=0)
    return float(np.mean(aps[valid])), cmc, float(np.mean(inps[valid])), int(valid.sum()), int((~valid).sum())


def make_data(seed, num_q=60, num_g=400, dim=16, dtype=np.float64):
    """Random features with every protocol case present.

    Gallery ids 0..30 plus junk (-1) and distractors (0); query ids 1..35, so
    ids 31..35 have no gallery image at all, and query 0's id (99) exists in
    the gallery only under the query's own camera, so the camera rule removes
    all of it. Both kinds of query must be skipped.
    """
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((num_q, dim)).astype(dtype)
    gf = rng.standard_normal((num_g, dim)).astype(dtype)
    g_pids = rng.integers(0, 31, num_g)
    g_pids[rng.choice(num_g, num_g // 10, replace=False)] = -1
    g_camids = rng.integers(0, 6, num_g)
    q_pids = rng.integers(1, 36, num_q)
    q_camids = rng.integers(0, 6, num_q)
    q_pids[0], q_camids[0] = 99, 2
    g_pids[:3], g_camids[:3] = 99, 2
    return qf, gf, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(result: RankResult, data, metric, max_rank, tol=TOL):
    ref_map, ref_cmc, ref_minp, ref_valid, ref_skipped = reference_rank(*data, metric, max_rank)
    assert result.num_valid_queries == ref_valid
    assert result.num_skipped_queries == ref_skipped
    assert result.mAP == pytest.approx(ref_map, abs=tol)
    assert result.mINP == pytest.approx(ref_minp, abs=tol)
    assert result.cmc.shape == (max_rank,)
    np.testing.assert_allclose(result.cmc, ref_cmc, rtol=0, atol=tol)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 7, 60, 1000, None])
def test_matches_reference(metric, chunk_size):
    data = make_data(seed=0)
    result = evaluate_rank(*data, metric=metric, max_rank=20, chunk_size=chunk_size)
    assert result.metric == metric
    assert result.num_skipped_queries >= 6  # query 0 and every query with id 31..35
    assert_matches_reference(result, data, metric, max_rank=20)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_per_query_scores_match_the_reference_and_average_to_the_metrics(metric, chunk_size):
    data = make_data(seed=5)
    result = evaluate_rank(*data, metric=metric, max_rank=20, chunk_size=chunk_size)
    queries = result.queries
    ref_ap, ref_first, ref_inp = reference_per_query(*data, metric)

    np.testing.assert_array_equal(queries.pid, data[2])
    np.testing.assert_array_equal(queries.first_rank, ref_first)
    np.testing.assert_allclose(queries.ap, ref_ap, rtol=0, atol=1e-5)  # NaN where skipped, on both sides
    np.testing.assert_allclose(queries.inp, ref_inp, rtol=0, atol=1e-5)
    valid = queries.valid
    assert int((~valid).sum()) == result.num_skipped_queries >= 6
    assert np.isnan(queries.ap[~valid]).all() and np.isnan(queries.inp[~valid]).all()
    assert queries.ap[valid].mean() == pytest.approx(result.mAP, abs=1e-12)
    assert queries.inp[valid].mean() == pytest.approx(result.mINP, abs=1e-12)
    cmc = [(queries.first_rank[valid] <= k).mean() for k in range(1, 21)]
    np.testing.assert_allclose(result.cmc, cmc, rtol=0, atol=1e-12)
    assert "queries" not in result.to_dict()


def test_per_query_scores_of_a_distance_matrix_line_up_with_the_query_set():
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_data(seed=6)
    dist = np.sqrt(((qf[:, None, :] - gf[None, :, :]) ** 2).sum(axis=2))
    queries = evaluate_distances(dist, q_pids, g_pids, q_camids, g_camids, chunk_size=11).queries
    ref_ap, ref_first, ref_inp = reference_per_query(qf, gf, q_pids, g_pids, q_camids, g_camids, "euclidean")
    np.testing.assert_array_equal(queries.pid, q_pids)
    np.testing.assert_array_equal(queries.first_rank, ref_first)
    np.testing.assert_allclose(queries.ap, ref_ap, rtol=0, atol=1e-5)
    np.testing.assert_allclose(queries.inp, ref_inp, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_matches_reference_other_seeds(seed, metric):
    data = make_data(seed=seed, num_q=40, num_g=300, dim=8)
    result = evaluate_rank(*data, metric=metric, max_rank=50, chunk_size=9)
    assert_matches_reference(result, data, metric, max_rank=50)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_float32_features_match_reference(metric):
    data = make_data(seed=4, dtype=np.float32)
    result = evaluate_rank(*data, metric=metric, max_rank=20, chunk_size=16)
    assert_matches_reference(result, data, metric, max_rank=20)


def test_exact_ties_rank_wrong_answers_first():
    # Small-integer features make many distances exactly equal (exact in float64).
    rng = np.random.default_rng(5)
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_data(seed=5)
    qf = rng.integers(0, 3, qf.shape[:1] + (3,)).astype(np.float64)
    gf = rng.integers(0, 3, gf.shape[:1] + (3,)).astype(np.float64)
    data = (qf, gf, q_pids, g_pids, q_camids, g_camids)
    result = evaluate_rank(*data, max_rank=20, chunk_size=13)
    assert_matches_reference(result, data, "euclidean", max_rank=20)

    # Hence the result cannot depend on the gallery's order.
    perm = rng.permutation(len(gf))
    shuffled = evaluate_rank(qf, gf[perm], q_pids, g_pids[perm], q_camids, g_camids[perm], max_rank=20)
    assert shuffled.mAP == result.mAP and shuffled.mINP == result.mINP
    np.testing.assert_array_equal(shuffled.cmc, result.cmc)


def test_collapsed_features_score_worst_case():
    # All distances equal: every wrong answer is ranked ahead of every match.
    qf = np.zeros((1, 4))
    gf = np.zeros((5, 4))
    result = evaluate_rank(qf, gf, [1], [2, 1, 3, 1, 0], [0], [1, 1, 1, 1, 1], max_rank=5)
    # matches end up at ranks 4 and 5: AP = (1/4 + 2/5) / 2, INP = 2/5
    assert result.mAP == pytest.approx((1 / 4 + 2 / 5) / 2, abs=1e-12)
    assert result.mINP == pytest.approx(2 / 5, abs=1e-12)
    np.testing.assert_array_equal(result.cmc, [0, 0, 0, 1, 1])


def test_hand_computed_example():
    # 1-D features; the query is at 0 unless noted. Gallery:
    #   g0 pid  1 cam 0 at 0.10   same id + same camera as q0: removed for q0
    #   g1 pid  2 cam 1 at 0.20
    #   g2 pid  1 cam 1 at 0.30
    #   g3 pid -1 cam 1 at 0.35   junk: removed for everyone
    #   g4 pid  0 cam 2 at 0.40   distractor: stays
    #   g5 pid  1 cam 2 at 0.50
    # q0 (pid 1, cam 0, at 0): ranking g1 g2 g4 g5 -> matches at ranks 2 and 4,
    #    AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4 = 0.5, not a rank-1 hit.
    # q1 (pid 2, cam 0, at 0.19): g1 (distance 0.01) is the closest and a match,
    #    AP = 1, INP = 1/1 = 1, rank-1 hit.
    # q2 (pid 3): no pid 3 in the gallery -> skipped.
    # q3 (pid 2, cam 1): its only gallery image g1 is from camera 1 too -> skipped.
    # mAP = (0.5 + 1) / 2 = 0.75, mINP = 0.75, rank-1 = 1/2, rank-2 onwards = 1.
    # (Keeping g0 would make q0 a rank-1 hit; keeping g3 would push g5 to rank 5.)
    qf = np.array([[0.0], [0.19], [0.0], [0.0]])
    gf = np.array([[0.10], [0.20], [0.30], [0.35], [0.40], [0.50]])
    q_pids, q_camids = np.array([1, 2, 3, 2]), np.array([0, 0, 0, 1])
    g_pids, g_camids = np.array([1, 2, 1, -1, 0, 1]), np.array([0, 1, 1, 1, 2, 2])
    result = evaluate_rank(qf, gf, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    assert result.mAP == pytest.approx(0.75, abs=1e-12)
    assert result.mINP == pytest.approx(0.75, abs=1e-12)
    assert result.rank1 == pytest.approx(0.5)
    assert result.rank5 == result.rank10 == pytest.approx(1.0)
    np.testing.assert_allclose(result.cmc, [0.5] + [1.0] * 9)
    assert (result.num_valid_queries, result.num_skipped_queries) == (2, 2)


def test_numpy_and_torch_inputs_agree():
    data = make_data(seed=6, dtype=np.float32)
    from_numpy = evaluate_rank(*data, metric="cosine", max_rank=20)
    from_torch = evaluate_rank(*(torch.from_numpy(x) for x in data), metric="cosine", max_rank=20)
    assert from_numpy.to_dict() == from_torch.to_dict()


def test_max_rank_beyond_gallery_saturates():
    data = make_data(seed=7, num_q=10, num_g=30)
    result = evaluate_rank(*data, max_rank=100)
    assert result.cmc.shape == (100,)
    assert result.cmc[-1] == pytest.approx(1.0)
    assert_matches_reference(result, data, "euclidean", max_rank=100)


def test_result_is_frozen_and_serializable():
    result = evaluate_rank(*make_data(seed=8), max_rank=10)
    record = result.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert type(record["mAP"]) is float and type(record["num_valid_queries"]) is int
    assert record["cmc"] == result.cmc.tolist()
    assert (record["rank1"], record["rank5"], record["rank10"]) == (
        result.rank1,
        result.rank5,
        result.rank10,
    )
    with pytest.raises(AttributeError):
        result.mAP = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.cmc[0] = 1.0


def test_rank_beyond_max_rank_is_a_clear_error():
    result = evaluate_rank(*make_data(seed=9), max_rank=5)
    assert "rank10" not in result.to_dict()
    with pytest.raises(UsageError, match="max_rank"):
        result.rank10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_cuda_matches_reference(metric):
    data = make_data(seed=10)
    on_gpu = evaluate_rank(*(torch.from_numpy(x).cuda() for x in data), metric=metric, max_rank=20)
    assert_matches_reference(on_gpu, data, metric, max_rank=20)
    also_gpu = evaluate_rank(*data, metric=metric, max_rank=20, chunk_size=7, device="cuda")
    assert also_gpu.to_dict() == on_gpu.to_dict()
    ref_ap, ref_first, _ = reference_per_query(*data, metric)
    np.testing.assert_array_equal(on_gpu.queries.first_rank, ref_first)  # numpy on the host, whatever the device
    np.testing.assert_allclose(on_gpu.queries.ap, ref_ap, rtol=0, atol=1e-5)


def _bad(**overrides):
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_data(seed=11, num_q=8, num_g=40)
    kwargs = dict(
        qf=qf, gf=gf, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids
    )
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(metric="manhattan"), r"'manhattan'.*'euclidean', 'cosine'"),
        (dict(q_pids=np.arange(7)), r"q_pids has 7 entries but qf has 8 rows"),
        (dict(g_camids=np.zeros(41, dtype=np.int64)), r"g_camids has 41 entries but gf has 40 rows"),
        (dict(gf=np.zeros((40, 15))), r"qf has 16-d features but gf has 15-d"),
        (dict(qf=np.zeros(16)), r"qf must be 2-D"),
        (dict(gf=np.zeros((0, 16))), r"gf is empty"),
        (dict(g_pids=np.zeros(40)), r"g_pids must hold integers"),
        (dict(q_camids=np.zeros((8, 1), dtype=np.int64)), r"q_camids must be 1-D"),
        (dict(qf=np.full((8, 16), np.nan)), r"qf contains NaN"),
        (dict(gf=["a"] * 40), r"gf must be a torch tensor or a numpy array"),
        (dict(max_rank=0), r"max_rank must be a positive integer"),
        (dict(chunk_size=0), r"chunk_size must be a positive integer"),
        (dict(g_pids=np.full(40, 1000)), r"none of the 8 queries has a correct match"),
    ],
)
def test_bad_input_raises_usage_error(overrides, message):
    with pytest.raises(UsageError, match=message):
        evaluate_rank(**_bad(**overrides))


def test_the_chance_level_is_the_expected_score_of_a_random_ranking() -> None:
    """Hand-counted: one query whose gallery (after its same-camera copy and the junk go) holds 3 entries, 2 of
    them its identity: the 3 orders of match positions give AP 1, 5/6 and 7/12, so 29/36, and rank-1 2/3. A query
    whose identity is only in its own camera is skipped. And the mean of many random-feature evaluations lands on it."""
    from reidbench.evaluation.metrics import chance_level

    exact = chance_level([5, 7], [5, 5, 5, 7, -1], [0, 1], [0, 1, 2, 1, 1])
    assert exact.mAP == pytest.approx(29 / 36) and exact.rank1 == pytest.approx(2 / 3)
    assert (exact.scored_queries, exact.skipped_queries) == (1, 1)
    rng = np.random.default_rng(0)
    q_pids, q_cams = rng.integers(0, 12, 40), rng.integers(0, 3, 40)
    g_pids, g_cams = np.concatenate([rng.integers(0, 12, 90), np.zeros(10, int), -np.ones(5, int)]), rng.integers(0, 3, 105)
    draws = [evaluate_rank(torch.randn(40, 16), torch.randn(105, 16), q_pids, g_pids, q_cams, g_cams) for _ in range(400)]
    expected = chance_level(q_pids, g_pids, q_cams, g_cams)
    m_ap = np.array([d.mAP for d in draws])
    assert abs(m_ap.mean() - expected.mAP) < 4 * m_ap.std() / np.sqrt(m_ap.size)
    rank1 = np.array([d.rank1 for d in draws])
    assert abs(rank1.mean() - expected.rank1) < 4 * rank1.std() / np.sqrt(rank1.size)
    with pytest.raises(UsageError, match="none of the 1 queries"):
        chance_level([3], [3, 4], [0], [0, 1])
