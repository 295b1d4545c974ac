"""Scoring a cell during training (eval.period > 0): the hook that adds val_map and val_rank1 to an epoch's entry.

The scores are curves: reidbench never picks a checkpoint by them (the weights
evaluated, measured and saved are the last epoch's). So the evaluation must
leave the training exactly as it would have gone without it:

* the random state (torch's CPU and CUDA generators) is put back afterwards:
  a streamed set's DataLoader draws its workers' seeds from it, and dropout or
  drop path would draw from it in the next step;
* the features are extracted in eval mode (no batch-norm statistic moves) and
  under inference mode (no gradient, no optimizer state), then every module's
  train/eval mode is put back as it was (a frozen part stays as training left it);
* with a weight average (train.ema_decay) the average is scored, as the final
  evaluation scores it, and the live weights are put back bit for bit.

Under DDP every rank runs the hook: the feature extraction is shared and rank
0's scores reach every rank (`evaluate_model`). Re-ranking is left out: it is
costly and a curve does not need it (the final evaluation has it when
eval.rerank is on).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any, Iterator, Optional

import torch

from reidbench.data import parse_dataset_spec
from reidbench.data.stream import AnyImageSet
from reidbench.harness.evaluate import evaluate_model
from reidbench.harness.placement import RunData
from reidbench.harness.plan import RunPlan
from reidbench.harness.trainer import TrainContext, TrainHook
from reidbench.profiles import EvalConfig
from reidbench.runtime.progress import Progress
from reidbench.schema import EpochEntry

SPLIT_WORDS = {"val": "validation split", "test": "test split"}
"""How the console names where the periodic evaluation scored."""


class PeriodicEvaluation(TrainHook):
    """After every `cfg.period`-th epoch, score the model on `query` vs `gallery` into the epoch's entry."""

    def __init__(self, query: AnyImageSet, gallery: AnyImageSet, cfg: EvalConfig, split: str, dtype: str, progress: Progress,
                 log: bool = True) -> None:
        """`split`: 'val' or 'test', what `query` and `gallery` are; `log`: say each score on the console (rank 0)."""
        self.query, self.gallery, self.split, self.dtype, self.progress, self.log = query, gallery, split, dtype, progress, log
        self.cfg = replace(cfg, rerank=False)

    def due(self, epoch: int) -> bool:
        return epoch % self.cfg.period == 0

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        if entry.stage is not None or not self.due(entry.epoch):
            return
        with kept_for_training(ctx):
            scored = evaluate_model(ctx.model, self.query, self.gallery, self.cfg, ctx.device, self.dtype, self.progress, ctx.world)
        entry.val_map, entry.val_rank1 = float(scored.metrics["mAP"]), float(scored.metrics["rank1"])
        if self.log:
            self.progress.log(f"    {SPLIT_WORDS[self.split]} after epoch {entry.epoch}: mAP {entry.val_map:.1%}, rank-1 {entry.val_rank1:.1%}")

    def record(self, epochs: int) -> dict[str, Any]:
        """What the cell's record says about it (`CellRecord.validation`)."""
        return {"split": self.split, "period": self.cfg.period, "epochs": [e for e in range(1, epochs + 1) if self.due(e)],
                "num_query": len(self.query), "num_gallery": len(self.gallery)}


def periodic_evaluation(plan: RunPlan, data: RunData, progress: Progress, log: bool) -> Optional[PeriodicEvaluation]:
    """The run's periodic evaluation hook, on the split its profile names for its dataset; None with eval.period 0."""
    split = plan.profile.eval.validation_split(parse_dataset_spec(plan.dataset)[0])
    if split is None:
        return None
    if split == "val":
        if data.val_query is None or data.val_gallery is None:
            raise RuntimeError("eval.split is 'val' but the run's data has no validation split (see harness.plan.run_dataset)")
        query, gallery = data.val_query, data.val_gallery
    else:
        query, gallery = data.query, data.gallery
    return PeriodicEvaluation(query, gallery, plan.profile.eval, split, plan.dtype, progress, log)


@contextmanager
def kept_for_training(ctx: TrainContext) -> Iterator[None]:
    """Inside: the model as the final evaluation would see it; after: the random state, every module's mode and the
    weights exactly as training left them."""
    modes = [(module, module.training) for module in ctx.model.modules()]
    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []))
        if ctx.average is not None:
            stack.enter_context(ctx.average.applied())
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training
