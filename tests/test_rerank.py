"""k-reciprocal re-ranking: the sparse, chunked rerank against a dense reference written from the paper.

The reference (:func:`reference_rerank`) follows Zhong et al., CVPR 2017,
section 3 and its Algorithm, with the definitions rerank's docstring states:
d = squared euclidean distance divided by its row maximum over all N
samples, N(p, k) = the k + 1 nearest with p first, R(p, k) the reciprocal
subset, R*(p, k1) expanded by R(i, round(k1/2)) when more than 2/3 of it is
in R(p, k1), V = exp(-d) on R* summing to 1, query expansion over the k2
nearest, Jaccard distance from element-wise min and max, and the λ blend.
It holds everything as dense float64 matrices and loops over sets, the
opposite of the implementation under test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reidbench
from reidbench.errors import UsageError
from reidbench.evaluation.metrics import evaluate_rank
from reidbench.evaluation.rerank import half_k, rerank
from reidbench.evaluation import rerank_knn

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def reference_rerank(qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Dense float64 re-ranked [q, g] distances, the paper's equations one by one."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    n, q = len(x), len(qf)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    d = squared / squared.max(axis=1, keepdims=True)
    order = [sorted(range(n), key=lambda j, p=p: (j != p, d[p, j], j)) for p in range(n)]

    def reciprocal(p: int, k: int) -> set[int]:
        return {i for i in order[p][: k + 1] if p in order[i][: k + 1]}

    v = np.zeros((n, n))
    for p in range(n):
        r_p = reciprocal(p, k1)
        expanded = set(r_p)
        for i in r_p:
            r_i = reciprocal(i, int(round(k1 / 2)))
            if len(r_p & r_i) > 2 / 3 * len(r_i):
                expanded |= r_i
        members = sorted(expanded)
        weight = np.exp(-d[p, members])
        v[p, members] = weight / weight.sum()
    v = np.stack([v[order[p][:k2]].mean(axis=0) for p in range(n)])
    mins = np.minimum(v[:q, None, :], v[None, q:, :]).sum(axis=2)
    maxs = np.maximum(v[:q, None, :], v[None, q:, :]).sum(axis=2)
    return (1 - lam) * (1 - mins / maxs) + lam * d[:q, q:]


def textbook_map_cmc(dist: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 10) -> tuple[float, np.ndarray]:
    """Market-1501 mAP and CMC from a distance matrix, one query at a time (no ties in the inputs used)."""
    aps, cmcs = [], []
    for i in range(len(dist)):
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        matches = (g_pids[keep] == q_pids[i])[np.argsort(dist[i][keep], kind="stable")]
        if not matches.any():
            continue
        hit_ranks = np.flatnonzero(matches) + 1
        aps.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        cmcs.append(np.cumsum(matches[:max_rank]).clip(max=1))
    return float(np.mean(aps)), np.mean(cmcs, axis=0)


def evaluate_distances(dist: torch.Tensor, q_pids, g_pids, q_cams, g_cams) -> tuple[float, np.ndarray]:
    """evaluate_rank on a [q, g] distance matrix, through features whose euclidean ranking is exactly it.

    evaluate_rank ranks by |g|² - 2 q·g. With q_i = e_i and g = (-dist[:, g] / 2, c_g),
    c_g chosen so that every |g|² is the same constant, that is constant + dist[i, g].
    """
    dist = dist.to(torch.float64)
    num_q = dist.shape[0]
    qf = torch.cat([torch.eye(num_q, dtype=torch.float64), torch.zeros(num_q, 1, dtype=torch.float64)], dim=1)
    half = -dist / 2
    norms = (half * half).sum(dim=0)
    pad = (norms.max() + 1 - norms).sqrt()
    gf = torch.cat([half, pad[None, :]], dim=0).t()
    result = evaluate_rank(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    return result.mAP, result.cmc


def make_problem(num_q: int, num_g: int, dim: int, seed: int, duplicates: int = 0) -> dict:
    """Random features (no ties), ids and cameras; the first ``duplicates`` queries have exact copies in the gallery."""
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((num_q, dim))
    gf = rng.standard_normal((num_g, dim))
    gf[:duplicates] = qf[:duplicates]
    q_pids = rng.integers(1, 9, num_q)
    g_pids = rng.integers(0, 9, num_g)
    g_pids[:duplicates] = q_pids[:duplicates]
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    return dict(qf=qf, gf=gf, q_pids=q_pids, g_pids=g_pids, q_cams=q_cams, g_cams=g_cams)


PROBLEMS = [
    pytest.param(30, 50, 16, 20, 6, 0.3, 0, None, id="30x50-default"),
    pytest.param(64, 200, 32, 20, 6, 0.3, 3, None, id="64x200-default-duplicates"),
    pytest.param(64, 200, 32, 10, 3, 0.5, 0, 17, id="64x200-k1=10-k2=3-lambda=0.5-chunk17"),
    pytest.param(40, 90, 8, 7, 7, 0.0, 0, 5, id="40x90-k1=7-k2=7-lambda=0-chunk5"),
    pytest.param(3, 5, 4, 20, 6, 1.0, 0, None, id="3x5-lists-longer-than-N"),
]


@pytest.mark.parametrize("num_q, num_g, dim, k1, k2, lam, duplicates, chunk", PROBLEMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rerank_equals_the_paper(num_q, num_g, dim, k1, k2, lam, duplicates, chunk, dtype) -> None:
    data = make_problem(num_q, num_g, dim, seed=num_q * num_g + k1, duplicates=duplicates)
    expected = reference_rerank(data["qf"], data["gf"], k1, k2, lam)
    qf, gf = torch.from_numpy(data["qf"]).to(dtype), torch.from_numpy(data["gf"]).to(dtype)

    got = rerank(qf, gf, k1, k2, lam, chunk_size=chunk)

    assert got.dtype == torch.float32 and got.shape == (num_q, num_g)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (10, 3, 0.5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_map_and_cmc_of_rerank_equal_the_paper(k1, k2, lam, dtype) -> None:
    data = make_problem(64, 200, 32, seed=7 + k1, duplicates=4)
    ids = (data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
    expected = reference_rerank(data["qf"], data["gf"], k1, k2, lam)
    got = rerank(torch.from_numpy(data["qf"]).to(dtype), torch.from_numpy(data["gf"]).to(dtype), k1, k2, lam)

    map_ref, cmc_ref = evaluate_distances(torch.from_numpy(expected), *ids)
    map_got, cmc_got = evaluate_distances(got, *ids)
    assert map_got == map_ref
    np.testing.assert_array_equal(cmc_got, cmc_ref)
    textbook_map, textbook_cmc = textbook_map_cmc(expected, *ids)
    assert map_ref == pytest.approx(textbook_map, abs=1e-12)
    np.testing.assert_allclose(cmc_ref, textbook_cmc, atol=1e-12)


def test_re_ranking_changes_the_ranking() -> None:
    """Guards the test above against comparing two plain euclidean rankings."""
    data = make_problem(64, 200, 32, seed=27, duplicates=4)
    ids = (data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
    qf, gf = torch.from_numpy(data["qf"]), torch.from_numpy(data["gf"])
    plain = torch.cdist(qf, gf)
    assert evaluate_distances(rerank(qf, gf), *ids)[0] != evaluate_distances(plain, *ids)[0]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1000])
def test_chunk_size_does_not_change_the_result(chunk) -> None:
    data = make_problem(30, 70, 12, seed=3)
    qf, gf = torch.from_numpy(data["qf"]).float(), torch.from_numpy(data["gf"]).float()
    torch.testing.assert_close(rerank(qf, gf, chunk_size=chunk), rerank(qf, gf), rtol=0, atol=1e-6)


MERGES = {"sparse": 1, "dense": 10**9, "auto": rerank_knn.SPARSE_MERGE_FRACTION}
"""SPARSE_MERGE_FRACTION values that force each way of merging a slab's columns, or leave the choice to the data."""


@pytest.mark.parametrize("merge", sorted(MERGES))
@pytest.mark.parametrize("layout", ["random", "sorted-line"])
@pytest.mark.parametrize("chunk", [3, 16, 500])
def test_nearest_neighbours_match_a_full_sort(monkeypatch, merge, layout, chunk) -> None:
    """Points on a sorted line make every slab entry a candidate for the later columns: the worst case."""
    monkeypatch.setattr(rerank_knn, "SPARSE_MERGE_FRACTION", MERGES[merge])
    generator = torch.Generator().manual_seed(5)
    if layout == "random":
        feats = torch.randn(150, 6, dtype=torch.float64, generator=generator)
    else:
        feats = torch.linspace(0, 1, 150, dtype=torch.float64)[:, None] ** 1.5
    out = torch.empty(20, 130)
    knn, row_max = rerank_knn.nearest_neighbours(feats, 11, 20, out, chunk)
    full = torch.cdist(feats, feats) ** 2
    full.fill_diagonal_(-1)
    assert torch.equal(knn, full.argsort(dim=1, stable=True)[:, :11])
    full.fill_diagonal_(0)
    torch.testing.assert_close(row_max, full.amax(dim=1))
    torch.testing.assert_close(out, full[:20, 20:].float())


@pytest.mark.parametrize("merge", ["sparse", "dense"])
def test_both_column_merges_give_the_paper_result(monkeypatch, merge) -> None:
    monkeypatch.setattr(rerank_knn, "SPARSE_MERGE_FRACTION", MERGES[merge])
    data = make_problem(64, 200, 32, seed=31, duplicates=2)
    expected = reference_rerank(data["qf"], data["gf"], 20, 6, 0.3)
    got = rerank(torch.from_numpy(data["qf"]), torch.from_numpy(data["gf"]), chunk_size=24)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-4)


def test_features_are_not_normalised_silently() -> None:
    """The row maximum makes d scale-free, but the direction of the features is the caller's to fix."""
    data = make_problem(20, 40, 8, seed=11)
    qf, gf = torch.from_numpy(data["qf"]), torch.from_numpy(data["gf"])
    torch.testing.assert_close(rerank(3.5 * qf, 3.5 * gf), rerank(qf, gf), rtol=0, atol=1e-6)
    normalised = rerank(torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1))
    assert not torch.allclose(normalised, rerank(qf, gf), atol=1e-3)


def test_inputs_are_left_alone_and_numpy_is_accepted() -> None:
    data = make_problem(10, 25, 5, seed=2)
    qf, gf = torch.from_numpy(data["qf"]).float(), torch.from_numpy(data["gf"]).float()
    qf_copy, gf_copy = qf.clone(), gf.clone()
    from_tensors = rerank(qf, gf)
    assert torch.equal(qf, qf_copy) and torch.equal(gf, gf_copy)
    torch.testing.assert_close(rerank(qf.numpy(), gf.numpy()), from_tensors)


def test_half_k_rounds_like_the_authors_code() -> None:
    assert [half_k(k1) for k1 in (1, 2, 3, 5, 7, 20, 21)] == [0, 1, 2, 2, 4, 10, 10]


def test_rerank_is_exported_at_the_package_top() -> None:
    assert reidbench.rerank is rerank
    assert "rerank" in reidbench.__all__


GOOD = dict(qf=torch.zeros(3, 4), gf=torch.ones(5, 4))


@pytest.mark.parametrize("change, named", [
    (dict(k1=0), "k1"),
    (dict(k1=2.5), "k1"),
    (dict(k2=0), "k2"),
    (dict(k1=5, k2=6), "k2=6"),
    (dict(lambda_value=-0.1), "lambda_value"),
    (dict(lambda_value=1.5), "lambda_value"),
    (dict(lambda_value=float("nan")), "lambda_value"),
    (dict(qf=torch.tensor([[0.0, float("nan"), 0.0, 0.0]])), "qf"),
    (dict(gf=torch.full((2, 4), float("inf"))), "gf"),
    (dict(gf=torch.ones(5, 3)), "3-d"),
    (dict(qf=torch.zeros(0, 4)), "qf"),
    (dict(gf=torch.zeros(0, 4)), "gf"),
    (dict(qf=torch.zeros(4)), "qf"),
    (dict(qf=torch.zeros(3, 0), gf=torch.zeros(5, 0)), "0-d features"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_input_is_a_usage_error_naming_it(change, named) -> None:
    kwargs = {**GOOD, **change}
    with pytest.raises(UsageError, match=named):
        rerank(**kwargs)


@CUDA
def test_rerank_on_cuda_equals_the_cpu() -> None:
    data = make_problem(64, 200, 32, seed=9, duplicates=2)
    qf, gf = torch.from_numpy(data["qf"]).float(), torch.from_numpy(data["gf"]).float()
    on_gpu = rerank(qf.cuda(), gf.cuda(), chunk_size=50)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), rerank(qf, gf), rtol=0, atol=1e-5)
    torch.testing.assert_close(rerank(qf, gf, device="cuda").cpu(), rerank(qf, gf), rtol=0, atol=1e-5)
