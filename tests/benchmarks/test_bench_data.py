"""Speed of the training data path: batch augmentation and the decoded-image cache.

The augmentation runs once per training step, so its CPU time bounds a CPU
run's step rate; the cache load runs once per split and run, so its rate
(images per second) says how long a run waits before its first step.

    python3 -m pytest tests/benchmarks/test_bench_data.py --benchmark-enable
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidbench.training.augment import train_augment

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
from reidbench.data import generate_synthetic, load_market1501
from reidbench.data.images import load_images

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory) -> Path:
    # 20 ids x 5 cameras x 2 images = 200 training JPEGs at the generator's default 128x64.
    return generate_synthetic(
        tmp_path_factory.mktemp("bench-data") / "set", num_ids_train=20, num_ids_test=2, num_cameras=5,
        images_per_id_per_camera=2, min_cameras_per_id=5, num_distractors=0, num_junk=0,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_bench_train_augment(benchmark, device):
    batch = torch.randint(0, 256, (64, 3, 256, 128), dtype=torch.uint8).to(device)
    generator = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        out = train_augment(batch, generator, IMAGENET_MEAN, IMAGENET_STD)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.extra_info.update(batch="64x3x256x128 uint8", threads=torch.get_num_threads())
    out = benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)
    assert out.shape == batch.shape and out.dtype == torch.float32


def test_bench_load_images(benchmark, small_synthetic):
    records = load_market1501(small_synthetic).train
    benchmark.extra_info.update(images=len(records), size="256x128 from 128x64 JPEG")
    result = benchmark.pedantic(load_images, args=(records, (256, 128)), rounds=5, iterations=1, warmup_rounds=1)
    assert len(result) == len(records) == 200 and not result.skipped and result.resized == 200


@pytest.mark.parametrize("workers", [0, 2])
def test_bench_streamed_images(benchmark, small_synthetic, workers):
    """`--data-cache stream`: every training image decoded per batch of 64 by `workers` DataLoader workers.

    Beside test_bench_load_images (the cache's one-off decode) this says how fast a
    streamed run can be fed at all: a GPU step must not take less than 64 images' worth.
    """
    from reidbench.data.stream import stream_images

    streamed = stream_images(load_market1501(small_synthetic).train, (256, 128), workers=workers)

    def one_pass() -> int:
        return sum(len(images) for images, _, _ in streamed.in_order(64))

    benchmark.extra_info.update(images=len(streamed), batch=64, workers=workers, size="256x128 from 128x64 JPEG")
    assert benchmark.pedantic(one_pass, rounds=3, iterations=1, warmup_rounds=1) == 200
