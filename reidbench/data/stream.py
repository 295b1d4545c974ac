"""Images decoded batch by batch in DataLoader workers: the path for a dataset too big to cache.

The cache (:mod:`reidbench.data.images`) is the fast path and the default:
ReID sets decode to a few GB. When the decoded uint8 images would not fit in
host memory (``--data-cache stream``, or ``auto`` when they would take more than
80 % of the memory available), each batch is decoded when it is needed, by
worker processes that run ahead of training (started once per set and kept
from epoch to epoch), into pinned memory, and copied to
the device asynchronously; the augmentation then runs there as it does for a
cached batch. The pixels are those of the cache (same decoder, same resize),
so a streamed run trains on exactly the same numbers, only slower: on a GPU,
expect JPEG decoding, not the network, to set the pace.

Before training, every file's header is read once (size and colour mode, not
the pixels), so a file that cannot be opened is skipped and reported as the
cache does. A file whose header reads but whose pixels do not is only found
when its batch is decoded; the run then stops with the file's name.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from reidbench.errors import UsageError
from reidbench.data.records import ImageRecord, View
from reidbench.data.images import (
    _NAMED_IN_ERROR, ImageSet, LabelledBatch, _default_workers, _reason, check_size, decode_sample, sample_views,
    survey_images,
)

#: Decoding workers of a streamed set, at most (one per core below that).
MAX_WORKERS = 8
#: Batches each worker decodes ahead of the one training is on.
PREFETCH = 4


@dataclass(eq=False)
class StreamedImageSet:
    """A split's labels and file paths; the pixels are decoded per batch (see the module docstring).

    Same label fields as `ImageSet`, and the same `batches` / `in_order` /
    `select`, so training and evaluation do not ask which one they have.
    """

    paths: list[str]
    pids: torch.Tensor
    camids: torch.Tensor
    size: tuple[int, int]
    workers: int
    pin_memory: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: int = 0
    resized: int = 0
    scenes: Optional[torch.Tensor] = None
    views: list[tuple[View, ...]] = field(default_factory=list)
    """Per sample, its pictures (one per modality); empty: each sample is the single image at its path."""
    _kept: Optional[tuple[DataLoader, _BatchPlan]] = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def decoded_nbytes(self) -> int:
        """What caching the pixels would take (uint8)."""
        return len(self) * 3 * (len(self.views[0]) if self.views else 1) * self.size[0] * self.size[1]

    @property
    def location(self) -> str:
        return f"stream ({self.workers} decoding workers)"

    @property
    def exclusion_ids(self) -> torch.Tensor:
        """What evaluation compares to remove same-identity gallery entries: scenes where set (MSVR310), else cameras."""
        return self.camids if self.scenes is None else self.scenes

    @property
    def index_device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> StreamedImageSet:
        """Labels stay in host memory (workers index them); batches are pinned for a CUDA `device`."""
        return replace(self, pin_memory=torch.device(device).type == "cuda")

    def select(self, rows: slice) -> StreamedImageSet:
        return replace(self, paths=self.paths[rows], pids=self.pids[rows], camids=self.camids[rows], views=self.views[rows],
                       scenes=None if self.scenes is None else self.scenes[rows])

    def batches(self, index_batches: Iterable[torch.Tensor]) -> Iterator[LabelledBatch]:
        """The batches at each row of indices, decoded by the workers ahead of use, in order."""
        return self._decoded([index.tolist() for index in index_batches])

    def in_order(self, batch_size: int) -> Iterator[LabelledBatch]:
        return self._decoded([list(range(start, min(start + batch_size, len(self)))) for start in range(0, len(self), batch_size)])

    def _decoded(self, rows: list[list[int]]) -> Iterator[LabelledBatch]:
        if not rows:
            return
        loader, plan = self._loader()
        plan.rows = rows
        for index, (images, failures) in zip(rows, loader):
            if failures:
                named = "; ".join(f"{path} ({reason})" for path, reason in failures[:_NAMED_IN_ERROR])
                raise UsageError(
                    f"{len(failures)} image(s) of a batch could not be decoded although their headers read at the start "
                    f"of the run: {named}. Remove or replace the file(s) and resume the run (--resume)."
                )
            index = torch.tensor(index)
            yield LabelledBatch(images, self.pids[index], self.camids[index])

    def _loader(self) -> tuple[DataLoader, _BatchPlan]:
        """One DataLoader per set, its workers kept between passes: starting them costs a fork each per epoch.

        The batches of a pass are whatever its `_BatchPlan` holds when the pass begins.
        """
        if self._kept is None:
            plan = _BatchPlan()
            loader = DataLoader(
                _Decoder(self.views or [(View(Path(p)),) for p in self.paths], self.size),
                batch_sampler=plan,
                num_workers=self.workers,
                collate_fn=_collate,
                pin_memory=self.pin_memory,
                prefetch_factor=PREFETCH if self.workers else None,
                persistent_workers=self.workers > 0,
            )
            self._kept = (loader, plan)
        return self._kept


class _BatchPlan:
    """A batch sampler whose batches are set before each pass (the PK sampler draws a new epoch each time)."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class _Decoder(Dataset):
    """Index -> ([3M, H, W] uint8, failure or None); a failure is reported by the caller, not raised in a worker."""

    def __init__(self, views: Sequence[tuple[View, ...]], size: tuple[int, int]) -> None:
        self.views, self.size = views, size

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Optional[tuple[str, str]]]:
        views = self.views[index]
        try:
            array, _, _ = decode_sample(views, self.size)
        except Exception as error:  # noqa: BLE001 - named to the user in the main process
            blank = torch.zeros(3 * len(views), *self.size, dtype=torch.uint8)
            path = str(views[0].path)
            return blank, (path, _reason(path, error))
        return torch.from_numpy(np.array(array)).permute(2, 0, 1).contiguous(), None


def _collate(items: list[tuple[torch.Tensor, Optional[tuple[str, str]]]]) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    return torch.stack([image for image, _ in items]), [failure for _, failure in items if failure is not None]


def default_workers() -> int:
    """One decoding worker per core, at most `MAX_WORKERS`; under torchrun the cores are shared
    by the processes of this node (LOCAL_WORLD_SIZE), so 8 ranks on 16 cores get 2 each."""
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(MAX_WORKERS, _default_workers() // local_ranks))


def stream_images(
    records: Sequence[ImageRecord],
    size: tuple[int, int],
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> StreamedImageSet:
    """A `StreamedImageSet` of ``records`` at ``size`` = (height, width): headers read now, pixels per batch.

    ``workers``: decoding processes (default: `default_workers()`; 0 decodes in this process).
    """
    height, width = check_size(size)
    paths = [str(r.path) for r in records]

    multimodal = sample_views(records) > 1

    def read_header(index: int) -> tuple[bool, bool]:
        converted = resized = False
        for view in records[index].sources():
            with Image.open(view.path) as img:
                converted |= img.mode != "RGB"
                resized |= (img.size[0] // view.parts, img.size[1]) != (width, height)
        return converted, resized

    survey = survey_images(paths, read_header, progress=progress)
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise UsageError(f"decoding workers must be 0 or more, got {workers}")
    views = [records[i].sources() for i in survey.ok] if multimodal else []
    return StreamedImageSet(size=(height, width), workers=workers, views=views, **survey.labels(records))


AnyImageSet = Union[ImageSet, StreamedImageSet]
"""What training and evaluation read images from: a decoded cache or a stream."""
