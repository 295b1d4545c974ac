"""Batched training augmentation: each step against its plain definition, and reproducibility."""
from __future__ import annotations

import pytest
import torch

from reidbench.training.augment import AugmentConfig, BatchAugmentation, normalize, train_augment
from reidbench.variants.backbones import CLIP_PIXEL_MEAN as CLIP_MEAN, CLIP_PIXEL_STD as CLIP_STD

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

H, W = 32, 16
NONE = dict(flip_p=0.0, pad=0, erase_p=0.0)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalize_matches_the_formula_and_casts(batch):
    out = normalize(batch, IMAGENET_MEAN, IMAGENET_STD)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (batch.float() / 255 - mean) / std)
    half = normalize(batch, CLIP_MEAN, CLIP_STD, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == batch.shape


def test_identity_settings_equal_normalize(batch):
    out = train_augment(batch, gen(), IMAGENET_MEAN, IMAGENET_STD, **NONE)
    assert torch.equal(out, normalize(batch, IMAGENET_MEAN, IMAGENET_STD))


def test_flip_p_one_is_a_horizontal_flip(batch):
    out = train_augment(batch, gen(), CLIP_MEAN, CLIP_STD, **{**NONE, "flip_p": 1.0})
    assert torch.equal(out, normalize(batch.flip(-1), CLIP_MEAN, CLIP_STD))


def test_pad_crop_is_a_translation_with_black_borders(batch):
    pad = 3
    out = train_augment(batch, gen(5), IMAGENET_MEAN, IMAGENET_STD, **{**NONE, "pad": pad})
    padded = torch.nn.functional.pad(normalize(batch, IMAGENET_MEAN, IMAGENET_STD), (pad,) * 4)
    black = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), IMAGENET_MEAN, IMAGENET_STD)
    padded = torch.where(padded == 0, black, padded)  # normalised pixels are never exactly 0 here
    shifts = []
    for sample, image in zip(out, padded):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(sample, image[:, dy : dy + H, dx : dx + W])]
        assert found, "every output is one crop of the padded input"
        shifts.append(found[0])
    assert len(set(shifts)) > 1, "offsets differ between samples"


def test_erased_pixels_are_the_fill_and_the_area_is_in_bounds(batch):
    area, ratio = (0.1, 0.3), (0.5, 2.0)
    big = batch.repeat(8, 1, 1, 1)
    out = train_augment(big, gen(1), IMAGENET_MEAN, IMAGENET_STD, **{**NONE, "erase_p": 1.0},
                        erase_area=area, erase_ratio=ratio)
    reference = normalize(big, IMAGENET_MEAN, IMAGENET_STD)
    changed = out != reference
    assert torch.all(out[changed] == 0), "erased pixels hold the fill: 0, the mean colour"
    for mask in changed.any(dim=1):  # [H, W] per sample
        ys, xs = mask.nonzero(as_tuple=True)
        assert len(ys) > 0, "erase_p=1 erases every sample"
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert mask.sum() == h * w, "one filled rectangle"
        # Sides are rounded to whole pixels: the drawn sqrt(area * ratio) lies in [h - 0.5, h + 0.5]
        # and sqrt(area / ratio) in [w - 0.5, w + 0.5].
        assert (h - 0.5) * (w - 0.5) <= area[1] * H * W and (h + 0.5) * (w + 0.5) >= area[0] * H * W
        assert (h - 0.5) / (w + 0.5) <= ratio[1] and (h + 0.5) / (w - 0.5) >= ratio[0]


def test_erase_p_zero_and_one():
    batch = torch.full((4, 3, H, W), 200, dtype=torch.uint8)
    kept = train_augment(batch, gen(), IMAGENET_MEAN, IMAGENET_STD, **NONE)
    assert (kept != 0).all()
    erased = train_augment(batch, gen(), IMAGENET_MEAN, IMAGENET_STD, **{**NONE, "erase_p": 1.0})
    assert ((erased == 0).flatten(1).any(dim=1)).all()


def test_same_seed_same_result_other_seed_other_result(batch):
    a = train_augment(batch, gen(7), IMAGENET_MEAN, IMAGENET_STD)
    b = train_augment(batch, gen(7), IMAGENET_MEAN, IMAGENET_STD)
    c = train_augment(batch, gen(8), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_output_dtype_shape_device_and_input_untouched(batch):
    before = batch.clone()
    out = train_augment(batch, gen(), CLIP_MEAN, CLIP_STD)
    assert out.dtype == torch.float32 and out.shape == batch.shape and out.device == batch.device
    assert torch.equal(batch, before)


def test_rejects_float_input(batch):
    with pytest.raises(ValueError, match="uint8"):
        train_augment(batch.float(), gen(), IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_seed(batch):
    cpu = train_augment(batch, gen(3), IMAGENET_MEAN, IMAGENET_STD)
    cuda = train_augment(batch.cuda(), gen(3), IMAGENET_MEAN, IMAGENET_STD)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_gather_equals_the_per_sample_loop(pad, seed):
    """The GPU path (one gather for the whole batch) must give the CPU path's pixels for the same draws."""
    big = torch.randint(0, 256, (16, 3, 24, 12), dtype=torch.uint8)
    kwargs = {"pad": pad, "erase_p": 0.7, "flip_p": 0.5}
    g_loop, g_gather = gen(seed), gen(seed)
    loop = train_augment(big, g_loop, IMAGENET_MEAN, IMAGENET_STD, method="loop", **kwargs)
    gather = train_augment(big, g_gather, IMAGENET_MEAN, IMAGENET_STD, method="gather", **kwargs)
    assert torch.equal(loop, gather)
    assert torch.equal(g_loop.get_state(), g_gather.get_state())  # the same number of draws
    assert not torch.equal(loop, normalize(big, IMAGENET_MEAN, IMAGENET_STD))  # something was augmented


def test_unknown_method_is_refused(batch):
    with pytest.raises(ValueError, match="method"):
        train_augment(batch, gen(), IMAGENET_MEAN, IMAGENET_STD, method="fast")


def test_an_epoch_of_draws_applies_identically_by_loop_and_by_gather():
    """Several batches drawn at once: each batch's pixels agree between the CPU loop and the device gather."""
    images = torch.randint(0, 256, (3, 8, 3, 24, 12), dtype=torch.uint8, generator=gen(4))
    config = AugmentConfig(pad=3, erase_p=0.6)
    loop = BatchAugmentation(3, 8, (24, 12), gen(9), config, torch.device("cpu"), method="loop")
    gather = BatchAugmentation(3, 8, (24, 12), gen(9), config, torch.device("cpu"), method="gather")
    outputs = [loop.apply(s, images[s], IMAGENET_MEAN, IMAGENET_STD) for s in range(3)]
    for s in range(3):
        assert torch.equal(outputs[s], gather.apply(s, images[s], IMAGENET_MEAN, IMAGENET_STD))
    assert not torch.equal(outputs[0], outputs[1])  # each batch has its own draws


def test_a_batch_of_another_shape_than_drawn_for_is_refused(batch):
    augmentation = BatchAugmentation(1, len(batch), (H, W), gen(), AugmentConfig(pad=2), torch.device("cpu"))
    with pytest.raises(ValueError, match="drawn for"):
        augmentation.apply(0, batch[:3], IMAGENET_MEAN, IMAGENET_STD)
