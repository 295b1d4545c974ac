"""A checkpoint onto the pretrained network a backbone declares: split, fitted, checked, then loaded whole or not at all.

The backbone's `pretrained_spec` names the submodule that holds the pretrained
network and how a file's keys map onto it; this module knows no backbone. Every
missing, unexpected or shape-mismatched key is reported and nothing is loaded
unless all of them fit, because a half-loaded backbone trains without error and
only shows up as a worse score.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.variants.weights.jax import jax_vit_to_timm
from reidbench.variants.weights.messages import mismatch_message, wrong_format
from reidbench.variants.weights.paths import file_sha256, resolve_weights_path
from reidbench.variants.weights.posembed import POS_EMBED_RESIZE, fit_position_table
from reidbench.variants.weights.checkpoint import Checkpoint
from reidbench.variants.weights.readers import read_checkpoint
from reidbench.variants.weights.report import WeightsMismatchError, WeightsReport
from reidbench.variants.weights.spec import PretrainedSpec


@dataclass
class _Mapped:
    """A checkpoint's tensors under the pretrained network's names, and the file keys behind them."""

    tensors: dict[str, torch.Tensor]
    ignored: dict[str, str]
    """File key -> why it is not used."""
    unknown: list[str]
    """File keys the name mapping has no place for (.npz arrays outside the JAX ViT layout)."""
    sources: dict[str, list[str]]
    """Network key -> the file keys it was made from, where the names were mapped."""

    def file_keys(self, key: str) -> list[str]:
        return self.sources.get(key, [key])


@dataclass
class _Fit:
    """The tensors to load, and every way the file falls short of the network (under the model's key names)."""

    tensors: dict[str, torch.Tensor]
    resized: dict[str, dict[str, Any]]
    mismatched: dict[str, tuple]
    """Model key -> (file shape, model shape)."""
    missing: list[str]
    unexpected: list[str]

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def pretrained_spec_of(backbone: nn.Module, name: str) -> PretrainedSpec:
    """The backbone's declaration of how it takes weights; a backbone without one takes none."""
    spec = getattr(backbone, "pretrained_spec", None)
    if isinstance(spec, PretrainedSpec):
        return spec
    raise UsageError(
        f"backbone {name!r} ({type(backbone).__name__}) takes no pretrained weights: it declares no "
        f"pretrained_spec, so no part of it is a pretrained network a file could fill; build it without weights."
    )


def load_weights(model: nn.Module, backbone_name: str, path: str | os.PathLike) -> WeightsReport:
    """Fill `model.backbone`'s pretrained network from a local file, strictly, and report what was done.

    Nothing is loaded unless every key fits: missing, unexpected and mismatched
    keys raise `WeightsMismatchError` listing all of them.
    """
    file = resolve_weights_path(path, backbone_name)
    spec = pretrained_spec_of(model.backbone, backbone_name)
    network = spec.network_of(model.backbone)
    checkpoint = read_checkpoint(file)
    if checkpoint.kind not in spec.formats:
        raise UsageError(wrong_format(file, checkpoint.format, checkpoint.kind, backbone_name))
    mapped = _map(checkpoint, spec)
    activation, activation_notes = spec.activation(network, checkpoint, file) if spec.activation else (None, [])
    prefix = f"backbone.{spec.attribute}."
    fit = _fit(mapped, network.state_dict(), spec, tuple(model.backbone.grid_size), prefix)
    if not fit.fits:
        message = mismatch_message(
            file, checkpoint.format, backbone_name, spec, getattr(model, "settings", None),
            fit.missing, fit.unexpected, fit.mismatched, list(fit.tensors),
        )
        raise WeightsMismatchError(message, fit.missing, fit.unexpected, fit.mismatched)
    network.load_state_dict(fit.tensors, strict=True)
    return WeightsReport(
        backbone=backbone_name,
        path=str(file),
        sha256=file_sha256(file),
        size_bytes=file.stat().st_size,
        format=checkpoint.format,
        loaded=len(fit.tensors),
        new=tuple(k for k in model.state_dict() if not k.startswith(prefix)),
        ignored=mapped.ignored,
        resized=fit.resized,
        activation=activation,
        notes=(*checkpoint.notes, *activation_notes, *_dtype_notes(mapped.tensors)),
    )


def _map(checkpoint: Checkpoint, spec: PretrainedSpec) -> _Mapped:
    """The file's tensors under the network's names: a JAX .npz translated to timm's, then split by the spec."""
    tensors, unknown, sources = checkpoint.tensors, [], {}
    if checkpoint.kind == "npz":
        tensors, unknown, sources = jax_vit_to_timm(tensors)
    kept, ignored = spec.split(tensors)
    mapped = _Mapped(kept, {}, unknown, sources)
    mapped.ignored = {name: reason for key, reason in ignored.items() for name in mapped.file_keys(key)}
    return mapped


def _fit(mapped: _Mapped, wanted: dict[str, torch.Tensor], spec: PretrainedSpec, grid: tuple[int, int], prefix: str) -> _Fit:
    """Shapes checked key by key; the spec's position table resized when it is a square grid of the right width.

    Model keys are reported as `prefix` + the network's name; file keys under the file's own names.
    """
    tensors, resized, mismatched = dict(mapped.tensors), {}, {}
    for key in [k for k in mapped.tensors if k in wanted]:
        value, expected = mapped.tensors[key], tuple(wanted[key].shape)
        if tuple(value.shape) == expected:
            continue
        position = spec.position is not None and key == spec.position.key
        change = fit_position_table(value, spec.position, grid, expected) if position else None
        if change is None:
            mismatched[prefix + key] = (tuple(value.shape), expected)
            continue
        tensors[key], old_grid = change
        resized[prefix + key] = {
            "from": list(value.shape), "to": list(expected),
            "grid_from": list(old_grid), "grid_to": list(grid), "method": POS_EMBED_RESIZE,
        }
    missing = [prefix + k for k in wanted if k not in mapped.tensors]
    unexpected = mapped.unknown + [name for k in mapped.tensors if k not in wanted for name in mapped.file_keys(k)]
    return _Fit(tensors, resized, mismatched, missing, unexpected)


def _dtype_notes(tensors: dict[str, torch.Tensor]) -> list[str]:
    """A file stored in another precision (OpenAI's archive: float16) is copied into float32 parameters; say so."""
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in tensors.values()})
    if dtypes == ["float32"]:
        return []
    return [f"file tensors are {', '.join(dtypes)}; copied into the model's float32 parameters"]
