"""Fixed-order reductions (train.fixed_order_reductions): one and two CPU threads train the same weights, bit for bit.

Sizes are chosen above PyTorch's parallel grain size (batch 48 of 768-d features), where its own
kernels split sums over threads; below it every kernel runs on one thread and nothing could differ.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from reidbench.data.images import ImageSet
from reidbench.harness import train as train_module
from reidbench.harness.train import TrainOptions
from reidbench.profiles import TrainConfig, load_profile
from reidbench.runtime.progress import Progress
from reidbench.variants import create_variant
from reidbench.variants.fixed_order import fixed_order_linear, use_fixed_order_reductions
from repo_scripts import load_script

CELLS = ["vit768-none", "clip512proj-none", "vit768-ms"]
"""Each backbone class (timm ViT; open_clip tower, here with its projection) and the window neck."""
SIZE = (64, 32)
BATCH = 48
"""48 x 768 = 36864 elements: just above the grain size (32768) at which PyTorch splits a sum over threads."""


THREAD_INVARIANCE = load_script("thread_invariance")


def _model(cell: str, fixed: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_variant(cell, depth=1, img_size=SIZE, num_classes=16, num_cameras=6, camera_embedding_scale=0.3, neck_scales=(1, 2, 4))
    return use_fixed_order_reductions(model) if fixed else model


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, *SIZE, generator=generator)
    return images, torch.arange(16).repeat_interleave(BATCH // 16), torch.randint(0, 6, (BATCH,), generator=generator)


def _step_gradients(cell: str, fixed: bool, threads: int) -> dict[str, torch.Tensor]:
    """One step's gradients after clipping, and the head's BatchNorm statistics, on `threads` threads: what
    scripts/thread_invariance.py compares on a new CPU, run here at the sizes above."""
    before = torch.get_num_threads()
    try:
        return THREAD_INVARIANCE.step_numbers(cell, fixed, threads, SIZE, BATCH)
    finally:
        torch.set_num_threads(before)


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [name for name in a if not torch.equal(a[name], b[name])]


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_is_the_same_on_one_and_two_threads(cell: str) -> None:
    assert _differing(_step_gradients(cell, True, 1), _step_gradients(cell, True, 2)) == []


def test_the_library_kernels_differ_by_thread_count_at_these_sizes() -> None:
    """The control: without the replacements the same comparison finds differences, so the test above can fail."""
    differing = _differing(_step_gradients("vit768-none", False, 1), _step_gradients("vit768-none", False, 2))
    assert differing, "PyTorch's own kernels no longer differ between one and two threads here: review reidbench.variants.fixed_order"


@pytest.mark.parametrize("cell", ["vit768-ms", "clip512proj-none"])
def test_the_replacements_compute_what_the_library_computes(cell: str) -> None:
    fixed, library = _step_gradients(cell, True, 2), _step_gradients(cell, False, 2)
    for name in library:
        torch.testing.assert_close(fixed[name], library[name], rtol=1e-4, atol=1e-7, msg=lambda m: f"{name}: {m}")


def test_inference_and_state_dicts_are_untouched() -> None:
    library, fixed = _model("vit768-ms", False).eval(), _model("vit768-ms", True).eval()
    images, _, cams = _batch()
    with torch.no_grad():
        assert torch.equal(library(images, cams), fixed(images, cams))
    assert {k: v.shape for k, v in library.state_dict().items()} == {k: v.shape for k, v in fixed.state_dict().items()}
    copied = copy.deepcopy(fixed)
    assert type(copied.head.bottleneck) is type(fixed.head.bottleneck)
    assert type(fixed.head.bottleneck).__name__ == "FixedOrderBatchNorm1d"
    assert use_fixed_order_reductions(fixed) is fixed  # applying twice changes nothing


def _train_set() -> ImageSet:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, *SIZE), dtype=torch.uint8, generator=generator)
    pids = torch.arange(BATCH) % 16
    return ImageSet(images=images, pids=pids, camids=pids % 6, paths=[f"x/{i}" for i in range(BATCH)])


def _trained_weights(tmp_path: Path, threads: int, fixed: bool) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(epochs=2, p=16, k=3, optimizer="adamw", lr=1e-3, warmup_epochs=1, epoch_covers="identities",
                      grad_clip_norm=1.0, fixed_order_reductions=fixed, checkpoint_minutes=0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = _model("clip512proj-none", False)
        train_module.train_model(
            model, _train_set(), cfg, TrainOptions(seed=0, device=torch.device("cpu"), dtype="fp32"), tmp_path / f"t{threads}",
            Progress(lambda message: None, bars=False),
        )
    finally:
        torch.set_num_threads(before)
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def test_a_training_with_the_setting_gives_the_same_weights_on_one_and_two_threads(tmp_path: Path) -> None:
    assert _differing(_trained_weights(tmp_path, 1, True), _trained_weights(tmp_path, 2, True)) == []


def test_the_quick_profile_asks_for_it_and_the_full_one_does_not() -> None:
    assert load_profile("quick").train.fixed_order_reductions is True
    assert load_profile("full").train.fixed_order_reductions is False


def test_a_long_inner_dimension_is_summed_the_same_on_one_and_two_threads() -> None:
    """The ms neck's 4x2 window: 6144 inputs per output row and few rows, which MKL on an AVX-512 CPU splits over threads."""
    generator = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(64, 6144, generator=generator), torch.randn(768, 6144, generator=generator), torch.randn(768, generator=generator)
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(fixed_order_linear(x, weight, bias, True))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[0], torch.nn.functional.linear(x, weight, bias), rtol=1e-4, atol=1e-3)
