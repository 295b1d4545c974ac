"""Pretrained weights from local files, or by name through the Hugging Face cache (`hub`), loaded strictly onto a
variant's backbone.

Readers (`readers`, `torchscript`) turn a PyTorch, safetensors, JAX ViT .npz or
OpenAI TorchScript CLIP file into a flat {name: tensor} mapping without running
anything it contains; a JAX .npz is renamed to timm's names (`jax`).

Each backbone declares, in its `pretrained_spec` (`spec.PretrainedSpec`), which
submodule is the pretrained network it wraps (timm's VisionTransformer as
`backbone.vit.*`, open_clip's as `backbone.visual.*`), which file formats and
keys belong to it, and where its position embedding is. The mapping is checked
against that network (`matching`): every missing, unexpected or shape-mismatched
key is reported and nothing is loaded unless all of them fit. File keys that
belong to no part of a ReID backbone (the ImageNet classifier, CLIP's text
tower) are listed as ignored; model keys outside the pretrained network (camera
embedding, token projection, neck, head) are listed as new. The position
embedding is the one tensor whose shape may differ: it is resized from the
checkpoint's square grid (14x14 at 224) to the variant's grid (`posembed`).

This package imports no backbone: backbones import `spec` and `filters` to
declare how they take weights.
"""
from reidbench.variants.weights.filters import clip_activation, clip_outside_visual, drop_prefixes, take_prefix
from reidbench.variants.weights.matching import load_weights, pretrained_spec_of
from reidbench.variants.weights.messages import DOWNLOAD_HINT, compact_keys
from reidbench.variants.weights.paths import WEIGHT_SUFFIXES, file_sha256, resolve_weights_path
from reidbench.variants.weights.posembed import POS_EMBED_RESIZE, resize_position_embedding
from reidbench.variants.weights.checkpoint import Checkpoint
from reidbench.variants.weights.readers import read_checkpoint
from reidbench.variants.weights.report import WeightsMismatchError, WeightsReport
from reidbench.variants.weights.spec import FORMATS, Misfit, PositionTable, PretrainedSpec

__all__ = [
    "DOWNLOAD_HINT",
    "FORMATS",
    "POS_EMBED_RESIZE",
    "WEIGHT_SUFFIXES",
    "Checkpoint",
    "Misfit",
    "PositionTable",
    "PretrainedSpec",
    "WeightsMismatchError",
    "WeightsReport",
    "clip_activation",
    "clip_outside_visual",
    "compact_keys",
    "drop_prefixes",
    "file_sha256",
    "load_weights",
    "pretrained_spec_of",
    "read_checkpoint",
    "resize_position_embedding",
    "resolve_weights_path",
    "take_prefix",
]
