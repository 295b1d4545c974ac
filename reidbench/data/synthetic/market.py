"""The synthetic ReID set in Market-1501 layout: which identity each camera sees, and the files that makes.

Why it exists: every grid cell must be able to train and evaluate on a machine
with no dataset downloaded, and the result must be the same everywhere. The set
is small enough to train on a CPU in minutes, yet not trivially separable: its
people and cameras come from :mod:`~reidbench.data.synthetic.scene`, and this
module decides who is seen where (:func:`_plan`) and writes the images.

Every image is drawn from its own random stream keyed by (seed, what, pid,
camera, index), so the same settings always give byte-identical files and
changing one count does not change the other images.

The default set (:data:`DEFAULT_PARAMS`): 100 training and 100 test identities,
6 cameras, each identity seen by 2-6 of them with 3 images per camera, 40
distractors and 20 junk images: about 1,230 train, 400 query and 860 gallery
JPEGs at 128x64 (half of Market-1501's 256x128; models resize), 10 MB, a few
seconds to generate on one core. A small CNN trained for two minutes on a CPU
reaches about 0.6 mAP on it, raw pixels about 0.04.

The test identities follow Market-1501: one query per identity and camera,
the other images of that identity and camera in the gallery, every identity
seen by at least two cameras, plus pid-0 distractors and pid-(-1) junk images in
the gallery.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from reidbench.data.layout import MARKET_FOLDERS
from reidbench.data.synthetic.cache import (
    build, default_root, ensure, matches, read_manifest_of, save_image, settings_digest, shared_problems,
)
from reidbench.data.synthetic.scene import SCENE_VERSION, Identity, random_camera, random_identity, render
from reidbench.errors import UsageError

GENERATOR_VERSION = SCENE_VERSION
"""The set's version in its manifests, streams and cache folder: the renderer's, since the set is the renderer's
images of a fixed plan (a change to the plan or the layout bumps :data:`SCENE_VERSION` too)."""
_GENERATOR = "reidbench.harness.data.synthetic"
"""The generator's name in every manifest it writes: a format marker (the module it once lived in), kept so
that sets generated before the module moved are still recognised."""


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines the generated set; stored in ``dataset.json``."""

    num_ids_train: int = 100
    num_ids_test: int = 100
    num_cameras: int = 6
    images_per_id_per_camera: int = 3
    min_cameras_per_id: int = 2
    num_distractors: int = 40
    num_junk: int = 20
    #: (height, width) of every image; 128x64 is half of Market's 256x128, models resize.
    size: tuple[int, int] = (128, 64)
    seed: int = 0
    jpeg_quality: int = 90

    def validate(self) -> None:
        problems = shared_problems(self, "Market-1501", 9999, "every query has a match")
        if self.images_per_id_per_camera < 2:
            problems.append("images_per_id_per_camera must be at least 2 (one query + one gallery)")
        if self.num_distractors < 0 or self.num_junk < 0:
            problems.append("num_distractors and num_junk cannot be negative")
        if problems:
            raise UsageError("synthetic dataset settings: " + "; ".join(problems) + ".")


DEFAULT_PARAMS = SyntheticParams()

_TRAIN, _QUERY, _GALLERY = MARKET_FOLDERS

# What a random stream is for: the first element of its key.
_VISITS, _CAMERA, _IMAGE, _DISTRACTOR, _JUNK, _IDENTITY, _DISTRACTOR_CAMERA, _JUNK_CAMERA = range(1, 9)


def _stream(p: SyntheticParams, *key: int) -> np.random.Generator:
    """An independent random stream per (what, ...) so no image depends on generation order."""
    return np.random.default_rng([p.seed, GENERATOR_VERSION, *key])


def _plan(p: SyntheticParams) -> list[tuple[str, int, int, tuple[int, ...]]]:
    """(folder, pid, camera, random-stream key) for every image, in a fixed order."""
    plan = []
    for pid in range(1, p.num_ids_train + p.num_ids_test + 1):
        rng = _stream(p, _VISITS, pid)
        cams = sorted(rng.choice(p.num_cameras, int(rng.integers(p.min_cameras_per_id, p.num_cameras + 1)),
                                 replace=False).tolist())
        for cam in cams:
            for k in range(p.images_per_id_per_camera):
                if pid <= p.num_ids_train:
                    folder = _TRAIN
                else:
                    folder = _QUERY if k == 0 else _GALLERY
                plan.append((folder, pid, cam, (_IMAGE, pid, cam, k)))
    for i in range(p.num_distractors):
        cam = int(_stream(p, _DISTRACTOR_CAMERA, i).integers(p.num_cameras))
        plan.append((_GALLERY, 0, cam, (_DISTRACTOR, i)))
    for i in range(p.num_junk):
        cam = int(_stream(p, _JUNK_CAMERA, i).integers(p.num_cameras))
        plan.append((_GALLERY, -1, cam, (_JUNK, i)))
    return plan


def _write(out: Path, p: SyntheticParams) -> dict[str, dict[str, int]]:
    """Render every image into ``out`` (Market-1501 layout); returns the counts for the manifest."""
    for folder in (_TRAIN, _QUERY, _GALLERY):
        (out / folder).mkdir(parents=True)
    cameras = [random_camera(_stream(p, _CAMERA, c), c, p.size) for c in range(p.num_cameras)]
    identities: dict[int, Identity] = {}
    frames = [0] * p.num_cameras
    counts = {f: {"images": 0, "ids": set(), "distractors": 0, "junk": 0} for f in (_TRAIN, _QUERY, _GALLERY)}
    for folder, pid, cam, key in _plan(p):
        rng = _stream(p, *key)
        if pid > 0:
            if pid not in identities:
                identities[pid] = random_identity(_stream(p, _IDENTITY, pid))
            ident = identities[pid]
        else:  # every distractor and junk image shows a different passer-by
            ident = random_identity(rng)
        image = render(p.size, cameras[cam], ident, rng, junk=pid == -1)
        frames[cam] += 1
        name = f"{'-1' if pid < 0 else f'{pid:04d}'}_c{cam + 1}s1_{frames[cam] * 25:06d}_01.jpg"
        save_image(image, out / folder / name, p.jpeg_quality)
        c = counts[folder]
        c["images"] += 1
        if pid > 0:
            c["ids"].add(pid)
        else:
            c["distractors" if pid == 0 else "junk"] += 1
    return {f: {**c, "ids": len(c["ids"])} for f, c in counts.items()}


def _manifest(p: SyntheticParams, counts: dict) -> dict:
    return {
        "generator": _GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "layout": "market1501",
        "seed": p.seed,
        "params": asdict(p),
        "counts": counts,
    }


def read_manifest(root: Path) -> dict | None:
    """The ``dataset.json`` of a set this module wrote, or None if ``root`` holds none."""
    return read_manifest_of(root, _GENERATOR)


def synthetic_version(manifest: dict) -> str:
    """A short string that changes whenever the images would: ``v1-seed0-<hash of settings>``."""
    return f"v{manifest['generator_version']}-seed{manifest['seed']}-{settings_digest(manifest)}"


def _generate(out: Path, p: SyntheticParams, replace_synthetic: bool) -> Path:
    p.validate()
    return build(out, lambda tmp: _manifest(p, _write(tmp, p)), read_manifest, replace_synthetic)


def generate_synthetic(
    out: Path,
    *,
    num_ids_train: int = DEFAULT_PARAMS.num_ids_train,
    num_ids_test: int = DEFAULT_PARAMS.num_ids_test,
    num_cameras: int = DEFAULT_PARAMS.num_cameras,
    images_per_id_per_camera: int = DEFAULT_PARAMS.images_per_id_per_camera,
    min_cameras_per_id: int = DEFAULT_PARAMS.min_cameras_per_id,
    num_distractors: int = DEFAULT_PARAMS.num_distractors,
    num_junk: int = DEFAULT_PARAMS.num_junk,
    size: tuple[int, int] = DEFAULT_PARAMS.size,
    seed: int = DEFAULT_PARAMS.seed,
    jpeg_quality: int = DEFAULT_PARAMS.jpeg_quality,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic set in Market-1501 layout, plus ``dataset.json``, to ``out``; returns ``out``.

    The set is built in a temporary folder beside ``out`` and moved into place,
    so ``out`` is either absent or complete. ``out`` must not exist or be
    empty; ``overwrite`` allows replacing a synthetic set, never other files.
    """
    params = SyntheticParams(num_ids_train, num_ids_test, num_cameras, images_per_id_per_camera,
                             min_cameras_per_id, num_distractors, num_junk, tuple(size), seed, jpeg_quality)
    return _generate(out, params, replace_synthetic=overwrite)


def default_synthetic_root(seed: int = DEFAULT_PARAMS.seed) -> Path:
    """Where the default set (with `seed`) is cached: ``synthetic-v1-seed0`` in the user cache.

    One folder per version and seed, so ``synthetic:seed=N`` sets sit beside the default one.
    """
    return default_root(GENERATOR_VERSION, seed)


def ensure_synthetic(root: Path | None = None, **params) -> Path:
    """The folder of a synthetic set with these settings (default: the default set), generated once.

    Reuses ``root`` when its manifest matches the settings, otherwise (re)generates
    it atomically; a concurrent process publishing the same set first is fine.
    """
    root = Path(root).expanduser().absolute() if root is not None else default_synthetic_root()
    p = replace(DEFAULT_PARAMS, **params)
    p = replace(p, size=tuple(p.size))
    return ensure(root, lambda r: matches(read_manifest(r), p, GENERATOR_VERSION),
                  lambda r: _generate(r, p, replace_synthetic=True))


__all__ = [
    "DEFAULT_PARAMS",
    "GENERATOR_VERSION",
    "SyntheticParams",
    "default_synthetic_root",
    "ensure_synthetic",
    "generate_synthetic",
    "read_manifest",
    "synthetic_version",
]
