"""Query-vs-gallery evaluation of a trained model, with every setting that changes the number recorded.

Under DDP (torchrun) the feature extraction, the costly part, is shared:
each rank runs the plain (unwrapped) module in eval mode over its contiguous
shard of the query and of the gallery, rank 0 gathers the features back in
the original order and computes the metrics alone (they need every feature at
once), and every rank returns rank 0's dict, so callers never branch on the
rank and an error in the metrics is raised on every rank alike. One process
runs exactly the single-process path: one shard, no gather, no broadcast.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reidbench.runtime.device import autocast
from reidbench.training.augment import normalize
from reidbench.runtime.distributed import World, from_main, gather_rows, shard, unwrap
from reidbench.data.stream import AnyImageSet
from reidbench.evaluation.metrics import evaluate_distances, evaluate_rank
from reidbench.evaluation.modality_subsets import ABSENT_RULE, subset_metrics
from reidbench.evaluation.rerank import rerank
from reidbench.profiles import EvalConfig
from reidbench.runtime.progress import Progress
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


def evaluate_model(
    model: ReidModel, query: AnyImageSet, gallery: AnyImageSet, cfg: EvalConfig,
    device: torch.device, dtype: str, progress: Progress, world: World = World(),
) -> dict[str, Any]:
    """Metrics and protocol of `model` on query vs gallery; under DDP every rank must call it and gets the same dict."""
    model = unwrap(model)
    qf = gather_rows(extract_features(model, _shard(query, world), cfg, device, dtype, progress, "query features"), world)
    gf = gather_rows(extract_features(model, _shard(gallery, world), cfg, device, dtype, progress, "gallery features"), world)
    return from_main(world, lambda: _metrics(model, qf, gf, query, gallery, cfg, device))


def _shard(images: AnyImageSet, world: World) -> AnyImageSet:
    """This rank's contiguous rows of `images` (all of them in one process)."""
    if not world.distributed:
        return images
    return images.select(shard(len(images), world))


def _metrics(
    model: ReidModel, qf: torch.Tensor, gf: torch.Tensor, query: AnyImageSet, gallery: AnyImageSet, cfg: EvalConfig,
    device: torch.device,
) -> dict[str, Any]:
    ids = (query.pids.to(device), gallery.pids.to(device), query.exclusion_ids.to(device), gallery.exclusion_ids.to(device))
    modalities = model.settings.modalities
    subsets = subset_metrics(qf, gf, ids, modalities, cfg.normalize, cfg.metric) if len(modalities) > 1 else None
    if cfg.normalize:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    result = evaluate_rank(qf, gf, *ids, metric=cfg.metric)
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
    if subsets is not None:
        metrics["modality_subsets"] = subsets
        metrics["protocol"]["modalities"] = {"present": list(modalities), "absent": ABSENT_RULE}
    if cfg.rerank:
        metrics.update(reranked_metrics(qf, gf, ids, cfg))
        metrics["protocol"]["rerank"] = {
            "k1": cfg.rerank_k1, "k2": cfg.rerank_k2, "lambda": cfg.rerank_lambda, "standard": cfg.standard_rerank,
            "distance": "euclidean on the features" + (" (L2-normalised)" if cfg.normalize else " as extracted"),
        }
    return metrics


def reranked_metrics(qf: torch.Tensor, gf: torch.Tensor, ids: tuple[torch.Tensor, ...], cfg: EvalConfig) -> dict[str, Any]:
    """mAP, CMC and mINP of the k-reciprocal re-ranked distances, each key with the suffix _rr."""
    distances = rerank(qf, gf, cfg.rerank_k1, cfg.rerank_k2, cfg.rerank_lambda)
    scored = evaluate_distances(distances, *ids, metric="k-reciprocal re-ranking").to_dict()
    return {f"{key}_rr": scored[key] for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "cmc")}
