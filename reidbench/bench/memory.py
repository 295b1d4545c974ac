"""Peak memory of a region: CUDA allocator peaks on GPU, the tensor memory the region itself allocates on CPU.

On CUDA the peaks are reset right before the region, so they belong to it
alone (weights that are already resident count, as they do for a user).

On CPU the number is `peak_tensor_mib`: the most bytes of tensor storage that
blocks allocated inside the region held at one time, from PyTorch's CPU
allocator as its profiler reports it (every allocation and every free of a
block allocated while it listened, in order). Memory allocated before the
region (weights, images, the gradients of an earlier step) is not charged, and
freeing it inside the region gives the region nothing back; which memory the C
allocator reuses, and what it keeps resident, does not enter. The process's
resident set cannot say this: a region that reuses pages it freed itself (a
training step that frees the last step's gradients and allocates new ones into
them) raises neither the resident size nor its high-water mark, so a model with
twice the parameters read less than one with half.

Beside it, for the record, the region's resident-memory increase
(`peak_rss_delta_mib`: its peak resident size minus the size it started from,
the peak from the kernel's high-water mark reset by writing 5 to
/proc/self/clear_refs, or sampled every millisecond where that is refused;
glibc's malloc_trim first hands freed heap pages back). Where the profiler
cannot listen (another profiler is running, a PyTorch without it) that increase
is the number, and `kind` says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import threading
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, Optional

import torch

MiB = 1024**2


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None


def release_free_heap() -> bool:
    """Hand the allocator's free pages back to the kernel, so that reusing them counts as new resident memory."""
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


CPU_TENSORS, RSS_DELTA, CUDA_ALLOCATOR = "cpu-tensor-peak", "peak-rss-delta", "cuda-allocator"
"""A memory record's `kind`: what its headline number measures."""


def measure_peak_memory(
    region: Callable[[], Any], device: torch.device, release: Optional[Callable[[], Any]] = None,
) -> dict[str, Any]:
    """Run `region` once and report its peak memory in MiB.

    `release` frees what the region leaves allocated (a step's gradients); it runs
    right after the region, still listened to, so that no block the region
    allocated outlives the listening unaccounted.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        region()
        torch.cuda.synchronize(device)
        if release is not None:
            release()
        return {
            "peak_allocated_mib": torch.cuda.max_memory_allocated(device) / MiB,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / MiB,
            "kind": CUDA_ALLOCATOR,
        }
    trimmed = release_free_heap()
    before = rss_bytes()
    with TensorAllocations() as tensors:
        if reset_peak_rss():
            region()
            peak, how = peak_rss_bytes(), "high-water mark reset before the region"
        else:
            with RssSampler() as sampler:
                region()
            peak, how = max(sampler.peak, rss_bytes()), "resident size sampled every millisecond"
        if release is not None:
            release()
    if not trimmed:
        how += "; freed heap memory could not be released first, so reusing it is not counted"
    rss = {"peak_rss_delta_mib": max(peak - before, 0) / MiB, "peak_rss_mib": peak / MiB, "start_rss_mib": before / MiB}
    if tensors.peak is None:
        return {**rss, "kind": RSS_DELTA, "how": f"the resident-memory increase ({how}): {tensors.why}"}
    return {"peak_tensor_mib": tensors.peak / MiB, **rss, "kind": CPU_TENSORS,
            "how": f"tensor memory the region allocated, from PyTorch's CPU allocator; its resident-memory increase: {how}"}


HEADLINES = ("peak_allocated_mib", "peak_tensor_mib", "peak_rss_delta_mib", "peak_rss_mib")
"""A memory record's keys, in the order a table takes its number from: CUDA's allocator, the CPU tensors the region
allocated, the region's resident-memory increase (a record from before tensors were counted), the process's peak."""
KIND_WORDS = {CUDA_ALLOCATOR: "allocated", CPU_TENSORS: "tensors allocated", RSS_DELTA: "RSS increase", "peak-rss": "process RSS"}
"""Each `kind` in a few words, for a column header."""


def headline_mib(entry: dict[str, Any]) -> Optional[float]:
    """The number a table shows for one memory record (None where it has none)."""
    return next((entry[key] for key in HEADLINES if entry.get(key) is not None), None)


class TensorAllocations:
    """The peak of tensor bytes allocated inside the `with` block and held at once (`peak`, None where the
    profiler could not listen, `why` then says why), from the PyTorch profiler's memory events.

    The CPU allocator reports a free only for a block allocated while the profiler
    listened, so the running sum of the events is what the block allocated and still holds.
    """

    def __init__(self) -> None:
        self.peak: Optional[int] = None
        self.why = ""
        self.listening = False

    def __enter__(self) -> "TensorAllocations":
        try:
            from torch._C._profiler import _ExperimentalConfig
            from torch.autograd import ProfilerConfig, ProfilerState, _enable_profiler_legacy

            _enable_profiler_legacy(ProfilerConfig(ProfilerState.CPU, False, True, False, False, False, _ExperimentalConfig()))
            self.listening = True
        except (ImportError, AttributeError, RuntimeError, TypeError) as exc:
            self.why = f"PyTorch's profiler could not listen ({type(exc).__name__}: {exc})"
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.listening:
            return
        from torch.autograd import _disable_profiler_legacy

        threads = _disable_profiler_legacy()
        events = sorted(((e.start_us(), e.cpu_memory_usage()) for thread in threads for e in thread
                         if e.kind() == "memory_alloc" and e.cpu_memory_usage()), key=lambda event: event[0])
        self.peak = max(accumulate((nbytes for _, nbytes in events), initial=0))


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class RssSampler:
    """The largest resident size seen while the `with` block runs, read in a thread every millisecond."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s, self.peak = interval_s, rss_bytes()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "RssSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
