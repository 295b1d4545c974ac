"""What `bench` measures and how hard: the profile's [measure] table plus the device, dtype and bench-only switches."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from reidbench.profiles import MeasureConfig


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

    @classmethod
    def of(cls, device: torch.device, dtype: str, **values: Any) -> "BenchOptions":
        """Options from flat keyword values: the [measure] fields go to `measure` (over `for_device`'s), the rest here."""
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
