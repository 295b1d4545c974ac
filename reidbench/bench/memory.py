"""Peak memory of a region: CUDA allocator peaks on GPU, peak resident set size on CPU.

On CUDA the peaks are reset right before the region, so they belong to it
alone (weights that are already resident count, as they do for a user). On
CPU, Linux lets a process reset its own high-water mark by writing 5 to
/proc/self/clear_refs; where that is refused, the process-lifetime peak is
reported and marked as such, never passed off as the region's.
"""
from __future__ import annotations

import resource
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
    was_reset = reset_peak_rss()
    region()
    return {
        "peak_rss_mib": peak_rss_bytes() / MiB,
        "kind": "peak-rss" if was_reset else "peak-rss-since-process-start",
    }
