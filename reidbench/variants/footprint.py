"""The memory a cell needs at least, from its settings alone: checked before a model or a batch is built.

Why an estimate rather than a trial: building a model of depth 10^8, or a
batch of a million images, is itself what exhausts the host, so the check
must come first and cost nothing. It is a lower bound (every backbone here is
a ViT-B/16 encoder; necks and allocator slack are left out), so a cell it
refuses cannot fit, and a cell it lets through may still be too big.
"""
from __future__ import annotations

from dataclasses import dataclass

from reidbench.variants.settings import PATCH_SIZE, VariantSettings

ENCODER_WIDTH = 768
"""Token width of every backbone's encoder (ViT-B/16); clip512's projection to 512-d comes after it."""
BLOCK_PARAMS_PER_WIDTH_SQUARED = 12
"""A transformer block's weights: q, k, v and the output projection (4 W²), the 4x MLP (8 W²)."""
SAVED_WIDTHS_PER_BLOCK = 10
"""Values per token a block keeps for its backward pass, at least: both norms' inputs, q, k and v, the attention
output, the MLP's 4W-wide hidden layer."""
LIVE_WIDTHS_PER_BLOCK = 5
"""Values per token alive inside a block in inference: the residual stream and the MLP's hidden layer."""
SMALLEST_FEATURE = 512
"""The narrowest feature a head classifies (clip512's)."""


@dataclass(frozen=True)
class Footprint:
    """Bytes a cell needs at least, by part."""

    parameters: int
    training: int
    """Parameters, their gradients and a training batch's saved activations and images."""
    inference: int
    """Parameters and the largest inference batch's live activations."""

    @property
    def peak(self) -> int:
        return max(self.training, self.inference)


def parameter_count(settings: VariantSettings) -> int:
    """Parameters of the backbone(s) and the head's classifier, without building them."""
    width = ENCODER_WIDTH
    tokens = token_count(settings)
    block = BLOCK_PARAMS_PER_WIDTH_SQUARED * width * width + 13 * width
    cameras = settings.num_cameras * width if settings.num_cameras and settings.camera_embedding_scale else 0
    backbone = settings.depth * block + 3 * PATCH_SIZE * PATCH_SIZE * width + tokens * width + cameras
    towers = settings.num_modalities if settings.modality_weights == "separate" else 1
    return towers * backbone + settings.num_classes * SMALLEST_FEATURE * settings.num_modalities


def token_count(settings: VariantSettings) -> int:
    """Tokens of one image: the patch grid at the stride, and CLS."""
    rows, cols = settings.grid_size
    return 1 + rows * cols


def estimate_footprint(
    settings: VariantSettings, train_batch: int, infer_batch: int, activation_bytes: int, frozen_backbone: bool = False,
) -> Footprint:
    """The least memory a cell takes to train on `train_batch` images and embed `infer_batch` at once.

    Weights and gradients are float32 (mixed precision keeps float32 masters); activations
    take `activation_bytes` each (2 under bf16 autocast, else 4).
    """
    params = parameter_count(settings)
    backbone_params = params - settings.num_classes * SMALLEST_FEATURE * settings.num_modalities
    trainable = params - backbone_params if frozen_backbone else params
    weights = 4 * params + 4 * trainable
    per_image = token_count(settings) * ENCODER_WIDTH * activation_bytes * settings.num_modalities
    saved_blocks = 1 if frozen_backbone else settings.depth
    images = 4 * 3 * settings.img_size[0] * settings.img_size[1] * settings.num_modalities
    training = weights + train_batch * (per_image * SAVED_WIDTHS_PER_BLOCK * saved_blocks + images)
    inference = 4 * params + infer_batch * (per_image * LIVE_WIDTHS_PER_BLOCK + images)
    return Footprint(parameters=params, training=training, inference=inference)
