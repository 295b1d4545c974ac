"""Missing-modality evaluation: every multi-modal cell is also scored with each modality subset present at test time.

MambaPro stores a missing-modality test setting (its config's ``TEST.MISS``) but
never reads it (924973292/MambaPro, modeling/make_model.py); TOP-ReID
(924973292/TOP-ReID, modeling/make_model.py, CRM) reconstructs an absent
modality with a learned module. reidbench has no reconstruction module, so it
states the simplest rule that a reader can reproduce:

An absent modality's block of the ReID feature is zero, for query and gallery
alike, before the L2 normalisation. The feature is the concatenation of
per-modality blocks that are computed independently (each modality has its own
backbone pass; the BNNeck's batch norm acts per channel at test time), so this is
exactly the feature of the same model that never ran the absent modality: the
ranking compares the present modalities only. The backbone is not fed a black
image in place of the missing one, which would put an arbitrary feature in the
absent block. Subsets are named by letters: R (RGB), N (near-infrared), T (thermal).
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F

from reidbench.data.records import MODALITY_LETTERS
from reidbench.evaluation.metrics import RankResult, evaluate_rank

#: The metrics each subset records (the full-feature evaluation records more).
SUBSET_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")

ABSENT_RULE = ("an absent modality's feature block is zero for query and gallery alike, before the L2 normalisation: "
               "the ranking compares the present modalities only (no image is fed in its place)")


def modality_subsets(modalities: tuple[str, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """Every non-empty subset as (name, modality positions), smallest first: R, N, T, RN, RT, NT, RNT for three."""
    positions = range(len(modalities))
    return [("".join(MODALITY_LETTERS[modalities[i]] for i in chosen), chosen)
            for size in range(1, len(modalities) + 1) for chosen in combinations(positions, size)]


def keep_modalities(features: torch.Tensor, present: tuple[int, ...], count: int) -> torch.Tensor:
    """`features` [N, count*D] with the blocks of absent modalities set to zero (a copy)."""
    blocks = features.unflatten(1, (count, -1)).clone()
    absent = [i for i in range(count) if i not in present]
    blocks[:, absent] = 0
    return blocks.flatten(1)


def subset_results(
    qf: torch.Tensor, gf: torch.Tensor, ids: tuple[torch.Tensor, ...], modalities: tuple[str, ...], normalize: bool,
    metric: str,
) -> dict[str, RankResult]:
    """Per subset name, query vs gallery scored with only that subset's modalities (`qf`, `gf` as extracted)."""
    count, out = len(modalities), {}
    for name, present in modality_subsets(modalities):
        q, g = keep_modalities(qf, present, count), keep_modalities(gf, present, count)
        if normalize:
            q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
        out[name] = evaluate_rank(q, g, *ids, metric=metric)
    return out


def subset_record(results: dict[str, RankResult]) -> dict[str, dict[str, Any]]:
    """What a record keeps of each subset's result: the `SUBSET_METRICS`."""
    return {name: {key: result.to_dict()[key] for key in SUBSET_METRICS} for name, result in results.items()}
