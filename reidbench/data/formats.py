"""Parsers from ReID datasets on disk to :class:`ReidDataset`: one ``load_<format>`` per layout.

Loaders only list folders and parse names; they never open an image (the data
loader does that later), so loading even MSMT17 takes a fraction of a second.
Every problem with the data on disk is a :class:`UsageError` that names the
folder or file and says what was expected.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from reidbench.errors import UsageError
from reidbench.data.layout import (
    MARKET_FOLDERS, apply_protocol, holding, list_images, missing_folder, parse_names, quote, require_root,
)
from reidbench.data.multimodal import load_msvr310, load_rgbnt100, load_rgbnt201
from reidbench.data.records import PERSON_SIZE, ImageRecord, ReidDataset
from reidbench.data.synthetic import (
    default_synthetic_root, ensure_multimodal_synthetic, ensure_synthetic, multimodal_version, read_manifest,
    read_multimodal_manifest, synthetic_version,
)

# --- Market-1501 layout: Market-1501, DukeMTMC-reID, VeRi-776, the synthetic set -----------------


VERI_FOLDERS = ("image_train", "image_query", "image_test")

#: pid and 1-based camera at the start of a file name, e.g. ``0002_c1s1_000451_03.jpg``.
MARKET_NAME = re.compile(r"([-\d]+)_c(\d)")
#: The same for VeRi-776, whose camera has three digits: ``0030_c008_00049745_0.jpg``.
VERI_NAME = re.compile(r"([-\d]+)_c(\d+)")


def _load_folders(
    root: Path,
    name: str,
    label: str,
    folders: tuple[str, str, str],
    pattern: re.Pattern[str],
    example: str,
) -> ReidDataset:
    root = require_root(root, label)
    expected = f"{label} images named like {example}"
    splits, dropped = {}, {}
    for split, folder_name in zip(("train", "query", "gallery"), folders):
        folder = root / folder_name
        records = parse_names(folder, list_images(folder, label, expected), pattern, label, example)
        splits[split], dropped[split] = apply_protocol(split, records)
        if not splits[split]:
            raise UsageError(
                f"{label}: all {len(records)} images in {folder} are junk (pid -1) or distractors "
                f"(pid 0); the {split} split would be empty."
            )
    return ReidDataset.from_splits(name, root, version=None, dropped=dropped, **splits)


def load_market1501(root: Path) -> ReidDataset:
    """Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``, ``0002_c1s1_000451_03.jpg``."""
    return _load_folders(root, "market1501", "Market-1501", MARKET_FOLDERS, MARKET_NAME, "0002_c1s1_000451_03.jpg")


def load_dukemtmc(root: Path) -> ReidDataset:
    """DukeMTMC-reID: the Market-1501 layout with names like ``0001_c2_f0046182.jpg``."""
    return _load_folders(root, "dukemtmc", "DukeMTMC-reID", MARKET_FOLDERS, MARKET_NAME, "0001_c2_f0046182.jpg")


def load_veri776(root: Path) -> ReidDataset:
    """VeRi-776: ``image_train/``, ``image_query/``, ``image_test/``, ``0030_c008_00049745_0.jpg``."""
    return _load_folders(root, "veri776", "VeRi-776", VERI_FOLDERS, VERI_NAME, "0030_c008_00049745_0.jpg")


def load_synthetic(root: Path) -> ReidDataset:
    """A set written by :func:`generate_synthetic`: Market-1501 layout plus its ``dataset.json``."""
    root = require_root(root, "synthetic")
    manifest = read_manifest(root)
    if manifest is None:
        raise UsageError(
            f"synthetic: {root} has no reidbench dataset.json manifest; generate one with "
            f"`reidbench data synth --out {root}` or load it as market1501:{root}."
        )
    return replace(load_market1501(root), name="synthetic", version=synthetic_version(manifest))


# --- MSMT17 -------------------------------------------------------------------------------------

#: version -> (train image folder, test image folder), as the two releases ship them.
MSMT17_FOLDERS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}


def _msmt17_version(root: Path) -> str:
    present = [v for v, folders in MSMT17_FOLDERS.items() if all((root / f).is_dir() for f in folders)]
    if len(present) == 1:
        return present[0]
    layouts = " or ".join(f"{'/ + '.join(f)}/ ({v})" for v, f in MSMT17_FOLDERS.items())
    if present:
        raise UsageError(f"MSMT17: {root} holds the folders of both V1 and V2; expected only one of {layouts}.")
    for folders in MSMT17_FOLDERS.values():
        if holding(root, folders[0]):
            raise missing_folder(root, folders[0], "MSMT17", layouts)
    raise UsageError(f"MSMT17: {root} has neither layout; expected {layouts}.")


def _read_msmt17_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    """Records from lines ``0000/0000_000_01_0303morning_0015_0.jpg 0`` (path, 0-based label).

    The camera is the third ``_`` field of the file name, 1-based in the file.
    MSMT17's labels are 0-based real identities, while reidbench reserves pid 0
    for distractors, so the stored pid is ``label + 1``.
    """
    if not list_file.is_file():
        raise UsageError(f"MSMT17: list file {list_file} is missing; expected lines like "
                         "'0000/0000_000_01_0303morning_0015_0.jpg 0'.")
    records, bad = [], []
    lines = list_file.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, label = parts if len(parts) == 2 else (None, None)
            cam = int(Path(rel).name.split("_")[2])
            pid = int(label)
        except (TypeError, ValueError, IndexError):
            bad.append(f"line {number}: {line.strip()!r}")
            continue
        if pid < 0 or cam < 1:
            bad.append(f"line {number}: {line.strip()!r}")
            continue
        records.append(ImageRecord(image_dir / rel, pid + 1, cam - 1))
    if bad:
        raise UsageError(
            f"MSMT17: {len(bad)} lines of {list_file} are not '<dir>/<pid>_<n>_<camera>_..._.jpg <label>' "
            f"(e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'): {quote(bad)}."
        )
    if not records:
        raise UsageError(f"MSMT17: list file {list_file} lists no images.")
    # Listing tens of thousands of files to check them all would be slow; the first
    # and last entries catch a wrong root or lists from the other version.
    for record in (records[0], records[-1]):
        if not record.path.is_file():
            raise UsageError(
                f"MSMT17: {list_file.name} names {record.path}, which does not exist; "
                f"are the list files from the same MSMT17 version as {image_dir.name}/?"
            )
    return records


def load_msmt17(root: Path) -> ReidDataset:
    """MSMT17 V1 (``train/``, ``test/``) or V2 (``mask_train_v2/``, ``mask_test_v2/``) with ``list_*.txt``.

    The standard protocol trains on ``list_train.txt`` + ``list_val.txt``.
    ``version`` says which release was found.
    """
    root = require_root(root, "MSMT17")
    version = _msmt17_version(root)
    train_dir, test_dir = (root / f for f in MSMT17_FOLDERS[version])
    train = [r for name in ("list_train.txt", "list_val.txt") for r in _read_msmt17_list(root / name, train_dir)]
    query = _read_msmt17_list(root / "list_query.txt", test_dir)
    gallery = _read_msmt17_list(root / "list_gallery.txt", test_dir)
    return ReidDataset.from_splits("msmt17", root, train, query, gallery, version=version)


# --- dataset specs ------------------------------------------------------------------------------

LOADERS: dict[str, Callable[[Path], ReidDataset]] = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "veri776": load_veri776,
    "rgbnt201": load_rgbnt201,
    "rgbnt100": load_rgbnt100,
    "msvr310": load_msvr310,
}
#: Input size (height, width) per dataset kind where it is not the person sets' PERSON_SIZE: the vehicle sets as
#: their upstream configs train them (MambaPro configs/RGBNT100 and configs/MSVR310: 128x256; TransReID configs/VeRi: 256x256).
NATIVE_SIZES: dict[str, tuple[int, int]] = {"rgbnt100": (128, 256), "msvr310": (128, 256), "veri776": (256, 256)}
#: Sets reidbench generates itself: a spec may name them without a path.
GENERATED = ("synthetic", "synthetic-rgbnt")
DATASET_KINDS = (*GENERATED, *LOADERS)


def parse_dataset_spec(spec: str) -> tuple[str, Path | None]:
    """``'synthetic'`` -> ``('synthetic', None)``; ``'market1501:/data/m'`` -> ``('market1501', Path('/data/m'))``.

    ``synthetic:PATH`` is accepted too (a synthetic set in a chosen folder), and
    ``synthetic:seed=N`` (the default set generated with another seed);
    ``synthetic-rgbnt`` is the multi-modal synthetic set (RGBNT201 layout), and
    ``synthetic-rgbnt:PATH`` that set in a chosen folder. The kind is
    case-insensitive; the path is split at the first ``:``.
    """
    kind, sep, path = spec.strip().partition(":")
    kind = kind.strip().lower()
    forms = ", ".join(GENERATED) + ", " + ", ".join(f"{k}:PATH" for k in LOADERS)
    if kind not in DATASET_KINDS:
        raise UsageError(f"unknown dataset {kind!r} in {spec!r}; valid datasets: {forms}.")
    if sep and not path.strip():
        raise UsageError(f"dataset spec {spec!r} has an empty path after ':'; expected {kind}:PATH.")
    if not sep and kind not in GENERATED:
        raise UsageError(f"dataset {kind!r} needs the path of its root folder: {kind}:PATH.")
    return kind, Path(path.strip()).expanduser() if sep else None


def synthetic_seed(spec: str) -> int | None:
    """N for ``synthetic:seed=N`` (the default set's settings with another seed), else None."""
    match = re.fullmatch(r"\s*synthetic\s*:\s*seed\s*=\s*(\d+)\s*", spec, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def load_dataset(spec: str, synthetic_root: Path | None = None) -> ReidDataset:
    """Load the dataset a spec names (see :func:`parse_dataset_spec`).

    ``synthetic`` generates the default synthetic set on first use, in
    ``synthetic_root`` or the user cache (:func:`default_synthetic_root`), and
    reuses it afterwards. ``synthetic:PATH`` loads the set already in PATH,
    whatever settings made it, or generates the default set there when PATH is
    absent or empty.
    """
    kind, path = parse_dataset_spec(spec)
    dataset = _load_kind(kind, path, spec, synthetic_root)
    return replace(dataset, native_size=native_size(kind))


def native_size(kind: str) -> tuple[int, int]:
    """The input size a dataset kind is trained at upstream (a profile with follow_dataset_size scales to it)."""
    return NATIVE_SIZES.get(kind, PERSON_SIZE)


def _load_kind(kind: str, path: Path | None, spec: str, synthetic_root: Path | None) -> ReidDataset:
    if kind == "synthetic-rgbnt":
        return load_multimodal_synthetic(path)
    if kind != "synthetic":
        return LOADERS[kind](path)
    seed = synthetic_seed(spec)
    if seed is not None:  # another synthetic world: other identities, backgrounds and cameras
        return load_synthetic(ensure_synthetic(default_synthetic_root(seed), seed=seed))
    root = path if path is not None else synthetic_root
    if root is not None and read_manifest(root) is not None:
        return load_synthetic(root)
    return load_synthetic(ensure_synthetic(root))


def load_multimodal_synthetic(root: Path | None = None) -> ReidDataset:
    """The multi-modal synthetic set (RGBNT201 layout) in `root`, or the default one, generated on first use.

    A folder holding a set that other settings wrote is loaded as it is, as ``synthetic:PATH`` does.
    """
    if root is None or read_multimodal_manifest(root) is None:
        root = ensure_multimodal_synthetic(root)
    manifest = read_multimodal_manifest(root)
    assert manifest is not None
    return replace(load_rgbnt201(root), name="synthetic-rgbnt", version=multimodal_version(manifest))
