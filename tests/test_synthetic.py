"""The synthetic dataset: deterministic, readable by the Market-1501 loader, protocol-complete, cached."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidbench.errors import UsageError
from reidbench.data import (
    default_synthetic_root, ensure_synthetic, generate_synthetic, load_dataset, load_market1501, read_manifest,
)
from reidbench.data.synthetic import market

SMALL = dict(num_ids_train=8, num_ids_test=6, num_cameras=4, images_per_id_per_camera=2,
             num_distractors=3, num_junk=2)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "set", **SMALL)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_same_bytes_other_seed_other_images(small_set, tmp_path):
    again = files(generate_synthetic(tmp_path / "again", **SMALL))
    first = files(small_set)
    assert again == first
    assert (small_set / "dataset.json").read_text() == (tmp_path / "again" / "dataset.json").read_text()
    other = files(generate_synthetic(tmp_path / "other", **{**SMALL, "seed": 1}))
    common = set(first) & set(other)
    assert sum(first[name] != other[name] for name in common) >= 0.9 * len(common)


def test_images_do_not_depend_on_the_other_counts(small_set, tmp_path):
    bigger = files(generate_synthetic(tmp_path / "bigger", **{**SMALL, "num_ids_train": 9, "num_junk": 0}))
    first = files(small_set)
    same = [n for n in first if n.startswith("bounding_box_train/0001_")]
    assert same and all(bigger[n] == first[n] for n in same)


def test_loads_as_market1501_with_the_protocol(small_set):
    ds = load_market1501(small_set)
    counts = ds.counts()
    manifest = read_manifest(small_set)
    assert counts["train"]["ids"] == 8 and counts["query"]["ids"] == 6 and counts["gallery"]["ids"] == 6
    assert counts["gallery"]["distractors"] == 3 and ds.dropped["gallery"] == 2  # junk dropped
    assert ds.num_cameras == 4
    assert manifest["counts"]["bounding_box_test"]["images"] == counts["gallery"]["images"] + 2
    assert manifest["params"]["seed"] == 0 and manifest["generator_version"] == market.GENERATOR_VERSION
    with Image.open(ds.query[0].path) as img:
        assert img.size == (64, 128) and img.mode == "RGB" and img.format == "JPEG"
    # train and test identities are disjoint, as in Market-1501
    assert not set(ds.train_pid_map) & {r.pid for r in ds.query}


def test_every_query_has_a_cross_camera_match(small_set):
    ds = load_market1501(small_set)
    gallery = {(r.pid, r.camid) for r in ds.gallery}
    for q in ds.query:
        assert any(pid == q.pid and cam != q.camid for pid, cam in gallery), q
    # one query per identity and camera, as in Market-1501
    assert len({(q.pid, q.camid) for q in ds.query}) == len(ds.query)


def test_identities_differ_more_than_images_of_one_identity(small_set):
    """Within a camera, same-identity images are closer in mean body colour than different identities."""
    ds = load_market1501(small_set)

    def body_colour(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            a = np.asarray(img, dtype=np.float32)
        h, w = a.shape[:2]
        return a[h // 5 : h * 9 // 10, w * 3 // 8 : w * 5 // 8].reshape(-1, 3).mean(0)

    feats = [(r.pid, r.camid, body_colour(r.path)) for r in ds.train]
    same, diff = [], []
    for (p1, c1, f1), (p2, c2, f2) in itertools.combinations(feats, 2):
        if c1 == c2:
            (same if p1 == p2 else diff).append(float(np.abs(f1 - f2).mean()))
    assert same and diff
    assert np.mean(same) < 0.6 * np.mean(diff)


def test_load_dataset_spec_names_it_synthetic(small_set):
    ds = load_dataset(f"synthetic:{small_set}")
    assert ds.name == "synthetic"
    assert ds.version.startswith(f"v{market.GENERATOR_VERSION}-seed0-")
    assert ds.counts() == load_market1501(small_set).counts()


def test_refuses_to_write_over_other_files(tmp_path, small_set):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        generate_synthetic(tmp_path / "busy", **SMALL)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="already holds a synthetic dataset"):
        generate_synthetic(small_set, **SMALL)
    (tmp_path / "empty").mkdir()
    generate_synthetic(tmp_path / "empty", **SMALL)
    assert read_manifest(tmp_path / "empty") is not None
    # nothing left behind beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]


@pytest.mark.parametrize(
    "bad", [{"images_per_id_per_camera": 1}, {"num_cameras": 10}, {"min_cameras_per_id": 1}, {"size": (16, 8)}]
)
def test_invalid_settings(tmp_path, bad):
    with pytest.raises(UsageError, match="synthetic dataset settings"):
        generate_synthetic(tmp_path / "x", **{**SMALL, **bad})
    assert not (tmp_path / "x").exists()


def test_cache_is_generated_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_CACHE", str(tmp_path / "cache"))
    root = default_synthetic_root()
    assert root == tmp_path / "cache" / f"synthetic-v{market.GENERATOR_VERSION}-seed0"
    assert ensure_synthetic(**SMALL) == root
    before = files(root)

    def no_rendering(*args, **kwargs):
        raise AssertionError("the cached set should have been reused")

    monkeypatch.setattr(market, "_write", no_rendering)
    assert ensure_synthetic(**SMALL) == root
    assert files(root) == before
    monkeypatch.undo()

    # other settings: the stale set is replaced atomically, and nothing is left beside it
    monkeypatch.setenv("REIDBENCH_CACHE", str(tmp_path / "cache"))
    ensure_synthetic(**{**SMALL, "num_junk": 0})
    assert json.loads((root / "dataset.json").read_text())["params"]["num_junk"] == 0
    assert [p.name for p in root.parent.iterdir()] == [root.name]
    assert load_dataset("synthetic", synthetic_root=root).dropped["gallery"] == 0


def test_cache_never_replaces_foreign_files(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(UsageError, match="not an empty folder"):
        ensure_synthetic(tmp_path, **SMALL)
