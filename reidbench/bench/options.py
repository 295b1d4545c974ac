"""What `bench` measures and how hard: the profile's [measure] table plus the device, dtype and bench-only switches.

The defaults live here and in `MeasureConfig` (with `MeasureConfig.for_device` for what a device changes), and
nowhere else: the command line passes only what its user gave (None for the rest) to `BenchOptions.of`, which
fills and checks the rest, and its help text is written from `default_text`.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

import torch

from reidbench.errors import UsageError
from reidbench.profiles import MeasureConfig

RUNTIMES = ("eager", "onnxruntime")
"""eager alone, or also ONNX Runtime (MeasureConfig.onnx)."""
CUDA_TRAIN_BATCH_SIZES = (64, 128)
"""Batches at which `bench` times the training step on CUDA when none are given; on a CPU, none (minutes each)."""


@dataclass
class BenchOptions:
    device: torch.device
    dtype: str
    measure: MeasureConfig
    """Batch sizes, repeats, warm-up, time budget and the faster modes: one source of their defaults."""
    cudnn_benchmark: bool = True
    train_batch_sizes: list[int] = field(default_factory=list)
    """Batches (P x 4) at which the harness's training step is timed; empty: not measured."""
    train_steps: int = 20
    """Timed training steps per batch size (after 5 untimed ones)."""
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.train_steps < 1:
            raise UsageError(f"--train-steps {self.train_steps} must be at least 1.")
        odd = [s for s in self.train_batch_sizes if s % 4 or s < 8]
        if odd:
            raise UsageError(
                f"--train-batch-sizes {','.join(map(str, self.train_batch_sizes))}: a training batch is P identities x 4 "
                f"images with P >= 2, so each size must be a multiple of 4 and at least 8 ({', '.join(map(str, odd))} is not)."
            )
        if self.measure.compile:
            from reidbench.runtime.compile import check_backend

            check_backend(self.compile_backend)

    @classmethod
    def of(cls, device: torch.device, dtype: str, **values: Any) -> "BenchOptions":
        """Options from flat keyword values, None meaning "not given": the [measure] fields go to `measure` (over
        `for_device`'s), `runtime` (one of RUNTIMES) sets its `onnx`, the rest are this class's fields."""
        values = {k: v for k, v in values.items() if v is not None}
        runtime = values.pop("runtime", "eager")
        if runtime not in RUNTIMES:
            raise UsageError(f"--runtime {runtime!r} is unknown; choose {' or '.join(RUNTIMES)}.")
        if runtime == "onnxruntime":
            values["onnx"] = True
        values.setdefault("train_batch_sizes", list(CUDA_TRAIN_BATCH_SIZES) if device.type == "cuda" else [])
        measure_fields = {f.name for f in fields(MeasureConfig)}
        measure = {k: tuple(v) if k == "batch_sizes" else v for k, v in values.items() if k in measure_fields}
        rest = {k: v for k, v in values.items() if k not in measure_fields}
        return cls(device, dtype, replace(MeasureConfig.for_device(device), **measure), **rest)

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.measure.batch_sizes)

    @property
    def train_batch_size(self) -> int:
        return self.measure.train_batch_size

    @property
    def warmup(self) -> int:
        return self.measure.warmup

    @property
    def repeats(self) -> int:
        return self.measure.repeats

    @property
    def max_seconds(self) -> float:
        return self.measure.max_seconds

    @property
    def compile(self) -> bool:
        return self.measure.compile

    @property
    def cuda_graphs(self) -> bool:
        return self.measure.cuda_graphs

    @property
    def reference(self) -> bool:
        return self.measure.reference

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self.measure), **{k: v for k, v in asdict(self).items() if k != "measure"}}
        data["device"] = str(self.device)
        data["batch_sizes"] = list(self.measure.batch_sizes)
        return data


def default_text(name: str) -> str:
    """The default of option `name` as help text says it: 'X' where every device has it, else 'X on CUDA, Y on CPU'."""
    cuda, cpu = (_default(name, torch.device(kind)) for kind in ("cuda", "cpu"))
    return cuda if cuda == cpu else f"{cuda} on CUDA, {cpu} on CPU"


def _default(name: str, device: torch.device) -> str:
    measure = MeasureConfig.for_device(device)
    if name == "train_batch_sizes":
        value: Any = CUDA_TRAIN_BATCH_SIZES if device.type == "cuda" else "none"
    elif name in {f.name for f in fields(MeasureConfig)}:
        value = getattr(measure, name)
    else:
        spec = next(f for f in fields(BenchOptions) if f.name == name)
        value = spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[misc]
    return _spoken(value)


def _spoken(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


