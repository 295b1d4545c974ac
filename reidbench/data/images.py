"""Decode a split's images once into one uint8 tensor that training and evaluation index into.

Why a cache instead of a per-step data loader: ReID training sets are small
(Market-1501's 12,936 training images at 256x128 are 1.3 GB as uint8, MSMT17's
32,621 are 3.2 GB), while decoding a JPEG costs far more than a forward pass of
its share of a batch on a GPU. Decoding once and augmenting on the device (see
:mod:`reidbench.training.augment`) removes the worker processes, their start-up
cost and their nondeterminism. A set too big for memory is streamed instead
(:mod:`reidbench.data.stream`), with the same decoder.

Decoding runs in a thread pool: Pillow releases the GIL while it decodes and
resizes, so threads scale without the pickling of a process pool. Every worker
writes straight into its own row of the preallocated tensor, and rows are
indexed by record position, so the result is in record order and identical
for any number of workers.

Real datasets hold a few odd files, so nothing here stops half-way over one:
an unreadable file is left out and reported in :attr:`ImageSet.skipped`, and
images in another mode or size are converted and counted so the runner can tell
the user what the cache did to their data.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Optional

import numpy as np
import torch
from PIL import Image

from reidbench.errors import UsageError
from reidbench.data.records import ImageRecord, View

#: How many skipped paths a UsageError names before summarising the rest.
_NAMED_IN_ERROR = 3
#: About how many times the progress callback is called over one load.
_PROGRESS_STEPS = 100


class LabelledBatch(NamedTuple):
    """One batch as training and evaluation consume it: uint8 images [B, 3M, H, W] (M modalities), identities, cameras."""

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor


@dataclass(eq=False)
class ImageSet:
    """The decoded images of one split, with their labels, in record order minus the skipped ones.

    ``images`` is ``[N, 3, H, W]`` uint8 RGB (``[N, 3M, H, W]`` for samples of M modalities, each
    modality's three channels in the dataset's modality order); ``pids``, ``camids`` and ``paths``
    line up with its first dimension. ``converted`` and ``resized`` count
    images that arrived in another colour mode or size; ``skipped`` holds
    ``(path, reason)`` for every file that could not be decoded.
    """

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: int = 0
    resized: int = 0
    scenes: Optional[torch.Tensor] = None
    """Per sample, its scene, where the protocol excludes by scene (MSVR310); None otherwise."""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def decoded_nbytes(self) -> int:
        """Memory the uint8 pixels take, so the run can say what caching a split costs."""
        return self.images.numel()

    @property
    def location(self) -> str:
        """Where the images are read from: the device that holds the cache (see `StreamedImageSet` for the other)."""
        return str(self.images.device)

    @property
    def exclusion_ids(self) -> torch.Tensor:
        """What evaluation compares to remove same-identity gallery entries: scenes where set (MSVR310), else cameras."""
        return self.camids if self.scenes is None else self.scenes

    @property
    def index_device(self) -> torch.device:
        """Where batch indices should live: beside the images, so a gather needs no transfer."""
        return self.images.device

    def batches(self, index_batches: Iterable[torch.Tensor]) -> Iterator[LabelledBatch]:
        """The batches at each row of indices, gathered from the cache lazily (one per step, asynchronously on a GPU)."""
        for index in index_batches:
            yield LabelledBatch(self.images[index], self.pids[index], self.camids[index])

    def in_order(self, batch_size: int) -> Iterator[LabelledBatch]:
        """Consecutive batches of every image, in record order (views, no copy)."""
        for start in range(0, len(self), batch_size):
            rows = slice(start, start + batch_size)
            yield LabelledBatch(self.images[rows], self.pids[rows], self.camids[rows])

    def select(self, rows: slice) -> ImageSet:
        """The images at `rows` (a DDP rank's shard), sharing memory with this set."""
        return replace(self, images=self.images[rows], pids=self.pids[rows], camids=self.camids[rows], paths=self.paths[rows],
                       scenes=None if self.scenes is None else self.scenes[rows])

    def to(self, device: torch.device | str) -> ImageSet:
        """A copy with the tensors on ``device`` (uint8 stays uint8: 4x less transfer than float)."""
        return replace(
            self,
            images=self.images.to(device),
            pids=self.pids.to(device),
            camids=self.camids.to(device),
            scenes=None if self.scenes is None else self.scenes.to(device),
            paths=list(self.paths),
            skipped=list(self.skipped),
        )


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _reason(path: str, error: BaseException) -> str:
    """One line for the user; the path is shown beside it, so it is not repeated inside."""
    if isinstance(error, OSError) and os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    lines = str(error).replace(f" {path!r}", "").replace(f" {path}", "").strip(" :\n").splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _decode(path: str, size: tuple[int, int], part: int = 0, parts: int = 1) -> tuple[np.ndarray, bool, bool]:
    """One image (or strip `part` of `parts` equal-width strips of it) as ``[H, W, 3]`` uint8 RGB,
    plus whether it was converted and whether resized."""
    height, width = size
    with Image.open(path) as img:
        img.load()  # decode fully now, so a truncated file fails here and not later
        converted = img.mode != "RGB"
        if img.mode == "P":
            # A palette may carry transparency; going through RGBA avoids Pillow's warning.
            img = img.convert("RGBA")
        if img.mode != "RGB":
            # Alpha is dropped, not composited: ReID crops have no meaningful transparency.
            img = img.convert("RGB")
        if parts > 1:  # modalities side by side in one file (RGBNT100)
            strip = img.size[0] // parts
            img = img.crop((part * strip, 0, (part + 1) * strip, img.size[1]))
        resized = img.size != (width, height)
        if resized:
            # Pillow's BILINEAR widens its support when shrinking, i.e. it antialiases.
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(img), converted, resized


class UnreadableView(OSError):
    """One modality's picture of a multi-modal sample could not be decoded; the message names its file."""


def decode_sample(views: Sequence[View], size: tuple[int, int]) -> tuple[np.ndarray, bool, bool]:
    """A sample's views side by side on the channel axis, ``[H, W, 3 * len(views)]``, plus converted / resized flags.

    One unreadable view makes the whole sample unreadable (the caller skips and counts
    it): a sample is never completed with another image.
    """
    decoded = []
    for view in views:
        try:
            decoded.append(_decode(str(view.path), size, view.part, view.parts))
        except Exception as error:
            if len(views) == 1:
                raise
            # Name the modality's own file: the skip is reported under the sample's first (RGB) path.
            raise UnreadableView(f"{view.path}: {_reason(str(view.path), error)}") from error
    array = decoded[0][0] if len(decoded) == 1 else np.concatenate([d[0] for d in decoded], axis=2)
    return array, any(d[1] for d in decoded), any(d[2] for d in decoded)


def load_images(
    records: Sequence[ImageRecord],
    size: tuple[int, int],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """Decode ``records`` into an :class:`ImageSet` of ``size`` = (height, width) images.

    Unreadable files (truncated, empty, not an image, missing) are skipped and
    listed; if all of them are, that is a :class:`UsageError`, since the paths
    are wrong rather than a few files bad. ``progress(done, total)`` is called
    from this thread about a hundred times, last with ``done == total``.
    An empty ``records`` gives an empty set.
    """
    height, width = check_size(size)
    paths = [str(r.path) for r in records]
    images = torch.empty((len(paths), 3 * sample_views(records), height, width), dtype=torch.uint8)
    # Channels-last numpy view of the same memory: a decoded [H, W, 3] array copies into a row as
    # is (numpy, because Pillow's arrays are read-only and torch warns about wrapping those).
    rows = images.numpy().transpose(0, 2, 3, 1)

    def decode_into_row(index: int) -> tuple[bool, bool]:
        array, converted, resized = decode_sample(records[index].sources(), (height, width))
        rows[index] = array
        return converted, resized

    survey = survey_images(paths, decode_into_row, workers, progress)
    if len(survey.ok) < len(paths):
        # Close the gaps in place: the rows kept move forward, so no second N-row buffer is needed.
        for slot, index in enumerate(survey.ok):
            if slot != index:
                images[slot] = images[index]
        images = images[: len(survey.ok)]
    return ImageSet(images=images, **survey.labels(records))


def sample_views(records: Sequence[ImageRecord]) -> int:
    """How many pictures each sample holds (1, or one per modality); every record of a split must agree."""
    counts = {len(r.sources()) for r in records}
    if len(counts) > 1:
        raise UsageError(f"the samples of one split hold different numbers of modalities ({sorted(counts)}); a loader bug")
    return counts.pop() if counts else 1


def check_size(size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise UsageError(f"image size must be positive (height, width), got {tuple(size)}")
    return height, width


@dataclass
class Survey:
    """What one pass over a split's files found: the readable ones (record positions) and the rest."""

    ok: list[int]
    skipped: list[tuple[str, str]]
    converted: int
    resized: int

    def labels(self, records: Sequence[ImageRecord]) -> dict:
        """The `ImageSet` / `StreamedImageSet` fields other than the pixels, for the readable records."""
        return {
            "pids": torch.tensor([records[i].pid for i in self.ok], dtype=torch.long),
            "camids": torch.tensor([records[i].camid for i in self.ok], dtype=torch.long),
            "paths": [str(records[i].path) for i in self.ok],
            "skipped": self.skipped,
            "converted": self.converted,
            "resized": self.resized,
            "scenes": (torch.tensor([records[i].scene for i in self.ok], dtype=torch.long)
                       if records and records[0].scene is not None else None),
        }


def survey_images(
    paths: Sequence[str],
    work: Callable[[int], tuple[bool, bool]],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Survey:
    """Run ``work(i) -> (converted, resized)`` for every path in a thread pool; a failure skips the file.

    Shared by decoding into the cache and by the header check of streamed sets, so
    both skip, count and refuse alike.
    """
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")

    def attempt(index: int) -> tuple[bool, bool] | str:
        try:
            return work(index)
        except Exception as error:  # noqa: BLE001 - any decoder failure means "skip this file"
            return _reason(paths[index], error)

    total = len(paths)
    survey = Survey(ok=[], skipped=[], converted=0, resized=0)
    step = max(1, total // _PROGRESS_STEPS)
    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reidbench-decode") as pool:
        for index, outcome in enumerate(pool.map(attempt, range(total))):
            if isinstance(outcome, str):
                survey.skipped.append((paths[index], outcome))
            else:
                survey.ok.append(index)
                survey.converted += outcome[0]
                survey.resized += outcome[1]
            done = index + 1
            if progress is not None and (done % step == 0 or done == total):
                progress(done, total)

    if total and not survey.ok:
        named = "; ".join(f"{path} ({reason})" for path, reason in survey.skipped[:_NAMED_IN_ERROR])
        more = f" and {total - _NAMED_IN_ERROR} more" if total > _NAMED_IN_ERROR else ""
        raise UsageError(f"none of the {total} images could be read: {named}{more}")
    return survey
