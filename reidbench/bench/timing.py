"""Timing of a callable: warm-up excluded, many repeats, median and p90.

On CUDA each repeat is bracketed by CUDA events (kernel launches are
asynchronous, so a host timer would measure the launch, not the work); on CPU
by perf_counter. Repeats stop at `repeats` or once `max_seconds` of timed work
has passed, whichever is first, but never below `min_repeats`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch


NOISY_SPREAD = 1.5
"""A timing whose p90 exceeds this multiple of its median was disturbed (a busy machine, frequency changes)."""
MIN_TRUSTED_REPEATS = 5
"""Fewer repeats than this cannot tell a typical call from an outlier."""


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    timer: str

    @property
    def noise(self) -> Optional[str]:
        """Why this timing cannot be trusted, or None: reports mark it and the CI gate skips it."""
        if self.repeats < MIN_TRUSTED_REPEATS:
            return f"only {self.repeats} repeat(s), fewer than {MIN_TRUSTED_REPEATS}"
        if self.p90_ms > NOISY_SPREAD * self.median_ms:
            return f"p90 {self.p90_ms:.3g} ms is {self.p90_ms / self.median_ms:.1f}x the median {self.median_ms:.3g} ms"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noisy": self.noise}


def time_callable(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    max_seconds: float,
    min_repeats: int = 3,
) -> Timing:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        times = _cuda_event_times(fn, repeats, max_seconds, min_repeats)
        timer = "cuda-events"
    else:
        times = _host_times(fn, repeats, max_seconds, min_repeats)
        timer = "perf_counter"
    ms = np.asarray(times, dtype=np.float64)
    return Timing(
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        repeats=len(times),
        warmup=warmup,
        timer=timer,
    )


def _host_times(fn: Callable[[], Any], repeats: int, max_seconds: float, min_repeats: int) -> list[float]:
    times: list[float] = []
    while len(times) < repeats:
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        if len(times) >= min_repeats and sum(times) > max_seconds * 1e3:
            break
    return times


def _cuda_event_times(fn: Callable[[], Any], repeats: int, max_seconds: float, min_repeats: int) -> list[float]:
    torch.cuda.synchronize()
    pairs = []
    wall_start = time.perf_counter()
    while len(pairs) < repeats:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
        # Check the wall clock only now and then: a synchronize per repeat would
        # drain the launch queue and add host gaps between the timed regions.
        if len(pairs) >= min_repeats and len(pairs) % 10 == 0 and time.perf_counter() - wall_start > max_seconds:
            break
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in pairs]
