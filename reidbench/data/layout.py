"""Folder-listing and name-parsing helpers shared by the dataset loaders.

The single-modality loaders (:mod:`reidbench.data.formats`) and the
multi-modal ones (:mod:`reidbench.data.multimodal`) must fail the same way on
the same mistakes: every problem with data on disk is a one-paragraph
:class:`UsageError` naming the folder or file and what was expected. Keeping the
helpers here, below both, lets ``formats`` register the multi-modal loaders
without either module importing the other's internals.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from reidbench.errors import UsageError
from reidbench.data.records import DISTRACTOR_PID, JUNK_PID, ImageRecord

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: How many offending names or lines an error message quotes.
QUOTE = 5

#: (train, query, gallery) folder names of the Market-1501 layout (also RGBNT100's, under ``rgbir/``).
MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def quote(items: list[str]) -> str:
    """The first :data:`QUOTE` items and how many more: an error stays one paragraph on a huge folder."""
    shown = ", ".join(items[:QUOTE])
    more = len(items) - QUOTE
    return shown + (f" and {more} more" if more > 0 else "")


def require_root(root: Path, label: str) -> Path:
    """The root as a folder, or the error a mistyped path deserves before any layout check."""
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{label} dataset root {root} {what}.")
    return root


def holding(root: Path, folder: str) -> list[Path]:
    """Sub-folders of ``root`` that contain ``folder``: the dataset one level down."""
    try:
        with os.scandir(root) as entries:
            subdirs = sorted(Path(e.path) for e in entries if e.is_dir())
    except OSError:
        return []
    return [d for d in subdirs if (d / folder).is_dir()]


def missing_folder(root: Path, folder: str, label: str, expected: str) -> UsageError:
    """The error for a layout folder that is not there, with a hint when it sits one level down."""
    nested = holding(root, folder)
    hint = f" It exists under {nested[0]}: pass that folder as the root." if nested else ""
    return UsageError(f"{label}: folder {root / folder} is missing; expected {expected}.{hint}")


def image_names(folder: Path) -> tuple[list[str], int]:
    """(sorted image file names, number of other plain files) in an existing ``folder``.

    Hidden files (``.DS_Store``) and sub-folders are not counted at all; other
    files that are not images (``Thumbs.db``, ``readme.txt``) are ignored but
    counted, so an error about an imageless folder can say what it does hold.
    """
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    return images, len(names) - len(images)


def list_images(folder: Path, label: str, expected: str) -> list[str]:
    """Sorted image file names in ``folder``; errors if the folder is missing or holds no images."""
    if not folder.is_dir():
        raise missing_folder(folder.parent, folder.name, label, expected)
    images, others = image_names(folder)
    if not images:
        held = f" (it holds {others} other files)" if others else " (it is empty)"
        raise UsageError(
            f"{label}: folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} images{held}; expected {expected}."
        )
    return images


def parse_names(
    folder: Path,
    names: list[str],
    pattern: re.Pattern[str],
    label: str,
    example: str,
    search: bool = False,
) -> list[ImageRecord]:
    """Records (original pid, 0-based camera) for ``names``; errors on any name that does not parse.

    ``pattern`` captures the pid and the 1-based camera. It must match at the
    start of the name, unless ``search`` (RGBNT100's upstream loader searches).
    """
    records, bad = [], []
    for name in names:
        m = pattern.search(name) if search else pattern.match(name)
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
            f"pattern '{pattern.pattern}' (pid, then a 1-based camera, as in {example}): {quote(bad)}."
        )
    return records


def apply_protocol(split: str, records: list[ImageRecord]) -> tuple[list[ImageRecord], int]:
    """Drop junk everywhere and distractors outside the gallery; returns (kept, number dropped)."""
    if split == "gallery":
        kept = [r for r in records if r.pid != JUNK_PID]
    else:
        kept = [r for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID)]
    return kept, len(records) - len(kept)
