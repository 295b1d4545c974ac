"""Where and in which precision tensors run: device and dtype names, autocast, and waiting for the device."""
from __future__ import annotations

import os
from pathlib import Path

from typing import Optional

import torch

from reidbench.errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when one is visible, else cpu; an unavailable 'cuda' is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for, but torch sees no CUDA device here; use --device cpu or auto.")
        return torch.device(name)
    raise UsageError(f"unknown device {name!r}; choose auto, cpu or cuda.")


def resolve_dtype(name: str, device: torch.device) -> str:
    """'auto' -> bf16 autocast on CUDA, fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}.")
    return name


def autocast(device: torch.device, dtype: str):
    """bf16 autocast where asked for; fp32 runs without autocast."""
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a no-op off CUDA): timings and captures need the device idle."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_capacity(device: torch.device) -> Optional[tuple[int, str]]:
    """(bytes, what they are) of the memory a cell on `device` has at most: the GPU's, or the host's; None for a
    GPU this process cannot see (a launcher's jobs will run on another machine's).

    The host's is its physical memory, or its control group's limit where that is lower (a container, a
    scheduler's job): what the kernel would let the process use before it kills it.
    """
    if device.type == "cuda" and not torch.cuda.is_available():
        return None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.total_memory, f"the GPU ({props.name})"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        limit = "max"
    if limit.isdigit() and int(limit) < total:
        return int(limit), "this process's memory limit (its control group)"
    return total, "the host"
