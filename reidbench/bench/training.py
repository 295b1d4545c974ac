"""Training img/s of the harness's own step, beside a bare library loop measured in the same process.

The harness number is `TrainStep` -- the very object `train_model` calls --
fed by the PK sampler from a uint8 image cache on the device, with the on-device
augmentation, ID + triplet losses, BNNeck and the recipe's optimizer. Only the
images are random. Its ratio to `bare_train_loop` (the plain library network,
random tensors already on the device, cross-entropy only) is what the harness
itself costs; with a `compile_backend` the same step runs on a regionally compiled
copy, and the compile time is the extra wall time of its warm-up steps.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from reidbench.runtime.compile import compile_model
from reidbench.runtime.device import synchronize
from reidbench.runtime.dispatch import count_dispatches, total
from reidbench.data.images import ImageSet, LabelledBatch
from reidbench.profiles import TrainConfig
from reidbench.schema import MeasureMode
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, epoch_batches
from reidbench.training.graph_step import WARMUP_STEPS, GraphedTrainStep
from reidbench.variants.model import ReidModel

#: Images per identity in the measured batches, as in the recipe (P x 4).
K = 4
#: Batches per sampler epoch of the random image set (fewer when the classifier has fewer classes),
#: so epoch boundaries are part of what is timed.
STEPS_PER_EPOCH = 8


def train_config_for(batch_size: int) -> TrainConfig:
    """The full recipe's step (SGD, soft triplet, erasing) at `batch_size` = P x 4."""
    if batch_size % K or batch_size < 2 * K:
        raise ValueError(f"a training batch is P x {K} images with P >= 2; {batch_size} is not")
    return TrainConfig(epochs=1, p=batch_size // K, k=K, warmup_epochs=0)


def random_train_set(model: ReidModel, identities: int, device: torch.device, seed: int = 0) -> ImageSet:
    """`identities` x K random uint8 images at the model's input size, with camera ids, on `device`."""
    h, w = model.settings.img_size
    generator = torch.Generator().manual_seed(seed)
    count = identities * K
    pids = torch.arange(identities).repeat_interleave(K)
    cams = pids % max(model.settings.num_cameras, 1)
    channels = 3 * model.settings.num_modalities
    images = torch.randint(0, 256, (count, channels, h, w), dtype=torch.uint8, generator=generator)
    return ImageSet(images=images, pids=pids, camids=cams, paths=[f"random/{i}" for i in range(count)]).to(device)


@dataclass
class NextStep:
    """Calling trains on the next batch of an endless stream of epochs and returns the step's statistics."""

    step: TrainStep | GraphedTrainStep
    batches: Iterator[tuple[int, LabelledBatch]]

    def __call__(self) -> torch.Tensor:
        return self.step(*next(self.batches))


def harness_train_step(
    model: ReidModel,
    batch_size: int,
    device: torch.device,
    dtype: str,
    compile_backend: Optional[str] = None,
    regions: bool = False,
    cuda_graph: bool = False,
    augment_method: str = "auto",
) -> NextStep:
    """The harness's next training step per call, on a copy of `model` (the caller's is never trained).

    With `compile_backend` the copy's transformer blocks and the step's losses
    are compiled with it; `regions` labels the step's phases for torch.profiler;
    `cuda_graph` replays the steps after the first few as one CUDA graph each
    (`GraphedTrainStep`, with the graph-safe variant of the optimizer; with
    `compile_backend` too, the compiled code is what the graph records);
    `augment_method` as `TrainStep` takes it ("gather": the GPU's path, on any device).
    """
    if cuda_graph and regions:
        raise ValueError("graph-replayed steps are unlabelled: a profiler label is host work a graph cannot replay")
    cfg = train_config_for(batch_size)
    work = copy.deepcopy(model).to(device)
    if compile_backend is not None:
        compile_model(work, compile_backend)
    classes = work.settings.num_classes
    if classes < cfg.p:
        raise ValueError(f"a batch of {cfg.p} identities needs num_classes >= {cfg.p}; the model has {classes}")
    train_set = random_train_set(work, min(cfg.p * STEPS_PER_EPOCH, classes), device)
    sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0)
    optimizer = build_optimizer(work, cfg, graph_safe_on=device if cuda_graph else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    step: TrainStep | GraphedTrainStep = TrainStep(
        work, cfg, optimizer, scheduler, torch.Generator().manual_seed(0),
        StepOptions(device, dtype, compile_backend, augment_method=augment_method, regions=regions),
    )
    if cuda_graph:
        step = GraphedTrainStep(step)
    work.train()
    batches = _endless(sampler, step, train_set)
    return NextStep(step, batches)


def harness_train_throughput(
    model: ReidModel,
    batch_size: int,
    device: torch.device,
    dtype: str,
    steps: int,
    warmup: int = 5,
    compile_backend: Optional[str] = None,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """img/s of `steps` harness training steps after `warmup` untimed ones, on a copy of `model`.

    With `compile_backend` the copy's transformer blocks and the step's losses are compiled with it;
    with `cuda_graph` the timed steps are graph replays (the warm-up holds the eager steps and the capture;
    with both, also the compilation).
    """
    compiled = compile_backend is not None
    if cuda_graph:
        warmup = max(warmup, WARMUP_STEPS + 2)
    step = harness_train_step(model, batch_size, device, dtype, compile_backend, cuda_graph=cuda_graph)
    compile_seconds = ops_per_step = None
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm_seconds = time.perf_counter() - started
    start = time.perf_counter()
    for _ in range(steps):
        step()
    queued = time.perf_counter() - start
    synchronize(device)
    seconds = time.perf_counter() - start
    capture_seconds = getattr(step.step, "capture_seconds", None)
    if compiled:
        compile_seconds = max(warm_seconds - warmup * seconds / steps - (capture_seconds or 0.0), 0.0)
    if not compiled or cuda_graph:
        # One more step, counted: the host cost that the img/s ratio to the bare loop is about. A replay
        # runs no compiled region (which the counter would trace rather than run): its eager part is counted.
        ops_per_step = total(count_dispatches(step)[1])
    del step
    return {
        "mode": MeasureMode.of(compiled, cuda_graph).value,
        "batch_size": batch_size,
        "steps": steps,
        "warmup": warmup,
        "seconds": seconds,
        "img_per_s": batch_size * steps / seconds,
        # Host time to queue one step. Far below seconds / steps: the GPU is the bottleneck. Close to it:
        # either the host is, or the queue of pending kernel launches filled up and made the host wait
        # (a ViT-B step launches thousands); scripts/profile_train_step.py tells which.
        "host_ms_per_step": queued / steps * 1e3,
        "ops_per_step": ops_per_step,
        "compile_seconds": compile_seconds,
        "compile_backend": compile_backend,
        "capture_seconds": capture_seconds,
        "optimizer": "SGD(momentum=0.9, weight_decay=1e-4)",
        "step": "PK sampler -> on-device augmentation (flip, pad-crop, erasing) -> forward -> ID CE + soft triplet -> SGD",
    }


def _endless(sampler: PKSampler, step: TrainStep, train_set: ImageSet) -> Iterator[tuple[int, LabelledBatch]]:
    """(batch number, batch) over epoch after epoch, beginning each epoch as `train_model` does."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        batches = epoch_batches(sampler, train_set.index_device)
        step.begin_epoch(batches)
        yield from enumerate(train_set.batches(batches))
        epoch += 1
