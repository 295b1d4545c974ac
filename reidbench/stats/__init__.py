"""The statistics behind reidbench's claims: intervals over seeds and over the test set's identities,
paired and Welch comparisons with equivalence tests, the hierarchical bootstrap, Holm's correction,
verdicts, seeds needed, and latency changes beyond noise. Pure functions on numbers; imports only
reidbench.errors, numpy and scipy. Formulas and references: docs/statistics.md."""
from reidbench.stats.bootstrap import (
    IdentityInterval, identity_bootstrap_interval, rank_k_bootstrap_interval, rank_k_indicator,
)
from reidbench.stats.decisions import Verdict, decide, holm, verdict
from reidbench.stats.hierarchical import hierarchical_bootstrap_compare
from reidbench.stats.hypothesis_tests import Comparison, Method, compare, probability_of_improvement
from reidbench.stats.intervals import MeanInterval, mean_interval
from reidbench.stats.latency import LatencyChange, median_ratio_interval
from reidbench.stats.power import normal_seeds_needed, seeds_needed, t_test_power

__all__ = [
    "Comparison", "IdentityInterval", "LatencyChange", "MeanInterval", "Method", "Verdict",
    "compare", "decide", "hierarchical_bootstrap_compare", "holm", "identity_bootstrap_interval",
    "mean_interval", "median_ratio_interval", "normal_seeds_needed", "probability_of_improvement",
    "rank_k_bootstrap_interval", "rank_k_indicator", "seeds_needed", "t_test_power", "verdict",
]
