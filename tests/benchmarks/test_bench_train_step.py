"""The harness's whole training step on the CPU, with the operations it dispatches counted.

On an H200 a ViT-B step at batch 64 is host-bound (docs/benchmarks: the harness
queued a step in 35.6 ms, the bare library loop in 26.6 ms), so the Python and
dispatch work the harness adds around the network -- sampling, augmentation,
losses, head, statistics -- is what its img/s ratio to a bare loop measures.
On a CPU the step's time is mostly the network's arithmetic (depth 1 but full
width), so the number that tracks that host cost here is `ops_per_step` in the
benchmarks' extra_info -- for the harness step (with the augmentation applied by
the GPU's batched gather, not the CPU's per-sample loop) and for the bare loop
of `reidbench bench --reference` at the same size: a step that starts
dispatching more shows up there before it shows up on a GPU.
"""
from __future__ import annotations

import pytest
import torch

from reidbench.runtime.dispatch import count_dispatches, total
from reidbench.bench.reference import bare_train_step
from reidbench.bench.training import harness_train_step
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings

BATCH = 64
FULL_DEPTH_BATCH = 8
TINY = VariantSettings(depth=1, img_size=(32, 16), num_classes=64, num_cameras=6)


def test_bench_harness_train_step_host_cost(benchmark) -> None:
    model = create_variant("vit768-none", settings=TINY)
    step = harness_train_step(model, BATCH, torch.device("cpu"), "fp32", augment_method="gather")
    step()  # the first step also creates SGD's momentum buffers: count a later one, as for the bare loop
    stats, counts = count_dispatches(step)  # the gather from the cache included
    assert torch.isfinite(stats).all()
    benchmark.extra_info.update(batch=BATCH, input="32x16", depth=1, ops_per_step=total(counts), threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)


def test_bench_bare_train_step_host_cost(benchmark) -> None:
    """The bare loop's step at the same size: the harness's ops_per_step minus this one is what it adds."""
    step = bare_train_step("vit768", TINY, BATCH, torch.device("cpu"), "fp32")
    first_loss = step()
    _, counts = count_dispatches(step)
    benchmark.extra_info.update(batch=BATCH, input="32x16", depth=1, ops_per_step=total(counts), threads=torch.get_num_threads())
    last_loss = benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    assert total(counts) > 0
    # the same batch every step: a step that trains lowers its loss
    assert torch.isfinite(last_loss) and last_loss < first_loss


@pytest.mark.parametrize("backbone", ["vit768", "clip512"])
def test_bench_ops_per_step_at_full_depth(benchmark, backbone) -> None:
    """Depth 12, bf16 autocast (as on a GPU), the GPU's augmentation path: what the harness adds per step.

    The figures in docs/benchmarks ("the whole ViT-B step counted") are this test's extra_info.
    The timed call is one counted harness step on the CPU, not a GPU figure. The smallest
    PK batch (2 x 4): a step dispatches the same operations at every batch size, and CPUs
    without bf16 instructions emulate bf16 matrix multiplies (at batch 64 this test took
    over ten minutes on a 2-core AVX2 machine).
    """
    settings = VariantSettings(depth=12, img_size=(32, 16), num_classes=64, num_cameras=6)
    model = create_variant(f"{backbone}-none", settings=settings)
    harness = harness_train_step(model, FULL_DEPTH_BATCH, torch.device("cpu"), "bf16", augment_method="gather")
    bare = bare_train_step(backbone, settings, FULL_DEPTH_BATCH, torch.device("cpu"), "bf16")
    harness(), bare()  # first steps allocate optimizer state
    bare_ops = total(count_dispatches(bare)[1])

    def counted_harness_step() -> int:
        return total(count_dispatches(harness)[1])

    harness_ops = benchmark.pedantic(counted_harness_step, rounds=1, iterations=1)
    benchmark.extra_info.update(
        backbone=backbone, batch=FULL_DEPTH_BATCH, depth=12, dtype="bf16", harness_ops_per_step=harness_ops, bare_ops_per_step=bare_ops,
        added=harness_ops - bare_ops,
    )
    assert bare_ops > 2000 and harness_ops > bare_ops
