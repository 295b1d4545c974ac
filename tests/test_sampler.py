"""PK sampler: batch structure, coverage, determinism, and the split across ranks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.errors import UsageError
from reidbench.training.sampler import PKSampler


def dataset_pids(num_ids: int, seed: int = 0, low: int = 1, high: int = 9) -> list[int]:
    """Identities with 1..8 images each, shuffled, with non-contiguous pid values."""
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(num_ids) * 3 + 7, rng.integers(low, high, num_ids))
    return rng.permutation(pids).tolist()


def epoch(sampler: PKSampler, number: int) -> list[list[int]]:
    sampler.set_epoch(number)
    return list(sampler)


@pytest.mark.parametrize("num_ids", [40, 37])  # divisible by P, and not
def test_batches_are_p_ids_times_k_images_and_cover_every_id(num_ids):
    pids = dataset_pids(num_ids)
    sampler = PKSampler(pids, p=8, k=4, seed=3)
    batches = epoch(sampler, 0)
    assert len(batches) == len(sampler) == -(-num_ids // 8)
    seen = set()
    for batch in batches:
        assert len(batch) == 32 and all(isinstance(i, int) for i in batch)
        groups = [batch[j : j + 4] for j in range(0, 32, 4)]
        ids = [{pids[i] for i in group} for group in groups]
        assert all(len(s) == 1 for s in ids), "each run of K indices is one identity"
        assert len(set.union(*ids)) == 8, "P distinct identities per batch"
        seen |= set.union(*ids)
    assert seen == set(pids)


def test_ids_with_fewer_than_k_images_repeat_others_do_not():
    pids = [0] * 2 + [1] * 6 + [2] * 4 + [3] * 1
    sampler = PKSampler(pids, p=2, k=4, seed=0)
    counts = np.bincount(pids)
    for number in range(5):
        for batch in epoch(sampler, number):
            for j in range(0, len(batch), 4):
                group = batch[j : j + 4]
                count = counts[pids[group[0]]]
                assert set(group) <= {i for i, pid in enumerate(pids) if pid == pids[group[0]]}
                if count >= 4:  # without replacement
                    assert len(set(group)) == 4
                else:  # with replacement: K draws from fewer images
                    assert len(set(group)) <= count


def test_deterministic_per_seed_and_epoch_and_accepts_a_tensor():
    pids = dataset_pids(30)
    a = PKSampler(pids, p=4, k=4, seed=11)
    b = PKSampler(torch.tensor(pids), p=4, k=4, seed=11)
    assert epoch(a, 2) == epoch(b, 2)
    assert epoch(a, 2) == epoch(a, 2), "iterating twice replays the epoch"
    assert epoch(a, 2) != epoch(a, 3)
    assert epoch(a, 2) != epoch(PKSampler(pids, p=4, k=4, seed=12), 2)


@pytest.mark.parametrize("num_ids", [48, 37, 21])  # even steps, a short last step, a short last batch
def test_ranks_are_disjoint_within_a_step_and_cover_every_id(num_ids):
    pids = dataset_pids(num_ids, seed=1)
    ranks = [PKSampler(pids, p=4, k=2, seed=5, rank=r, world_size=2) for r in range(2)]
    per_rank = [epoch(s, 1) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == -(-num_ids // 8)
    seen = set()
    for step in zip(*per_rank):
        ids = [{pids[i] for i in batch} for batch in step]
        assert all(len(s) == 4 for s in ids)
        assert not ids[0] & ids[1]
        seen |= ids[0] | ids[1]
    assert seen == set(pids)


def test_too_few_ids_is_a_usage_error_suggesting_a_smaller_p():
    with pytest.raises(UsageError, match="only 5.*P <= 5"):
        PKSampler(dataset_pids(5), p=8, k=4, seed=0)
    with pytest.raises(UsageError, match="2 ranks"):
        PKSampler(dataset_pids(10), p=8, k=4, seed=0, world_size=2)
    with pytest.raises(UsageError, match="rank"):
        PKSampler(dataset_pids(10), p=2, k=4, seed=0, rank=2, world_size=2)
