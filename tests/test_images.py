"""The decoded-image cache: shapes, order, values, conversions, and bad files skipped not fatal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidbench.errors import UsageError
from reidbench.data import ImageRecord
from reidbench.data.images import ImageSet, load_images

SIZE = (16, 8)  # (height, width)


def noise(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def reference(path: Path) -> torch.Tensor:
    """What the cache should hold for ``path``: Pillow's own RGB conversion and bilinear resize."""
    with Image.open(path) as img:
        img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
        if img.size != (SIZE[1], SIZE[0]):
            img = img.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)


@pytest.fixture
def folder(tmp_path) -> dict[str, Path]:
    files = {}

    def save(name: str, img: Image.Image, **kwargs) -> None:
        files[name] = tmp_path / name
        img.save(files[name], **kwargs)

    save("rgb.png", Image.fromarray(noise(16, 8, 3, 0)))  # already right: neither counter moves
    save("rgb.jpg", Image.fromarray(noise(16, 8, 3, 1)), quality=95)
    save("gray.png", Image.fromarray(noise(16, 8, 1, 2)))  # converted
    save("rgba.png", Image.fromarray(noise(16, 8, 4, 3)))  # converted
    save("palette.png", Image.fromarray(noise(16, 8, 3, 4)).quantize(16))  # converted
    save("odd.jpg", Image.fromarray(noise(37, 19, 3, 5)))  # resized (up)
    save("big_gray.jpg", Image.fromarray(noise(64, 32, 1, 6)))  # converted and resized (down)
    good = (tmp_path / "rgb.jpg").read_bytes()
    files["truncated.jpg"] = tmp_path / "truncated.jpg"
    files["truncated.jpg"].write_bytes(good[: len(good) // 2])
    files["empty.jpg"] = tmp_path / "empty.jpg"
    files["empty.jpg"].write_bytes(b"")
    files["text.jpg"] = tmp_path / "text.jpg"
    files["text.jpg"].write_text("not an image\n")
    return files


GOOD = ["rgb.png", "rgb.jpg", "gray.png", "rgba.png", "palette.png", "odd.jpg", "big_gray.jpg"]
BAD = ["truncated.jpg", "empty.jpg", "text.jpg"]


def records(folder: dict[str, Path], names: list[str]) -> list[ImageRecord]:
    return [ImageRecord(folder[name], pid=i, camid=i % 3) for i, name in enumerate(names)]


def test_good_images_are_decoded_in_order_with_reference_values(folder):
    names = GOOD[::-1]  # not file-name order: the records' order is what counts
    result = load_images(records(folder, names), SIZE, workers=3)
    assert isinstance(result, ImageSet)
    assert len(result) == len(names)
    assert result.images.shape == (len(names), 3, *SIZE) and result.images.dtype == torch.uint8
    assert result.paths == [str(folder[n]) for n in names]
    assert result.pids.tolist() == list(range(len(names))) and result.pids.dtype == torch.long
    assert result.camids.tolist() == [i % 3 for i in range(len(names))]
    for image, name in zip(result.images, names):
        assert torch.equal(image, reference(folder[name])), name
    assert result.skipped == []
    assert result.converted == 4  # gray, rgba, palette, big_gray
    assert result.resized == 2  # odd, big_gray


def test_bad_files_are_skipped_and_reported(folder):
    names = ["rgb.png", "truncated.jpg", "gray.png", "empty.jpg", "text.jpg", "odd.jpg"]
    result = load_images(records(folder, names), SIZE, workers=2)
    assert result.paths == [str(folder[n]) for n in ("rgb.png", "gray.png", "odd.jpg")]
    assert result.pids.tolist() == [0, 2, 5]  # labels stay with their images
    assert [path for path, _ in result.skipped] == [str(folder[n]) for n in BAD]
    assert all(reason and "\n" not in reason for _, reason in result.skipped)
    assert "truncated" in result.skipped[0][1].lower()
    assert result.skipped[1][1] == "empty file (0 bytes)"
    assert "cannot identify" in result.skipped[2][1] and str(folder["text.jpg"]) not in result.skipped[2][1]
    for image, name in zip(result.images, ("rgb.png", "gray.png", "odd.jpg")):
        assert torch.equal(image, reference(folder[name]))
    assert (result.converted, result.resized) == (1, 1)
    assert result.decoded_nbytes == 3 * 3 * SIZE[0] * SIZE[1]  # three readable images, uint8 RGB


def test_same_result_for_any_number_of_workers(folder):
    one = load_images(records(folder, GOOD + BAD), SIZE, workers=1)
    four = load_images(records(folder, GOOD + BAD), SIZE, workers=4)
    assert torch.equal(one.images, four.images) and one.paths == four.paths and one.skipped == four.skipped


def test_all_unreadable_is_a_usage_error_naming_paths(folder):
    with pytest.raises(UsageError, match="none of the 3 images") as caught:
        load_images(records(folder, BAD), SIZE)
    assert "truncated.jpg" in str(caught.value)


def test_progress_reaches_total(folder):
    calls = []
    load_images(records(folder, GOOD), SIZE, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, len(GOOD)) and calls[-1] == (len(GOOD), len(GOOD))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_to_copies_tensors_and_empty_records_give_an_empty_set(folder):
    result = load_images(records(folder, GOOD[:2]), SIZE)
    moved = result.to("cpu")
    assert moved is not result and torch.equal(moved.images, result.images)
    empty = load_images([], SIZE)
    assert len(empty) == 0 and empty.images.shape == (0, 3, *SIZE)
