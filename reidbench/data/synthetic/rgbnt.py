"""A deterministic synthetic multi-modal ReID set (RGB, near-infrared, thermal), written in RGBNT201 layout.

Why it exists: the multi-modal code paths (loaders, per-modality backbones,
fusion, modality-subset evaluation) need a set that every machine can make,
that trains on a CPU in minutes, and on which fusing modalities measurably
helps. A set whose NIR and TIR images were re-coloured copies of the RGB ones
would let a model reach its best score from RGB alone, and no fusion result on
it would mean anything. So the design makes each modality necessary:

* **Identities come in groups of four that share their body** (proportions,
  hair style, clothing cut and pattern, bag type): what every modality sees,
  so shape alone never separates the members of a group. They differ only in
  what each sensor measures: an RGB look (clothing, skin and hair colours), an
  NIR look (the near-infrared reflectance of each garment, drawn independently
  of its colour: dyes that look alike can reflect NIR very differently, and
  vice versa) and a TIR look (the clothing's insulation, so its surface
  temperature, and traits such as a hot face or a cold backpack). Each group
  has two looks per modality, worn so that **any two members share exactly
  one**: looks (rgb, nir, tir) = (0,0,0), (0,1,1), (1,0,1), (1,1,0). One
  modality alone therefore confuses every identity with one group-mate, any
  two tell all four apart, and all three give two independent cues for every
  pair, which is what makes fusion more robust than either pair.
* **Hue is an RGB-only cue**: NIR and TIR images are gray (three equal
  channels, as RGBNT201 stores them), so two identities whose colours differ
  but whose NIR reflectances match are told apart only by RGB.
* **Thermal hides clothing colour and texture**, as a real microbolometer
  does: skin is hottest, clothing is as warm as its insulation lets it be
  (stripes and logos in a second colour have nearly the same temperature), the
  background is cool and smooth, and the sensor is blurrier and shows column
  noise. Thermal still sees the silhouette and the trait cues, robust to the
  RGB camera's colour cast and gamma, which differ per camera.
* **One scene, three sensors**: each sample is composed once on a canvas with
  five channels (R, G, B, NIR reflectance, temperature) by the drawing code of
  :mod:`reidbench.data.synthetic.scene`, so pose, view, occluders and background
  geometry are identical and pixel-aligned across modalities, as in the
  registered RGBNT201 cameras; only the materials and each sensor's
  development (illumination, blur, noise, response) differ.

Like the Market-layout set, every sample is drawn from its own random stream keyed by
(seed, what, pid, camera, index), so the same settings always give
byte-identical files. The test folder is both query and gallery (upstream's
protocol); every identity is seen by at least two cameras so that each sample
has a match from another camera once same-camera entries are removed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from reidbench.data.records import MODALITIES as RECORD_MODALITIES
from reidbench.data.synthetic.cache import (
    build, default_root, ensure, matches, read_manifest_of, save_image, settings_digest, shared_problems,
)
from reidbench.data.synthetic.scene import (
    SCENE_VERSION,
    Camera,
    Identity,
    Occluders,
    clamp_unit,
    compose,
    develop,
    gamma_lut,
    gaussian_blur,
    random_camera,
    random_identity,
    random_prop_colour,
)
from reidbench.errors import UsageError

#: Bump when the same settings would draw different images (the renderer's version is recorded beside it).
GENERATOR_VERSION = 1
_GENERATOR = "reidbench.data.synthetic_modalities"
"""The generator's name in every manifest it writes: a format marker (the module it once lived in), kept so
that sets generated before the module moved are still recognised."""
#: The modalities of every sample, in the order records store their views.
MODALITIES: tuple[str, ...] = RECORD_MODALITIES
#: Each modality's folder in the RGBNT201 layout.
MODALITY_FOLDERS = {"rgb": "RGB", "nir": "NI", "tir": "TI"}
TRAIN_FOLDER, TEST_FOLDER = "train_171", "test"


@dataclass(frozen=True)
class MultimodalParams:
    """Everything that determines the generated set; stored in ``dataset.json``."""

    num_ids_train: int = 80
    num_ids_test: int = 60
    #: RGBNT201 has four camera positions; names hold one camera digit, so at most 9.
    num_cameras: int = 4
    images_per_id_per_camera: int = 3
    min_cameras_per_id: int = 2
    #: (height, width) of every image of every modality.
    size: tuple[int, int] = (128, 64)
    seed: int = 0
    jpeg_quality: int = 90

    def validate(self) -> None:
        problems = shared_problems(self, "RGBNT201", 999999, "every sample has a cross-camera match")
        if self.images_per_id_per_camera < 1:
            problems.append("images_per_id_per_camera must be at least 1")
        if problems:
            raise UsageError("multi-modal synthetic dataset settings: " + "; ".join(problems) + ".")


DEFAULT_MULTIMODAL_PARAMS = MultimodalParams()

# --- identities: groups of four sharing a body, two looks per modality ---------------------------

_GROUP = 4
#: Which of its group's two looks per modality each member wears: every two members share exactly one.
_LOOK_CODES = {"rgb": (0, 0, 1, 1), "nir": (0, 1, 0, 1), "tir": (0, 1, 1, 0)}
#: The coloured parts of an identity: its field name and the key of its NIR / TIR material.
_PARTS = (("skin", "skin"), ("hair", "hair"), ("upper", "upper"), ("upper2", "upper2"), ("lower", "lower"),
          ("shoes", "shoes"), ("bag_colour", "bag"))
_NIR_LEVELS = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
_INSULATION = np.array([0.1, 0.4, 0.7, 0.95])
_BODY_T = 0.92
"""Core temperature on the thermal scale, where 0 and 1 are the sensor's usual range."""


def _rgb_looks(rng: np.random.Generator) -> tuple[Identity, Identity]:
    """Two colour schemes whose upper garments clearly differ (only their colours are used)."""
    a, b = random_identity(rng), random_identity(rng)
    while float(np.abs(a.upper - b.upper).max()) < 0.25:
        b = random_identity(rng)
    return a, b


def _nir_looks(rng: np.random.Generator) -> list[dict[str, float]]:
    """Two sets of NIR reflectances: upper and lower garments on different levels, the rest independent."""
    upper, lower = rng.choice(_NIR_LEVELS, 2, replace=False), rng.choice(_NIR_LEVELS, 2, replace=False)
    return [
        {
            "skin": rng.uniform(0.72, 0.9),  # skin reflects NIR strongly, whatever its colour
            "hair": rng.uniform(0.2, 0.55),
            "upper": upper[i] + rng.normal(0, 0.02),
            "upper2": rng.choice(_NIR_LEVELS) + rng.normal(0, 0.02),  # a pattern may vanish or show in NIR
            "lower": lower[i] + rng.normal(0, 0.02),
            "shoes": rng.uniform(0.08, 0.5),
            "bag": rng.uniform(0.1, 0.85),
        }
        for i in range(2)
    ]


def _cloth_t(insulation: float, rng: np.random.Generator) -> float:
    return _BODY_T - insulation * 0.5 + rng.normal(0, 0.015)


def _tir_looks(rng: np.random.Generator) -> list[dict[str, float]]:
    """Two thermal looks: upper-garment insulation on different levels; hot face and cold bag as traits."""
    upper = rng.choice(_INSULATION, 2, replace=False)
    looks = []
    for i in range(2):
        upper_t = _cloth_t(upper[i], rng)
        looks.append({
            "skin": rng.uniform(0.96, 1.0) if rng.random() < 0.4 else rng.uniform(0.84, 0.9),
            "hair": rng.uniform(0.5, 0.68),
            "upper": upper_t,
            "upper2": upper_t + rng.normal(0, 0.015),  # a second colour of the same cloth: nearly as warm
            "lower": _cloth_t(float(rng.choice(_INSULATION)), rng),
            "shoes": rng.uniform(0.3, 0.42),
            "bag": rng.uniform(0.1, 0.2) if rng.random() < 0.35 else rng.uniform(0.42, 0.56),
        })
    return looks


def _materials(shape: Identity, rgb: Identity, nir: dict[str, float], tir: dict[str, float]) -> Identity:
    """``shape``'s body with (R, G, B, NIR, TIR) materials: ``rgb``'s colours, ``nir``'s and ``tir``'s values."""
    parts = {
        name: np.concatenate([getattr(rgb, name), [nir[key], tir[key]]]).astype(np.float32) for name, key in _PARTS
    }
    return replace(shape, **parts)


@dataclass(frozen=True, eq=False)
class _Group:
    shape: Identity
    rgb: tuple[Identity, Identity]
    nir: list[dict[str, float]]
    tir: list[dict[str, float]]

    def member(self, m: int) -> Identity:
        c = {k: codes[m] for k, codes in _LOOK_CODES.items()}
        return _materials(self.shape, self.rgb[c["rgb"]], self.nir[c["nir"]], self.tir[c["tir"]])


def _passer_by(rng: np.random.Generator) -> Identity:
    """An occluding passer-by, with materials of its own in every modality."""
    person = random_identity(rng)
    return _materials(person, person, _nir_looks(rng)[0], _tir_looks(rng)[0])


def _prop(rng: np.random.Generator) -> np.ndarray:
    """A parked object: its colour, some NIR reflectance, about the background's temperature."""
    return np.concatenate([random_prop_colour(rng), [rng.uniform(0.1, 0.8), rng.uniform(0.15, 0.4)]]).astype(np.float32)


_OCCLUDERS = Occluders(person=_passer_by, colour=_prop)

# --- cameras: an RGB camera with a co-located NIR and thermal sensor ----------------------------


@dataclass(frozen=True, eq=False)
class _GraySensor:
    """How a gray sensor turns its channel of the scene into pixels: ``(v * gain + offset) * shading``, ..."""

    gain: float
    offset: float
    jitter: float  # per-image std of the gain (NIR: illuminator) or of the offset (TIR: automatic gain control)
    shading: np.ndarray  # (H, W): the NIR illuminator's falloff, ones for TIR
    blur: float  # Gaussian sigma in pixels at image height 128
    noise: np.ndarray  # (2H, 2W) random noise to crop from
    columns: np.ndarray  # (2W,) fixed-pattern column offsets to crop from (thermal), zeros for NIR
    lut: np.ndarray


@dataclass(frozen=True, eq=False)
class _Rig:
    scene: Camera  # the RGB camera, its plate and pole with NIR and TIR channels appended
    nir: _GraySensor
    tir: _GraySensor


def _nir_sensor(rng: np.random.Generator, size: tuple[int, int]) -> _GraySensor:
    h, w = size
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.45
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
    falloff = rng.uniform(0.15, 0.45)
    return _GraySensor(
        gain=float(rng.uniform(0.85, 1.2)), offset=0.0, jitter=0.07,
        shading=(1 - falloff * ((ys / 0.6) ** 2 + (xs / 0.7) ** 2)).astype(np.float32),
        blur=float(rng.choice((0.0, 0.5, 0.9))),
        noise=rng.standard_normal((2 * h, 2 * w), dtype=np.float32) * rng.uniform(0.015, 0.04),
        columns=np.zeros(2 * w, np.float32), lut=gamma_lut(float(rng.uniform(0.8, 1.2))),
    )


def _tir_sensor(rng: np.random.Generator, size: tuple[int, int]) -> _GraySensor:
    h, w = size
    lo, hi = rng.uniform(0.02, 0.12), rng.uniform(0.9, 1.05)
    return _GraySensor(
        gain=float(1 / (hi - lo)), offset=float(-lo / (hi - lo)), jitter=0.0,
        shading=np.ones((h, w), np.float32), blur=float(rng.uniform(1.2, 1.8)),
        noise=rng.standard_normal((2 * h, 2 * w), dtype=np.float32) * rng.uniform(0.008, 0.02),
        columns=rng.normal(0, 0.008, 2 * w).astype(np.float32), lut=gamma_lut(float(rng.uniform(0.9, 1.1))),
    )


def _nir_plate(rng: np.random.Generator, plate: np.ndarray) -> np.ndarray:
    """The background's NIR reflectance: its own mix of the scene's colours, greenery bright."""
    centred = plate - plate.mean(axis=(0, 1))
    nir = rng.uniform(0.3, 0.55) + centred @ rng.normal(0, 0.6, 3).astype(np.float32)
    nir += 1.5 * np.maximum(plate[..., 1] - 0.5 * (plate[..., 0] + plate[..., 2]), 0)
    return np.clip(nir, 0, 1).astype(np.float32)


def _tir_plate(rng: np.random.Generator, plate: np.ndarray) -> np.ndarray:
    """The background's temperature: cool, smooth, a faint trace of the scene and a vertical gradient."""
    h = plate.shape[0]
    smooth = gaussian_blur(plate.mean(axis=2, keepdims=True), 3.0 * h / 128)[..., 0]
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
    tir = rng.uniform(0.15, 0.3) + rng.uniform(0.05, 0.15) * (smooth - smooth.mean()) + rng.uniform(-0.06, 0.06) * ys
    return tir.astype(np.float32)


def _rig(p: MultimodalParams, index: int) -> _Rig:
    rgb = random_camera(_stream(p, _CAMERA, index), index, p.size)
    rng = _stream(p, _SENSORS, index)
    plate = np.concatenate([rgb.plate, _nir_plate(rng, rgb.plate)[..., None], _tir_plate(rng, rgb.plate)[..., None]],
                           axis=2)
    pole = np.concatenate([rgb.pole, [rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.35)]]).astype(np.float32)
    return _Rig(replace(rgb, plate=plate, pole=pole), _nir_sensor(rng, p.size), _tir_sensor(rng, p.size))


# --- rendering ----------------------------------------------------------------------------------


def _develop_gray(sensor: _GraySensor, v: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """What a gray sensor makes of one (H, W) channel of a scene: an RGB image with three equal channels."""
    h, w = v.shape
    gain = sensor.gain * (1 + rng.normal(0, sensor.jitter)) if sensor.jitter else sensor.gain
    offset = sensor.offset + rng.normal(0, 0.02)
    v = (v * gain + offset) * sensor.shading
    sigma = sensor.blur * h / 128
    if sigma > 0.3:
        v = gaussian_blur(v[..., None], sigma)[..., 0]
    ny, nx = int(rng.integers(h)), int(rng.integers(w))
    v += sensor.noise[ny : ny + h, nx : nx + w] + sensor.columns[nx : nx + w]
    gray = sensor.lut[(clamp_unit(v) * 1023 + 0.5).astype(np.intp)]
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _render_sample(size: tuple[int, int], rig: _Rig, ident: Identity, rng: np.random.Generator) -> list[Image.Image]:
    """One scene of ``ident`` at ``rig``, as its RGB, NIR and TIR sensors see it (in :data:`MODALITIES` order)."""
    scene = compose(size, rig.scene, ident, rng, occluders=_OCCLUDERS)
    rgb = develop(rig.scene, np.ascontiguousarray(scene[..., :3]), rng)
    return [rgb, _develop_gray(rig.nir, scene[..., 3].copy(), rng), _develop_gray(rig.tir, scene[..., 4].copy(), rng)]


# --- the dataset --------------------------------------------------------------------------------

# What a random stream is for: the first element of its key.
_VISITS, _CAMERA, _SENSORS, _IMAGE, _SHAPE, _RGB_LOOK, _NIR_LOOK, _TIR_LOOK = range(1, 9)
_DOMAIN = 201
"""First key element after the versions, so no stream coincides with one of the Market-layout set's."""


def _stream(p: MultimodalParams, *key: int) -> np.random.Generator:
    return np.random.default_rng([p.seed, SCENE_VERSION, GENERATOR_VERSION, _DOMAIN, *key])


def _group_of(p: MultimodalParams, pid: int) -> tuple[int, int]:
    """(first pid of ``pid``'s group, ``pid``'s place in it); groups never straddle train and test."""
    start = 1 if pid <= p.num_ids_train else p.num_ids_train + 1
    offset = pid - start
    return start + offset - offset % _GROUP, offset % _GROUP


def _group(p: MultimodalParams, first: int) -> _Group:
    return _Group(
        shape=random_identity(_stream(p, _SHAPE, first)),
        rgb=_rgb_looks(_stream(p, _RGB_LOOK, first)),
        nir=_nir_looks(_stream(p, _NIR_LOOK, first)),
        tir=_tir_looks(_stream(p, _TIR_LOOK, first)),
    )


def _plan(p: MultimodalParams) -> list[tuple[str, int, int, int]]:
    """(folder, pid, camera, index) of every sample, in a fixed order."""
    plan = []
    for pid in range(1, p.num_ids_train + p.num_ids_test + 1):
        rng = _stream(p, _VISITS, pid)
        count = int(rng.integers(p.min_cameras_per_id, p.num_cameras + 1))
        folder = TRAIN_FOLDER if pid <= p.num_ids_train else TEST_FOLDER
        for cam in sorted(rng.choice(p.num_cameras, count, replace=False).tolist()):
            plan.extend((folder, pid, cam, k) for k in range(p.images_per_id_per_camera))
    return plan


def _write(out: Path, p: MultimodalParams) -> dict[str, dict[str, int]]:
    """Render every sample into ``out`` (RGBNT201 layout); returns the counts for the manifest."""
    for folder in (TRAIN_FOLDER, TEST_FOLDER):
        for modality in MODALITIES:
            (out / folder / MODALITY_FOLDERS[modality]).mkdir(parents=True)
    rigs = [_rig(p, c) for c in range(p.num_cameras)]
    groups: dict[int, _Group] = {}
    frames = [0] * p.num_cameras
    counts = {f: {"samples": 0, "ids": set(), "cameras": set()} for f in (TRAIN_FOLDER, TEST_FOLDER)}
    for folder, pid, cam, k in _plan(p):
        first, member = _group_of(p, pid)
        if first not in groups:
            groups[first] = _group(p, first)
        images = _render_sample(p.size, rigs[cam], groups[first].member(member), _stream(p, _IMAGE, pid, cam, k))
        frames[cam] += 1
        name = f"{pid:06d}_cam{cam + 1}_{frames[cam]:04d}_{k:02d}.jpg"
        for modality, image in zip(MODALITIES, images):
            save_image(image, out / folder / MODALITY_FOLDERS[modality] / name, p.jpeg_quality)
        c = counts[folder]
        c["samples"] += 1
        c["ids"].add(pid)
        c["cameras"].add(cam)
    return {
        f: {"samples": c["samples"], "images": c["samples"] * len(MODALITIES), "ids": len(c["ids"]),
            "cameras": len(c["cameras"])}
        for f, c in counts.items()
    }


def _manifest(p: MultimodalParams, counts: dict) -> dict:
    return {
        "generator": _GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "scene_version": SCENE_VERSION,
        "layout": "rgbnt201",
        "modalities": list(MODALITIES),
        "folders": {m: MODALITY_FOLDERS[m] for m in MODALITIES},
        "seed": p.seed,
        "params": asdict(p),
        "counts": counts,
    }


def read_multimodal_manifest(root: Path) -> dict | None:
    """The ``dataset.json`` of a set this module wrote, or None if ``root`` holds none."""
    return read_manifest_of(root, _GENERATOR)


def _up_to_date(manifest: dict | None, p: MultimodalParams) -> bool:
    return matches(manifest, p, GENERATOR_VERSION) and manifest.get("scene_version") == SCENE_VERSION


def generate_multimodal_synthetic(
    out: Path, params: MultimodalParams = DEFAULT_MULTIMODAL_PARAMS, replace_synthetic: bool = False
) -> Path:
    """Write a synthetic RGB/NIR/TIR set in RGBNT201 layout, plus ``dataset.json``, to ``out``; returns ``out``.

    Built in a temporary folder beside ``out`` and moved into place, so ``out``
    is either absent or complete. ``out`` must not exist or be empty;
    ``replace_synthetic`` allows replacing a set this module wrote, never other files.
    """
    p = replace(params, size=tuple(params.size))
    p.validate()
    return build(out, lambda tmp: _manifest(p, _write(tmp, p)), read_multimodal_manifest, replace_synthetic)


def default_multimodal_root(seed: int = DEFAULT_MULTIMODAL_PARAMS.seed) -> Path:
    """Where the default set is cached: beside the Market-layout set's folder, its name with ``-rgbnt`` appended."""
    return default_root(SCENE_VERSION, seed, "-rgbnt")


def ensure_multimodal_synthetic(
    root: Path | None = None, params: MultimodalParams = DEFAULT_MULTIMODAL_PARAMS
) -> Path:
    """The folder of a multi-modal synthetic set with ``params``, generated on first use and reused afterwards.

    Reuses ``root`` (default: :func:`default_multimodal_root`) when its manifest
    matches the settings, otherwise (re)generates it atomically; a concurrent
    process publishing the same set first is fine.
    """
    root = Path(root).expanduser().absolute() if root is not None else default_multimodal_root(params.seed)
    p = replace(params, size=tuple(params.size))
    return ensure(root, lambda r: _up_to_date(read_multimodal_manifest(r), p),
                  lambda r: generate_multimodal_synthetic(r, p, replace_synthetic=True))


def multimodal_version(manifest: dict) -> str:
    """A short string that changes whenever the images would: ``mm1-scene1-seed0-<hash of settings>``."""
    return (f"mm{manifest['generator_version']}-scene{manifest['scene_version']}-seed{manifest['seed']}-"
            f"{settings_digest(manifest)}")


__all__ = [
    "DEFAULT_MULTIMODAL_PARAMS",
    "GENERATOR_VERSION",
    "MODALITIES",
    "MODALITY_FOLDERS",
    "TEST_FOLDER",
    "TRAIN_FOLDER",
    "MultimodalParams",
    "default_multimodal_root",
    "ensure_multimodal_synthetic",
    "generate_multimodal_synthetic",
    "multimodal_version",
    "read_multimodal_manifest",
]
