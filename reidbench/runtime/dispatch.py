"""Counting the operations a piece of eager PyTorch code dispatches, and labelling its phases for the profiler.

On a GPU whose host cannot queue kernels as fast as the device runs them (a
ViT-B training step at batch 64 on an H200), step time follows the number of
operations dispatched, not their arithmetic. A count is exact and the same on
every machine, so it pins down host cost where timings cannot: on a 2-core CPU,
in CI, and beside a bare library loop that dispatches the minimum.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any, Callable, ContextManager, TypeVar

from torch.profiler import record_function
from torch.utils._python_dispatch import TorchDispatchMode

T = TypeVar("T")


class _DispatchCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 -- torch's protocol
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_dispatches(fn: Callable[[], T]) -> tuple[T, Counter[str]]:
    """`fn()`'s result and how many times it dispatched each ATen operator (autograd's backward included).

    Eager code only: a compiled region would be traced under the counter, not run.
    """
    with _DispatchCounter() as counter:
        result = fn()
    return result, counter.counts


def total(counts: Counter[str]) -> int:
    return sum(counts.values())


def difference(more: Counter[str], fewer: Counter[str]) -> dict[str, Any]:
    """Per operator, how many more times `more` dispatched it than `fewer` (non-zero entries, largest first)."""
    delta = Counter(more)
    delta.subtract(fewer)
    return dict(sorted(((op, n) for op, n in delta.items() if n), key=lambda item: (-abs(item[1]), item[0])))


_UNLABELLED = contextlib.nullcontext()


def labeller(enabled: bool) -> Callable[[str], ContextManager[Any]]:
    """`region(name)` context managers: `torch.profiler.record_function` when `enabled`, else a no-op.

    Off by default because a label is itself a dispatched operation, and the
    step being timed should dispatch only its own work.
    """
    if enabled:
        return record_function
    return lambda name: _UNLABELLED
