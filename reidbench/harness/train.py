"""The ReID training loop: PK batches, ID cross-entropy + batch-hard triplet, warm-up + cosine.

Resumable at epoch granularity: the checkpoint holds model, optimizer,
scheduler, the augmentation generator and torch's RNG state, so a run
interrupted after epoch e and resumed gives the same numbers as one that never
stopped (on the CPU, where kernels are deterministic).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from reidbench.bench.environment import autocast
from reidbench.errors import ReidbenchError
from reidbench.harness.augment import normalize, train_augment
from reidbench.harness.images import ImageSet
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

    def to_dict(self) -> dict:
        return vars(self).copy()


def build_optimizer(model: ReidModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
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


def train_model(
    model: ReidModel,
    train_set: ImageSet,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    dtype: str,
    cell_dir: Path,
    progress: Progress,
    on_epoch: Optional[Callable[[int], None]] = None,
) -> TrainSummary:
    """Train `model` in place; resumes from `cell_dir/checkpoint.pt` when it exists."""
    checkpoint_path, log_path = cell_dir / "checkpoint.pt", cell_dir / "train_log.jsonl"
    sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=seed)
    steps_per_epoch = len(sampler)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = model.backbone.pixel_mean, model.backbone.pixel_std
    pad = augment_padding(model.settings.img_size)
    start_epoch, log = 0, []
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start_epoch, log = state["epoch"], state["log"]
    _rewrite_log(log_path, log)

    images, pids, cams = train_set.images, train_set.pids, train_set.camids
    model.train()
    seen, wall = 0, 0.0
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        sums = torch.zeros(4, device=device)  # loss, id, triplet, accuracy: summed on device, read once per epoch
        started = time.perf_counter()
        with progress.task(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", "batch") as advance:
            for step, batch in enumerate(sampler):
                index = torch.as_tensor(batch, device=images.device)
                raw, target, cam = images[index], pids[index], cams[index]
                x = train_augment(raw, generator, mean, std, pad=pad, erase_p=cfg.erase_p) if cfg.augment else normalize(raw, mean, std)
                with autocast(device, dtype):
                    output = model(x, cam)
                ce = id_loss(output.logits, target, cfg.label_smoothing)
                tri = (
                    batch_hard_triplet(output.features.float(), target, None if cfg.triplet == "soft" else cfg.triplet_margin)
                    if cfg.triplet != "none" else ce.new_zeros(())
                )
                loss = cfg.id_weight * ce + cfg.triplet_weight * tri
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                sums += torch.stack([loss.detach(), ce.detach(), tri.detach(), batch_accuracy(output.logits, target)])
                if progress.bars:  # a per-step host sync only where someone watches the bar
                    advance(loss=f"{float(loss):.3f}")
        totals = (sums / steps_per_epoch).tolist()
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
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "img_per_s": epoch_images / seconds,
        }
        log.append(entry)
        append_line(log_path, entry)
        remaining = (cfg.epochs - epoch - 1) * wall / (epoch + 1 - start_epoch)
        progress.log(
            f"    epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.3f} (id {entry['id_loss']:.3f}, "
            f"triplet {entry['triplet_loss']:.3f}), train acc {entry['accuracy']:.3f}, {entry['img_per_s']:.0f} img/s, "
            f"training ETA {_duration(remaining)}"
        )
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            save_torch_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "epoch": epoch + 1,
                    "log": log,
                },
                checkpoint_path,
            )
        if on_epoch is not None:
            on_epoch(epoch + 1)
    model.eval()
    return TrainSummary(
        epochs_done=cfg.epochs,
        seconds=sum(e["seconds"] for e in log),
        images=len(log) * steps_per_epoch * cfg.batch_size,
        img_per_s=(seen / wall) if wall else (log[-1]["img_per_s"] if log else 0.0),
        final_loss=log[-1]["loss"] if log else float("nan"),
        resumed_from_epoch=start_epoch,
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _rewrite_log(path: Path, log: list[dict]) -> None:
    """Make the log match the checkpoint: epochs after it (trained but not saved) are dropped."""
    write_atomic(path, "".join(json.dumps(e) + "\n" for e in log))
