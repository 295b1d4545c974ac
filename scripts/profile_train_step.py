"""Where a training step's time goes: the harness's step beside the bare loop, under torch.profiler.

For the bench's harness / bare ratio at batch 64 on a GPU (docs/benchmarks):
both steps run `--steps` times under the profiler after a warm-up, with their
phases labelled (augment, forward, losses, backward, optimizer), and for each
the script writes to `--out`:

  <name>_regions.txt  host (CPU) and device ms per step of each phase
  <name>_ops.txt      the operators by self host time, then by device time
  <name>_trace.json   a Chrome / Perfetto trace

and prints the phase table of both. A phase's host ms is the wall time the Python thread
spent in it; its device ms counts the kernels launched under it from that thread, so on a
GPU the backward phase (launched by autograd's own device thread) may show little device
time: read those kernels in the operator table or the trace. The last row, `step`, gives the
wall ms per profiled step and the device ms of all its kernels, backward included: wall well
above kernels means the host is the bottleneck. Usage (repository root):

  python scripts/profile_train_step.py --backbone vit768 --batch 64 --out /tmp/profile
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from reidbench.runtime.device import DTYPES
from reidbench.bench.reference import BARE_MODELS, bare_train_step
from reidbench.bench.training import harness_train_step
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

PHASES = ("augment", "forward", "losses", "backward", "optimizer")


STEP = "step"
"""The table's last row: wall ms per profiled step on the host, and the device time of all its kernels."""


def profiled(step: Callable[[], object], steps: int, warmup: int, device: torch.device) -> tuple[profile, float]:
    """The profile of `steps` calls after `warmup` ones, and their wall ms per step (profiler overhead included)."""
    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - started) / steps * 1e3
    return prof, wall_ms


def phase_table(prof: profile, steps: int, wall_ms: float) -> dict[str, tuple[float, float]]:
    """Phase -> (host ms, device ms) per step, then `STEP` -> (wall ms, device ms of every kernel).

    Read from the host-side events of each label: with CUDA activity the profiler
    also records a device-side annotation under the same name, which merged
    per-name averages would mix in (the first H200 profile showed 0.00 host ms
    for the forward phase that way).
    """
    events = prof.events()
    table = {}
    for phase in PHASES:
        host_events = [e for e in events if e.name == phase and e.device_type == DeviceType.CPU]
        if host_events:
            host_us = sum(e.time_range.elapsed_us() for e in host_events)
            device_us = sum(e.device_time_total for e in host_events)
            table[phase] = (host_us / steps / 1e3, device_us / steps / 1e3)
    kernels_us = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CPU)
    table[STEP] = (wall_ms, kernels_us / steps / 1e3)
    return table


def write(profiled_steps: tuple[profile, float], name: str, steps: int, out: Path) -> dict[str, tuple[float, float]]:
    prof, wall_ms = profiled_steps
    table = phase_table(prof, steps, wall_ms)
    lines = [f"{name}: per step over {steps} profiled steps", f"{'phase':<10} {'host ms':>9} {'device ms':>10}"]
    lines += [f"{phase:<10} {host:>9.2f} {dev:>10.2f}" for phase, (host, dev) in table.items()]
    (out / f"{name}_regions.txt").write_text("\n".join(lines) + "\n")
    averages = prof.key_averages()
    ops = averages.table(sort_by="self_cpu_time_total", row_limit=40)
    if any(getattr(e, "device_time_total", 0) for e in averages):
        ops += "\n" + averages.table(sort_by="self_device_time_total", row_limit=25)
    (out / f"{name}_ops.txt").write_text(ops)
    prof.export_chrome_trace(str(out / f"{name}_trace.json"))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit768", choices=sorted(BARE_MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--img-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = VariantSettings(depth=args.depth, img_size=tuple(args.img_size), num_classes=args.num_classes, num_cameras=6)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bench times them
    model = create_variant(f"{args.backbone}-none", settings=settings)
    steps = {
        "harness": harness_train_step(model, args.batch, device, dtype, regions=True),
        "bare": bare_train_step(args.backbone, settings, args.batch, device, dtype, regions=True),
    }
    tables = {name: write(profiled(step, args.steps, args.warmup, device), name, args.steps, args.out) for name, step in steps.items()}
    print(f"{args.backbone} batch {args.batch} {dtype} on {device}: host / device ms per step")
    print(f"{'phase':<10} {'harness':>17} {'bare':>17}")
    for phase in (*PHASES, STEP):
        cells = [tables[name].get(phase) for name in ("harness", "bare")]
        print(f"{phase:<10} " + " ".join(f"{c[0]:>8.2f}/{c[1]:>8.2f}" if c else f"{'-':>17}" for c in cells))


if __name__ == "__main__":
    main()
