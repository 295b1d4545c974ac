"""Key filters and file checks for the checkpoint layouts of the libraries the backbones wrap.

A backbone's `PretrainedSpec` names them (`split`, `activation`); they know how
timm and open_clip files are laid out, not which backbone uses them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.variants.weights.checkpoint import Checkpoint
from reidbench.variants.weights.spec import Split

_CLIP_METADATA = ("input_resolution", "context_length", "vocab_size")
"""Scalars OpenAI's archive stores beside the weights."""


def drop_prefixes(prefixes: tuple[str, ...], reason: str) -> Split:
    """A file of the network itself plus parts a ReID backbone has no use for: keys under `prefixes` are ignored.

    timm's ImageNet checkpoints are such files: the ViT plus its classifier
    (`head.`, `pre_logits.`).
    """

    def split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        kept, ignored = {}, {}
        for key, value in tensors.items():
            if key.startswith(prefixes):
                ignored[key] = reason
            else:
                kept[key] = value
        return kept, ignored

    return split


def take_prefix(prefix: str, reason: Callable[[str, torch.Tensor], str], skip: Optional[dict[str, str]] = None) -> Split:
    """A whole-model file: keys under `prefix`, stripped of it, are the network; the others are ignored.

    `reason(key, tensor)` says why a key outside the prefix is not used. A file
    with no key under `prefix` is taken for the network saved on its own, so
    every key must then fit. `skip` maps names inside the network that the
    backbone does without (clip768: CLIP's `proj`) to why; those file keys are
    ignored too, under the file's own names.
    """
    skip = skip or {}

    def split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        whole = any(k.startswith(prefix) for k in tensors)
        kept, ignored = {}, {}
        for key, value in tensors.items():
            if whole and not key.startswith(prefix):
                ignored[key] = reason(key, value)
                continue
            name = key[len(prefix):] if whole else key
            if name in skip:
                ignored[key] = skip[name]
            else:
                kept[name] = value
        return kept, ignored

    return split


def clip_outside_visual(key: str, value: torch.Tensor) -> str:
    """Why a key of a whole CLIP file outside its visual tower is not used."""
    if key in ("logit_scale", "logit_bias"):
        return "contrastive logit scale"
    if key in _CLIP_METADATA and value.ndim == 0:
        return "archive metadata"
    return "text tower"


def clip_activation(network: nn.Module, checkpoint: Checkpoint, file: Path) -> tuple[Optional[str], list[str]]:
    """The MLP activation a CLIP visual tower's weights will run with, and a note on where it comes from.

    A TorchScript archive names its module classes, so the activation it was
    trained with is known (OpenAI's: QuickGELU) and a variant built with another
    one is refused rather than silently run with the wrong function. open_clip
    files do not record it; the variant's `clip_quick_gelu` setting decides.
    """
    from open_clip.transformer import QuickGELU

    built = "QuickGELU" if any(isinstance(m, QuickGELU) for m in network.modules()) else "GELU"
    if checkpoint.kind != "torchscript":
        return built, [
            f"activation {built} from the clip_quick_gelu setting: open_clip files do not record theirs "
            f"(OpenAI-derived and *-quickgelu weights need QuickGELU; LAION ViT-B-16 weights need clip_quick_gelu = false)"
        ]
    names = {c.rsplit(".", 1)[-1] for c in checkpoint.script_classes}
    needed = "GELU" if "GELU" in names and "QuickGELU" not in names else "QuickGELU"
    if needed != built:
        raise UsageError(
            f"weights file {file} is a TorchScript CLIP archive whose MLPs use {needed}, but this variant was built "
            f"with {built} (clip_quick_gelu = {str(built == 'QuickGELU').lower()}); the weights would run with the "
            f"wrong activation. Set clip_quick_gelu = {str(needed == 'QuickGELU').lower()} (the default is true) "
            f"and build it again."
        )
    return needed, [f"activation {needed}, as the archive's modules require"]
