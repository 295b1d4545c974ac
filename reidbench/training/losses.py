"""The two ReID training losses (identity cross-entropy, batch-hard triplet) and batch accuracy.

Both losses are computed in float32 even under autocast: the triplet loss
takes differences of squared distances, which bf16 rounds to nothing once
features grow, and cross-entropy over hundreds of identities wants a float32
log-sum-exp.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Squared distances are clamped to this before the square root: the derivative of sqrt is
#: infinite at 0, so two identical features (and every anchor with itself) would give NaN.
_MIN_SQUARED_DISTANCE = 1e-12


def _pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """[B, B] euclidean distances via |a|^2 + |b|^2 - 2ab: B x B memory, not B x B x D."""
    squared = features.pow(2).sum(dim=1)
    d2 = squared[:, None] + squared[None, :] - 2 * features @ features.T
    return d2.clamp(min=_MIN_SQUARED_DISTANCE).sqrt()


def batch_hard_triplet(features: torch.Tensor, pids: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Mean over anchors of the hardest-positive vs hardest-negative triplet loss (Hermans et al. 2017).

    Distances are euclidean on ``features`` as given: normalise them first if
    the recipe wants cosine geometry. ``margin=None`` is the soft margin
    ``softplus(d_ap - d_an)`` that TransReID uses; a number gives the hinge
    ``relu(d_ap - d_an + margin)``. Anchors with no other image of their
    identity, or no image of another identity, in the batch have no triplet
    and are left out of the mean; if no anchor has one the loss is a zero that
    still carries a graph, so ``backward()`` works on every step.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        dist = _pairwise_euclidean(features.float())
        same = pids[:, None] == pids[None, :]
        # An anchor's own distance (~0) is the smallest in its row, so the hardest positive may
        # range over `same` including the anchor: it only wins when there is no other positive,
        # and such anchors are invalid. Written this way, with masks multiplied in rather than
        # rows dropped by indexing, forward + backward dispatch fewer operations and never make
        # the host wait for the device: a host-bound training step shows every operation in img/s.
        matches = same.sum(dim=1)
        valid = (matches > 1) & (matches < len(pids))
        d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
        gap = d_ap - d_an  # -inf for an anchor without negatives: softplus and relu give 0, with 0 gradient
        per_anchor = F.softplus(gap) if margin is None else F.relu(gap + margin)
        return (per_anchor * valid).sum() / valid.sum().clamp(min=1)


def id_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Identity cross-entropy with label smoothing, in float32.

    With smoothing ε the target puts ``1 - ε + ε/C`` on the true identity and
    ``ε/C`` on each of the C - 1 others (Szegedy et al.; ε = 0.1 in CLIP-ReID's person configs and MambaPro's;
    TransReID's configs set IF_LABELSMOOTH 'off', ε = 0),
    which is ``(1 - ε) · NLL + ε · mean over classes of -log p``.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def batch_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max identity is the target: the training-log accuracy.

    A 0-d tensor on the logits' device, so the training loop can sum it without a host sync.
    """
    return (logits.detach().argmax(dim=1) == targets).float().mean()
