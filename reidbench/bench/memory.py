"""Peak memory of a region: CUDA allocator peaks on GPU, the region's own resident-memory increase on CPU.

On CUDA the peaks are reset right before the region, so they belong to it
alone (weights that are already resident count, as they do for a user). On
CPU a process's resident set holds everything it ever loaded (the decoded
images, every model so far), so its peak says little about one region: the
region's number is its peak resident size minus the resident size it started
from (`peak_rss_delta_mib`). The peak comes from the kernel's high-water mark,
reset before the region by writing 5 to /proc/self/clear_refs; where that is
refused, a thread samples the resident size while the region runs.

Memory that the C allocator has freed but not handed back stays resident: a
region that reuses it raises neither the resident size nor its high-water
mark, and would be charged nothing (after a full-size model was freed, a
516 MiB tensor measured 0 MiB). So before the region glibc's malloc_trim
returns the free heap pages to the kernel, and the region is charged for
every page it touches; `how` says where that was not possible.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import threading
from pathlib import Path
from typing import Any, Callable

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


def measure_peak_memory(region: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Run `region` once and report its peak memory in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        region()
        torch.cuda.synchronize(device)
        return {
            "peak_allocated_mib": torch.cuda.max_memory_allocated(device) / MiB,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / MiB,
            "kind": "cuda-allocator",
        }
    trimmed = release_free_heap()
    before = rss_bytes()
    if reset_peak_rss():
        region()
        peak, how = peak_rss_bytes(), "high-water mark reset before the region"
    else:
        with RssSampler() as sampler:
            region()
        peak, how = max(sampler.peak, rss_bytes()), "resident size sampled every millisecond"
    if not trimmed:
        how += "; freed heap memory could not be released first, so reusing it is not counted"
    return {
        "peak_rss_delta_mib": max(peak - before, 0) / MiB,
        "peak_rss_mib": peak / MiB,
        "start_rss_mib": before / MiB,
        "kind": "peak-rss-delta",
        "how": how,
    }


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
