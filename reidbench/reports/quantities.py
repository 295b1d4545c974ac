"""The quantities a report shows and `--fail-on` gates: one definition of each one's column, unit and direction.

The table, the deltas against a baseline and the regression gate all read
these, so "mAP" means the same number (percent points) in all three, and a
lower latency is an improvement everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Quantity:
    name: str
    """The name `--fail-on` takes."""
    column: str
    """The column in the report's frame (results.csv's name where it has one)."""
    label: str
    unit: str
    scale: float
    """Frame value x scale = the shown value (mAP is stored as a fraction, shown in percent points)."""
    higher_is_better: bool
    deterministic: bool = False
    """The same for every seed (parameters, FLOPs): no ± is shown."""
    per_batch: bool = False
    """Measured per inference batch size; the column is `column@<batch>`."""
    digits: Optional[int] = None
    """Fixed decimals; None: about three significant digits."""
    timed: bool = False
    """A latency or throughput timing, which a busy machine can spoil (its noise is recorded per batch size)."""
    count: bool = False
    """A count shown in millions (parameters): under `SMALL_COUNT` it is shown whole instead ('768 params')."""

    def shown(self, value: float) -> str:
        """A frame value as the report writes it, in this quantity's shown unit."""
        if self.count and abs(value) < SMALL_COUNT:
            return format_count(value)
        return format_number(value * self.scale, self.digits)

    def column_at(self, batch: Optional[int]) -> str:
        return f"{self.column}@{batch}" if self.per_batch else self.column


ACCURACY = [
    Quantity("mAP", "mAP", "mAP %", "pp", 100, True, digits=1),
    Quantity("rank1", "rank1", "R-1 %", "pp", 100, True, digits=1),
    Quantity("rank5", "rank5", "R-5 %", "pp", 100, True, digits=1),
    Quantity("rank10", "rank10", "R-10 %", "pp", 100, True, digits=1),
    Quantity("mINP", "mINP", "mINP %", "pp", 100, True, digits=1),
]
RERANKED = [
    Quantity(f"{q.name}_rr", f"{q.column}_rr", f"{q.label} re-ranked", "pp", 100, True, digits=1) for q in ACCURACY
]
"""The same accuracy after k-reciprocal re-ranking ([eval] rerank = true): shown and gated where a run has it."""
COST = [
    Quantity("params", "params", "params M", "M", 1e-6, False, deterministic=True, count=True),
    Quantity("gmacs", "gmacs", "GMACs", "GMACs", 1, False, deterministic=True),
    Quantity("gflops", "gflops", "GFLOPs", "GFLOPs", 1, False, deterministic=True),
    Quantity("latency_ms", "latency_ms", "ms median", "ms", 1, False, per_batch=True, timed=True),
    Quantity("latency_p90_ms", "latency_p90_ms", "ms p90", "ms", 1, False, per_batch=True, timed=True),
    Quantity("img_per_s", "img_per_s", "img/s", "img/s", 1, True, per_batch=True, timed=True),
    Quantity("peak_infer_mib", "peak_infer_mib", "peak infer MiB", "MiB", 1, False, digits=0),
    Quantity("peak_train_mib", "peak_train_mib", "peak train MiB", "MiB", 1, False, digits=0),
    Quantity("train_seconds", "train_seconds", "train s", "s", 1, False),
    Quantity("train_img_per_s", "train_img_per_s", "train img/s", "img/s", 1, True),
    # Without the first epoch's warm-up, compile and capture: the speed to compare training modes by.
    Quantity("train_img_per_s_steady", "train_img_per_s_steady", "train img/s after epoch 1", "img/s", 1, True),
]


def _mode_quantities(mode: str) -> tuple[Quantity, Quantity]:
    slug = mode.replace("+", "_")
    return (
        Quantity(f"latency_ms_{slug}", f"latency_ms_{slug}", f"ms {mode}", "ms", 1, False, per_batch=True, timed=True),
        Quantity(f"img_per_s_{slug}", f"img_per_s_{slug}", f"img/s {mode}", "img/s", 1, True, per_batch=True, timed=True),
    )


MODE_COST = {mode: _mode_quantities(mode) for mode in ("graph", "compiled", "compiled+graph", "onnxruntime")}
"""Latency mode (besides eager, the headline) -> its median-latency and throughput quantities."""
COMPILE_SECONDS = Quantity("compile_seconds", "compile_seconds", "compile s", "s", 1, False)
"""Wall time the compiling first calls took beyond steady calls, summed over the batch sizes."""
QUANTITIES = {q.name: q for q in ACCURACY + RERANKED + COST + [q for pair in MODE_COST.values() for q in pair] + [COMPILE_SECONDS]}


SMALL_COUNT = 10_000
"""Below 0.01 M a parameter count in millions reads as '1e-06': such counts are written whole."""


def format_count(count: float) -> str:
    """A parameter count written whole: '0', '1 param', '1,536 params'."""
    whole = int(round(count))
    return "0" if whole == 0 else f"{whole:,} param{'' if whole == 1 else 's'}"


def format_params(count: float) -> str:
    """Parameters in millions ('85.8'), or whole where they are fewer than `SMALL_COUNT` ('768 params')."""
    return format_count(count) if abs(count) < SMALL_COUNT else format_number(count * 1e-6)


def format_number(value: float, digits: Optional[int] = None) -> str:
    """Fixed decimals when asked, else about three significant digits (0.0224, 22.7, 11234)."""
    if digits is not None:
        return f"{value:.{digits}f}"
    size = abs(value)
    if size >= 100 or value == 0:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
