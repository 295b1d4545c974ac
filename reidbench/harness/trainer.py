"""The epoch loop, and the hooks that do everything around it.

The loop only runs epochs of `TrainStep`s and hands each epoch's averaged
statistics to its hooks, in order; resuming, the divergence guard, the
training log, console lines and checkpoints are hooks
(`reidbench.harness.train` assembles them), so each can be read, tested and
replaced on its own.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reidbench.data.stream import AnyImageSet
from reidbench.errors import ReidbenchError
from reidbench.profiles import TrainConfig
from reidbench.runtime.device import synchronize
from reidbench.runtime.distributed import World, all_reduce_mean
from reidbench.runtime.progress import Progress
from reidbench.schema import EpochEntry
from reidbench.training.average import WeightAverage
from reidbench.training.sampler import PKSampler
from reidbench.training.step import STEP_STATS, epoch_batches


class TrainingDiverged(ReidbenchError):
    """The loss became NaN or infinite; the cell is failed with the epoch."""

    exit_code = 1




@dataclass
class TrainContext:
    """What the hooks see and may change: the trained objects, where the loop starts, and the epoch log."""

    model: torch.nn.Module
    """The module whose state is saved (never a DDP wrapper)."""
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    """The augmentation's random draws (seeded per rank)."""
    device: torch.device
    world: World
    cell_dir: Path
    average: Optional[WeightAverage] = None
    """The weights' moving average (train.ema_decay), saved and restored with the rest of the state."""
    start_epoch: int = 0
    log: list[EpochEntry] = field(default_factory=list)
    wall_seconds: float = 0.0
    """Training seconds of this process's epochs so far."""


class TrainHook:
    """Called before the first epoch and after every epoch; the default does nothing."""

    def on_start(self, ctx: TrainContext) -> None:
        pass

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        pass


class DivergenceGuard(TrainHook):
    """A non-finite loss fails the cell at the epoch it appeared, with the way out, instead of training on NaN."""

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        if not all(math.isfinite(value) for value in (entry.loss, entry.id_loss, entry.triplet_loss)):
            raise TrainingDiverged(
                f"the loss became {entry.loss} during epoch {entry.epoch}; lower the learning rate (train.lr) or check the data"
            )


class EpochCallback(TrainHook):
    """Calls `callback(epoch)` after each epoch's other hooks (the runner's way to be told, and tests' to interrupt)."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        self.callback(entry.epoch)


@dataclass
class Trainer:
    ctx: TrainContext
    step: Any
    """A `TrainStep` or `GraphedTrainStep`: `begin_epoch(batches)`, `(number, batch) -> stats` and `stat_names`."""
    sampler: PKSampler
    train_set: AnyImageSet
    progress: Progress
    hooks: list[TrainHook]

    def fit(self) -> None:
        """Restore (via the hooks), then train the remaining epochs."""
        for hook in self.hooks:
            hook.on_start(self.ctx)
        for epoch in range(self.ctx.start_epoch, self.ctx.cfg.epochs):
            entry = self.run_epoch(epoch)
            self.ctx.log.append(entry)
            for hook in self.hooks:
                hook.on_epoch(self.ctx, entry)

    def run_epoch(self, epoch: int) -> EpochEntry:
        """One epoch's steps; its entry: averaged statistics (all ranks), learning rate, seconds, img/s."""
        ctx, steps = self.ctx, len(self.sampler)
        self.sampler.set_epoch(epoch)
        names = self.step.stat_names
        sums = torch.zeros(len(names), device=ctx.device)  # summed on the device, read once per epoch
        started = time.perf_counter()
        with self.progress.task(steps, f"epoch {epoch + 1}/{ctx.cfg.epochs}", "batch") as advance:
            previous = None
            batches = epoch_batches(self.sampler, self.train_set.index_device)
            self.step.begin_epoch(batches)
            for number, batch in enumerate(self.train_set.batches(batches)):
                stats = self.step(number, batch)
                sums += stats
                if self.progress.bars:
                    # The bar shows the previous step's loss: reading this step's would make the
                    # host wait for the GPU before queueing the next step.
                    advance(**({"loss": f"{float(previous[0]):.3f}"} if previous is not None else {}))
                    previous = stats
        totals = all_reduce_mean(sums / steps, ctx.world).tolist()
        synchronize(ctx.device)
        seconds = time.perf_counter() - started
        ctx.wall_seconds += seconds
        return EpochEntry(
            epoch=epoch + 1,
            **dict(zip(names, totals)),
            lr=float(ctx.optimizer.param_groups[0]["lr"]),
            seconds=seconds,
            img_per_s=steps * ctx.cfg.batch_size / seconds,
        )
