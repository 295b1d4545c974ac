"""P identities x K images per batch: the batches that batch-hard triplet loss needs.

Why this sampler rather than the one in the usual ReID code bases: theirs draw
from the global ``random`` / ``numpy`` state, so a run cannot be replayed, and
their epoch length depends on the draw. Here an epoch is a pure function of
``(seed, epoch)``:

1. shuffle all identities and walk through them P at a time, so every identity
   appears in every epoch;
2. for each identity take K of its images, without replacement when it has at
   least K, with replacement otherwise;
3. split the batches across ranks: rank r takes batches r, r + W, r + 2W, ...
   of the same global order, so within one step the W ranks hold W*P distinct
   identities between them.

Padding rule: the identities are consumed one
*step* (W batches, W*P identities) at a time. The last step, if incomplete, is
filled up with identities chosen at random among those not already in that
step, i.e. repeats of identities seen earlier in the epoch. With W = 1 this is
"the last incomplete group of P is topped up with other ids"; with W > 1 it
also gives every rank the same number of batches, ``ceil(M / (P * W))`` for M
identities, without any identity appearing twice in one step.

With ``covers="images"`` an epoch is TransReID's (datasets/sampler.py,
RandomIdentitySampler): every identity's images, shuffled, are cut into chunks
of K (an identity with fewer than K images gives one chunk, drawn with
replacement); batches take one chunk from each of P identities drawn at random
among those with chunks left, until fewer than P have any. That covers about
every image once per epoch. Its number of batches depends on the draw; here
the epoch has a fixed number of steps, the chunks divided by P (and by the
ranks), topping up with the identities-style batches above where the draw ran
out early and dropping batches beyond it, so a learning-rate schedule knows
the epoch's length.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from reidbench.errors import UsageError


class PKSampler:
    """Batch sampler over dataset indices; call :meth:`set_epoch` before iterating each epoch.

    ``pids`` holds the identity of every dataset index. Iterating yields this
    rank's batches for the current epoch as lists of ``P * K`` indices, K
    consecutive indices per identity.
    """

    def __init__(
        self,
        pids: Sequence[int] | torch.Tensor,
        p: int,
        k: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        covers: str = "identities",
    ) -> None:
        if isinstance(pids, torch.Tensor):
            pids = pids.detach().cpu().numpy()
        labels = np.asarray(pids, dtype=np.int64).reshape(-1)
        problems = []
        if p < 1 or k < 1:
            problems.append(f"P and K must be at least 1 (got P={p}, K={k})")
        if seed < 0:
            problems.append(f"seed must be non-negative (got {seed})")
        if world_size < 1 or not 0 <= rank < world_size:
            problems.append(f"rank must be in 0..world_size-1 (got rank={rank}, world_size={world_size})")
        if covers not in ("identities", "images"):
            problems.append(f"covers must be 'identities' or 'images' (got {covers!r})")
        if problems:
            raise UsageError("PK sampler: " + "; ".join(problems) + ".")
        self.covers = covers

        ids, inverse = np.unique(labels, return_inverse=True)
        if len(ids) < max(p * world_size, 2):
            ranks = f" x {world_size} ranks" if world_size > 1 else ""
            fix = f"use 2 <= P <= {len(ids) // world_size}" if len(ids) // world_size >= 2 else "use a training set with at least 2 identities per rank"
            raise UsageError(
                f"PK sampler: a batch needs P={p} distinct identities{ranks}, but the training set has only {len(ids)}; {fix}."
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        #: dataset indices of each identity, identities in ascending pid order.
        self._members: list[np.ndarray] = np.split(order, bounds)
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    @property
    def num_ids(self) -> int:
        return len(self._members)

    def set_epoch(self, epoch: int) -> None:
        """Select which epoch's batches the next iteration yields; every rank must pass the same epoch."""
        if epoch < 0:
            raise UsageError(f"PK sampler: epoch must be non-negative (got {epoch}).")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank and in every epoch)."""
        if self.covers == "images":
            chunks = sum(max(len(m), self.k) // self.k for m in self._members)
            return max(chunks // (self.p * self.world_size), 1)
        return math.ceil(self.num_ids / (self.p * self.world_size))

    def _global_batches(self) -> list[list[int]]:
        """All ranks' batches of the current epoch, in global order."""
        if self.covers == "images":
            return self._image_batches()
        return self._identity_batches(np.random.default_rng((self.seed, self.epoch)))

    def _image_batches(self) -> list[list[int]]:
        """TransReID's epoch: one chunk of K images from each of P identities with chunks left, until too few have any."""
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        chunks = [self._chunks(members, rng) for members in self._members]
        batches: list[list[int]] = []
        available = [i for i, c in enumerate(chunks) if c]
        while len(available) >= self.p:
            picked = rng.choice(len(available), size=self.p, replace=False)
            batch: list[int] = []
            for identity in [available[j] for j in picked]:
                batch.extend(chunks[identity].pop())
            batches.append(batch)
            available = [i for i in available if chunks[i]]
        wanted = len(self) * self.world_size
        while len(batches) < wanted:
            batches.extend(self._identity_batches(rng))
        return batches[:wanted]

    def _chunks(self, members: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        """An identity's images shuffled and cut into chunks of K; fewer than K images: one chunk drawn with replacement."""
        if len(members) < self.k:
            return [rng.choice(members, size=self.k, replace=True).tolist()]
        order = rng.permutation(members)
        return [order[i : i + self.k].tolist() for i in range(0, len(order) - self.k + 1, self.k)][::-1]

    def _identity_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """Every identity once, P at a time (the last step topped up with others), K images each."""
        step_ids = self.p * self.world_size
        steps = math.ceil(self.num_ids / step_ids)
        order = rng.permutation(self.num_ids)
        short = steps * step_ids - self.num_ids
        if short:
            last_step = order[(steps - 1) * step_ids :]
            others = np.setdiff1d(np.arange(self.num_ids), last_step, assume_unique=True)
            order = np.concatenate([order, rng.choice(others, size=short, replace=False)])

        batches = []
        for start in range(0, len(order), self.p):
            batch: list[int] = []
            for identity in order[start : start + self.p]:
                members = self._members[identity]
                picked = rng.choice(members, size=self.k, replace=len(members) < self.k)
                batch.extend(picked.tolist())
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._global_batches()[self.rank :: self.world_size])
