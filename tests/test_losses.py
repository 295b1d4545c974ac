"""Losses against per-anchor Python references, and gradients where the distance is zero."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidbench.training.losses import batch_accuracy, batch_hard_triplet, id_loss


def reference_triplet(features: torch.Tensor, pids: list[int], margin: float | None) -> float:
    """The textbook definition, one anchor at a time, in float64."""
    x = features.double()
    losses = []
    for a in range(len(pids)):
        pos = [float((x[a] - x[j]).norm()) for j in range(len(pids)) if j != a and pids[j] == pids[a]]
        neg = [float((x[a] - x[j]).norm()) for j in range(len(pids)) if pids[j] != pids[a]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(math.log1p(math.exp(gap)) if margin is None else max(gap + margin, 0.0))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("margin", [None, 0.3, 5.0])
def test_triplet_matches_the_per_anchor_reference(margin):
    torch.manual_seed(1)
    pids = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    features = torch.randn(len(pids), 16)
    loss = batch_hard_triplet(features, torch.tensor(pids), margin)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(reference_triplet(features, pids, margin), rel=1e-5, abs=1e-6)


def test_anchors_without_a_positive_are_left_out():
    torch.manual_seed(2)
    pids = [0, 0, 1, 2, 3, 3]  # 1 and 2 are alone
    features = torch.randn(len(pids), 8)
    loss = batch_hard_triplet(features, torch.tensor(pids), 0.3)
    assert loss.item() == pytest.approx(reference_triplet(features, pids, 0.3), rel=1e-5)
    # The mean is over the 4 anchors with a triplet, not over all 6 (which would be 4/6 of it).
    assert loss.item() > 0 and reference_triplet(features, pids, 0.3) * 4 / 6 < loss.item()


def test_no_anchor_with_a_triplet_gives_zero_that_backpropagates():
    features = torch.randn(4, 8, requires_grad=True)
    for pids in ([0, 1, 2, 3], [5, 5, 5, 5]):
        loss = batch_hard_triplet(features, torch.tensor(pids), None)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(features.grad, torch.zeros_like(features))
        features.grad = None


@pytest.mark.parametrize("margin", [None, 0.3])
def test_identical_features_give_finite_gradients(margin):
    base = torch.randn(3, 8)
    features = base[[0, 0, 1, 1, 2, 2]].clone().requires_grad_(True)  # every positive at distance 0
    loss = batch_hard_triplet(features, torch.tensor([0, 0, 1, 1, 2, 2]), margin)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    collapsed = torch.zeros(4, 8, requires_grad=True)  # everything at one point
    batch_hard_triplet(collapsed, torch.tensor([0, 0, 1, 1]), margin).backward()
    assert torch.isfinite(collapsed.grad).all()


def test_triplet_is_float32_under_bf16_inputs():
    features = torch.randn(8, 16).bfloat16()
    loss = batch_hard_triplet(features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), None)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_id_loss_equals_the_smoothed_cross_entropy_formula(smoothing):
    torch.manual_seed(3)
    logits = torch.randn(5, 7).bfloat16()
    targets = torch.tensor([0, 3, 6, 2, 2])
    log_p = F.log_softmax(logits.double(), dim=1)
    nll = -log_p[torch.arange(5), targets]
    expected = ((1 - smoothing) * nll + smoothing * -log_p.mean(dim=1)).mean()
    loss = id_loss(logits, targets, smoothing)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 2.0]])
    assert batch_accuracy(logits, torch.tensor([0, 1, 1, 0])).item() == 0.5


@pytest.mark.parametrize("triplet", ["soft", "margin", "none"])
def test_the_step_losses_compile_to_the_same_values_and_gradients(triplet):
    """--compile compiles the losses as one function: same loss, statistics and gradients as eager."""
    from reidbench.profiles import TrainConfig
    from reidbench.training.step import step_losses

    cfg = TrainConfig(p=4, k=2, label_smoothing=0.1, triplet=triplet)
    eager, compiled = step_losses(cfg), torch.compile(step_losses(cfg), backend="aot_eager", dynamic=False)
    targets = torch.arange(4).repeat_interleave(2)
    results = []
    for fn in (eager, compiled):
        torch.manual_seed(3)
        logits = torch.randn(8, 5, requires_grad=True)
        features = torch.randn(8, 16, requires_grad=True)
        loss, stats = fn(logits, features, targets)
        loss.backward()
        results.append((loss.detach(), stats, logits.grad, features.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
    assert results[0][1][0] == results[0][0]  # the statistics start with the loss itself
