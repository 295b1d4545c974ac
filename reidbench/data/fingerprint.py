"""A dataset's fingerprint: which files each split holds, their sizes and their labels, cheap enough to take on every start.

A run records the fingerprint of the data it trained and scored on; `--resume` compares
it with the data's now, so that one results table never holds cells trained or scored on
different data. Nothing is decoded and no file is read: one `stat` per file, then digests
of the sorted names, of names with sizes, and of names with identity and camera labels.
Those digests say *that* something changed; the per-split counts beside them say how much.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from reidbench.data.records import SPLITS, ReidDataset

SPLIT_WORDS = {"train": "training", "query": "query", "gallery": "gallery"}
"""How a message names a split's samples ("3 training images")."""


def _digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode("utf-8", "surrogateescape")).hexdigest()


def fingerprint(dataset: ReidDataset, splits: Sequence[str] = SPLITS) -> dict[str, dict[str, Any]]:
    """Per split: samples, identities, and digests of the file names, the names with sizes, the names with labels."""
    counts = dataset.counts()
    sizes: dict[Path, int] = {}
    result: dict[str, dict[str, Any]] = {}
    for split in splits:
        records = getattr(dataset, split)
        names, sized, labelled = [], [], []
        for record in records:
            for view in record.sources():
                name = f"{os.path.relpath(view.path, dataset.root)}#{view.part}/{view.parts}"
                if view.path not in sizes:
                    sizes[view.path] = view.path.stat().st_size if view.path.exists() else -1
                names.append(name)
                sized.append(f"{name} {sizes[view.path]}")
            labelled.append(f"{os.path.relpath(record.path, dataset.root)} {record.pid} {record.camid} {record.scene}")
        result[split] = {"samples": len(records), "ids": counts[split]["ids"], "files": _digest(names),
                         "sizes": _digest(sized), "labels": _digest(labelled)}
    return result


def _count(n: int, split: str, unit: str) -> str:
    return f"{n} {SPLIT_WORDS.get(split, split)} {unit}{'' if n == 1 else 's'}"


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _verb(parts: list[str]) -> str:
    return "is" if len(parts) == 1 and parts[0].startswith("1 ") else "are"


def changes(recorded: dict[str, Any], now: dict[str, Any], unit: str = "image") -> list[str]:
    """What differs between two fingerprints, in words ("3 training images and 2 query images are gone"); [] when the same."""
    splits = [s for s in recorded if s in now]
    gone = [_count(recorded[s]["samples"] - now[s]["samples"], s, unit) for s in splits if recorded[s]["samples"] > now[s]["samples"]]
    added = [_count(now[s]["samples"] - recorded[s]["samples"], s, unit) for s in splits if recorded[s]["samples"] < now[s]["samples"]]
    found = [f"{_joined(gone)} {_verb(gone)} gone"] if gone else []
    found += [f"{_joined(added)} {_verb(added)} new"] if added else []
    for s in splits:
        old, new, word = recorded[s], now[s], SPLIT_WORDS.get(s, s)
        if old["ids"] != new["ids"]:
            found.append(f"the {word} set had {old['ids']} identities and now has {new['ids']}")
        if old["samples"] == new["samples"] and old["files"] != new["files"]:
            found.append(f"the {word} set has as many {unit}s as before, but other file names")
        elif old["files"] == new["files"] and old["sizes"] != new["sizes"]:
            found.append(f"{word} files were replaced (the same names, other sizes)")
        elif old["files"] == new["files"] and old["labels"] != new["labels"]:
            found.append(f"the {word} {unit}s' identity or camera labels differ")
    return found
