"""The statistics against scipy.stats and hand computations, on fixed inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reidbench.errors import UsageError
from reidbench.stats import (
    compare, decide, hierarchical_bootstrap_compare, holm, identity_bootstrap_interval, mean_interval,
    median_ratio_interval, normal_seeds_needed, probability_of_improvement, rank_k_bootstrap_interval,
    seeds_needed, t_test_power, verdict,
)
from reidbench.stats.bootstrap import draw_identities

A = np.array([81.2, 79.8, 80.5, 82.0, 80.9, 81.4])
B = np.array([80.1, 79.9, 79.6, 80.8, 80.2, 80.0])
C = np.array([78.9, 80.4, 79.1, 81.7, 79.5])


def test_mean_interval_is_the_student_t_interval() -> None:
    result = mean_interval(A, confidence=0.9)
    low, high = sps.t.interval(0.9, A.size - 1, loc=A.mean(), scale=sps.sem(A))
    assert (result.mean, result.n) == (pytest.approx(A.mean()), 6)
    assert (result.low, result.high) == (pytest.approx(low), pytest.approx(high))
    assert result.half_width == pytest.approx((high - low) / 2)


def test_one_seed_has_no_interval() -> None:
    result = mean_interval([80.0])
    assert (result.mean, result.low, result.high, result.half_width, result.n) == (80.0, None, None, None, 1)


def test_paired_comparison_is_scipys_paired_t() -> None:
    result = compare(A, B, paired=True, margin=0.5)
    reference = sps.ttest_rel(A, B)
    interval = reference.confidence_interval(0.95)
    assert result.test == "paired-t" and (result.n_a, result.n_b) == (6, 6)
    assert result.diff == pytest.approx((A - B).mean())
    assert result.p == pytest.approx(reference.pvalue)
    assert (result.ci_low, result.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))


def test_unpaired_comparison_is_scipys_welch_t() -> None:
    result = compare(A, C, paired=False, margin=0.5, alpha=0.1)
    reference = sps.ttest_ind(A, C, equal_var=False)
    interval = reference.confidence_interval(0.9)
    assert result.test == "welch" and (result.n_a, result.n_b) == (6, 5)
    assert result.p == pytest.approx(reference.pvalue)
    assert (result.ci_low, result.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))


@pytest.mark.parametrize("paired, other, margin", [(True, B, 1.5), (True, B, 0.3), (False, C, 2.0), (False, C, 0.1)])
def test_tost_is_the_larger_of_two_one_sided_t_tests(paired: bool, other: np.ndarray, margin: float) -> None:
    if paired:
        lower = sps.ttest_rel(A + margin, other, alternative="greater").pvalue
        upper = sps.ttest_rel(A - margin, other, alternative="less").pvalue
    else:
        lower = sps.ttest_ind(A + margin, other, equal_var=False, alternative="greater").pvalue
        upper = sps.ttest_ind(A - margin, other, equal_var=False, alternative="less").pvalue
    assert compare(A, other, paired=paired, margin=margin).tost_p == pytest.approx(max(lower, upper))


def test_probability_of_improvement() -> None:
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.0, 5.0, 1.0])
    assert probability_of_improvement(a, b, paired=True) == 2.5 / 4  # won, tied, lost, won
    u = sps.mannwhitneyu(A, C).statistic
    assert compare(A, C, paired=False, margin=0).p_improvement == pytest.approx(u / (A.size * C.size))
    assert compare(A, B, paired=True, margin=0).p_improvement == np.mean(A > B) + 0.5 * np.mean(A == B)


def test_holm_matches_a_hand_computed_example() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, 0.6, 0.01]) == pytest.approx([0.4, 0.6, 0.03])
    assert holm([0.4, 0.5]) == pytest.approx([0.8, 0.8])  # 0.5·1 raised to 0.8
    assert holm([0.3, 0.9, 0.02]) == pytest.approx([0.6, 0.9, 0.06])
    assert holm([0.6, 0.7, 0.8]) == pytest.approx([1.0, 1.0, 1.0])  # capped


def one_big_identity() -> tuple[np.ndarray, np.ndarray]:
    """50 queries of identity 0 all found (AP 1), 50 identities of one query each all missed (AP 0)."""
    return np.r_[np.ones(50), np.zeros(50)], np.r_[np.zeros(50, int), np.arange(1, 51)]


def test_the_bootstrap_resamples_identities_not_images() -> None:
    values, ids = one_big_identity()
    by_identity = identity_bootstrap_interval(values, ids, n_resamples=20000)
    by_image = identity_bootstrap_interval(values, np.arange(values.size), n_resamples=20000)
    # Identity 0 is drawn N ~ Binomial(51, 1/51) times; the mean is 50N / (50N + 51 − N), increasing in N.
    def mean_given(n: float) -> float:
        return 50 * n / (50 * n + 51 - n)

    assert by_identity.low == pytest.approx(mean_given(sps.binom.ppf(0.025, 51, 1 / 51)))
    assert by_identity.high == pytest.approx(mean_given(sps.binom.ppf(0.975, 51, 1 / 51)))
    assert by_image.width == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 100), rel=0.15)
    assert by_identity.width > 3 * by_image.width
    assert (by_identity.estimate, by_identity.n_queries, by_identity.n_identities) == (0.5, 100, 51)


def test_every_resample_holds_whole_identities() -> None:
    rng = np.random.default_rng(3)
    ids = rng.choice([7, 11, 19, 23, 42, 64], size=40)
    values = rng.random(40)
    result = identity_bootstrap_interval(values, ids, n_resamples=500, seed=5, confidence=0.8)
    labels, index = np.unique(ids, return_inverse=True)
    draws = draw_identities(np.random.default_rng(5), labels.size, 500)
    means = [np.concatenate([values[index == k] for k in row]).mean() for row in draws]
    assert (result.low, result.high) == (pytest.approx(np.quantile(means, 0.1)), pytest.approx(np.quantile(means, 0.9)))


def test_the_bootstrap_is_deterministic_given_its_seed() -> None:
    values, ids = np.random.default_rng(0).random(60), np.arange(60) // 3
    assert identity_bootstrap_interval(values, ids, seed=4) == identity_bootstrap_interval(values, ids, seed=4)
    assert identity_bootstrap_interval(values, ids, seed=4) != identity_bootstrap_interval(values, ids, seed=5)


def test_rank_k_is_the_share_of_queries_found_within_k() -> None:
    ranks, ids = np.array([1, 3, 1, 12, 2, 5, 1, 1]), np.array([0, 0, 1, 1, 2, 2, 3, 3])
    rank_1 = rank_k_bootstrap_interval(ranks, ids, k=1, n_resamples=500)
    rank_5 = rank_k_bootstrap_interval(ranks, ids, k=5, n_resamples=500)
    assert (rank_1.estimate, rank_5.estimate) == (0.5, 7 / 8)
    assert rank_1 == identity_bootstrap_interval((ranks <= 1).astype(float), ids, n_resamples=500)


def seeds_by_queries(seed_effects: list[float], n_queries: int = 30) -> np.ndarray:
    query_effects = np.random.default_rng(1).random(n_queries)
    return np.array([query_effects + effect for effect in seed_effects])


def test_hierarchical_bootstrap_resamples_identities_and_paired_seeds_jointly() -> None:
    a = seeds_by_queries([0.0, 0.2, 0.5])
    ids = np.arange(30) // 2
    paired = hierarchical_bootstrap_compare(a, a - 0.1, ids, paired=True, margin=0.05, n_resamples=500)
    # Same identities and same seeds for A and B on every resample: A − B is exactly 0.1 each time.
    assert (paired.ci_low, paired.ci_high, paired.diff) == (pytest.approx(0.1),) * 3
    assert paired.p == pytest.approx(2 / 501) and paired.p_improvement == 1.0
    assert paired.test == "bootstrap" and paired.seeds_needed is None
    unpaired = hierarchical_bootstrap_compare(a, a - 0.1, ids, paired=False, margin=0.05, n_resamples=500)
    assert unpaired.ci_high - unpaired.ci_low > 0.1  # seeds drawn apart: the seed spread shows
    same = hierarchical_bootstrap_compare(a, a, ids, paired=True, margin=0.05, n_resamples=500)
    assert (same.p, same.tost_p) == (1.0, pytest.approx(1 / 501))


def test_hierarchical_bootstrap_equals_a_direct_loop_with_one_seed() -> None:
    rng = np.random.default_rng(2)
    a, b, ids = rng.random((1, 24)), rng.random((1, 24)), np.arange(24) // 4
    result = hierarchical_bootstrap_compare(a, b, ids, paired=True, margin=0.1, n_resamples=300, seed=9)
    draws = draw_identities(np.random.default_rng(9), 6, 300)
    mean_a, mean_b = ([np.concatenate([x[0, ids == k] for k in row]).mean() for row in draws] for x in (a, b))
    diffs = np.array(mean_a) - np.array(mean_b)
    assert (result.ci_low, result.ci_high) == tuple(pytest.approx(q) for q in np.quantile(diffs, [0.025, 0.975]))
    assert result.p == pytest.approx(min(1, 2 * (1 + min((diffs <= 0).sum(), (diffs >= 0).sum())) / 301))
    assert result.p_improvement == pytest.approx(np.mean(diffs > 0))


def test_verdicts_on_constructed_cases() -> None:
    noise = np.array([0.1, -0.2, 0.15, -0.05, 0.0, 0.1])
    better = compare(B + 2 + noise, B, paired=True, margin=0.5)
    same = compare(B + noise / 10, B, paired=True, margin=0.5)
    unclear = compare(B + noise * 10, B, paired=True, margin=0.5)
    assert decide([better, same, unclear]) == ("a-better", "equivalent", "undecided")
    assert decide([compare(B, B + 2 + noise, paired=True, margin=0.5)]) == ("b-better",)
    assert verdict(0.049, 0.9, -1.0) == "b-better" and verdict(0.06, 0.01, 0.2) == "equivalent"


def test_holm_can_turn_a_difference_into_undecided() -> None:
    p = np.array([0.03, 0.04])  # each below 0.05 alone; Holm gives 0.06, 0.06
    assert [verdict(p_holm, 0.5, 1.0) for p_holm in holm(p)] == ["undecided", "undecided"]
    assert [verdict(raw, 0.5, 1.0) for raw in p] == ["a-better", "a-better"]


def test_seeds_needed_follows_the_power_formula() -> None:
    assert normal_seeds_needed(1.0, 1.0, paired=False) == pytest.approx(15.70, abs=0.01)
    assert normal_seeds_needed(0.5, 1.0, paired=True) == pytest.approx(31.40, abs=0.01)
    # The t test needs a little more than the normal formula: the published counts for d = 1 and d_z = 0.5.
    assert seeds_needed(1.0, 1.0, paired=False) == 17 and seeds_needed(0.5, 1.0, paired=True) == 34
    n = seeds_needed(0.3, 0.7, paired=False)
    assert t_test_power(n, 0.3, 0.7, paired=False) >= 0.8 > t_test_power(n - 1, 0.3, 0.7, paired=False)
    assert n >= normal_seeds_needed(0.3, 0.7, paired=False)
    assert seeds_needed(0.0, 1.0, paired=True) is None


def test_noncentral_t_power_matches_simulation() -> None:
    differences = np.random.default_rng(0).normal(0.5, 1.0, size=(20000, 12))
    p = sps.ttest_1samp(differences, 0.0, axis=1).pvalue
    assert t_test_power(12, 0.5, 1.0, paired=True) == pytest.approx(np.mean(p < 0.05), abs=0.015)


def test_a_comparison_plans_seeds_from_its_own_spread() -> None:
    result = compare(A, B, paired=True, margin=0.2)
    d = A - B
    assert result.seeds_needed == seeds_needed(d.mean(), d.std(ddof=1), paired=True)
    tiny = compare(B + np.array([0.01, -0.01, 0.0, 0.01, -0.01, 0.0]), B, paired=True, margin=0.2)
    assert tiny.seeds_needed == seeds_needed(0.2, np.std([0.01, -0.01, 0.0, 0.01, -0.01, 0.0], ddof=1), paired=True)


def test_latency_change_beyond_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(10.0), 0.05, 40)
    later = base * 1.2 + rng.normal(0, 0.1, 40)
    slower = median_ratio_interval(base, later)
    assert slower.ratio == pytest.approx(np.median(later) / np.median(base))
    assert 1.1 < slower.low < slower.ratio < slower.high and slower.beyond_noise
    again = rng.lognormal(np.log(10.0), 0.05, 40)
    same = median_ratio_interval(base, again)
    assert same.p == pytest.approx(sps.mannwhitneyu(base, again, alternative="two-sided").pvalue)
    assert same.ratio == pytest.approx(np.median(again) / np.median(base)) and not same.beyond_noise


@pytest.mark.parametrize("call, message", [
    (lambda: mean_interval([]), "at least 1"),
    (lambda: mean_interval([1.0, float("nan")]), "NaN"),
    (lambda: compare([1.0, 2.0, 3.0], [1.0, 2.0], paired=True, margin=0.1), "aligned by seed"),
    (lambda: compare([1.0], [1.0, 2.0], paired=False, margin=0.1), "hierarchical bootstrap"),
    (lambda: compare(A, B, paired=True, margin=-1), "margin"),
    (lambda: compare(A, B, paired=True, margin=0.1, alpha=1.5), "alpha"),
    (lambda: identity_bootstrap_interval([0.5, 0.7], [1, 2, 3]), "one identity per query"),
    (lambda: identity_bootstrap_interval([0.5, 0.7], [1, 2], n_resamples=10), "resamples"),
    (lambda: rank_k_bootstrap_interval([0, 2], [1, 2], k=1), "from 1"),
    (lambda: hierarchical_bootstrap_compare([[0.1, 0.2]], [[0.1, 0.2, 0.3]], [1, 2], paired=True, margin=0),
     "same queries"),
    (lambda: hierarchical_bootstrap_compare([0.1, 0.2], [0.1, 0.2], [1, 2], paired=True, margin=0), "per seed"),
    (lambda: median_ratio_interval([1.0, 0.0], [1.0, 2.0]), "positive"),
    (lambda: holm([0.2, 1.3]), "between 0 and 1"),
])
def test_bad_input_is_a_usage_error_with_a_sentence(call, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call()
