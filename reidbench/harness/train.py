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

from reidbench.bench.dispatch import labeller
from reidbench.bench.environment import autocast
from reidbench.errors import ReidbenchError, UsageError
from reidbench.harness.augment import AugmentConfig, BatchAugmentation, normalize, to_device_async
from reidbench.harness.distributed import World, all_reduce_mean, any_rank
from reidbench.harness.images import LabelledBatch
from reidbench.harness.stream import AnyImageSet
from reidbench.harness.losses import batch_accuracy, batch_hard_triplet, id_loss
from reidbench.harness.profile import TrainConfig
from reidbench.harness.progress import Progress
from reidbench.harness.rundir import append_line, save_torch_atomic, write_atomic
from reidbench.harness.sampler import PKSampler
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
    """Steps after the first few replayed as CUDA graphs (`harness.train_graph`)."""
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
    """Time to record the graph-replayed step (`harness.train_graph`)."""

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


def build_optimizer(model: ReidModel, cfg: TrainConfig, graph_safe_on: Optional[torch.device] = None) -> torch.optim.Optimizer:
    """The recipe's optimizer. `graph_safe_on`: a variant whose step can be captured in a CUDA graph on that device.

    A captured step replays its kernels as recorded, so the learning rate must be
    read from device memory (a tensor the scheduler fills in place) rather than
    baked in as a number, and the update must not read state on the host: fused
    SGD, and AdamW with `capturable`. Same update rule, other kernels.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = cfg.optimizer == "sgd"
    if graph_safe_on is not None:
        lr = torch.tensor(cfg.lr, device=graph_safe_on)
        if sgd:
            return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, capturable=graph_safe_on.type == "cuda")
    if sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 1 % over `warmup_epochs`, then cosine decay to 0 at the last step."""
    epoch = step / steps_per_epoch
    if epoch < cfg.warmup_epochs:
        return 0.01 + 0.99 * epoch / cfg.warmup_epochs
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return 0.5 * (1 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))


def augment_padding(img_size: tuple[int, int]) -> int:
    """TransReID pads 10 px at 256x128; the same fraction at other sizes (a fixed 10 px would
    shift a 64x32 image by a third of its width)."""
    return max(1, round(10 * img_size[0] / 256))


def step_losses(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """`(logits, features, targets) -> (loss, [loss, id loss, triplet loss, accuracy])` for the recipe in `cfg`.

    One function so that `--compile` can compile the losses too: they are ~75 small
    operations forward and backward around a network that is host-bound at batch 64.
    """
    margin = None if cfg.triplet == "soft" else cfg.triplet_margin

    def losses(logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ce = id_loss(logits, targets, cfg.label_smoothing)
        tri = batch_hard_triplet(features.float(), targets, margin) if cfg.triplet != "none" else ce.new_zeros(())
        loss = cfg.id_weight * ce + cfg.triplet_weight * tri
        return loss, torch.stack([loss.detach(), ce.detach(), tri.detach(), batch_accuracy(logits, targets)])

    return losses


class TrainStep:
    """One optimisation step of the harness -- augment, forward, losses, update -- as `train_model` runs it.

    A class rather than a loop body so that `bench` times exactly this code
    beside a bare library loop. Nothing in a step makes the host wait for the
    device: batch indices and augmentation draws reach the GPU through pinned,
    non-blocking copies, the triplet loss masks invalid anchors out instead of
    dropping them by boolean indexing, and the step's statistics stay on the
    device. The host can therefore queue step n+1 while the GPU runs step n;
    where queueing a step takes longer than running it (ViT-B at batch 64 on an
    H200: ~27-36 ms of host time), every operation the step dispatches counts.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        device: torch.device,
        dtype: str,
        compile_backend: Optional[str] = None,
        augment_method: str = "auto",
        regions: bool = False,
    ) -> None:
        """`compile_backend`: also compile the losses with it (the model's blocks are `compile_model`'s job).
        `augment_method`: see `BatchAugmentation` (auto: a per-sample loop on the CPU, one gather elsewhere).
        `regions`: label the step's phases for torch.profiler (see `bench.dispatch.labeller`)."""
        module = model.module if isinstance(model, DistributedDataParallel) else model
        self.model, self.cfg, self.optimizer, self.scheduler = model, cfg, optimizer, scheduler
        self.generator, self.device, self.dtype = generator, device, dtype
        self.mean, self.std = module.backbone.pixel_mean, module.backbone.pixel_std
        self.image_size = module.settings.img_size
        self.augment = AugmentConfig(pad=augment_padding(self.image_size), erase_p=cfg.erase_p) if cfg.augment else None
        self.augmentation: Optional[BatchAugmentation] = None
        self.augment_method = augment_method
        self.losses = step_losses(cfg)
        self.region = labeller(regions)
        if compile_backend is not None:
            self.losses = torch.compile(self.losses, backend=compile_backend, dynamic=False)

    def begin_epoch(self, batches: torch.Tensor) -> None:
        """Draw the augmentation of all of an epoch's batches ([steps, batch] indices) at once."""
        if self.augment is not None:
            steps, batch_size = batches.shape
            self.augmentation = BatchAugmentation(
                steps, batch_size, self.image_size, self.generator, self.augment, self.device, self.augment_method
            )

    def __call__(self, step: int, batch: LabelledBatch) -> torch.Tensor:
        """Train on `batch` (from the training set's `batches`), batch `step` of the epoch begun last.

        Returns [loss, id loss, triplet loss, accuracy], on the device.
        """
        x, target, cam = self.inputs(step, batch)
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.update(x, target, cam)
        self.scheduler.step()
        return stats

    def inputs(self, step: int, batch: LabelledBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's input for batch `step`: on the device, augmented and normalised; targets; cameras."""
        raw, target, cam = batch
        with self.region("augment"):
            if raw.device.type != self.device.type:  # images in host memory (cached or streamed): they cross now, asynchronously
                raw, target, cam = (to_device_async(t, self.device) for t in (raw, target, cam))
            if self.augmentation is not None:
                x = self.augmentation.apply(step, raw, self.mean, self.std)
            else:
                x = normalize(raw, self.mean, self.std)
        return x, target, cam

    def update(self, x: torch.Tensor, target: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        """Forward, losses, backward and the optimizer's step on prepared inputs (gradients already cleared).

        The part of a step with fixed shapes and no host work, which `GraphedTrainStep` captures.
        """
        region = self.region
        with region("forward"), autocast(self.device, self.dtype):
            output = self.model(x, cam)
        with region("losses"):
            loss, stats = self.losses(output.logits, output.features, target)
        with region("backward"):
            loss.backward()
        with region("optimizer"):
            self.optimizer.step()
        return stats


def epoch_batches(sampler: PKSampler, device: torch.device) -> torch.Tensor:
    """This rank's batches of the sampler's current epoch as one [steps, P*K] index tensor on `device`."""
    return to_device_async(torch.as_tensor(list(sampler), dtype=torch.long), device)


def ranks_batch(cfg: TrainConfig, world: World) -> int:
    """Identities per batch on each rank: the recipe's P split over the ranks, so the global batch stays P x K."""
    if cfg.p % world.world_size:
        raise UsageError(
            f"train.p = {cfg.p} identities per batch cannot be split over {world.world_size} processes; "
            f"use a P divisible by {world.world_size} (e.g. --set train.p=... in a profile) or another --nproc-per-node."
        )
    return cfg.p // world.world_size


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
        from reidbench.bench.compiled import compile_model

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
        from reidbench.harness.train_graph import GraphedTrainStep  # it builds on this module

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
