"""The in-memory form of a ReID dataset: image records split into train, query and gallery.

Conventions every loader follows, so that samplers, the evaluator and the
reports never need to know which dataset they are looking at:

* ``pid`` is the dataset's own identity number, except in ``train``, where it is
  relabelled to ``0..N-1`` (contiguous, in order of the original pid) so it can
  index a classifier; ``train_pid_map`` maps original pid -> label.
* Outside ``train``, ``pid == 0`` means *distractor* and appears only in the
  gallery; ``pid == -1`` (*junk*) never appears: loaders drop junk images and
  count them in ``dropped``.
* ``camid`` is 0-based, whatever the file names say.
* Records are sorted by file name within each split, so loading is deterministic.
* A multi-modal sample (RGB, near-infrared, thermal of one instant) is one record
  whose ``views`` hold one picture per modality, in the dataset's ``modalities``
  order; ``path`` is the first view's file, so code that only names a sample
  (errors, the cache's path list) never needs to know it is multi-modal.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional

#: Identity of gallery images that show nobody in the query set (Market-1501 convention).
DISTRACTOR_PID = 0
#: Identity of unusable ("junk") images, too little of a person visible (Market-1501, DukeMTMC-reID): loaders
#: drop them, and the rank metrics drop any a gallery they are given still holds.
JUNK_PID = -1

SPLITS = ("train", "query", "gallery")

#: Modality names, in the order multi-modal datasets store them, and the letter each has in a subset name (R, NT, ...).
MODALITY_LETTERS = {"rgb": "R", "nir": "N", "tir": "T"}
#: What every sample of a multi-modal set holds, in view order.
MODALITIES = tuple(MODALITY_LETTERS)


def split_counts(split: str, pids: Iterable[int]) -> dict[str, int]:
    """A split's identities (distractors not counted), images and distractor images: the one count that `data info`,
    run.json and the report's header all show. In train, pid 0 is the first label, not a distractor."""
    pids = list(pids)
    distractors = 0 if split == "train" else sum(pid == DISTRACTOR_PID for pid in pids)
    return {"ids": len(set(pids)) - (distractors > 0), "images": len(pids), "distractors": distractors}


def distractors_text(count: int) -> str:
    """How a split's distractor images are named beside its image count, which includes them."""
    return f"{count} of them distractors" if count else ""


@dataclass(frozen=True)
class View:
    """One modality's picture of a sample: a whole file, or strip ``part`` of ``parts`` equal-width strips of it.

    RGBNT100 stores the three modalities of a sample side by side in one JPEG; its
    views are the three strips of that file.
    """

    path: Path
    part: int = 0
    parts: int = 1


@dataclass(frozen=True)
class ImageRecord:
    """One sample on disk with its identity and 0-based camera. No file is opened.

    A single-modality sample is the image at ``path``; a multi-modal one has a
    ``views`` entry per modality. ``scene`` is set where the protocol needs it
    (MSVR310 excludes same-identity gallery entries of the query's scene).
    """

    path: Path
    pid: int
    camid: int
    views: tuple[View, ...] = ()
    scene: Optional[int] = None

    def sources(self) -> tuple[View, ...]:
        """The pictures that make up the sample, one per modality (the file at ``path`` alone when single-modal)."""
        return self.views or (View(self.path),)


PERSON_SIZE = (256, 128)
"""The input size (height x width) of the person sets (TransReID's, CLIP-ReID's and MambaPro's RGBNT201 configs),
and the size a profile's or grid's img_size is written for."""


@dataclass(frozen=True)
class Validation:
    """A validation split carved from the training identities (`reidbench.data.validation`): its query and gallery
    records (original pids) and how it was drawn, as a run records it."""

    query: list[ImageRecord]
    gallery: list[ImageRecord]
    pids: tuple[int, ...]
    """The original identity numbers taken out of training, ascending."""
    rule: str
    """How the identities were drawn and their images split, in words (the report shows it)."""

    def facts(self) -> dict[str, object]:
        images = len(self.query) + len(self.gallery)
        return {"ids": len(self.pids), "images": images, "query": len(self.query), "gallery": len(self.gallery),
                "pids": list(self.pids), "rule": self.rule}


@dataclass
class ReidDataset:
    """A dataset as three lists of records plus what a run must record about it.

    Build one with :meth:`from_splits`, which relabels the training identities;
    the plain constructor takes ``train`` as already relabelled.
    """

    name: str
    root: Path
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    version: str | None = None
    #: original training pid -> contiguous label used in ``train``.
    train_pid_map: dict[int, int] = field(default_factory=dict)
    #: per split, how many images the loader left out (junk, or distractors outside the gallery).
    dropped: dict[str, int] = field(default_factory=dict)
    #: what each sample holds, in view order: ("rgb",) for a plain ReID set, ("rgb", "nir", "tir") for RGBNT201.
    modalities: tuple[str, ...] = ("rgb",)
    #: per split, multi-modal samples left out because a modality's file is missing (never paired with another file).
    incomplete: dict[str, int] = field(default_factory=dict)
    #: the input size (height, width) its upstream configs train at: persons 256x128, set by `load_dataset`.
    native_size: tuple[int, int] = PERSON_SIZE
    #: identities moved from ``train`` to a validation split (eval.split = "val" with eval.period > 0); None: none.
    validation: Optional[Validation] = None

    @classmethod
    def from_splits(
        cls,
        name: str,
        root: Path,
        train: list[ImageRecord],
        query: list[ImageRecord],
        gallery: list[ImageRecord],
        version: str | None = None,
        dropped: dict[str, int] | None = None,
        modalities: tuple[str, ...] = ("rgb",),
        incomplete: dict[str, int] | None = None,
    ) -> ReidDataset:
        """Assemble a dataset from records carrying original pids; relabels ``train``."""
        pid_map = {pid: label for label, pid in enumerate(sorted({r.pid for r in train}))}
        relabelled = [replace(r, pid=pid_map[r.pid]) for r in train]
        return cls(
            name=name,
            root=root,
            train=relabelled,
            query=query,
            gallery=gallery,
            version=version,
            train_pid_map=pid_map,
            dropped=dict(dropped or {}),
            modalities=tuple(modalities),
            incomplete=dict(incomplete or {}),
        )

    @property
    def num_train_pids(self) -> int:
        """Number of training identities: the classifier's output size."""
        return len(self.train_pid_map)

    @property
    def num_cameras(self) -> int:
        """One more than the largest camera id in any split: the size of a camera embedding."""
        camids = [r.camid for split in (self.train, self.query, self.gallery) for r in split]
        return max(camids) + 1 if camids else 0

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split: identities (distractors not counted), images, cameras, distractor images."""
        result = {}
        for split in SPLITS:
            records = getattr(self, split)
            result[split] = {**split_counts(split, (r.pid for r in records)), "cameras": len({r.camid for r in records})}
        return result

    @property
    def exclusion(self) -> str:
        """Which gallery entries of the query's identity the protocol removes: the same "camera"'s (Market-1501),
        or the same "scene"'s where the records carry scenes (MSVR310; evaluation reads them from the same records)."""
        return "scene" if any(r.scene is not None for r in self.query) else "camera"

    def facts(self) -> dict[str, object]:
        """What `data info --json` prints and a run records: counts per split and everything the loader left out."""
        return {"name": self.name, "root": str(self.root), "version": self.version, "native_size": list(self.native_size), "counts": self.counts(),
                "dropped": dict(self.dropped), "modalities": list(self.modalities), "incomplete": dict(self.incomplete),
                "exclusion": self.exclusion, **({"validation": self.validation.facts()} if self.validation else {})}

    @property
    def val_query(self) -> list[ImageRecord]:
        """The validation split's queries ([] without one); with `val_gallery`, named as the splits are."""
        return self.validation.query if self.validation else []

    @property
    def val_gallery(self) -> list[ImageRecord]:
        return self.validation.gallery if self.validation else []

    @property
    def multimodal(self) -> bool:
        return len(self.modalities) > 1

    def describe(self) -> str:
        """A few lines for humans (``reidbench data info``)."""
        version = f" {self.version}" if self.version else ""
        lines = [f"{self.name}{version} at {self.root}"]
        if self.multimodal:
            lines.append(f"modalities: {', '.join(self.modalities)} (one sample = one image of each); "
                         f"gallery entries of the query's identity removed by {self.exclusion}")
        lines.append(f"{'split':<8}{'ids':>7}{'samples' if self.multimodal else 'images':>9}{'cameras':>9}")
        for split, c in self.counts().items():
            extra = f"  ({distractors_text(c['distractors'])})" if c["distractors"] else ""
            lines.append(f"{split:<8}{c['ids']:>7}{c['images']:>9}{c['cameras']:>9}{extra}")
        dropped = {k: v for k, v in self.dropped.items() if v}
        if dropped:
            lines.append("dropped: " + ", ".join(f"{v} {k}" for k, v in dropped.items()))
        incomplete = {k: v for k, v in self.incomplete.items() if v}
        if incomplete:
            lines.append("skipped, a modality's file missing: " + ", ".join(f"{v} {k}" for k, v in incomplete.items()))
        return "\n".join(lines)
