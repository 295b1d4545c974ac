"""One optimisation step of the harness's ReID recipe: PK batch -> augmentation -> forward -> ID + triplet losses -> update.

`reidbench run` trains with this step and `reidbench bench` times exactly this
step beside a bare library loop, so it lives below both. The recipe's
optimizer and learning-rate schedule are here too, since a step is defined by them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from reidbench.data.images import LabelledBatch
from reidbench.errors import UsageError
from reidbench.profiles import TrainConfig
from reidbench.runtime.device import autocast
from reidbench.runtime.dispatch import labeller
from reidbench.runtime.distributed import World, unwrap
from reidbench.training.augment import AugmentConfig, BatchAugmentation, normalize, to_device_async
from reidbench.training.average import WeightAverage
from reidbench.training.clipreid import CLIPREID_STATS, clipreid_losses
from reidbench.training.losses import batch_accuracy, batch_hard_triplet, id_loss
from reidbench.training.sampler import PKSampler
from reidbench.variants.clipreid import ClipReidModel
from reidbench.variants.fixed_order import clip_grad_norm_fixed_order, use_fixed_order_reductions
from reidbench.variants.model import ReidModel


def build_optimizer(model: ReidModel, cfg: TrainConfig, graph_safe_on: Optional[torch.device] = None) -> torch.optim.Optimizer:
    """The recipe's optimizer. `graph_safe_on`: a variant whose step can be captured in a CUDA graph on that device.

    Bias parameters form a group of their own where the recipe trains them
    otherwise (TransReID and CLIP-ReID: twice the learning rate). A captured
    step replays its kernels as recorded, so the learning rate must be read
    from device memory (a tensor the scheduler fills in place) rather than
    baked in as a number, and the update must not read state on the host:
    fused SGD, and Adam(W) with `capturable`. Same update rule, other kernels.
    On the CPU Adam(W) is fused: PyTorch's default there updates one tensor at a
    time, a sizeable share of a short step at depth 1; the fused kernel is
    elementwise, so it is the same on any thread count.
    """

    def lr(value: float) -> float | torch.Tensor:
        return torch.tensor(value, device=graph_safe_on) if graph_safe_on is not None else value

    groups = [{**group, "lr": lr(group["lr"])} for group in parameter_groups(model, cfg)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, fused=True if graph_safe_on is not None else None)
    if graph_safe_on is not None and graph_safe_on.type == "cuda":
        kernels = {"capturable": True}
    else:
        kernels = {"fused": True} if all(p.device.type == "cpu" for g in groups for p in g["params"]) else {}
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, **kernels)


def frozen_parameters(model: ReidModel, cfg: TrainConfig) -> set[torch.nn.Parameter]:
    """The parameters `freeze_backbone` keeps as they are: the backbone's pretrained network (MambaPro's FROZEN
    freezes CLIP's visual tower and trains its camera embedding outside it), the whole backbone where it declares none."""
    if not cfg.freeze_backbone:
        return set()
    spec = getattr(model.backbone, "pretrained_spec", None)
    network = spec.network_of(model.backbone) if spec is not None else model.backbone
    return set(network.parameters())


def parameter_groups(model: ReidModel, cfg: TrainConfig) -> list[dict]:
    """One group, or weights and biases apart when the recipe treats biases otherwise; frozen parameters
    (`freeze_backbone`) are in none and stop asking for gradients."""
    bias_decay = cfg.weight_decay if cfg.weight_decay_bias is None else cfg.weight_decay_bias
    frozen = frozen_parameters(model, cfg)
    for parameter in frozen:
        parameter.requires_grad_(False)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if cfg.bias_lr_factor == 1 and bias_decay == cfg.weight_decay:
        return [{"params": [p for _, p in named], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    biases = [p for name, p in named if name.endswith("bias")]
    weights = [p for name, p in named if not name.endswith("bias")]
    return [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": bias_decay},
    ]


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate at `step`, as a fraction of each group's own: linear warm-up from `warmup_from`, then the schedule.

    With `schedule_unit = "epoch"` the factor is computed from the 1-based
    number of the epoch the step belongs to and held through it: TransReID
    (solver/cosine_lr.py, `scheduler.step(epoch)` before each epoch) and
    CLIP-ReID (solver/lr_scheduler.py's WarmupMultiStepLR, stepped once per
    epoch) both do so. Their cosine is not shifted by the warm-up
    (cos(pi * e / epochs)) and their last epoch trains at the floor; the
    per-step cosine runs from the end of the warm-up to the last step.
    """
    if cfg.schedule_unit == "epoch":
        epoch = float(step // steps_per_epoch + 1)
        warmed = 1.0 if epoch >= cfg.warmup_epochs else cfg.warmup_from + (1 - cfg.warmup_from) * epoch / cfg.warmup_epochs
    else:
        epoch = step / steps_per_epoch
        warmed = 1.0 if epoch >= cfg.warmup_epochs else cfg.warmup_from + (1 - cfg.warmup_from) * epoch / cfg.warmup_epochs
    if cfg.schedule == "multistep":
        return warmed * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if epoch < cfg.warmup_epochs:
        return warmed
    if cfg.schedule_unit == "epoch":
        position = min(epoch / cfg.epochs, 1.0)
    else:
        position = min((epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9), 1.0)
    return cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * position))


def augment_padding(img_size: tuple[int, int]) -> int:
    """TransReID pads 10 px at 256x128; the same fraction at other sizes (a fixed 10 px would
    shift a 64x32 image by a third of its width)."""
    return max(1, round(10 * img_size[0] / 256))


STEP_STATS = ("loss", "id_loss", "triplet_loss", "accuracy")
"""What a step of the common recipe returns, in order; an epoch's log entry averages them."""


def model_losses(model: ReidModel, cfg: TrainConfig) -> tuple[Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    """`(training output, targets) -> (loss, stats)` for `model`, and the stats' names: CLIP-ReID's stage-2 losses
    for its head (`reidbench.training.clipreid`), the recipe's ID + triplet otherwise."""
    if isinstance(model, ClipReidModel):
        return clipreid_losses(cfg), CLIPREID_STATS
    common = step_losses(cfg)
    return (lambda output, targets: common(output.logits, output.features, targets)), STEP_STATS


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


@dataclass(frozen=True)
class StepOptions:
    """Where and how a step runs (the recipe itself is the `TrainConfig`)."""

    device: torch.device
    dtype: str
    """fp32, or bf16 autocast."""
    compile_backend: Optional[str] = None
    """Also compile the losses with it (the model's blocks are `compile_model`'s job)."""
    augment_method: str = "auto"
    """See `BatchAugmentation` (auto: a per-sample loop on the CPU, one gather elsewhere)."""
    regions: bool = False
    """Label the step's phases for torch.profiler (see `reidbench.runtime.dispatch.labeller`)."""


class TrainStep:
    """One optimisation step of the harness -- augment, forward, losses, update -- as `train_model` runs it.

    A class rather than a loop body so that `bench` times exactly this code
    beside a bare library loop. Nothing in a step makes the host wait for the
    device: batch indices and augmentation draws reach the GPU through pinned,
    non-blocking copies, the triplet loss masks invalid anchors out instead of
    dropping them by boolean indexing, and the step's statistics stay on the
    device. The host can therefore queue step n+1 while the GPU runs step n;
    where queueing a step takes longer than running it (ViT-B at batch 64 on a
    fast GPU, docs/performance.md), every operation the step dispatches counts.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        generator: torch.Generator,
        options: StepOptions,
    ) -> None:
        """`model` may be wrapped in DDP; `generator` draws the augmentation."""
        module = unwrap(model)
        self.model, self.cfg, self.optimizer, self.scheduler = model, cfg, optimizer, scheduler
        self.generator, self.device, self.dtype = generator, options.device, options.dtype
        self.mean, self.std = module.backbone.pixel_mean, module.backbone.pixel_std
        self.image_size = module.settings.img_size
        self.augment = AugmentConfig(pad=augment_padding(self.image_size), erase_p=cfg.erase_p) if cfg.augment else None
        self.augmentation: Optional[BatchAugmentation] = None
        self.augment_method = options.augment_method
        self.losses, self.stat_names = model_losses(module, cfg)
        if cfg.fixed_order_reductions:
            use_fixed_order_reductions(module)
        self.clipped = [p for p in module.parameters() if p.requires_grad] if cfg.grad_clip_norm else []
        self.average = WeightAverage(module, cfg.ema_decay) if cfg.ema_decay else None
        """The weights' moving average (train.ema_decay), which the trained model receives at the end."""
        self.region = labeller(options.regions)
        if options.compile_backend is not None:
            self.losses = torch.compile(self.losses, backend=options.compile_backend, dynamic=False)

    def begin_epoch(self, batches: torch.Tensor) -> None:
        """Draw the augmentation of all of an epoch's batches ([steps, batch] indices) at once."""
        if self.augment is not None:
            steps, batch_size = batches.shape
            self.augmentation = BatchAugmentation(
                steps, batch_size, self.image_size, self.generator, self.augment, self.device, self.augment_method
            )

    def __call__(self, step: int, batch: LabelledBatch) -> torch.Tensor:
        """Train on `batch` (from the training set's `batches`), batch `step` of the epoch begun last.

        Returns the statistics named by `stat_names` ([loss, id loss, triplet loss, accuracy, ...]), on the device.
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

        The part of a step with fixed shapes and no host work, which `GraphedTrainStep` captures:
        gradient clipping (train.grad_clip_norm) and the weight average (train.ema_decay) included.
        """
        region = self.region
        with region("forward"), autocast(self.device, self.dtype):
            output = self.model(x, cam)
        with region("losses"):
            loss, stats = self.losses(output, target)
        with region("backward"):
            loss.backward()
        with region("optimizer"):
            if self.clipped and self.cfg.fixed_order_reductions:
                clip_grad_norm_fixed_order(self.clipped, self.cfg.grad_clip_norm)
            elif self.clipped:
                torch.nn.utils.clip_grad_norm_(self.clipped, self.cfg.grad_clip_norm, foreach=True)
            self.optimizer.step()
            if self.average is not None:
                self.average.update()
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
