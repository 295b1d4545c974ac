"""The ReID training augmentation as tensor ops, run wherever the batch already is.

Why not torchvision transforms in data-loader workers: the images are cached
decoded (:mod:`reidbench.data.images`), so a batch arrives as one uint8
tensor, and slicing it where it lies costs far less than per-image PIL
transforms, which would need worker processes again. All random numbers
come from one CPU ``torch.Generator`` and are drawn in a fixed order and count,
so a seed gives the same augmentation on CPU and on any device.

The recipe is the TransReID / fast-reid one, in this order: horizontal flip,
zero padding and a random crop back to the input size (a random translation of
up to ``pad`` pixels; the padding is black in pixel space), normalisation, then
random erasing.

The mean and std come from the backbone (``Backbone.pixel_mean`` / ``pixel_std``):
they belong to the pretrained weights, not to the augmentation.

Erasing fill: the rectangle is set to **0 in normalised space**, i.e. the
normalisation mean colour, as fast-reid does (it erases with the pixel mean
before normalising). TransReID, and CLIP-ReID whose data code derives from it,
fill with per-pixel standard-normal noise instead (timm's
``RandomErasing(mode="pixel")``); reid-strong-baseline writes the raw mean
numbers (0.4914, ...) into the already normalised tensor, a grey rectangle
rather than the mean colour. A constant fill keeps results exactly
reproducible and testable.

Erased rectangle: area a uniform fraction of the image in ``erase_area`` (2% to
1/3, timm's defaults, which TransReID, CLIP-ReID and MambaPro use), aspect ratio
(height / width) log-uniform in ``erase_ratio`` (as torchvision and timm;
reid-strong-baseline draws it uniformly), up to ten tries per image for one that
fits, none erased if no try fits. The fill is the departure, named in the
profiles' and recipes' departures.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Tries per image to draw an erasing rectangle that fits inside it.
_ERASE_TRIES = 10


def _check_batch(batch: torch.Tensor) -> None:
    """A batch is uint8 [B, 3M, H, W]: M modalities of a sample, three channels each, augmented alike."""
    if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] % 3 or not batch.shape[1]:
        raise ValueError(f"expected a uint8 [B, 3, H, W] (or [B, 3M, H, W]) batch, got {batch.dtype} {list(batch.shape)}")


def normalize(
    batch_uint8: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixels in [0, 255] -> ``(x / 255 - mean) / std``; computed in float32, then cast to ``dtype``.

    A multi-modal batch has each modality's three channels normalised with the same mean and std,
    as upstream multi-modal ReID (MambaPro) passes every modality through one transform.
    """
    _check_batch(batch_uint8)
    repeats = batch_uint8.shape[1] // 3
    scale, shift = _affine(tuple(mean) * repeats, tuple(std) * repeats, batch_uint8.device)
    out = batch_uint8.to(torch.float32).mul_(scale).add_(shift)
    return out if dtype == torch.float32 else out.to(dtype)


@functools.lru_cache(maxsize=32)
def _affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel scale and shift of :func:`normalize`, made once per device.

    Cached because building them means a host-to-device copy, and a plain copy
    from pageable memory waits for the GPU to drain: once per batch, that alone
    kept the training step from running ahead of the GPU.
    """
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    # One multiply-add pass: scale and shift are folded in float64, then rounded once.
    scale = (1 / (255 * std_t)).to(device, torch.float32)
    shift = (-mean_t / std_t).to(device, torch.float32)
    return scale, shift


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without making the host wait for the GPU (pinned, non-blocking copy)."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _erase_boxes(
    batch_size: int,
    height: int,
    width: int,
    generator: torch.Generator,
    erase_p: float,
    erase_area: tuple[float, float],
    erase_ratio: tuple[float, float],
) -> torch.Tensor:
    """Per image ``(erase, top, left, box_height, box_width)`` as a [B, 5] int64 CPU tensor."""
    do = torch.rand(batch_size, generator=generator) < erase_p
    area = torch.empty(batch_size, _ERASE_TRIES).uniform_(*erase_area, generator=generator) * (height * width)
    log_lo, log_hi = math.log(erase_ratio[0]), math.log(erase_ratio[1])
    ratio = torch.empty(batch_size, _ERASE_TRIES).uniform_(log_lo, log_hi, generator=generator).exp()
    box_h = torch.sqrt(area * ratio).round().long()
    box_w = torch.sqrt(area / ratio).round().long()
    fits = (box_h >= 1) & (box_w >= 1) & (box_h < height) & (box_w < width)
    first = fits.long().argmax(dim=1, keepdim=True)  # first try that fits (0 when none does)
    box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
    do &= fits.any(dim=1)
    where = torch.rand(batch_size, 2, generator=generator)
    top = (where[:, 0] * (height - box_h + 1)).long().clamp_(max=height - 1)
    left = (where[:, 1] * (width - box_w + 1)).long().clamp_(max=width - 1)
    return torch.stack([do.long(), top, left, box_h, box_w], dim=1)


@dataclass(frozen=True)
class AugmentConfig:
    """The recipe's random transforms; `pad` in pixels (see `train.augment_padding`)."""

    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 1 / 3)
    erase_ratio: tuple[float, float] = (0.3, 3.33)

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be non-negative, got {self.pad}")


class BatchAugmentation:
    """The draws for `steps` batches of `batch_size` images, made at once, applied one batch at a time.

    Why whole epochs: drawing per batch cost ~100 small tensor operations of
    host time per training step (the erasing boxes alone are ~30), and on a
    GPU a ViT-B step is host-bound at batch 64, so every one of them showed in
    img/s. Drawn for an epoch at once, they are a fixed ~40 operations per
    epoch; what remains per batch is a pad, one gather, the normalisation and
    one masked fill. The crop rows and columns (mirrored where flipped) and the
    erased rows and columns are precomputed for the epoch on the device.

    ``method`` picks how a batch is transformed; both give identical pixels.
    A multi-modal sample's modalities (channel groups) get the same flip, crop and
    erasing: they are registered pictures of one instant, and one draw keeps them
    so. MambaPro (data/datasets/bases.py, ImageDataset) runs the transform once per
    modality, drawing each modality's flip and crop anew; a multi-modal cell's notes
    state the departure.

    ``"loop"``: one strided copy per sample at plain-int offsets -- on a CPU
    much faster than a gather through a [B, 3, H, W] index. ``"gather"``:
    the whole batch in a handful of kernels whatever B. ``"auto"``: loop on the
    CPU, gather elsewhere.
    """

    def __init__(
        self,
        steps: int,
        batch_size: int,
        image_size: tuple[int, int],
        generator: torch.Generator,
        config: AugmentConfig,
        device: torch.device,
        method: str = "auto",
    ) -> None:
        if generator.device.type != "cpu":
            raise ValueError("augmentation draws its random numbers on the CPU: pass a CPU torch.Generator")
        if method not in ("auto", "loop", "gather"):
            raise ValueError(f"method must be auto, loop or gather, got {method!r}")
        self.height, self.width = image_size
        self.batch_size, self.pad = batch_size, config.pad
        self.loop = method == "loop" or (method == "auto" and device.type == "cpu")
        count = steps * batch_size
        # Fixed order and count, whatever the probabilities: flips, shifts, erasing boxes.
        flip = torch.rand(count, generator=generator) < config.flip_p
        shift = torch.randint(0, 2 * config.pad + 1, (count, 2), generator=generator)
        boxes = _erase_boxes(count, self.height, self.width, generator, config.erase_p, config.erase_area, config.erase_ratio)
        draws = torch.cat([flip.long()[:, None], shift, boxes], dim=1).view(steps, batch_size, 8)
        if self.loop:
            self.draws = draws.tolist()
        else:
            self._index_on(to_device_async(draws, device))

    def _index_on(self, draws: torch.Tensor) -> None:
        """Crop rows/cols of the padded images and erased rows/cols, for every batch, on the draws' device."""
        flipped, top, left, erase, e_top, e_left, e_h, e_w = draws.unbind(dim=2)  # each [steps, B]
        row = torch.arange(self.height, device=draws.device)
        col = torch.arange(self.width, device=draws.device)
        self.rows = top[..., None] + row  # [steps, B, H]
        self.cols = left[..., None] + torch.where(flipped[..., None].bool(), self.width - 1 - col, col)  # [steps, B, W]
        self.erase_rows = erase.bool()[..., None] & (row >= e_top[..., None]) & (row < (e_top + e_h)[..., None])
        self.erase_cols = (col >= e_left[..., None]) & (col < (e_left + e_w)[..., None])
        self.samples = torch.arange(self.batch_size, device=draws.device)[:, None, None, None]
        self.channels = torch.arange(3, device=draws.device)[None, :, None, None]  # widened for a multi-modal batch

    def apply(
        self, step: int, batch_uint8: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]
    ) -> torch.Tensor:
        """Flip, pad-and-crop, normalise and erase batch `step`: float32 on the batch's device."""
        _check_batch(batch_uint8)
        if tuple(batch_uint8.shape[2:]) != (self.height, self.width) or len(batch_uint8) != self.batch_size:
            raise ValueError(
                f"augmentation drawn for {self.batch_size} images of {self.height}x{self.width}, "
                f"got a batch of shape {list(batch_uint8.shape)}"
            )
        pad = self.pad
        padded = F.pad(batch_uint8, (pad, pad, pad, pad)) if pad else batch_uint8
        if self.loop:
            return _apply_loop(padded, self.draws[step], self.height, self.width, mean, std)
        # Cropping and then flipping equals flipping and then cropping at the mirrored offset.
        rows, cols = self.rows[step], self.cols[step]
        if self.channels.shape[1] != padded.shape[1]:
            self.channels = torch.arange(padded.shape[1], device=self.channels.device)[None, :, None, None]
        out = normalize(padded[self.samples, self.channels, rows[:, None, :, None], cols[:, None, None, :]], mean, std)
        erased = self.erase_rows[step][:, None, :, None] & self.erase_cols[step][:, None, None, :]
        return out.masked_fill_(erased, 0.0)


def train_augment(
    batch_uint8: torch.Tensor,
    generator: torch.Generator,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    *,
    flip_p: float = 0.5,
    pad: int = 10,
    erase_p: float = 0.5,
    erase_area: tuple[float, float] = (0.02, 1 / 3),
    erase_ratio: tuple[float, float] = (0.3, 3.33),
    method: str = "auto",
) -> torch.Tensor:
    """One batch through :class:`BatchAugmentation`: draws for this batch alone, then applied."""
    _check_batch(batch_uint8)
    config = AugmentConfig(flip_p, pad, erase_p, erase_area, erase_ratio)
    batch_size, _, height, width = batch_uint8.shape
    augmentation = BatchAugmentation(1, batch_size, (height, width), generator, config, batch_uint8.device, method)
    return augmentation.apply(0, batch_uint8, mean, std)


def _apply_loop(
    padded: torch.Tensor, draws: list[list[int]], height: int, width: int,
    mean: tuple[float, float, float], std: tuple[float, float, float],
) -> torch.Tensor:
    out = torch.empty(padded.shape[0], padded.shape[1], height, width, dtype=torch.uint8, device=padded.device)
    for i, (flipped, top, left, *_) in enumerate(draws):
        crop = padded[i, :, top : top + height, left : left + width]
        out[i] = crop.flip(-1) if flipped else crop
    out = normalize(out, mean, std)
    for i, (_, _, _, erase, top, left, box_h, box_w) in enumerate(draws):
        if erase:
            out[i, :, top : top + box_h, left : left + box_w] = 0.0
    return out
