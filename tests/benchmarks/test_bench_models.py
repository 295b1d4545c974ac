"""Speed of the model hot paths on CPU: a forward pass of every registered backbone, and FLOP counting.

Shallow models (depth 1 for the forward pass, depth 2 for FLOP counting) at the
full 256x128 input keep the per-token work of the real network while the suite
stays fast enough to run once in every CI job. A slowdown here is a slowdown of
`reidbench bench` and of every training step; exact parameter and FLOP counts
are asserted in tests/test_flops.py and tests/test_variants.py, not here.

    python3 -m pytest tests/benchmarks/test_bench_models.py --benchmark-enable
"""
from __future__ import annotations

import pytest
import torch

from reidbench import create_variant
from reidbench.bench.flops import count_flops
from reidbench.variants import BACKBONES

BATCH = 8


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_bench_backbone_forward(benchmark, backbone: str) -> None:
    model = create_variant(f"{backbone}-none", depth=1).eval()
    images = model.example_input(BATCH)
    cams = torch.arange(BATCH) % model.settings.num_cameras if model.settings.num_cameras else None

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model.backbone(images, cam_ids=cams)

    benchmark.extra_info.update(batch=f"{BATCH}x3x256x128", depth=1, threads=torch.get_num_threads())
    tokens = benchmark.pedantic(forward, rounds=5, iterations=1, warmup_rounds=1)
    rows, cols = model.backbone.grid_size
    assert tokens.shape == (BATCH, 1 + rows * cols, model.backbone.embed_dim)


def test_bench_count_flops(benchmark) -> None:
    model = create_variant("vit768-none", depth=2).eval()
    images = model.example_input(1)
    benchmark.extra_info.update(cell="vit768-none", depth=2, input="1x3x256x128")
    counted = benchmark.pedantic(count_flops, args=(model, images), rounds=3, iterations=1, warmup_rounds=0)
    assert counted.gflops == pytest.approx(2 * counted.gmacs, rel=5e-3) and not counted.warnings
