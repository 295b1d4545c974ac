"""scripts/seed_spread.py's interval of a spread: what decides whether 'sd <= target' holds over a handful of seeds."""
from __future__ import annotations

import numpy as np

from repo_scripts import load_script


def test_sd_interval_holds_the_sample_sd_and_covers_the_true_one_about_95_percent_of_the_time():
    script = load_script("seed_spread")
    rng = np.random.default_rng(0)
    samples = rng.normal(40.0, 3.0, size=(2000, 5))
    bounds = np.array([[float(x) for x in script.sd_interval(row).strip("[]").split(", ")] for row in samples])
    sds = samples.std(axis=1, ddof=1)
    assert np.all((bounds[:, 0] <= sds + 0.05) & (sds - 0.05 <= bounds[:, 1]))
    covered = np.mean((bounds[:, 0] <= 3.0) & (3.0 <= bounds[:, 1]))
    assert 0.93 <= covered <= 0.97
