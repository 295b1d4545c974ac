"""A validation split carved from a dataset's training identities, for scoring during training (eval.split = "val").

Why carve one: a curve of the test split's mAP per epoch invites choosing an
epoch, or a recipe, by the test split. The validation identities come out of
the training split instead, so the test split stays unseen until the final
evaluation (which is always on the test split).

How, fixed and documented so that every run on the same data validates on the
same identities:

* The identities are drawn from the training identities the protocol can score:
  seen by at least two cameras (scenes, where the records carry them), one of
  them with at least two images.
* `VAL_FRACTION` of all training identities, rounded, at least `VAL_MIN_IDS`
  (fewer when fewer can be scored), drawn without replacement by
  `numpy.random.default_rng(VAL_SEED)` from those candidates in ascending order
  of their original identity number. The draw depends on the data alone, never
  on a cell's seed: all cells and seeds of a run validate on the same identities.
* Every image of a drawn identity leaves training (the classifier shrinks with
  it; the remaining identities are relabelled 0..N-1 in order of their
  original number). Per identity and camera (scene), the first image in the
  training split's order (by file name) is a query, the others are the
  gallery: the one-query-per-camera rule of Market-1501's query set, which the
  same-identity-same-camera removal then scores against the other cameras'
  images.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from reidbench.data.records import ImageRecord, ReidDataset, Validation
from reidbench.errors import UsageError

VAL_FRACTION = 0.1
"""Share of the training identities that become the validation split."""
VAL_MIN_IDS = 2
"""Fewest validation identities: with one, every gallery image is a correct match and mAP says nothing."""
VAL_SEED = 0
"""The fixed seed of the draw (the same data always gives the same identities)."""
RULE = (f"{VAL_FRACTION:.0%} of the training identities (at least {VAL_MIN_IDS}), drawn with numpy default_rng({VAL_SEED}) "
        "from those seen by two or more cameras, one with two or more images; all their images left training; per "
        "identity and camera the first image by file name is a query, the others the gallery")


def _where(record: ImageRecord) -> int:
    """What the protocol removes same-identity gallery entries by: the scene where records carry one, else the camera."""
    return record.camid if record.scene is None else record.scene


def scorable_identities(records: list[ImageRecord]) -> list[int]:
    """The identities of `records` a validation split can score, ascending (see the module's rule)."""
    per_place: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for record in records:
        per_place[record.pid][_where(record)] += 1
    return sorted(pid for pid, places in per_place.items() if len(places) >= 2 and max(places.values()) >= 2)


def carve_validation(dataset: ReidDataset) -> ReidDataset:
    """`dataset` with `VAL_FRACTION` of its training identities moved to `dataset.validation`; a UsageError where
    too few identities can be scored or too few would be left to train on."""
    original = {label: pid for pid, label in dataset.train_pid_map.items()}
    train = [replace(r, pid=original[r.pid]) for r in dataset.train]
    candidates = scorable_identities(train)
    wanted = min(max(VAL_MIN_IDS, round(VAL_FRACTION * dataset.num_train_pids)), len(candidates))
    if wanted < VAL_MIN_IDS or dataset.num_train_pids - wanted < 2:
        raise UsageError(
            f"{dataset.name}: a validation split (eval.split = \"val\") needs at least {VAL_MIN_IDS} training identities seen "
            f"by two cameras, one of them twice, and 2 more to train on; {len(candidates)} of its {dataset.num_train_pids} "
            "training identities qualify. Score on the test split instead (--set eval.split=\"test\"), or set eval.period = 0."
        )
    drawn = np.random.default_rng(VAL_SEED).choice(len(candidates), size=wanted, replace=False)
    pids = tuple(sorted(candidates[i] for i in drawn))
    chosen = set(pids)
    kept = [r for r in train if r.pid not in chosen]
    pid_map = {pid: label for label, pid in enumerate(sorted({r.pid for r in kept}))}
    query, gallery = _query_and_gallery([r for r in train if r.pid in chosen])
    return replace(dataset, train=[replace(r, pid=pid_map[r.pid]) for r in kept], train_pid_map=pid_map,
                   validation=Validation(query, gallery, pids, RULE))


def _query_and_gallery(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Per identity and camera (scene, where records carry one), the first record in the training split's order (by
    file name) is a query, the others the gallery."""
    seen: set[tuple[int, int]] = set()
    query, gallery = [], []
    for record in records:
        key = (record.pid, _where(record))
        (gallery if key in seen else query).append(record)
        seen.add(key)
    return query, gallery
