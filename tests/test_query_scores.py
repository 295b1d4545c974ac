"""queries.npz: every query's result kept beside the record, read back exactly, a damaged file named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidbench.errors import UsageError
from reidbench.rundir import RunDir
from reidbench.schema import QueryScores


def scores(n: int, seed: int) -> QueryScores:
    rng = np.random.default_rng(seed)
    first_rank = rng.integers(0, 5, n)
    ap = np.where(first_rank > 0, rng.random(n), np.nan)
    return QueryScores(pid=rng.integers(0, 10, n), ap=ap, first_rank=first_rank, inp=ap / 2)


def test_query_scores_round_trip_per_evaluation_key(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.cell_dir("vit768-none", 3).mkdir(parents=True)
    written = {"test": scores(50, 0), "test/rr": scores(50, 1), "modalities/R": scores(7, 2)}
    run.write_queries("vit768-none", 3, written)

    read = run.read_queries("vit768-none", 3)

    assert read is not None and set(read) == set(written)
    for key, s in written.items():
        for name in ("pid", "ap", "first_rank", "inp"):
            np.testing.assert_array_equal(getattr(read[key], name), getattr(s, name))
        np.testing.assert_array_equal(read[key].valid, s.first_rank > 0)


def test_a_cell_without_query_scores_reads_as_none(tmp_path: Path) -> None:
    assert RunDir(tmp_path).read_queries("vit768-none", 0) is None


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_a_damaged_queries_file_is_named(tmp_path: Path, content: bytes) -> None:
    run = RunDir(tmp_path)
    run.cell_dir("c", 0).mkdir(parents=True)
    run.queries_path("c", 0).write_bytes(content)
    with pytest.raises(UsageError, match="queries.npz is damaged"):
        run.read_queries("c", 0)


def test_arrays_of_different_lengths_are_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.cell_dir("c", 0).mkdir(parents=True)
    np.savez(run.queries_path("c", 0), **{"test/pid": np.arange(3), "test/ap": np.ones(2),
                                          "test/first_rank": np.ones(3, int), "test/inp": np.ones(3)})
    with pytest.raises(UsageError, match="different lengths"):
        run.read_queries("c", 0)
