"""The dataset a run recorded, opened again where it was, long after the run: for pictures of what a model retrieved.

A run keeps indices into its query and gallery (queries.npz's rank lists), not
images. To show them, the dataset run.json names (its spec and root) is loaded
again, and only if it is still the data the run scored: the same files, sizes
and labels (the fingerprint run.json holds), and every image of the two splits
read at the time, so that row i of the split as evaluated is record i now.
Nothing is generated: a synthetic set that is gone stays gone, because drawing
a new one would only look like the old one. Anything else is a `UsageError`
saying, in one paragraph, why the images cannot be shown.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reidbench.data.fingerprint import changes, fingerprint
from reidbench.data.formats import GENERATED, load_dataset, parse_dataset_spec
from reidbench.data.records import ReidDataset
from reidbench.data.synthetic import read_manifest, read_multimodal_manifest
from reidbench.errors import UsageError

TEST_SPLITS = ("query", "gallery")
"""The splits a rank list shows."""


def reopen(facts: dict[str, Any], splits: Sequence[str] = TEST_SPLITS) -> ReidDataset:
    """The dataset of run.json's `dataset` facts, loaded from its recorded root and checked to be what the run scored."""
    spec, root = facts.get("spec"), facts.get("root")
    if not spec or not root:
        raise UsageError("run.json does not say which dataset the run used or where it was (no dataset spec and root).")
    kind, _ = parse_dataset_spec(str(spec))
    root = Path(str(root))
    if not root.is_dir() or (kind in GENERATED and _manifest(kind, root) is None):
        raise UsageError(f"the run's dataset {spec} is no longer at {root}; put it back there (for a synthetic set: "
                         f"reidbench data synth --out {root} with the settings the run used) to see its images.")
    try:
        dataset = load_dataset(f"{kind}:{root}")
    except UsageError as exc:
        raise UsageError(f"the run's dataset {spec} at {root} cannot be read now: {exc}") from None
    _check_same(facts, dataset, root, splits)
    return dataset


def _manifest(kind: str, root: Path) -> dict | None:
    return read_multimodal_manifest(root) if kind == "synthetic-rgbnt" else read_manifest(root)


def _check_same(facts: dict[str, Any], dataset: ReidDataset, root: Path, splits: Sequence[str]) -> None:
    """Refuse data that changed since the run, or whose split rows no longer line up with what was evaluated."""
    recorded = facts.get("fingerprint") or {}
    if all(split in recorded for split in splits):
        found = changes({split: recorded[split] for split in splits}, fingerprint(dataset, splits))
        if found:
            raise UsageError(f"the dataset at {root} changed since the run ({'; '.join(found)}), so the run's rank lists "
                             "no longer point at the images it ranked.")
    unreadable = {split: n for split, n in (facts.get("unreadable") or {}).items() if split in splits and n}
    if unreadable:
        lost = " and ".join(f"{n} {split}" for split, n in unreadable.items())
        raise UsageError(f"{lost} images of the run's dataset could not be read when it was evaluated and were left out, "
                         "so its rank lists' rows cannot be matched to files.")
