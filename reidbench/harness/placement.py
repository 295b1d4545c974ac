"""Where a run's decoded images live -- the GPU, host memory, or decoded per batch -- decided before decoding.

Every split is decoded once at the variant's input size into a uint8 tensor,
shared by every cell of the run; a set too big for memory is streamed instead.
The run header and run.json say where the images went and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from reidbench.data import ReidDataset
from reidbench.data.fingerprint import fingerprint
from reidbench.data.records import split_counts
from reidbench.data.images import load_images
from reidbench.data.stream import AnyImageSet, stream_images
from reidbench.errors import UsageError
from reidbench.evaluation.metrics import chance_level as expected_chance
from reidbench.runtime.progress import Progress
from reidbench.variants.settings import VariantSettings


TEST_SPLITS = ("query", "gallery")
"""What a --test-data set contributes: it is scored on, never trained on."""


@dataclass
class RunData:
    dataset: ReidDataset
    train: AnyImageSet
    query: AnyImageSet
    gallery: AnyImageSet
    info: dict[str, Any]
    val_query: Optional[AnyImageSet] = None
    """The validation split carved from the training identities (`dataset.validation`), with `val_gallery`; None without."""
    val_gallery: Optional[AnyImageSet] = None


VAL_SPLITS = ("val_query", "val_gallery")
"""A validation split's query and gallery, decoded beside the dataset's splits where it has one."""


def prepare_data(
    spec: str, dataset: ReidDataset, settings: VariantSettings, device: torch.device, policy: str, progress: Progress,
) -> RunData:
    """Decode every image once at the variant size and keep them where `cache_location` says, for all cells.

    Streamed sets (too big for memory) only have their headers read here; their
    pixels are decoded per batch during training and evaluation.
    """
    where, why = cache_location(decoded_size(dataset, settings), device, policy, _available_memory())
    sets = decode_splits(dataset, ("train", "query", "gallery", *(VAL_SPLITS if dataset.validation else ())), settings, where,
                         device, progress)
    location = sets["train"].location
    info = {
        "spec": spec,
        **dataset.facts(),
        "unreadable": {s: len(v.skipped) for s, v in sets.items()},
        # With the reason: for a multi-modal sample the file that failed may be another modality's than the path.
        "unreadable_examples": [f"{p} ({why})" for v in sets.values() for p, why in v.skipped][:5],
        "converted_to_rgb": {s: v.converted for s, v in sets.items()},
        "resized": {s: v.resized for s, v in sets.items()},
        "decoded_mib": sum(v.decoded_nbytes for v in sets.values()) / 2**20,
        "cache": {"location": location, "policy": policy, "why": why},
        "used": used_counts(sets),
        **scored_queries(sets["query"], sets["gallery"], dataset.name),
        "fingerprint": fingerprint(dataset),
    }
    if dataset.validation:
        info["validation"] = {**dataset.validation.facts(), **scored_queries(sets["val_query"], sets["val_gallery"], "the validation split")}
    return RunData(dataset, sets["train"], sets["query"], sets["gallery"], info, sets.get("val_query"), sets.get("val_gallery"))


def decode_splits(
    dataset: ReidDataset, splits: tuple[str, ...], settings: VariantSettings, where: str, device: torch.device,
    progress: Progress,
) -> dict[str, AnyImageSet]:
    """Each split decoded (or, streamed, its headers read) and placed where `cache_location` said."""
    streamed = where == STREAM
    sets: dict[str, AnyImageSet] = {}
    for split in splits:
        records = getattr(dataset, split)
        with progress.task(len(records), f"{'reading headers of' if streamed else 'decoding'} {split}", "img") as advance:
            done = [0]

            def report(n: int, total: int) -> None:
                advance(n - done[0])
                done[0] = n

            loaded = (stream_images if streamed else load_images)(records, settings.img_size, progress=report)
        # A streamed set only learns whether to pin its batches for the device.
        sets[split] = loaded.to(torch.device("cpu") if where == HOST else device)
    return sets


@dataclass
class TestData:
    """Another dataset's query and gallery, on which every trained cell is also evaluated (cross-domain)."""

    spec: str
    name: str
    query: AnyImageSet
    gallery: AnyImageSet
    info: dict[str, Any]


def prepare_test_data(
    spec: str, dataset: ReidDataset, settings: VariantSettings, device: torch.device, policy: str, progress: Progress,
) -> TestData:
    """Decode a test set's query and gallery at the variant's size; a test set that can score no query is refused."""
    h, w = settings.img_size
    size = (len(dataset.query) + len(dataset.gallery)) * 3 * h * w
    where, why = cache_location(size, device, policy, _available_memory())
    sets = decode_splits(dataset, TEST_SPLITS, settings, where, device, progress)
    info = {
        "spec": spec, "name": dataset.name, "version": dataset.version, "counts": dataset.counts(),
        "unreadable": {s: len(v.skipped) for s, v in sets.items()}, "used": used_counts(sets),
        "cache": {"location": sets["query"].location, "policy": policy, "why": why},
        **scored_queries(sets["query"], sets["gallery"], f"test set {spec}"),
        "fingerprint": fingerprint(dataset, TEST_SPLITS),
    }
    return TestData(spec, dataset.name, sets["query"], sets["gallery"], info)


class ImageStore:
    """A run's decoded images -- its dataset and its test sets -- at the input size a cell asks for.

    A grid with an img_size axis needs several sizes; one size is held at a
    time (decoding again costs seconds, holding every size could cost the
    machine's memory), so cells of one size should follow each other.
    """

    def __init__(
        self, spec: str, dataset: ReidDataset, tests: dict[str, ReidDataset], device: torch.device, policy: str,
        progress: Progress,
    ) -> None:
        self.spec, self.dataset, self.test_sets = spec, dataset, tests
        self.device, self.policy, self.progress = device, policy, progress
        self.size: Optional[tuple[int, int]] = None
        self.data: Optional[RunData] = None
        self.tests: list[TestData] = []

    def at(self, settings: VariantSettings) -> tuple[RunData, list[TestData]]:
        if settings.img_size != self.size:
            self.data, self.tests = None, []  # the previous size's images go before the next ones are decoded
            self.data = prepare_data(self.spec, self.dataset, settings, self.device, self.policy, self.progress)
            self.tests = [prepare_test_data(spec, dataset, settings, self.device, self.policy, self.progress)
                          for spec, dataset in self.test_sets.items()]
            self.size = settings.img_size
        assert self.data is not None
        return self.data, self.tests


def used_counts(sets: dict[str, AnyImageSet]) -> dict[str, dict[str, int]]:
    """Images and identities per split after unreadable files were skipped: what training and evaluation see."""
    return {split: {key: n for key, n in split_counts(split, images.pids.tolist()).items() if key != "distractors"}
            for split, images in sets.items()}


def scored_queries(query: AnyImageSet, gallery: AnyImageSet, name: str) -> dict[str, Any]:
    """The chance level, and how many queries the protocol can score; a test split that can score none is refused.

    A query counts only when its gallery holds the same identity from another
    camera; with none, every metric would be the average of nothing.
    """
    try:
        chance = chance_level(query, gallery)
    except UsageError as exc:
        raise UsageError(
            f"{name}: no query can be scored ({exc}). Every query needs an image of its identity from another camera in "
            "the gallery: check the dataset's query and gallery folders (or what was skipped as unreadable)."
        ) from None
    return {"chance": {"mAP": chance["mAP"], "rank1": chance["rank1"]}, "queries_without_match": chance["skipped"]}


DEVICE, HOST, STREAM = "device", "host", "stream"
CACHE_POLICIES = ("auto", DEVICE, HOST, STREAM)
#: `auto` keeps the decoded images on the GPU while they take at most this share of its free memory.
DEVICE_CACHE_SHARE = 0.25
#: A cache may take at most this share of the host memory available when the run starts.
HOST_CACHE_SHARE = 0.8


def check_cache_policy(policy: str) -> None:
    if policy not in CACHE_POLICIES:
        raise UsageError(f"--data-cache {policy!r} is unknown; choose one of {', '.join(CACHE_POLICIES)}.")


def decoded_size(dataset: ReidDataset, settings: VariantSettings) -> int:
    """Bytes of uint8 pixels that caching every split of `dataset` at the variant's input size takes."""
    h, w = settings.img_size
    return sum(len(getattr(dataset, split)) for split in ("train", "query", "gallery", *VAL_SPLITS)) * 3 * h * w


def cache_location(
    decoded_bytes: int, device: torch.device, policy: str, available_host: Optional[int] = None
) -> tuple[str, str]:
    """Where a run's images come from -- `DEVICE`, `HOST` or `STREAM` -- and why, decided before decoding.

    On the device, a batch is one gather and nothing crosses PCIe during
    training. When the images would take more than a quarter of the GPU's free
    memory (Market-1501 at 256x128 is 1.3 GB, MSMT17 3.2 GB: both stay on an
    80 GB card; a 16 GB card or a larger input size may not), they stay in host
    memory and each batch is gathered there and copied over asynchronously
    (pinned, non-blocking), overlapping the previous step. When they would take
    more than 80 % of the host memory `available_host` too, `auto` streams them:
    DataLoader workers decode each batch when it is needed (`reidbench.data.stream`);
    `host` and `device` refuse, since caching would swap the machine to a halt.
    """
    check_cache_policy(policy)
    size = f"{decoded_bytes / 2**20:.0f} MiB decoded"
    if policy == STREAM:
        return STREAM, f"{size}; --data-cache stream"
    if available_host is not None and decoded_bytes > HOST_CACHE_SHARE * available_host:
        over = f"{size} > {HOST_CACHE_SHARE:.0%} of the {available_host / 2**30:.1f} GiB of host memory available"
        if policy == "auto":
            return STREAM, f"{over}: decoded per batch by DataLoader workers"
        raise UsageError(
            f"--data-cache {policy}: the images would not fit, {over}. Use --data-cache stream (or auto) to decode "
            "them per batch, a smaller input size (--set img_size=[H,W]), or a machine with more memory."
        )
    if device.type != "cuda":
        return HOST, f"{size}; {device.type} run: the images live in host memory"
    if policy == HOST:
        return HOST, f"{size}; --data-cache host"
    if policy == DEVICE:
        return DEVICE, f"{size}; --data-cache device"
    free, _ = torch.cuda.mem_get_info(device)
    if decoded_bytes <= DEVICE_CACHE_SHARE * free:
        return DEVICE, f"{size} <= {DEVICE_CACHE_SHARE:.0%} of {free / 2**30:.1f} GiB free on the GPU"
    return HOST, f"{size} > {DEVICE_CACHE_SHARE:.0%} of {free / 2**30:.1f} GiB free on the GPU: host memory"


def _available_memory() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def chance_level(query: AnyImageSet, gallery: AnyImageSet) -> dict[str, float]:
    """mAP and rank-1 of a random ranking under the same protocol (their expectation, `evaluation.metrics.chance_level`):
    the floor a trained model must clear."""
    chance = expected_chance(query.pids.cpu(), gallery.pids.cpu(), query.exclusion_ids.cpu(), gallery.exclusion_ids.cpu())
    return {"mAP": chance.mAP, "rank1": chance.rank1, "skipped": chance.skipped_queries}
