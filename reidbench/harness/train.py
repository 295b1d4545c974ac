"""Train one cell: the recipe's step in `Trainer`'s epoch loop, with the hooks a run needs, and the summary it records.

Under DDP (`world.distributed`) every rank calls `train_model` with the same
seed: the PK sampler gives each rank P / world_size distinct identities per
step, every rank loads the checkpoint, and only rank 0 writes the log and
checkpoints. Augmentation draws differ per rank (the generator is seeded with
the rank) so that two ranks never crop their images alike.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from reidbench.data.stream import AnyImageSet
from reidbench.harness.checkpoints import Checkpointer, ResumeFromCheckpoint
from reidbench.harness.trainer import DivergenceGuard, EpochCallback, TrainContext, Trainer, TrainHook
from reidbench.profiles import TrainConfig
from reidbench.rundir import CellDir
from reidbench.runtime.compile import compile_model
from reidbench.runtime.distributed import World, broadcast_object
from reidbench.runtime.files import read_json, write_json
from reidbench.runtime.progress import Progress
from reidbench.schema import EpochEntry
from reidbench.training.clipreid import train_prompts
from reidbench.training.graph_step import GraphedTrainStep
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, lr_factor, ranks_batch
from reidbench.variants.clipreid import ClipReidModel
from reidbench.variants.model import ReidModel


@dataclass(frozen=True)
class TrainOptions:
    """How a cell trains beyond its recipe: the seed, where, in what precision, and in which mode."""

    seed: int
    device: torch.device
    dtype: str
    world: World = field(default_factory=World)
    sync_bn: bool = False
    compile: bool = False
    """The backbone's transformer blocks and the losses compiled (`reidbench.runtime.compile`)."""
    cuda_graphs: bool = False
    """Steps after the first few replayed as CUDA graphs (`reidbench.training.graph_step`)."""


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
    stage1: Optional[dict[str, Any]] = None
    """CLIP-ReID's prompt-learning stage before these epochs (head = "clipreid"): epochs_done, seconds, final_loss, ...;
    the fields above are the image-encoder training's (its stage 2)."""

    def to_dict(self) -> dict:
        return {**vars(self), "warnings": list(self.warnings)}


class EpochLog(TrainHook):
    """The cell's training log, one `EpochEntry` per epoch (rewritten to the checkpoint's epochs on resume), and the console line."""

    def __init__(self, cell: CellDir, log: Callable[[str], None], before: Sequence[EpochEntry] = ()) -> None:
        """`before`: lines of an earlier stage (CLIP-ReID's stage 1, marked with `stage`), kept at the top of the log."""
        self.cell, self.log, self.before = cell, log, list(before)

    def on_start(self, ctx: TrainContext) -> None:
        # Epochs trained after the last checkpoint were not saved: the log drops them too.
        self.cell.write_train_log([*self.before, *ctx.log])

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        self.cell.append_epoch(entry)
        done = entry.epoch - ctx.start_epoch
        remaining = (ctx.cfg.epochs - entry.epoch) * ctx.wall_seconds / done
        self.log(
            f"    epoch {entry.epoch}/{ctx.cfg.epochs}: loss {entry.loss:.3f} (id {entry.id_loss:.3f}, "
            f"triplet {entry.triplet_loss:.3f}" + (f", i2t {entry.i2t_loss:.3f}" if entry.i2t_loss is not None else "")
            + f"), train acc {entry.accuracy:.3f}, {entry.img_per_s:.0f} img/s, "
            f"training ETA {duration(remaining)}"
        )


def training_seed(cfg: TrainConfig, options: TrainOptions) -> int:
    """The seed of everything drawn while training (batches, augmentation, dropout, the prompt stage): the cell's,
    unless train.data_seed fixes it so that seeds vary the initialisation alone."""
    return options.seed if cfg.data_seed is None else cfg.data_seed


def train_model(
    model: ReidModel, train_set: AnyImageSet, cfg: TrainConfig, options: TrainOptions, cell_dir: Path,
    progress: Progress, on_epoch: Optional[Callable[[int], None]] = None, extra_hooks: Sequence[TrainHook] = (),
    before_log: Sequence[TrainHook] = (),
) -> TrainSummary:
    """Train `model` in place, continuing from `cell_dir`'s checkpoint when there is one; the summary to record.

    `before_log`: hooks that add to an epoch's entry before it is logged, checkpointed and drawn (the periodic
    evaluation); `extra_hooks` run after the log line."""
    cell = CellDir(cell_dir)
    world, device = options.world, options.device
    seed = training_seed(cfg, options)
    sampler = PKSampler(
        train_set.pids, p=ranks_batch(cfg, world), k=cfg.k, seed=seed, rank=world.rank, world_size=world.world_size,
        covers=cfg.epoch_covers,
    )
    stage1 = prompt_stage(model, train_set, cfg, options, cell, progress)
    if options.compile:
        compile_model(model)
    trained: torch.nn.Module = model
    if world.distributed and options.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Before DDP wraps the model: the optimizer's groups decide which parameters are frozen (`freeze_backbone`),
    # and DDP reduces the gradients of those that still ask for them.
    optimizer = build_optimizer(model, cfg, graph_safe_on=device if options.cuda_graphs else None)
    if world.distributed:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, cfg))
    generator = torch.Generator().manual_seed(seed + 1_000_003 * world.rank)
    torch.manual_seed(seed)
    eager = TrainStep(
        trained, cfg, optimizer, scheduler, generator,
        StepOptions(device, options.dtype, compile_backend="inductor" if options.compile else None),
    )
    ctx = TrainContext(model, cfg, optimizer, scheduler, generator, device, world, cell_dir, eager.average)
    step: TrainStep | GraphedTrainStep = GraphedTrainStep(eager) if options.cuda_graphs else eager
    hooks: list[TrainHook] = [ResumeFromCheckpoint(cell.checkpoint), DivergenceGuard(), *before_log]
    hooks += [EpochLog(cell, progress.log, stage1.entries if stage1 else ())] if world.is_main else []
    hooks += list(extra_hooks)  # after the resume (they read ctx.start_epoch), before the checkpoint
    hooks += [Checkpointer(cell.checkpoint)] + ([EpochCallback(on_epoch)] if on_epoch is not None else [])
    trained.train()
    Trainer(ctx, step, sampler, train_set, progress, hooks).fit()
    if ctx.average is not None:
        ctx.average.copy_to_model()  # the average is what is evaluated, measured and saved
    trained.eval()
    summary = summarize(ctx, options, step, train_set, steps)
    summary.stage1 = stage1.summary if stage1 else None
    return summary


@dataclass
class PromptStageRecord:
    """CLIP-ReID's stage 1 of a cell as recorded: its cost (`summary`) and its log lines."""

    summary: dict[str, Any]
    entries: list[EpochEntry]


def prompt_stage(
    model: ReidModel, train_set: AnyImageSet, cfg: TrainConfig, options: TrainOptions, cell: CellDir, progress: Progress,
) -> Optional[PromptStageRecord]:
    """CLIP-ReID's stage 1 for a model with its head, before the image encoder trains; None for other models.

    A cell resumed from a checkpoint has done it: the checkpoint holds the text
    features and the cell's prompt-stage file the stage's log and cost. Under DDP every
    rank runs it and rank 0's text features are kept, so the ranks train against one classifier.
    """
    if not isinstance(model, ClipReidModel):
        return None
    saved = read_json(cell.prompt_stage) if cell.checkpoint.exists() else None
    if saved is not None:
        entries = [EpochEntry.from_dict(e, f"{cell.prompt_stage}: entries[{i}]") for i, e in enumerate(saved["entries"])]
        return PromptStageRecord(saved["summary"], entries)
    progress.log(f"    stage 1: identity prompts, {cfg.prompt_epochs} epochs, image and text towers frozen")
    weights = model.weights_report.path if model.weights_report is not None else None
    stage = train_prompts(model, train_set, cfg, options.device, options.dtype, training_seed(cfg, options), weights)
    model.head.text_features.copy_(broadcast_object(model.head.text_features.cpu(), options.world))
    done = PromptStageRecord(stage.summary(cfg), stage.entries)
    if options.world.is_main:
        write_json(cell.prompt_stage, {"summary": done.summary, "entries": [e.to_dict() for e in done.entries]})
        progress.log(
            f"    stage 1 done: loss {stage.entries[0].loss:.3f} -> {stage.entries[-1].loss:.3f} over "
            f"{len(stage.entries)} epochs in {duration(stage.seconds)}"
        )
    return done


def summarize(ctx: TrainContext, options: TrainOptions, step: Any, train_set: AnyImageSet, steps_per_epoch: int) -> TrainSummary:
    log, cfg = ctx.log, ctx.cfg
    mine = log[ctx.start_epoch:]
    seen = len(mine) * steps_per_epoch * cfg.batch_size
    later = [e.img_per_s for e in mine[1:]]
    return TrainSummary(
        epochs_done=cfg.epochs,
        seconds=sum(e.seconds for e in log),
        images=len(log) * steps_per_epoch * cfg.batch_size,
        img_per_s=(seen / ctx.wall_seconds) if ctx.wall_seconds else (log[-1].img_per_s if log else 0.0),
        final_loss=log[-1].loss if log else float("nan"),
        resumed_from_epoch=ctx.start_epoch,
        compiled=options.compile,
        graphed=options.cuda_graphs,
        graph_replayed_steps=getattr(step, "replays", 0),
        world_size=ctx.world.world_size,
        image_cache=train_set.location,
        warnings=loss_rise_warnings(log),
        first_epoch_seconds=mine[0].seconds if mine else None,
        steady_img_per_s=statistics.median(later) if later else None,
        capture_seconds=getattr(step, "capture_seconds", None),
    )


#: A loss that ends this many times above its lowest epoch value went back up, not down ...
LOSS_RISE_FACTOR = 2.0
#: ... by at least this much (a soft-margin triplet loss near 0.01 may double without meaning anything).
LOSS_RISE_MIN = 0.5


def loss_rise_warnings(log: list[EpochEntry]) -> list[str]:
    """One warning per loss (total, ID, triplet) whose last epoch ended far above its best epoch.

    Such a cell finished and has an accuracy, but not the recipe's: a partly
    diverged triplet loss can cost most of the mAP while the cell still counts
    as done. NaN fails a cell; this marks the quieter case.
    """
    warnings = []
    for key, name in (("loss", "training loss"), ("id_loss", "ID loss"), ("triplet_loss", "triplet loss")):
        values = [(getattr(e, key), e.epoch) for e in log if math.isfinite(getattr(e, key))]
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


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
