"""Host cost as dispatched operations: the harness's network does per block what the library's does.

On a host-bound GPU (ViT-B at batch 64 on an H200) every extra operation per
transformer block costs twelve times over, forward and backward; a count is
exact on any machine, so these checks hold that line in CI.
"""
from __future__ import annotations

import pytest
import torch

from reidbench.runtime.dispatch import count_dispatches, difference, total
from reidbench.bench.reference import BARE_MODELS
from reidbench.variants.factory import create_variant
from reidbench.variants.settings import VariantSettings


def _settings(depth: int) -> VariantSettings:
    return VariantSettings(depth=depth, img_size=(32, 16), num_classes=8, num_cameras=3)


def _training_pass(network, *inputs):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = network(*inputs)
        out.float().sum().backward()

    return count_dispatches(run)[1]


def _per_block(counts_by_depth):
    one, two = counts_by_depth
    per_block = two.copy()
    per_block.subtract(one)
    return per_block


@pytest.mark.parametrize("backbone", sorted(BARE_MODELS))
def test_each_block_dispatches_no_more_than_the_library_block(backbone):
    """Forward + backward under bf16 autocast; the count for depth 2 minus depth 1 is one block's cost."""
    images = torch.rand(4, 3, 32, 16)
    cams = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    harness = _per_block([_training_pass(create_variant(f"{backbone}-none", settings=_settings(d)).backbone.train(), images, cams) for d in (1, 2)])
    library = _per_block([_training_pass(BARE_MODELS[backbone][1](_settings(d)).train(), images) for d in (1, 2)])
    assert total(harness) > 100  # a real block was counted
    assert total(harness) <= total(library), difference(harness, library)


def test_count_dispatches_counts_forward_and_backward():
    weight = torch.randn(3, 3, requires_grad=True)
    loss, counts = count_dispatches(lambda: (weight @ torch.ones(3)).sum())
    assert counts["aten.mv.default"] == 1 and counts["aten.sum.default"] == 1
    _, backward = count_dispatches(loss.backward)
    assert total(backward) > 0 and weight.grad is not None
    assert difference(counts, counts) == {}
