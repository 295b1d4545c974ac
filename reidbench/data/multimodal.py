"""Loaders for the multi-modal ReID sets: RGBNT201 (people), RGBNT100 and MSVR310 (vehicles).

Each sample is one instant seen in visible light (RGB), near-infrared (NIR) and
thermal infrared (TIR); a record holds one :class:`View` per modality, in the
order ``("rgb", "nir", "tir")``, and its ``path`` is the RGB view's file. Like
the single-modality loaders, these only list folders and parse names; no image
is opened.

They follow the loaders the published multi-modal ReID methods use, so that
numbers are comparable: repository ``924973292/MambaPro``,
``data/datasets/RGBNT201.py``, ``data/datasets/RGBNT100.py``,
``data/datasets/msvr310.py`` and ``data/datasets/bases.py`` (``read_image``);
TOP-ReID's copies are the same. The same files are taken as train, query and
gallery, with the same identity, camera and scene read from each name. Where
reidbench departs, in all three loaders:

* The root is the dataset's own folder (the one holding ``train_171/``,
  ``rgbir/``, ``bounding_box_train/``), not its parent: upstream joins its root
  with ``RGBNT201``, ``RGBNT100/rgbir`` or ``msvr310``. Passing the parent
  fails with a hint naming the folder to pass instead.
* Samples are sorted by file name and training labels follow the order of the
  original ids; upstream takes ``glob``/``listdir`` order and numbers labels in
  the iteration order of a Python ``set``. Same identities, other label numbers.
* A sample lacking a modality's file is skipped and counted in
  ``incomplete``, and so is a NIR/TIR file without an RGB file of the same
  name; upstream builds the path triple unchecked and fails on the first read.
* Files that are not ``.jpg``/``.jpeg``/``.png`` (``Thumbs.db``, notes) are
  ignored. Upstream's RGBNT201 and RGBNT100 loaders only see ``*.jpg``, and
  its MSVR310 loader takes every file, so a stray file stops it.
* Identity -1 (junk) and 0 (distractor) follow reidbench's protocol for every
  loader: junk is dropped everywhere and distractors everywhere but the
  gallery, counted in ``dropped``. Upstream has no such ids in RGBNT201 or
  MSVR310 and asserts them away in RGBNT100.
* Every problem with the data is a :class:`UsageError` naming the folder or
  files, where upstream raises ``RuntimeError``, ``AssertionError``,
  ``ValueError`` or ``KeyError``.
* Upstream's fourth tuple field (track id -1, or MSVR310's scene) becomes
  ``ImageRecord.scene``, set for MSVR310 only, whose protocol excludes by scene.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from reidbench.errors import UsageError
from reidbench.data.layout import (
    IMAGE_SUFFIXES, MARKET_FOLDERS, apply_protocol, image_names, list_images, missing_folder, parse_names, quote,
    require_root,
)
from reidbench.data.records import JUNK_PID, MODALITIES, SPLITS, ImageRecord, ReidDataset, View

#: (pid, 0-based camera, scene or None) read from a file name, or None if it does not parse.
Fields = Optional[tuple[int, int, Optional[int]]]

RGBNT201_SPLITS = {"train": "train_171", "query": "test", "gallery": "test"}
RGBNT201_MODALITIES = ("RGB", "NI", "TI")
RGBNT201_EXPECTED = (
    "train_171/ and test/, each holding RGB/, NI/ and TI/ with one file of the same name per sample in each "
    "(e.g. RGB/000001_cam1_0_00.jpg, NI/000001_cam1_0_00.jpg, TI/000001_cam1_0_00.jpg)"
)
RGBNT201_PATTERN = (
    "'<pid>_cam<camera>_...' (the pid the first six characters, the 1-based camera the fourth character "
    "after the first '_'), as in 000001_cam1_0_00.jpg"
)

RGBNT100_FOLDER = "rgbir"
#: pid and 1-based camera, searched anywhere in the name as upstream does: ``0539_c0001_009.jpg``.
RGBNT100_NAME = re.compile(r"([-\d]+)_c([-\d]+)")
RGBNT100_EXAMPLE = "0539_c0001_009.jpg"
RGBNT100_EXPECTED = (
    "rgbir/ holding bounding_box_train/, query/ and bounding_box_test/, each with images showing "
    f"RGB, NIR and TIR side by side, named like {RGBNT100_EXAMPLE}"
)

MSVR310_SPLITS = ("bounding_box_train", "query3", "bounding_box_test")
MSVR310_MODALITIES = ("vis", "ni", "th")
MSVR310_EXPECTED = (
    "bounding_box_train/, query3/ and bounding_box_test/, each holding one folder per vehicle id (e.g. 0268/) "
    "with vis/, ni/ and th/ holding one file of the same name per sample in each "
    "(e.g. 0268/vis/0268_s000_v0_000.jpg, 0268/ni/0268_s000_v0_000.jpg, 0268/th/0268_s000_v0_000.jpg)"
)
MSVR310_PATTERN = (
    "'<vehicle>_s<scene>_v<camera>_...' (characters 0-3 the vehicle id, 6-8 the scene, 11 the camera 0-7), "
    "as in 0268_s000_v0_000.jpg"
)


def _number(text: str) -> Optional[int]:
    """``int(text)`` for plain decimal digits (an optional leading '-'), else None.

    Stricter than ``int``, which would also take ``' 1'``, ``'+1'`` or ``'1_0'``:
    a slice of a name holding those is a name in another layout.
    """
    digits = text.removeprefix("-")
    return int(text) if digits.isascii() and digits.isdigit() else None


def _rgbnt201_fields(name: str) -> Fields:
    """Upstream's slices: pid ``name.split('_')[0][0:6]``, camera ``name.split('_')[1][3]``, 1-based."""
    parts = name.split("_")
    pid = _number(parts[0][0:6])
    camera = _number(parts[1][3:4]) if len(parts) > 1 else None
    if pid is None or camera is None or pid < JUNK_PID or camera < 1:
        return None
    return pid, camera - 1, None


def _msvr310_fields(name: str) -> Fields:
    """Upstream's slices: vehicle ``name[0:4]``, scene ``name[6:9]``, camera ``name[11]``, already 0-based.

    Upstream asserts the camera is 0..7; a name outside that is reported here instead.
    """
    pid, scene, camera = _number(name[0:4]), _number(name[6:9]), _number(name[11:12])
    if pid is None or scene is None or camera is None or pid < JUNK_PID or scene < 0 or camera > 7:
        return None
    return pid, camera, scene


@dataclass
class _Pairing:
    """What matching file names across the modality folders of one split found.

    Samples pair by identical file name only: a sample short of a modality is
    skipped, never paired with another picture.
    """

    folders: tuple[str, ...]
    complete: list[tuple[Path, str]] = field(default_factory=list)
    incomplete: int = 0
    rgb_total: int = 0
    rgb_alone: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, base: Path, where: Path) -> None:
        """Pair the files of ``base``'s modality folders; ``where`` (the split folder) shortens example paths."""
        listed = [image_names(base / folder)[0] for folder in self.folders]
        partners = [set(names) for names in listed[1:]]
        complete = [name for name in listed[0] if all(name in p for p in partners)]
        self.complete += [(base, name) for name in complete]
        self.incomplete += len(set(listed[0]).union(*partners)) - len(complete)
        self.rgb_total += len(listed[0])
        self.rgb_alone += len(listed[0]) - len(complete)
        for folder, names in zip(self.folders, listed):
            if names and folder not in self.examples:
                self.examples[folder] = str((base / folder / names[0]).relative_to(where))


def _check_modality_folders(bases: list[Path], folders: tuple[str, ...], label: str, expected: str) -> None:
    """One error naming every sample folder that lacks a modality folder (e.g. a set copied with RGB only)."""
    lacking = []
    for base in bases:
        missing = [f"{folder}/" for folder in folders if not (base / folder).is_dir()]
        if missing:
            lacking.append(f"{base} has no {' and no '.join(missing)}")
    if lacking:
        raise UsageError(f"{label}: modality folders are missing: {quote(lacking)}; expected {expected}.")


def _no_complete_sample(pairing: _Pairing, where: Path, label: str, expected: str) -> UsageError:
    """The error for a split with no file name present in every modality folder, with an example from each."""
    rgb, *others = pairing.folders
    if not pairing.rgb_total:
        return UsageError(
            f"{label}: {where} holds no {'/'.join(IMAGE_SUFFIXES)} images in {rgb}/, so no sample; expected {expected}."
        )
    examples = ", ".join(pairing.examples.get(folder, f"{folder}/ holds no image") for folder in pairing.folders)
    return UsageError(
        f"{label}: no sample in {where} has all three modalities: {pairing.rgb_alone} of {pairing.rgb_total} "
        f"{rgb}/ images have no file of the same name in both {others[0]}/ and {others[1]}/ "
        f"(e.g. {examples}); expected {expected}."
    )


def _paired_split(
    where: Path,
    bases: list[Path],
    folders: tuple[str, ...],
    fields: Callable[[str], Fields],
    label: str,
    texts: tuple[str, str],
) -> tuple[list[ImageRecord], int]:
    """(records sorted by file name, number of incomplete samples) of one split folder.

    ``bases`` are the folders holding the modality folders (the split itself, or
    its vehicle folders); ``texts`` the (expected layout, file-name pattern) of errors.
    """
    expected, pattern = texts
    _check_modality_folders(bases, folders, label, expected)
    pairing = _Pairing(folders)
    for base in bases:
        pairing.add(base, where)
    if not pairing.complete:
        raise _no_complete_sample(pairing, where, label, expected)
    records, bad = [], []
    for base, name in pairing.complete:
        parsed = fields(name)
        if parsed is None:
            bad.append(name)
            continue
        views = tuple(View(base / folder / name) for folder in folders)
        records.append(ImageRecord(views[0].path, parsed[0], parsed[1], views=views, scene=parsed[2]))
    if bad:
        raise UsageError(
            f"{label}: {len(bad)} of {len(pairing.complete)} samples in {where} have file names that do not "
            f"match {pattern}: {quote(sorted(bad))}."
        )
    return sorted(records, key=lambda r: (r.path.name, str(r.path))), pairing.incomplete


def _protocol(split: str, records: list[ImageRecord], where: Path, label: str) -> tuple[list[ImageRecord], int]:
    """Junk and distractor rules of :func:`apply_protocol`; an emptied split is an error, not a silent zero."""
    kept, dropped = apply_protocol(split, records)
    if not kept:
        raise UsageError(
            f"{label}: all {len(records)} samples in {where} are junk (pid -1) or distractors (pid 0); "
            f"the {split} split would be empty."
        )
    return kept, dropped


def load_rgbnt201(root: Path) -> ReidDataset:
    """RGBNT201 (201 people; ``train_171/`` and ``test/``, each with ``RGB/``, ``NI/``, ``TI/``).

    Upstream: ``924973292/MambaPro`` ``data/datasets/RGBNT201.py``. Samples are
    enumerated from ``RGB/`` and named like ``000001_cam1_0_00.jpg``; the pid is
    the first six characters and the camera the fourth character of the second
    ``_`` field, made 0-based, as upstream slices them. Query and gallery are
    both the whole ``test/`` folder, as upstream builds them: the evaluation
    removes gallery entries of the query's identity and camera, so a query never
    matches itself. Departures (besides the module's): names whose slices are not
    numbers, or give camera 0, are an error instead of a crash or camera -1.
    """
    label = "RGBNT201"
    root = require_root(root, label)
    texts = (RGBNT201_EXPECTED, RGBNT201_PATTERN)
    for folder in dict.fromkeys(RGBNT201_SPLITS.values()):
        if not (root / folder).is_dir():
            raise missing_folder(root, folder, label, RGBNT201_EXPECTED)
    loaded = {
        folder: _paired_split(root / folder, [root / folder], RGBNT201_MODALITIES, _rgbnt201_fields, label, texts)
        for folder in dict.fromkeys(RGBNT201_SPLITS.values())
    }
    splits, dropped, incomplete = {}, {}, {}
    for split, folder in RGBNT201_SPLITS.items():
        records, incomplete[split] = loaded[folder]
        splits[split], dropped[split] = _protocol(split, records, root / folder, label)
    return ReidDataset.from_splits(
        "rgbnt201", root, dropped=dropped, modalities=MODALITIES, incomplete=incomplete, **splits,
    )


def _rgbnt100_base(root: Path) -> Path:
    """``root/rgbir``, or ``root`` itself when it is the ``rgbir/`` folder (or holds its split folders)."""
    if (root / RGBNT100_FOLDER).is_dir():
        return root / RGBNT100_FOLDER
    if root.name == RGBNT100_FOLDER or any((root / folder).is_dir() for folder in MARKET_FOLDERS):
        return root
    raise missing_folder(root, RGBNT100_FOLDER, "RGBNT100", RGBNT100_EXPECTED)


def load_rgbnt100(root: Path) -> ReidDataset:
    """RGBNT100 (100 vehicles): ``rgbir/`` in Market-1501 layout, each JPEG the three modalities side by side.

    Upstream: ``924973292/MambaPro`` ``data/datasets/RGBNT100.py``, with
    ``data/datasets/bases.py`` ``read_image`` cutting each file into fixed
    256-pixel-wide strips of a 768x128 picture (RGB, NIR, TIR, left to right).
    reidbench's views are ``View(path, 0..2, 3)``: the width split into equal
    thirds, the same strips for those pictures, and still right if a copy of the
    set was resized. pid and 1-based camera come from ``([-\\d]+)_c([-\\d]+)``
    searched in the file name (upstream searches the whole path, where a folder
    name could match first); cameras are made 0-based. Upstream asserts
    ``1 <= pid <= 600`` and ``1 <= camera <= 8``; reidbench accepts any pid from -1
    and camera from 1, drops junk and gallery-less distractors, and counts them
    in ``dropped``. The root may be the folder holding ``rgbir/`` or ``rgbir/``.
    No modality can be missing from a sample, so ``incomplete`` is zero.
    """
    label = "RGBNT100"
    root = require_root(root, label)
    base = _rgbnt100_base(root)
    splits, dropped = {}, {}
    for split, folder_name in zip(SPLITS, MARKET_FOLDERS):
        folder = base / folder_name
        names = list_images(folder, label, RGBNT100_EXPECTED)
        records = parse_names(folder, names, RGBNT100_NAME, label, RGBNT100_EXAMPLE, search=True)
        records = [replace(r, views=tuple(View(r.path, part, 3) for part in range(3))) for r in records]
        splits[split], dropped[split] = _protocol(split, records, folder, label)
    return ReidDataset.from_splits(
        "rgbnt100", root, dropped=dropped, modalities=MODALITIES, incomplete={split: 0 for split in SPLITS}, **splits,
    )


def _vehicle_folders(folder: Path, label: str) -> list[Path]:
    """The vehicle folders of an MSVR310 split; plain files and hidden entries there are not vehicles."""
    if not folder.is_dir():
        raise missing_folder(folder.parent, folder.name, label, MSVR310_EXPECTED)
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    bad = [name for name in names if not (name.isascii() and name.isdigit())]
    if bad:
        raise UsageError(
            f"{label}: {len(bad)} folders in {folder} are not vehicle ids (numbers, as in 0268/): {quote(bad)}; "
            f"expected {MSVR310_EXPECTED}."
        )
    if not names:
        raise UsageError(f"{label}: folder {folder} holds no vehicle folders; expected {MSVR310_EXPECTED}.")
    return [folder / name for name in names]


def load_msvr310(root: Path) -> ReidDataset:
    """MSVR310 (310 vehicles): ``bounding_box_train/``, ``query3/``, ``bounding_box_test/`` of vehicle folders.

    Upstream: ``924973292/MambaPro`` ``data/datasets/msvr310.py``. Each vehicle
    folder holds ``vis/``, ``ni/``, ``th/``; samples are enumerated from
    ``vis/``. From names like ``0268_s000_v0_000.jpg`` the vehicle id is
    ``name[0:4]``, the scene ``name[6:9]`` and the camera ``name[11]``, already
    0-based, as upstream slices them; the scene is kept because MSVR310's
    protocol removes gallery entries of the query's identity and scene
    (so the dataset's ``exclusion`` is "scene"). A vehicle folder's name must be a number, as
    upstream's ``int(vid)`` requires, but the id comes from the file name, as
    upstream's does. Departures (besides the module's): plain files next to the
    vehicle folders (``.DS_Store``, ``Thumbs.db``) are ignored where upstream's
    ``int()`` fails on them, and a camera outside 0..7 is an error, not an
    ``AssertionError``.
    """
    label = "MSVR310"
    root = require_root(root, label)
    if not (root / MSVR310_SPLITS[0]).is_dir():
        raise missing_folder(root, MSVR310_SPLITS[0], label, MSVR310_EXPECTED)
    texts = (MSVR310_EXPECTED, MSVR310_PATTERN)
    splits, dropped, incomplete = {}, {}, {}
    for split, folder_name in zip(SPLITS, MSVR310_SPLITS):
        folder = root / folder_name
        vehicles = _vehicle_folders(folder, label)
        records, incomplete[split] = _paired_split(folder, vehicles, MSVR310_MODALITIES, _msvr310_fields, label, texts)
        splits[split], dropped[split] = _protocol(split, records, folder, label)
    return ReidDataset.from_splits(
        "msvr310", root, dropped=dropped, modalities=MODALITIES, incomplete=incomplete, **splits,
    )
