"""The multi-modal synthetic set: deterministic, RGBNT201 layout, gray NIR/TIR, complementary modalities, cached."""
from __future__ import annotations

import collections
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidbench.data import synthetic
from reidbench.data.synthetic import rgbnt
from reidbench.data.synthetic import (
    MODALITIES,
    MODALITY_FOLDERS,
    TEST_FOLDER,
    TRAIN_FOLDER,
    MultimodalParams,
    default_multimodal_root,
    ensure_multimodal_synthetic,
    generate_multimodal_synthetic,
    read_multimodal_manifest,
)
from reidbench.errors import UsageError

SMALL = MultimodalParams(num_ids_train=8, num_ids_test=12, num_cameras=3, images_per_id_per_camera=2)
TINY = MultimodalParams(num_ids_train=2, num_ids_test=2, num_cameras=2, images_per_id_per_camera=1)
FOLDERS = [MODALITY_FOLDERS[m] for m in MODALITIES]
#: Which of its group's two looks each member of a group of four wears, per modality (the module's design).
LOOKS = {"RGB": (0, 0, 1, 1), "NI": (0, 1, 0, 1), "TI": (0, 1, 1, 0)}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_multimodal_synthetic(tmp_path_factory.mktemp("mm") / "set", SMALL)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def parse(name: str) -> tuple[int, int]:
    """Upstream RGBNT201's parse: (pid, 1-based camera)."""
    return int(name.split("_")[0][0:6]), int(name.split("_")[1][3])


def pixels(root: Path, split: str, folder: str, name: str) -> np.ndarray:
    with Image.open(root / split / folder / name) as img:
        assert img.mode == "RGB" and img.format == "JPEG" and img.size == (64, 128)
        return np.asarray(img, dtype=np.float32)


def samples(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / split / "RGB").iterdir())


def test_same_params_same_bytes(small_set, tmp_path):
    first = files(small_set)
    assert files(generate_multimodal_synthetic(tmp_path / "again", SMALL)) == first
    assert (tmp_path / "again" / "dataset.json").read_text() == (small_set / "dataset.json").read_text()
    other = files(generate_multimodal_synthetic(tmp_path / "other", replace(SMALL, seed=1)))
    common = set(first) & set(other)
    assert sum(first[n] != other[n] for n in common) >= 0.9 * len(common)
    # more test identities: the training samples stay the same files
    bigger = files(generate_multimodal_synthetic(tmp_path / "bigger", replace(SMALL, num_ids_test=13)))
    train = [n for n in first if n.startswith(TRAIN_FOLDER)]
    assert train and all(bigger[n] == first[n] for n in train)


def test_rgbnt201_layout_and_names(small_set):
    manifest = read_multimodal_manifest(small_set)
    assert manifest["layout"] == "rgbnt201" and manifest["modalities"] == ["rgb", "nir", "tir"]
    assert sorted(p.name for p in small_set.iterdir()) == sorted([TRAIN_FOLDER, TEST_FOLDER, "dataset.json"])
    for split, n_ids in ((TRAIN_FOLDER, 8), (TEST_FOLDER, 12)):
        assert sorted(p.name for p in (small_set / split).iterdir()) == sorted(FOLDERS)
        names = [sorted(p.name for p in (small_set / split / f).iterdir()) for f in FOLDERS]
        assert names[0] and names[0] == names[1] == names[2]  # one file of the same name per modality
        parsed = [parse(n) for n in names[0]]
        assert {pid for pid, _ in parsed} == set(range(1, 9) if split == TRAIN_FOLDER else range(9, 21))
        assert {cam for _, cam in parsed} <= {1, 2, 3}
        counts = manifest["counts"][split]
        assert counts["ids"] == n_ids and counts["samples"] == len(names[0]) and counts["images"] == 3 * len(names[0])


def test_identities_disjoint_and_every_test_sample_has_a_cross_camera_match(small_set):
    train = {parse(n)[0] for n in samples(small_set, TRAIN_FOLDER)}
    test = [parse(n) for n in samples(small_set, TEST_FOLDER)]
    assert not train & {pid for pid, _ in test}
    cameras = collections.defaultdict(set)
    for pid, cam in test:
        cameras[pid].add(cam)
    assert len(cameras) == 12 and all(len(c) >= 2 for c in cameras.values())


def test_nir_and_tir_are_gray_rgb_is_not(small_set):
    names = samples(small_set, TEST_FOLDER)[::5]
    colour = 0
    for name in names:
        for folder in ("NI", "TI"):
            a = pixels(small_set, TEST_FOLDER, folder, name)
            assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]), (folder, name)
        rgb = pixels(small_set, TEST_FOLDER, "RGB", name)
        colour += np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 3
    assert colour == len(names)


def per_identity_torso(root: Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(pids, median RGB luminance, median NIR) of the torso region, per identity over all its samples."""
    lum, nir = collections.defaultdict(list), collections.defaultdict(list)
    for split in (TRAIN_FOLDER, TEST_FOLDER):
        for name in samples(root, split):
            rgb, ni = pixels(root, split, "RGB", name), pixels(root, split, "NI", name)
            torso = (slice(42, 70), slice(27, 37))
            lum[parse(name)[0]].append(float((rgb[torso] @ np.array([0.299, 0.587, 0.114])).mean()))
            nir[parse(name)[0]].append(float(ni[torso][..., 0].mean()))
    pids = sorted(lum)
    return pids, np.array([np.median(lum[p]) for p in pids]), np.array([np.median(nir[p]) for p in pids])


def test_nir_is_not_the_luminance_of_rgb(small_set):
    pids, lum, nir = per_identity_torso(small_set)
    assert len(pids) == 20
    assert abs(np.corrcoef(lum, nir)[0, 1]) < 0.6
    assert nir.std() > 25  # garments' NIR reflectances spread over the range, not a constant


def coarse_texture(a: np.ndarray) -> float:
    """Spread of the 8x8 block means of the outer columns, where the background shows: clutter, not noise."""
    edges = np.concatenate([a[:, :8], a[:, -8:]], axis=1)
    return float(edges.reshape(16, 8, 2, 8).mean(axis=(1, 3)).std())


def test_tir_body_is_warmer_than_the_cool_smooth_background(small_set):
    body, background, texture = [], [], []
    for name in samples(small_set, TEST_FOLDER):
        ti = pixels(small_set, TEST_FOLDER, "TI", name)[..., 0]
        rgb = pixels(small_set, TEST_FOLDER, "RGB", name).mean(axis=2)
        body.append(ti[40:115, 26:38].mean())
        background.append(np.concatenate([ti[:, :5], ti[:, -5:]], axis=1).mean())
        texture.append((coarse_texture(ti), coarse_texture(rgb)))
    body, background = np.array(body), np.array(background)
    assert (body > background + 10).mean() >= 0.95
    assert np.median(body - background) > 50
    tir_texture, rgb_texture = np.array(texture).T
    assert np.median(tir_texture) < 0.5 * np.median(rgb_texture)


def stripe_features(root: Path, split: str, folder: str, name: str) -> np.ndarray:
    """Mean of the image's central column in 8 horizontal stripes (one value per stripe and channel)."""
    a = pixels(root, split, folder, name)
    stripes = np.array_split(a[16:120, 24:40], 8, axis=0)
    f = np.concatenate([s.reshape(-1, 3).mean(0) for s in stripes])
    return f if folder == "RGB" else f[::3]


def test_each_modality_pairs_different_group_mates(small_set):
    """In each modality, an identity looks most like the group-mate that shares its look in that modality."""
    feats = collections.defaultdict(lambda: collections.defaultdict(list))
    for split in (TRAIN_FOLDER, TEST_FOLDER):
        for name in samples(small_set, split):
            for folder in FOLDERS:
                feats[parse(name)[0]][folder].append(stripe_features(small_set, split, folder, name))
    groups = [range(1, 5), range(5, 9), range(9, 13), range(13, 17), range(17, 21)]
    for folder, looks in LOOKS.items():
        hits = 0
        for group in groups:
            means = [np.median(feats[pid][folder], axis=0) for pid in group]
            for i in range(4):
                d = [np.abs(means[i] - means[j]).mean() if j != i else np.inf for j in range(4)]
                hits += looks[int(np.argmin(d))] == looks[i]
        assert hits >= 0.7 * 20, (folder, hits)  # chance: a third


def mean_average_precision(x: np.ndarray, pids: np.ndarray, cams: np.ndarray) -> float:
    """Query == gallery == the test folder, same identity and camera removed (the RGBNT201 protocol)."""
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    aps = []
    for i in range(len(x)):
        keep = ~((pids == pids[i]) & (cams == cams[i]))
        match = (pids[keep] == pids[i])[np.argsort(d[i][keep], kind="stable")]
        aps.append((np.cumsum(match)[match] / (np.flatnonzero(match) + 1)).mean())
    return float(np.mean(aps))


def test_all_three_modalities_identify_better_than_any_one(small_set):
    names = samples(small_set, TEST_FOLDER)
    pids, cams = (np.array(v) for v in zip(*(parse(n) for n in names)))
    feats = {}
    for folder in FOLDERS:
        f = np.stack([stripe_features(small_set, TEST_FOLDER, folder, n) for n in names])
        feats[folder] = (f - f.mean(0)) / (f.std(0) + 1e-6) / np.sqrt(f.shape[1])
    single = {folder: mean_average_precision(f, pids, cams) for folder, f in feats.items()}
    fused = mean_average_precision(np.concatenate(list(feats.values()), axis=1), pids, cams)
    assert fused > max(single.values()) + 0.05, (single, fused)


def test_cache_is_generated_once_reused_and_regenerated_when_params_change(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_CACHE", str(tmp_path / "cache"))
    root = default_multimodal_root()
    assert root.parent == synthetic.default_synthetic_root().parent
    assert root.name == synthetic.default_synthetic_root().name + "-rgbnt"
    assert ensure_multimodal_synthetic(params=TINY) == root
    before = files(root)

    def no_rendering(*args, **kwargs):
        raise AssertionError("the cached set should have been reused")

    with monkeypatch.context() as m:
        m.setattr(rgbnt, "_write", no_rendering)
        assert ensure_multimodal_synthetic(params=TINY) == root
    assert files(root) == before
    # other settings: the stale set is replaced atomically, and nothing is left beside it
    ensure_multimodal_synthetic(params=replace(TINY, num_ids_test=3))
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["params"]["num_ids_test"] == 3 and manifest["counts"][TEST_FOLDER]["ids"] == 3
    assert [p.name for p in root.parent.iterdir()] == [root.name]
    # an older generator version is regenerated too
    monkeypatch.setattr(rgbnt, "GENERATOR_VERSION", rgbnt.GENERATOR_VERSION + 1)
    ensure_multimodal_synthetic(params=replace(TINY, num_ids_test=3))
    assert read_multimodal_manifest(root)["generator_version"] == rgbnt.GENERATOR_VERSION


def test_refuses_foreign_and_existing_folders(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        generate_multimodal_synthetic(tmp_path / "busy", TINY)
    with pytest.raises(UsageError, match="not an empty folder"):
        ensure_multimodal_synthetic(tmp_path / "busy", TINY)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    # the RGB synthetic set is not ours to replace either
    rgb = synthetic.generate_synthetic(tmp_path / "rgb", num_ids_train=2, num_ids_test=2, num_cameras=2,
                                       images_per_id_per_camera=2, num_distractors=0, num_junk=0)
    with pytest.raises(UsageError, match="not an empty folder"):
        ensure_multimodal_synthetic(rgb, TINY)
    assert synthetic.read_manifest(rgb) is not None
    ours = generate_multimodal_synthetic(tmp_path / "ours", TINY)
    with pytest.raises(UsageError, match="already holds a synthetic dataset"):
        generate_multimodal_synthetic(ours, TINY)
    generate_multimodal_synthetic(ours, replace(TINY, seed=2), replace_synthetic=True)
    assert read_multimodal_manifest(ours)["seed"] == 2
    (tmp_path / "empty").mkdir()
    generate_multimodal_synthetic(tmp_path / "empty", TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "ours", "rgb"]


@pytest.mark.parametrize("bad", [{"num_cameras": 10}, {"min_cameras_per_id": 1}, {"images_per_id_per_camera": 0},
                                 {"size": (16, 8)}, {"num_ids_test": 0}])
def test_invalid_settings(tmp_path, bad):
    with pytest.raises(UsageError, match="multi-modal synthetic dataset settings"):
        generate_multimodal_synthetic(tmp_path / "x", replace(TINY, **bad))
    assert not (tmp_path / "x").exists()
