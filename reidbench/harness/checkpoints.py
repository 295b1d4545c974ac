"""Resumable training state: what a checkpoint holds, when one is written, and how training continues from it.

A checkpoint holds model, optimizer, scheduler, the augmentation generator
(every rank's, under DDP), torch's RNG state, the epoch log and the weights'
moving average when the recipe keeps one, so a run
interrupted after epoch e and resumed gives the same numbers as one that never
stopped (on the CPU, where kernels are deterministic).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from time import monotonic
from typing import Any, Optional

import torch
import torch.distributed as dist

from reidbench.errors import UsageError
from reidbench.harness.trainer import TrainContext, TrainHook
from reidbench.runtime.distributed import any_rank
from reidbench.runtime.files import save_torch_atomic
from reidbench.schema import EpochEntry


class CheckpointDamaged(UsageError):
    """A checkpoint that cannot be read back; the message says how to go on."""


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The saved training state at `path`, or a one-paragraph error naming the file and the way on."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise CheckpointDamaged(
            f"{path} is damaged and cannot be read (torch.load: {type(exc).__name__}); the cell cannot continue from it. Delete that file to "
            "train the cell again from its first epoch (reidbench run --resume RUN_DIR then restarts it), or restore "
            "the file from a backup."
        ) from None
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise CheckpointDamaged(f"{path} does not hold a reidbench training state; delete it to train the cell again from its first epoch.")
    return state


class ResumeFromCheckpoint(TrainHook):
    """Before the first epoch: the model, optimizer, scheduler, random generators and epoch log of the last checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_start(self, ctx: TrainContext) -> None:
        if not self.path.exists():
            return
        state = read_checkpoint(self.path, ctx.device)
        if state.get("world_size", 1) != ctx.world.world_size:
            raise UsageError(
                f"{self.path} was written by {state.get('world_size', 1)} process(es) and this run has "
                f"{ctx.world.world_size}; resume with the same number of processes (torchrun --nproc-per-node)."
            )
        ctx.model.load_state_dict(state["model"])
        ctx.optimizer.load_state_dict(state["optimizer"])
        ctx.scheduler.load_state_dict(state["scheduler"])
        # map_location put every tensor on the training device; random-generator states must be CPU byte tensors.
        generator = state["generator"][ctx.world.rank] if ctx.world.distributed else state["generator"]
        ctx.generator.set_state(generator.cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), ctx.device)
        if ctx.average is not None:
            if state.get("average") is None:
                raise CheckpointDamaged(
                    f"{self.path} holds no moving average of the weights, which this cell's recipe keeps (train.ema_decay); "
                    "it was written with other settings. Delete it to train the cell again from its first epoch."
                )
            ctx.average.load_state_dict(state["average"])
        ctx.start_epoch = state["epoch"]
        ctx.log = [EpochEntry.from_dict(entry, f"{self.path}: log[{i}]") for i, entry in enumerate(state["log"])]


class Checkpointer(TrainHook):
    """Writes a checkpoint after the epochs `TrainConfig.checkpoint_due` names.

    Every rank takes the same decision (saving gathers the ranks' generator
    states), rank 0 alone writes, and no rank starts the next epoch before it
    is written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = monotonic()

    def on_start(self, ctx: TrainContext) -> None:
        self.last = monotonic()

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        epoch = entry.epoch
        if not any_rank(ctx.cfg.checkpoint_due(epoch, (monotonic() - self.last) / 60), ctx.world):
            return
        generators = _gather_states(ctx.generator.get_state(), ctx)
        if ctx.world.is_main:
            save_torch_atomic(self.state(ctx, epoch, generators), self.path)
        self.last = monotonic()
        if ctx.world.distributed:
            dist.barrier()  # no rank starts the next epoch (or reads the checkpoint) before it is written

    @staticmethod
    def state(ctx: TrainContext, epoch: int, generators: Any) -> dict[str, Any]:
        return {
            "model": ctx.model.state_dict(),
            "optimizer": ctx.optimizer.state_dict(),
            "scheduler": ctx.scheduler.state_dict(),
            "generator": generators,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None,
            "epoch": epoch,
            "log": [entry.to_dict() for entry in ctx.log],  # plain data: torch.load(weights_only=True) reads it back
            "world_size": ctx.world.world_size,
            "average": ctx.average.state_dict() if ctx.average is not None else None,
        }


def _gather_states(state: torch.Tensor, ctx: TrainContext) -> Optional[torch.Tensor | list[torch.Tensor]]:
    """The augmentation generator's state: this process's, or every rank's (for rank 0 to save)."""
    if not ctx.world.distributed:
        return state
    states: list[Any] = [None] * ctx.world.world_size
    dist.all_gather_object(states, state)
    return states
