"""Query-vs-gallery evaluation of a trained model, with every setting that changes the number recorded."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reidbench.bench.environment import autocast
from reidbench.harness.augment import normalize
from reidbench.harness.images import ImageSet
from reidbench.harness.metrics import evaluate_rank
from reidbench.harness.profile import EvalConfig
from reidbench.harness.progress import Progress
from reidbench.variants.model import ReidModel


@torch.inference_mode()
def extract_features(
    model: ReidModel, images: ImageSet, cfg: EvalConfig, device: torch.device, dtype: str, progress: Progress, desc: str
) -> torch.Tensor:
    """Features of every image, in float32, with camera ids passed as the model was trained (SIE / cv_embed)."""
    model.eval()
    mean, std = model.backbone.pixel_mean, model.backbone.pixel_std
    chunks = []
    batches = range(0, len(images), cfg.batch_size)
    with progress.task(len(batches), desc, "batch") as advance, autocast(device, dtype):
        for start in batches:
            stop = min(start + cfg.batch_size, len(images))
            x = normalize(images.images[start:stop].to(device, non_blocking=True), mean, std)
            cams = images.camids[start:stop].to(device)
            features = model(x, cams).float()
            if cfg.flip:
                features = (features + model(x.flip(3), cams).float()) / 2
            chunks.append(features)
            advance()
    return torch.cat(chunks)


def evaluate_model(
    model: ReidModel, query: ImageSet, gallery: ImageSet, cfg: EvalConfig, device: torch.device, dtype: str, progress: Progress
) -> dict[str, Any]:
    qf = extract_features(model, query, cfg, device, dtype, progress, "query features")
    gf = extract_features(model, gallery, cfg, device, dtype, progress, "gallery features")
    if cfg.normalize:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    result = evaluate_rank(
        qf, gf, query.pids.to(device), gallery.pids.to(device), query.camids.to(device), gallery.camids.to(device),
        metric=cfg.metric,
    )
    return {
        **result.to_dict(),
        "protocol": {
            "split": "query vs gallery (test split); no checkpoint selection: the last epoch is evaluated",
            "feature": model.settings.feature + " BNNeck",
            "normalized": cfg.normalize,
            "metric": cfg.metric,
            "flip_test": cfg.flip,
            "camera_ids_at_test": True,
            "num_query": len(query),
            "num_gallery": len(gallery),
        },
    }
