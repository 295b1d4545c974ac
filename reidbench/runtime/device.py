"""Where and in which precision tensors run: device and dtype names, autocast, and waiting for the device."""
from __future__ import annotations

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
