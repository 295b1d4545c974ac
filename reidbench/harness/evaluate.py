"""Query-vs-gallery evaluation of a trained model, with every setting that changes the number recorded.

Under DDP (torchrun) the feature extraction, the costly part, is shared:
each rank runs the plain (unwrapped) module in eval mode over its contiguous
shard of the query and of the gallery, rank 0 gathers the features back in
the original order and computes the metrics alone (they need every feature at
once), and every rank returns rank 0's dict, so callers never branch on the
rank and an error in the metrics is raised on every rank alike. One process
runs exactly the single-process path: one shard, no gather, no broadcast.

Besides the metrics, an evaluation gives every query's own scores (an
`Evaluation`), keyed as queries.npz keeps them (`queries_key`), so that a
report can put an interval over query identities on one run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from reidbench.runtime.device import autocast
from reidbench.training.augment import normalize
from reidbench.runtime.distributed import World, from_main, gather_rows, shard, unwrap
from reidbench.data.stream import AnyImageSet
from reidbench.evaluation.metrics import RankResult, evaluate_distances, evaluate_rank
from reidbench.evaluation.modality_subsets import ABSENT_RULE, subset_record, subset_results
from reidbench.evaluation.rerank import rerank
from reidbench.profiles import EvalConfig
from reidbench.runtime.progress import Progress
from reidbench.schema import QueryScores
from reidbench.variants.model import ReidModel


@torch.inference_mode()
def extract_features(
    model: ReidModel, images: AnyImageSet, cfg: EvalConfig, device: torch.device, dtype: str, progress: Progress, desc: str
) -> torch.Tensor:
    """Features of every image, in float32, with camera ids passed as the model was trained (SIE / cv_embed)."""
    model.eval()
    mean, std = model.backbone.pixel_mean, model.backbone.pixel_std
    chunks = []
    with progress.task(-(-len(images) // cfg.batch_size), desc, "batch") as advance, autocast(device, dtype):
        for raw, _, cams in images.in_order(cfg.batch_size):
            x = normalize(raw.to(device, non_blocking=True), mean, std)
            cams = cams.to(device)
            features = model(x, cams).float()
            if cfg.flip:
                features = (features + model(x.flip(3), cams).float()) / 2
            chunks.append(features)
            advance()
    return torch.cat(chunks) if chunks else torch.empty(0, model.feature_dim, device=device)


def queries_key(test_set: Optional[str] = None, *, reranked: bool = False, subset: Optional[str] = None) -> str:
    """An evaluation's key in queries.npz, named as the record names the same numbers.

    The test split: 'test', 'test/rr' (re-ranked), 'modalities/<SUBSET>' (record.metrics's
    modality_subsets); a --test-data set: 'cross/<SPEC>', 'cross/<SPEC>/rr',
    'cross/<SPEC>/modalities/<SUBSET>' (record.cross_domain[SPEC]).
    """
    where = "test" if test_set is None else f"cross/{test_set}"
    if subset is not None:
        return f"modalities/{subset}" if test_set is None else f"{where}/modalities/{subset}"
    return f"{where}/rr" if reranked else where


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One query-vs-gallery evaluation: the record's metrics and every query's scores, by `queries_key`."""

    metrics: dict[str, Any]
    queries: dict[str, QueryScores]


def evaluate_model(
    model: ReidModel, query: AnyImageSet, gallery: AnyImageSet, cfg: EvalConfig,
    device: torch.device, dtype: str, progress: Progress, world: World = World(), test_set: Optional[str] = None,
) -> Evaluation:
    """Metrics, protocol and per-query scores of `model` on query vs gallery (the test split, or the --test-data
    set `test_set`); under DDP every rank must call it and gets rank 0's result."""
    model = unwrap(model)
    qf = gather_rows(extract_features(model, _shard(query, world), cfg, device, dtype, progress, "query features"), world)
    gf = gather_rows(extract_features(model, _shard(gallery, world), cfg, device, dtype, progress, "gallery features"), world)
    return from_main(world, lambda: _evaluation(model, qf, gf, query, gallery, cfg, device, test_set))


def _shard(images: AnyImageSet, world: World) -> AnyImageSet:
    """This rank's contiguous rows of `images` (all of them in one process)."""
    if not world.distributed:
        return images
    return images.select(shard(len(images), world))


def _evaluation(
    model: ReidModel, qf: torch.Tensor, gf: torch.Tensor, query: AnyImageSet, gallery: AnyImageSet, cfg: EvalConfig,
    device: torch.device, test_set: Optional[str],
) -> Evaluation:
    ids = (query.pids.to(device), gallery.pids.to(device), query.exclusion_ids.to(device), gallery.exclusion_ids.to(device))
    modalities = model.settings.modalities
    subsets = subset_results(qf, gf, ids, modalities, cfg.normalize, cfg.metric) if len(modalities) > 1 else {}
    if cfg.normalize:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    result = evaluate_rank(qf, gf, *ids, metric=cfg.metric)
    queries = {queries_key(test_set): result.queries}
    queries.update((queries_key(test_set, subset=name), scored.queries) for name, scored in subsets.items())
    metrics = {
        **result.to_dict(),
        "protocol": {
            "split": "query vs gallery (test split); no checkpoint selection: the last epoch is evaluated",
            "feature": model.settings.feature + " BNNeck",
            "normalized": cfg.normalize,
            "metric": cfg.metric,
            "flip_test": cfg.flip,
            "camera_ids_at_test": True,
            "removed_from_gallery": "same identity and same " + ("scene" if query.scenes is not None else "camera"),
            "num_query": len(query),
            "num_gallery": len(gallery),
        },
    }
    if subsets:
        metrics["modality_subsets"] = subset_record(subsets)
        metrics["protocol"]["modalities"] = {"present": list(modalities), "absent": ABSENT_RULE}
    if cfg.rerank:
        reranked = reranked_result(qf, gf, ids, cfg)
        metrics.update(reranked_record(reranked))
        queries[queries_key(test_set, reranked=True)] = reranked.queries
        metrics["protocol"]["rerank"] = {
            "k1": cfg.rerank_k1, "k2": cfg.rerank_k2, "lambda": cfg.rerank_lambda, "standard": cfg.standard_rerank,
            "distance": "euclidean on the features" + (" (L2-normalised)" if cfg.normalize else " as extracted"),
        }
    return Evaluation(metrics, queries)


def reranked_result(qf: torch.Tensor, gf: torch.Tensor, ids: tuple[torch.Tensor, ...], cfg: EvalConfig) -> RankResult:
    """The k-reciprocal re-ranked distances, scored with the same protocol."""
    distances = rerank(qf, gf, cfg.rerank_k1, cfg.rerank_k2, cfg.rerank_lambda)
    return evaluate_distances(distances, *ids, metric="k-reciprocal re-ranking")


def reranked_record(result: RankResult) -> dict[str, Any]:
    """What a record keeps of the re-ranked result: mAP, CMC and mINP, each key with the suffix _rr."""
    scored = result.to_dict()
    return {f"{key}_rr": scored[key] for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "cmc")}
