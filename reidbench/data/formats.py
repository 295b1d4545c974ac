"""Parsers from ReID datasets on disk to :class:`ReidDataset`: one ``load_<format>`` per layout.

Loaders only list folders and parse names; they never open an image (the data
loader does that later), so loading even MSMT17 takes a fraction of a second.
Every problem with the data on disk is a :class:`UsageError` that names the
folder or file and says what was expected.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from reidbench.errors import UsageError
from reidbench.data.records import DISTRACTOR_PID, JUNK_PID, ImageRecord, ReidDataset
from reidbench.data.synthetic import default_synthetic_root, ensure_synthetic, read_manifest, synthetic_version

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: How many offending names or lines an error message quotes.
_QUOTE = 5


def _quote(items: list[str]) -> str:
    shown = ", ".join(items[:_QUOTE])
    more = len(items) - _QUOTE
    return shown + (f" and {more} more" if more > 0 else "")


def _require_root(root: Path, label: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{label} dataset root {root} {what}.")
    return root


def _holding(root: Path, folder: str) -> list[Path]:
    """Sub-folders of ``root`` that contain ``folder``: the dataset one level down."""
    try:
        with os.scandir(root) as entries:
            subdirs = sorted(Path(e.path) for e in entries if e.is_dir())
    except OSError:
        return []
    return [d for d in subdirs if (d / folder).is_dir()]


def _missing_folder(root: Path, folder: str, label: str, expected: str) -> UsageError:
    """The error for a layout folder that is not there, with a hint when it sits one level down."""
    nested = _holding(root, folder)
    hint = f" It exists under {nested[0]}: pass that folder as the root." if nested else ""
    return UsageError(f"{label}: folder {root / folder} is missing; expected {expected}.{hint}")


def _list_images(folder: Path, label: str, expected: str) -> list[str]:
    """Sorted image file names in ``folder``; errors if the folder is missing or holds no images."""
    if not folder.is_dir():
        raise _missing_folder(folder.parent, folder.name, label, expected)
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        others = f" (it holds {len(names)} other files)" if names else " (it is empty)"
        raise UsageError(
            f"{label}: folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} images{others}; expected {expected}."
        )
    return images


# --- Market-1501 layout: Market-1501, DukeMTMC-reID, VeRi-776, the synthetic set -----------------


#: (train, query, gallery) folder names of the Market-1501 layout.
MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
VERI_FOLDERS = ("image_train", "image_query", "image_test")

#: pid and 1-based camera at the start of a file name, e.g. ``0002_c1s1_000451_03.jpg``.
MARKET_NAME = re.compile(r"([-\d]+)_c(\d)")
#: The same for VeRi-776, whose camera has three digits: ``0030_c008_00049745_0.jpg``.
VERI_NAME = re.compile(r"([-\d]+)_c(\d+)")


def _parse_names(
    folder: Path, names: list[str], pattern: re.Pattern[str], label: str, example: str
) -> list[ImageRecord]:
    """Records (original pid, 0-based camera) for ``names``; errors on any name that does not parse."""
    records, bad = [], []
    for name in names:
        m = pattern.match(name)
        try:
            pid, cam = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        except ValueError:  # e.g. "1-2_c1..." matches [-\d]+ but is not a number
            pid, cam = None, None
        if pid is None or pid < JUNK_PID or cam < 1:
            bad.append(name)
        else:
            records.append(ImageRecord(folder / name, pid, cam - 1))
    if bad:
        raise UsageError(
            f"{label}: {len(bad)} of {len(names)} files in {folder} do not match the file-name "
            f"pattern '{pattern.pattern}' (pid, then a 1-based camera, as in {example}): {_quote(bad)}."
        )
    return records


def _apply_protocol(split: str, records: list[ImageRecord]) -> tuple[list[ImageRecord], int]:
    """Drop junk everywhere and distractors outside the gallery; returns (kept, number dropped)."""
    if split == "gallery":
        kept = [r for r in records if r.pid != JUNK_PID]
    else:
        kept = [r for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID)]
    return kept, len(records) - len(kept)


def _load_folders(
    root: Path,
    name: str,
    label: str,
    folders: tuple[str, str, str],
    pattern: re.Pattern[str],
    example: str,
) -> ReidDataset:
    root = _require_root(root, label)
    expected = f"{label} images named like {example}"
    splits, dropped = {}, {}
    for split, folder_name in zip(("train", "query", "gallery"), folders):
        folder = root / folder_name
        records = _parse_names(folder, _list_images(folder, label, expected), pattern, label, example)
        splits[split], dropped[split] = _apply_protocol(split, records)
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
    root = _require_root(root, "synthetic")
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
        if _holding(root, folders[0]):
            raise _missing_folder(root, folders[0], "MSMT17", layouts)
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
            f"(e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'): {_quote(bad)}."
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
    root = _require_root(root, "MSMT17")
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
}
DATASET_KINDS = ("synthetic", *LOADERS)


def parse_dataset_spec(spec: str) -> tuple[str, Path | None]:
    """``'synthetic'`` -> ``('synthetic', None)``; ``'market1501:/data/m'`` -> ``('market1501', Path('/data/m'))``.

    ``synthetic:PATH`` is accepted too (a synthetic set in a chosen folder), and
    ``synthetic:seed=N`` (the default set generated with another seed). The
    kind is case-insensitive; the path is split at the first ``:``.
    """
    kind, sep, path = spec.strip().partition(":")
    kind = kind.strip().lower()
    forms = "synthetic, " + ", ".join(f"{k}:PATH" for k in LOADERS)
    if kind not in DATASET_KINDS:
        raise UsageError(f"unknown dataset {kind!r} in {spec!r}; valid datasets: {forms}.")
    if sep and not path.strip():
        raise UsageError(f"dataset spec {spec!r} has an empty path after ':'; expected {kind}:PATH.")
    if not sep and kind != "synthetic":
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
    if kind != "synthetic":
        return LOADERS[kind](path)
    seed = synthetic_seed(spec)
    if seed is not None:  # another synthetic world: other identities, backgrounds and cameras
        return load_synthetic(ensure_synthetic(default_synthetic_root(seed), seed=seed))
    root = path if path is not None else synthetic_root
    if root is not None and read_manifest(root) is not None:
        return load_synthetic(root)
    return load_synthetic(ensure_synthetic(root))
