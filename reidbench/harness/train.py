"""The ReID training loop: PK batches, ID cross-entropy + batch-hard triplet, warm-up + cosine.

Resumable at epoch granularity: the checkpoint holds model, optimizer,
scheduler, the augmentation generator and torch's RNG state, so a run
interrupted after epoch e and resumed gives the same numbers as one that never
stopped (on the CPU, where kernels are deterministic).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from time import monotonic
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from reidbench.data.stream import AnyImageSet
from reidbench.errors import ReidbenchError, UsageError
from reidbench.profiles import TrainConfig
from reidbench.runtime.distributed import World, all_reduce_mean, any_rank
from reidbench.runtime.files import append_line, save_torch_atomic, write_atomic
from reidbench.runtime.progress import Progress
from reidbench.training.sampler import PKSampler
from reidbench.training.step import TrainStep, build_optimizer, epoch_batches, lr_factor, ranks_batch
from reidbench.variants.model import ReidModel


class TrainingDiverged(ReidbenchError):
    """The loss became NaN or infinite; the cell is failed with the epoch and step."""

    exit_code = 1


@dataclass
class TrainSummary:
    epochs_done: int
    seconds: float
    images: int
    img_per_s: float
    final_loss: float
    resumed_from_epoch: int
    compiled: bool = False
    graphed: bool = False
    """Steps after the first few replayed as CUDA graphs (`reidbench.training.graph_step`)."""
    graph_replayed_steps: int = 0
    """How many of this process's steps were graph replays."""
    world_size: int = 1
    image_cache: str = ""
    """Where the decoded training images lived: the device, or host memory with per-batch copies."""
    warnings: list[str] = field(default_factory=list)
    """What a reader of this cell's accuracy must know about its training (`loss_rise_warnings`)."""
    first_epoch_seconds: Optional[float] = None
    """This process's first epoch, which also holds the warm-up steps, a compile and a graph capture."""
    steady_img_per_s: Optional[float] = None
    """Median img/s of this process's later epochs: the speed without that one-off cost (None with one epoch)."""
    capture_seconds: Optional[float] = None
    """Time to record the graph-replayed step (`reidbench.training.graph_step`)."""

    def to_dict(self) -> dict:
        return {**vars(self), "warnings": list(self.warnings)}


#: A loss that ends this many times above its lowest epoch value went back up, not down ...
LOSS_RISE_FACTOR = 2.0
#: ... by at least this much (a soft-margin triplet loss near 0.01 may double without meaning anything).
LOSS_RISE_MIN = 0.5


def loss_rise_warnings(log: list[dict]) -> list[str]:
    """One warning per loss (total, ID, triplet) whose last epoch ended far above its best epoch.

    Such a cell finished and has an accuracy, but not the recipe's: on an H200 the
    vit768-ms cell's triplet loss climbed from 0.99 to 8.4 and its mAP fell from
    71 % to 13 % (docs/benchmarks). NaN fails a cell; this marks the quieter case.
    """
    warnings = []
    for key, name in (("loss", "training loss"), ("id_loss", "ID loss"), ("triplet_loss", "triplet loss")):
        values = [(e[key], e["epoch"]) for e in log if isinstance(e.get(key), (int, float)) and math.isfinite(e[key])]
        if len(values) < 3:
            continue
        best, best_epoch = min(values)
        last, last_epoch = values[-1]
        if last > LOSS_RISE_FACTOR * best and last - best >= LOSS_RISE_MIN:
            warnings.append(
                f"{name} rose from {best:.3f} (epoch {best_epoch}) to {last:.3f} (epoch {last_epoch}): training partly "
                "diverged, so this cell's accuracy is not what the recipe gives; compare seeds or lower train.lr"
            )
    return warnings


def train_model(
    model: ReidModel,
    train_set: AnyImageSet,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    dtype: str,
    cell_dir: Path,
    progress: Progress,
    on_epoch: Optional[Callable[[int], None]] = None,
    world: World = World(),
    sync_bn: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> TrainSummary:
    """Train `model` in place; resumes from `cell_dir/checkpoint.pt` when it exists.

    Under DDP (`world.distributed`) every rank calls this with the same seed:
    the PK sampler gives each rank P / world_size distinct identities per step,
    every rank loads the checkpoint, and only rank 0 writes the log and
    checkpoints. Augmentation draws differ per rank (the generator is seeded
    with the rank) so that two ranks never crop their images alike.
    """
    checkpoint_path, log_path = cell_dir / "checkpoint.pt", cell_dir / "train_log.jsonl"
    sampler = PKSampler(train_set.pids, p=ranks_batch(cfg, world), k=cfg.k, seed=seed, rank=world.rank, world_size=world.world_size)
    steps_per_epoch = len(sampler)
    if compile:
        from reidbench.runtime.compile import compile_model

        compile_model(model)
    trained: torch.nn.Module = model
    if world.distributed:
        if sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg, graph_safe_on=device if cuda_graphs else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
    generator = torch.Generator().manual_seed(seed + 1_000_003 * world.rank)
    torch.manual_seed(seed)
    start_epoch, log = 0, []
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if state.get("world_size", 1) != world.world_size:
            raise UsageError(
                f"{checkpoint_path} was written by {state.get('world_size', 1)} process(es) and this run has "
                f"{world.world_size}; resume with the same number of processes (torchrun --nproc-per-node)."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # map_location put every tensor on the training device; random-generator states must be CPU byte tensors.
        generator.set_state((state["generator"][world.rank] if world.distributed else state["generator"]).cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        start_epoch, log = state["epoch"], state["log"]
    if world.is_main:
        _rewrite_log(log_path, log)

    step = TrainStep(trained, cfg, optimizer, scheduler, generator, device, dtype, "inductor" if compile else None)
    if cuda_graphs:
        from reidbench.training.graph_step import GraphedTrainStep  # it builds on this module

        step = GraphedTrainStep(step)
    trained.train()
    seen, wall = 0, 0.0
    last_checkpoint = monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        sums = torch.zeros(4, device=device)  # loss, id, triplet, accuracy: summed on device, read once per epoch
        started = time.perf_counter()
        with progress.task(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", "batch") as advance:
            previous = None
            batches = epoch_batches(sampler, train_set.index_device)
            step.begin_epoch(batches)
            for number, batch in enumerate(train_set.batches(batches)):
                stats = step(number, batch)
                sums += stats
                if progress.bars:
                    # The bar shows the previous step's loss: reading this step's would make the
                    # host wait for the GPU before queueing the next step.
                    advance(**({"loss": f"{float(previous[0]):.3f}"} if previous is not None else {}))
                    previous = stats
        totals = all_reduce_mean(sums / steps_per_epoch, world).tolist()
        if not all(math.isfinite(v) for v in totals[:3]):
            raise TrainingDiverged(
                f"the loss became {totals[0]} during epoch {epoch + 1}; lower the learning rate (train.lr) "
                "or check the data"
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        epoch_images = steps_per_epoch * cfg.batch_size
        seen, wall = seen + epoch_images, wall + seconds
        entry = {
            "epoch": epoch + 1,
            **dict(zip(("loss", "id_loss", "triplet_loss", "accuracy"), totals)),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": seconds,
            "img_per_s": epoch_images / seconds,
        }
        log.append(entry)
        # Every rank must take the same branch (saving gathers the ranks' generator states).
        checkpoint = any_rank(cfg.checkpoint_due(epoch + 1, (monotonic() - last_checkpoint) / 60), world)
        generators = _gather_states(generator.get_state(), world) if checkpoint else None
        if world.is_main:
            append_line(log_path, entry)
            remaining = (cfg.epochs - epoch - 1) * wall / (epoch + 1 - start_epoch)
            progress.log(
                f"    epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.3f} (id {entry['id_loss']:.3f}, "
                f"triplet {entry['triplet_loss']:.3f}), train acc {entry['accuracy']:.3f}, {entry['img_per_s']:.0f} img/s, "
                f"training ETA {_duration(remaining)}"
            )
            if checkpoint:
                save_torch_atomic(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generators,
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "epoch": epoch + 1,
                        "log": log,
                        "world_size": world.world_size,
                    },
                    checkpoint_path,
                )
        if checkpoint:
            last_checkpoint = monotonic()
        if world.distributed:
            dist.barrier()  # no rank starts the next epoch (or reads the checkpoint) before it is written
        if on_epoch is not None:
            on_epoch(epoch + 1)
    trained.eval()
    return TrainSummary(
        epochs_done=cfg.epochs,
        seconds=sum(e["seconds"] for e in log),
        images=len(log) * steps_per_epoch * cfg.batch_size,
        img_per_s=(seen / wall) if wall else (log[-1]["img_per_s"] if log else 0.0),
        final_loss=log[-1]["loss"] if log else float("nan"),
        resumed_from_epoch=start_epoch,
        compiled=compile,
        graphed=cuda_graphs,
        graph_replayed_steps=getattr(step, "replays", 0),
        world_size=world.world_size,
        image_cache=train_set.location,
        warnings=loss_rise_warnings(log),
        **_first_epoch_and_after(log[start_epoch:]),
        capture_seconds=getattr(step, "capture_seconds", None),
    )


def _first_epoch_and_after(epochs: list[dict]) -> dict[str, Optional[float]]:
    """Split this process's epochs into the first (compile, capture, warm-up) and the median speed of the rest."""
    later = [e["img_per_s"] for e in epochs[1:]]
    return {
        "first_epoch_seconds": epochs[0]["seconds"] if epochs else None,
        "steady_img_per_s": statistics.median(later) if later else None,
    }


def _gather_states(state: torch.Tensor, world: World) -> torch.Tensor | list[torch.Tensor]:
    """The augmentation generator's state: this process's, or every rank's (for rank 0 to save)."""
    if not world.distributed:
        return state
    states: list[Any] = [None] * world.world_size
    dist.all_gather_object(states, state)
    return states


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rewrite_log(path: Path, log: list[dict]) -> None:
    """Make the log match the checkpoint: epochs after it (trained but not saved) are dropped."""
    write_atomic(path, "".join(json.dumps(e) + "\n" for e in log))
