"""Where the decoded training images live (GPU or host memory), and the refusal of a set that fits neither."""
from __future__ import annotations

import pytest
import torch

from reidbench.bench.training import random_train_set, train_config_for
from reidbench.errors import UsageError
from reidbench.harness import placement
from reidbench.data import load_dataset
from reidbench.runtime.progress import Progress
from reidbench.harness.placement import HOST, STREAM, cache_location, decoded_size
from reidbench.data.stream import StreamedImageSet
from reidbench.training.sampler import PKSampler
from reidbench.training.step import StepOptions, TrainStep, build_optimizer, epoch_batches
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

TINY = VariantSettings(depth=1, img_size=(64, 32), num_classes=8, num_cameras=3)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_where_the_images_come_from_follows_the_policy_and_the_memory():
    cpu, gib = torch.device("cpu"), 2**30
    assert cache_location(10 * 2**20, cpu, "auto", 8 * gib)[0] == HOST
    assert cache_location(10 * 2**20, cpu, "device", 8 * gib)[0] == HOST  # a CPU run has no device memory
    assert cache_location(10 * 2**20, cpu, "stream", 8 * gib)[0] == STREAM
    assert cache_location(10 * 2**20, cpu, "auto", None)[0] == HOST  # unknown memory: cache
    where, why = cache_location(7 * gib, cpu, "auto", 8 * gib)  # more than 80 % of what is available
    assert where == STREAM and "8.0 GiB of host memory available" in why
    for policy in ("host", "device"):
        with pytest.raises(UsageError, match=f"--data-cache {policy}: the images would not fit.*--data-cache stream"):
            cache_location(7 * gib, cpu, policy, 8 * gib)
    with pytest.raises(UsageError, match="--data-cache 'disk' is unknown"):
        cache_location(1, cpu, "disk")


def test_a_dataset_too_big_for_memory_is_streamed_by_a_run(tiny_synthetic, monkeypatch):
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    assert decoded_size(dataset, TINY) == sum(len(getattr(dataset, s)) for s in ("train", "query", "gallery")) * 3 * 64 * 32
    monkeypatch.setattr(placement, "_available_memory", lambda: 1000)
    data = placement.prepare_data("synthetic", dataset, TINY, torch.device("cpu"), "auto", Progress(lambda message: None, bars=False))
    assert isinstance(data.train, StreamedImageSet) and data.info["cache"]["location"].startswith("stream")
    assert len(data.train) == len(dataset.train) and data.info["decoded_mib"] > 0


@CUDA
def test_a_host_memory_cache_trains_exactly_like_a_device_cache():
    """Same seed, same draws: only where the uint8 batch is gathered differs, so the losses must agree."""
    device = torch.device("cuda")
    assert cache_location(1, device, "host")[0] == HOST
    assert cache_location(1, device, "auto")[0] == placement.DEVICE  # one byte always fits
    results = []
    for location in ("cuda", "cpu"):
        torch.manual_seed(0)
        model = create_variant("vit768-none", settings=TINY).to(device).train()
        cfg = train_config_for(8)
        train_set = random_train_set(model, 4, torch.device(location))
        optimizer = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        step = TrainStep(model, cfg, optimizer, scheduler, torch.Generator().manual_seed(0), StepOptions(device, "fp32"))
        sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0)
        batches = epoch_batches(sampler, train_set.index_device)
        step.begin_epoch(batches)
        results.append(torch.stack([step(n, b) for n, b in enumerate(train_set.batches(batches))]).cpu())
    # Not bitwise: CUDA's embedding backward accumulates with atomics in any order.
    torch.testing.assert_close(results[0], results[1], rtol=1e-3, atol=1e-4)
