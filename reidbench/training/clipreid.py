"""CLIP-ReID's two training stages for a model with head = "clipreid" (`reidbench.variants.clipreid`).

Stage 1 (Syliz517/CLIP-ReID, processor/processor_clipreid_stage1.py, as
train_clipreid.py calls it): both encoders frozen, every training image's
projected CLS computed once, before the epochs, from the un-augmented images
(datasets/make_dataloader_clipreid.py: train_loader_stage1 reads
`train_set_normal`, the val transforms; the get_image path passes no camera
embedding), then per epoch a random permutation of them in batches of
IMS_PER_BATCH (the remainder as a last, smaller batch), each batch's identity
prompts through the text tower, and the loss SupConLoss(image, text) +
SupConLoss(text, image) (loss/supcontrast.py, temperature 1, unnormalised
features). Only the prompts' vectors train (solver/make_optimizer_prompt.py,
make_optimizer_1stage: Adam, BASE_LR 0.00035, WEIGHT_DECAY 1e-4), on
solver/scheduler_factory.py's schedule (cosine_lr.py: warm-up from
WARMUP_LR_INIT 1e-5 over 5 epochs, cosine to LR_MIN 1e-6 at MAX_EPOCHS 120,
`scheduler.step(epoch)` with the 1-based epoch before each epoch).

Between the stages (processor_clipreid_stage2.py, before its epochs) every
identity's text feature is computed once; stage 2 uses them as a fixed
classifier: i2t logits = image_features_proj @ text_features.T.

Stage 2's losses (loss/make_loss.py, softmax_triplet with label smoothing):
ID_LOSS_WEIGHT x (label-smoothed cross-entropy of both classifiers, summed) +
TRIPLET_LOSS_WEIGHT x (batch-hard triplet on the next-to-last block's CLS, the
768-d feature and the 512-d projected CLS, summed) + I2T_LOSS_WEIGHT x
(label-smoothed cross-entropy of the i2t logits).

Departures, named: autocast is the run's (bf16 on CUDA, none on the CPU)
instead of fp16 AMP with a gradient scaler; the empty last batch upstream's
loop runs when the image count is a multiple of the batch (a NaN loss its
scaler skips) is not run; the epoch's logged loss is the mean over its
batches; stage 1 draws its permutations from a generator seeded with the
cell's seed; the logged training accuracy is the first ID classifier's, where
upstream's stage 2 logs the i2t logits' accuracy.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from reidbench.data.stream import AnyImageSet
from reidbench.profiles import TrainConfig
from reidbench.runtime.device import autocast
from reidbench.schema import EpochEntry
from reidbench.training.augment import normalize, to_device_async
from reidbench.training.losses import batch_accuracy, batch_hard_triplet, id_loss
from reidbench.variants.clipreid import ClipReidModel, ClipReidOutput
from reidbench.variants.text import IdentityText, build_identity_text

CLIPREID_STATS = ("loss", "id_loss", "triplet_loss", "accuracy", "i2t_loss")
"""What a stage-2 step returns, in order: the common four and the image-to-text loss."""
STAGE1 = 1
"""The train log's `stage` marker on stage-1 lines; stage 2's lines are the cell's ordinary epochs."""


def supervised_contrastive(anchors: torch.Tensor, others: torch.Tensor, anchor_labels: torch.Tensor, other_labels: torch.Tensor) -> torch.Tensor:
    """loss/supcontrast.py's SupConLoss at temperature 1: per anchor, the mean log-softmax over `others` of those with
    its label, negated and averaged over anchors. In float32; log_softmax does upstream's max subtraction itself."""
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        log_prob = (anchors.float() @ others.float().T).log_softmax(dim=1)
        positives = (anchor_labels[:, None] == other_labels[None, :]).float()
        return -((positives * log_prob).sum(dim=1) / positives.sum(dim=1)).mean()


def prompt_lr(epoch: int, cfg: TrainConfig) -> float:
    """Stage 1's learning rate in 1-based `epoch`: cosine_lr.py's `_get_lr(epoch)` with warmup_prefix False, cycle_limit 1."""
    if epoch < cfg.prompt_warmup_epochs:
        return cfg.prompt_warmup_lr + epoch * (cfg.prompt_lr - cfg.prompt_warmup_lr) / cfg.prompt_warmup_epochs
    if epoch >= cfg.prompt_epochs:
        return cfg.prompt_lr_min
    return cfg.prompt_lr_min + 0.5 * (cfg.prompt_lr - cfg.prompt_lr_min) * (1 + math.cos(math.pi * epoch / cfg.prompt_epochs))


@torch.no_grad()
def image_features(model: ClipReidModel, train_set: AnyImageSet, device: torch.device, dtype: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training image's projected CLS ([N, 512], float32) and identity, from un-augmented images, in eval mode."""
    was_training = model.training
    model.eval()
    features, labels = [], []
    mean, std = model.backbone.pixel_mean, model.backbone.pixel_std
    for raw, pids, _ in train_set.in_order(batch_size):
        x = normalize(to_device_async(raw, device), mean, std)
        with autocast(device, dtype):
            cls = model.backbone.clip_features(x).cls
            features.append((cls @ model.projection().to(cls.dtype)).float())
        labels.append(pids.to(device))
    model.train(was_training)
    return torch.cat(features), torch.cat(labels)


@dataclass
class PromptStage:
    """Stage 1's log lines and cost."""

    entries: list[EpochEntry]
    seconds: float
    """All of stage 1: the image features, the epochs and the final text features."""
    feature_seconds: float
    """Computing the image features once."""
    images: int

    def summary(self, cfg: TrainConfig) -> dict[str, Any]:
        return {
            "epochs_done": len(self.entries), "seconds": self.seconds, "feature_seconds": self.feature_seconds,
            "images": self.images, "batch_size": cfg.prompt_batch_size,
            "final_loss": self.entries[-1].loss if self.entries else float("nan"),
        }


def train_prompts(
    model: ClipReidModel, train_set: AnyImageSet, cfg: TrainConfig, device: torch.device, dtype: str, seed: int,
    weights: Optional[str | os.PathLike] = None, on_epoch: Callable[[EpochEntry], None] = lambda entry: None,
) -> PromptStage:
    """Stage 1 on `model`'s frozen image tower and a text tower from `weights` (the image tower's file; None: random);
    leaves every identity's text feature in `model.head.text_features`."""
    started = time.perf_counter()
    features, labels = image_features(model, train_set, device, dtype, cfg.prompt_batch_size)
    feature_seconds = time.perf_counter() - started
    text = build_identity_text(model.settings, weights).to(device)
    optimizer = torch.optim.Adam(text.prompts.parameters(), lr=prompt_lr(1, cfg), weight_decay=cfg.prompt_weight_decay)
    generator = torch.Generator().manual_seed(seed)
    entries = []
    for epoch in range(1, cfg.prompt_epochs + 1):
        entry = _prompt_epoch(text, optimizer, features, labels, epoch, cfg, generator, dtype)
        entries.append(entry)
        on_epoch(entry)
    model.head.text_features.copy_(identity_features(text, model.settings.num_classes, cfg.prompt_batch_size, dtype))
    return PromptStage(entries, time.perf_counter() - started, feature_seconds, len(labels))


def _prompt_epoch(
    text: IdentityText, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor, epoch: int,
    cfg: TrainConfig, generator: torch.Generator, dtype: str,
) -> EpochEntry:
    lr = prompt_lr(epoch, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    started, device = time.perf_counter(), features.device
    order = torch.randperm(len(labels), generator=generator).to(device)
    losses = []
    for batch in order.split(cfg.prompt_batch_size):
        target, images = labels[batch], features[batch]
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            texts = text(target)
        loss = supervised_contrastive(images, texts, target, target) + supervised_contrastive(texts, images, target, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return EpochEntry(stage=STAGE1, epoch=epoch, loss=float(torch.stack(losses).mean()), lr=lr,
                      seconds=time.perf_counter() - started)


@torch.no_grad()
def identity_features(text: IdentityText, num_classes: int, batch_size: int, dtype: str) -> torch.Tensor:
    """[identities, 512] every identity's text feature, float32, computed once (processor_clipreid_stage2.py)."""
    device = text.prompts.identity_context.device
    parts = []
    for labels in torch.arange(num_classes, device=device).split(batch_size):
        with autocast(device, dtype):
            parts.append(text(labels).float())
    return torch.cat(parts)


def clipreid_losses(cfg: TrainConfig) -> Callable[[ClipReidOutput, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """`(output, targets) -> (loss, [loss, id loss, triplet loss, accuracy, i2t loss])`: loss/make_loss.py's stage-2 sum."""
    margin = None if cfg.triplet == "soft" else cfg.triplet_margin

    def losses(output: ClipReidOutput, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ce = id_loss(output.logits, targets, cfg.label_smoothing) + id_loss(output.proj_logits, targets, cfg.label_smoothing)
        if cfg.triplet != "none":
            metric = (output.penultimate, output.features, output.proj_features)
            tri = torch.stack([batch_hard_triplet(f.float(), targets, margin) for f in metric]).sum()
        else:
            tri = ce.new_zeros(())
        i2t = id_loss(output.i2t_logits, targets, cfg.label_smoothing)
        loss = cfg.id_weight * ce + cfg.triplet_weight * tri + cfg.i2t_weight * i2t
        stats = [loss.detach(), ce.detach(), tri.detach(), batch_accuracy(output.logits, targets), i2t.detach()]
        return loss, torch.stack(stats)

    return losses
