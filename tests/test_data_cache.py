"""Where the decoded training images live (GPU or host memory), and the refusal of a set that fits neither."""
from __future__ import annotations

import pytest
import torch

from reidbench.bench.training import random_train_set, train_config_for
from reidbench.errors import UsageError
from reidbench.harness import runner
from reidbench.harness.data import load_dataset
from reidbench.harness.runner import cache_location, check_decoded_size
from reidbench.harness.sampler import PKSampler
from reidbench.harness.train import TrainStep, build_optimizer, epoch_batches
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

TINY = VariantSettings(depth=1, img_size=(64, 32), num_classes=8, num_cameras=3)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_a_cpu_run_keeps_its_images_in_host_memory_and_bad_policies_are_named():
    cpu = torch.device("cpu")
    assert cache_location(10 * 2**20, cpu, "auto")[0] == cpu
    with pytest.raises(UsageError, match="--data-cache 'disk'"):
        cache_location(1, cpu, "disk")


def test_a_dataset_too_big_for_memory_is_refused_before_decoding(tiny_synthetic, monkeypatch):
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    check_decoded_size(dataset, TINY)  # a few hundred KB: fine
    monkeypatch.setattr(runner, "_available_memory", lambda: 1000)
    with pytest.raises(UsageError, match=r"decode to .* GiB of uint8.*img_size"):
        check_decoded_size(dataset, TINY)


@CUDA
def test_a_host_memory_cache_trains_exactly_like_a_device_cache():
    """Same seed, same draws: only where the uint8 batch is gathered differs, so the losses must agree."""
    device = torch.device("cuda")
    assert cache_location(1, device, "host")[0].type == "cpu"
    assert cache_location(1, device, "auto")[0] == device  # one byte always fits
    results = []
    for location in ("cuda", "cpu"):
        torch.manual_seed(0)
        model = create_variant("vit768-none", settings=TINY).to(device).train()
        cfg = train_config_for(8)
        train_set = random_train_set(model, 4, torch.device(location))
        optimizer = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        step = TrainStep(model, train_set, cfg, optimizer, scheduler, torch.Generator().manual_seed(0), device, "fp32")
        sampler = PKSampler(train_set.pids, p=cfg.p, k=cfg.k, seed=0)
        batches = epoch_batches(sampler, train_set.images.device)
        step.begin_epoch(batches)
        results.append(torch.stack([step(n, i) for n, i in enumerate(batches)]).cpu())
    # Not bitwise: CUDA's embedding backward accumulates with atomics in any order.
    torch.testing.assert_close(results[0], results[1], rtol=1e-3, atol=1e-4)
