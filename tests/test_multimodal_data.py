"""Multi-modal loaders (RGBNT201, RGBNT100, MSVR310) on small hand-made trees of empty files.

The files are empty, so any loader that opened an image would fail: these also
check that loading only lists folders and parses names.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from reidbench.data import load_dataset, load_msvr310, load_rgbnt100, load_rgbnt201, parse_dataset_spec
from reidbench.data.records import View
from reidbench.errors import UsageError

MODALITIES = ("rgb", "nir", "tir")


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


# --- RGBNT201 -----------------------------------------------------------------------------------

TRAIN_201 = ["000003_cam3_0_00.jpg", "000001_cam2_0_01.jpg", "000001_cam1_0_00.jpg"]
TEST_201 = ["000200_cam4_0_01.jpg", "000100_cam1_0_00.jpg", "000100_cam2_0_00.jpg"]


def rgbnt201_tree(root: Path) -> Path:
    for modality in ("RGB", "NI", "TI"):
        touch(root / "train_171" / modality, *TRAIN_201, "Thumbs.db", "notes.txt")
        touch(root / "test" / modality, *TEST_201, ".DS_Store")
    touch(root / "train_171" / "RGB", "000003_cam1_0_05.jpg")  # no TI partner: incomplete
    touch(root / "train_171" / "NI", "000003_cam1_0_05.jpg")
    touch(root / "train_171" / "NI", "000009_cam1_0_00.jpg")  # NI only: incomplete too
    touch(root / "test" / "TI", "000100_cam3_0_07.png")  # TI only
    return root


def test_rgbnt201_counts_views_and_query_is_gallery(tmp_path):
    ds = load_rgbnt201(rgbnt201_tree(tmp_path))
    assert (ds.name, ds.root, ds.modalities, ds.exclusion) == ("rgbnt201", tmp_path, MODALITIES, "camera")
    assert ds.counts() == {
        "train": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
        "query": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
        "gallery": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
    }
    assert ds.incomplete == {"train": 2, "query": 1, "gallery": 1}
    assert ds.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert ds.train_pid_map == {1: 0, 3: 1}
    # sorted by file name; pid from the first six characters, camera 1-based in the name -> 0-based
    assert [(r.path.name, r.pid, r.camid, r.scene) for r in ds.train] == [
        ("000001_cam1_0_00.jpg", 0, 0, None),
        ("000001_cam2_0_01.jpg", 0, 1, None),
        ("000003_cam3_0_00.jpg", 1, 2, None),
    ]
    first = ds.train[0]
    assert first.views == tuple(View(tmp_path / "train_171" / m / "000001_cam1_0_00.jpg") for m in ("RGB", "NI", "TI"))
    assert first.path == first.views[0].path and first.sources() == first.views
    # query and gallery are both the whole test folder, with original pids
    assert ds.query == ds.gallery and ds.query is not ds.gallery
    assert [(r.path.name, r.pid, r.camid) for r in ds.query] == [
        ("000100_cam1_0_00.jpg", 100, 0), ("000100_cam2_0_00.jpg", 100, 1), ("000200_cam4_0_01.jpg", 200, 3),
    ]
    assert all(v.path.parent.parent == tmp_path / "test" for r in ds.gallery for v in r.views)
    assert "modalities: rgb, nir, tir" in ds.describe() and "2 train, 1 query, 1 gallery" in ds.describe()


def test_rgbnt201_through_a_dataset_spec(tmp_path):
    rgbnt201_tree(tmp_path)
    assert parse_dataset_spec(f"RGBNT201:{tmp_path}") == ("rgbnt201", tmp_path)
    ds = load_dataset("rgbnt201:" + str(tmp_path))
    assert ds.name == "rgbnt201" and ds.counts()["train"]["images"] == 3 and ds.multimodal
    assert load_dataset(f"msvr310:{msvr310_tree(tmp_path / 'm')}").exclusion == "scene"
    assert load_dataset(f"rgbnt100:{rgbnt100_tree(tmp_path / 'v')}").name == "rgbnt100"


def test_rgbnt201_parent_folder_gets_a_hint(tmp_path):
    rgbnt201_tree(tmp_path / "RGBNT201")  # upstream's root is the folder holding RGBNT201/
    with pytest.raises(UsageError) as err:
        load_rgbnt201(tmp_path)
    msg = str(err.value)
    assert f"folder {tmp_path / 'train_171'} is missing" in msg
    assert f"It exists under {tmp_path / 'RGBNT201'}: pass that folder as the root." in msg


def test_rgbnt201_with_the_rgb_modality_only(tmp_path):
    touch(tmp_path / "train_171" / "RGB", *TRAIN_201)
    for modality in ("RGB", "NI", "TI"):
        touch(tmp_path / "test" / modality, *TEST_201)
    with pytest.raises(UsageError) as err:
        load_rgbnt201(tmp_path)
    msg = str(err.value)
    assert f"{tmp_path / 'train_171'} has no NI/ and no TI/" in msg
    assert "expected train_171/ and test/, each holding RGB/, NI/ and TI/" in msg


def test_rgbnt201_names_that_differ_across_modalities(tmp_path):
    rgbnt201_tree(tmp_path)
    for modality in ("NI", "TI"):
        for path in (tmp_path / "test" / modality).iterdir():
            path.rename(path.with_name(f"{modality.lower()}_{path.name}"))
    with pytest.raises(UsageError) as err:
        load_rgbnt201(tmp_path)
    msg = str(err.value)
    assert f"no sample in {tmp_path / 'test'} has all three modalities: 3 of 3 RGB/ images" in msg
    assert "(e.g. RGB/000100_cam1_0_00.jpg, NI/ni_000100_cam1_0_00.jpg, TI/ti_000100_cam1_0_00.jpg)" in msg
    for path in (tmp_path / "test" / "NI").iterdir():
        path.unlink()
    with pytest.raises(UsageError, match=r"\(e\.g\. RGB/000100_cam1_0_00\.jpg, NI/ holds no image, TI/ti_000100"):
        load_rgbnt201(tmp_path)


def test_rgbnt201_empty_rgb_folder(tmp_path):
    rgbnt201_tree(tmp_path)
    for path in (tmp_path / "test" / "RGB").iterdir():
        path.unlink()
    with pytest.raises(UsageError, match=r"test holds no .jpg/.jpeg/.png images in RGB/, so no sample"):
        load_rgbnt201(tmp_path)


def test_rgbnt201_bad_names_are_quoted(tmp_path):
    rgbnt201_tree(tmp_path)
    bad = ["img_a.jpg", "x.jpg", "000001_cam0_0_00.jpg", "000001_c_0.jpg", "0000a1_cam1_0.jpg", "0001_cam+_0.jpg"]
    for modality in ("RGB", "NI", "TI"):
        touch(tmp_path / "train_171" / modality, *bad)
    with pytest.raises(UsageError) as err:
        load_rgbnt201(tmp_path)
    msg = str(err.value)
    assert f"6 of 9 samples in {tmp_path / 'train_171'} have file names that do not match" in msg
    assert "as in 000001_cam1_0_00.jpg" in msg and "and 1 more" in msg


# --- RGBNT100 -----------------------------------------------------------------------------------


def rgbnt100_tree(root: Path) -> Path:
    rgbir = root / "rgbir"
    touch(rgbir / "bounding_box_train", "0539_c0002_009.jpg", "0501_c0001_001.jpg", "0501_c0003_002.jpg",
          "0000_c0001_003.jpg", "-1_c0001_004.jpg", "Thumbs.db")  # distractor and junk dropped
    touch(rgbir / "query", "0503_c0001_010.jpg", "0505_c0008_011.jpg", "notes.txt")
    touch(rgbir / "bounding_box_test", "0503_c0002_012.jpg", "0505_c0001_013.jpg", "0000_c0004_014.jpg",
          "-1_c0001_015.jpg")  # distractor kept, junk dropped
    return root


def test_rgbnt100_three_strips_counts_and_protocol(tmp_path):
    ds = load_rgbnt100(rgbnt100_tree(tmp_path))
    assert (ds.name, ds.modalities, ds.exclusion) == ("rgbnt100", MODALITIES, "camera")
    assert ds.counts() == {
        "train": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
        "query": {"ids": 2, "images": 2, "cameras": 2, "distractors": 0},
        "gallery": {"ids": 2, "images": 3, "cameras": 3, "distractors": 1},
    }
    assert ds.dropped == {"train": 2, "query": 0, "gallery": 1}
    assert ds.incomplete == {"train": 0, "query": 0, "gallery": 0}
    assert ds.train_pid_map == {501: 0, 539: 1}
    assert [(r.path.name, r.pid, r.camid) for r in ds.train] == [
        ("0501_c0001_001.jpg", 0, 0), ("0501_c0003_002.jpg", 0, 2), ("0539_c0002_009.jpg", 1, 1),
    ]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 3), (503, 1), (505, 0)]
    record = ds.query[1]
    path = tmp_path / "rgbir" / "query" / "0505_c0008_011.jpg"
    assert (record.path, record.pid, record.camid) == (path, 505, 7)
    assert record.views == (View(path, 0, 3), View(path, 1, 3), View(path, 2, 3))


def test_rgbnt100_roots(tmp_path):
    rgbnt100_tree(tmp_path / "RGBNT100")
    ds = load_rgbnt100(tmp_path / "RGBNT100" / "rgbir")  # rgbir/ itself is accepted as the root
    assert ds.counts()["train"]["images"] == 3 and ds.root == tmp_path / "RGBNT100" / "rgbir"
    with pytest.raises(UsageError) as err:  # upstream's root, the folder holding RGBNT100/
        load_rgbnt100(tmp_path)
    assert f"folder {tmp_path / 'rgbir'} is missing" in str(err.value)
    assert f"It exists under {tmp_path / 'RGBNT100'}: pass that folder as the root." in str(err.value)


def test_rgbnt100_bad_names_and_missing_split(tmp_path):
    rgbnt100_tree(tmp_path)
    touch(tmp_path / "rgbir" / "query", "0503_x0001_020.jpg", "-5_c0001_021.jpg")
    with pytest.raises(UsageError, match=r"2 of 4 files in .*query do not match .* -5_c0001_021.jpg, 0503_x0001_020"):
        load_rgbnt100(tmp_path)
    (tmp_path / "rgbir" / "query").rename(tmp_path / "rgbir" / "queries")
    with pytest.raises(UsageError, match=r"folder .*rgbir/query is missing; expected rgbir/ holding"):
        load_rgbnt100(tmp_path)


# --- MSVR310 ------------------------------------------------------------------------------------


def msvr310_sample(split: Path, name: str, modalities: tuple[str, ...] = ("vis", "ni", "th")) -> None:
    for modality in modalities:
        touch(split / name[:4] / modality, name)


def msvr310_tree(root: Path) -> Path:
    train, query, test = (root / f for f in ("bounding_box_train", "query3", "bounding_box_test"))
    for name in ("0268_s000_v0_000.jpg", "0268_s003_v5_001.jpg", "0012_s001_v7_000.jpg"):
        msvr310_sample(train, name)
    msvr310_sample(train, "0012_s001_v2_001.jpg", ("vis", "ni"))  # no thermal file: incomplete
    msvr310_sample(train, "0012_s001_v3_002.jpg", ("ni", "th"))  # no visible file: incomplete
    touch(train / "0268" / "vis", "notes.txt")  # not an image: ignored
    touch(train, "Thumbs.db", ".DS_Store")  # plain files next to vehicle folders: ignored
    msvr310_sample(query, "0300_s002_v1_000.jpg")
    for name in ("0300_s002_v4_001.jpg", "0300_s005_v1_002.jpg", "0301_s002_v0_000.jpg"):
        msvr310_sample(test, name)
    return root


def test_msvr310_counts_scenes_cameras_and_views(tmp_path):
    ds = load_msvr310(msvr310_tree(tmp_path))
    assert (ds.name, ds.modalities, ds.exclusion) == ("msvr310", MODALITIES, "scene")
    assert ds.counts() == {
        "train": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
        "query": {"ids": 1, "images": 1, "cameras": 1, "distractors": 0},
        "gallery": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
    }
    assert ds.incomplete == {"train": 2, "query": 0, "gallery": 0}
    assert ds.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert ds.train_pid_map == {12: 0, 268: 1}
    # vehicle name[0:4], scene name[6:9], camera name[11] (already 0-based)
    assert [(r.path.name, r.pid, r.camid, r.scene) for r in ds.train] == [
        ("0012_s001_v7_000.jpg", 0, 7, 1), ("0268_s000_v0_000.jpg", 1, 0, 0), ("0268_s003_v5_001.jpg", 1, 5, 3),
    ]
    assert [(r.pid, r.camid, r.scene) for r in ds.gallery] == [(300, 4, 2), (300, 1, 5), (301, 0, 2)]
    vehicle = tmp_path / "query3" / "0300"
    name = "0300_s002_v1_000.jpg"
    assert ds.query[0].views == (View(vehicle / "vis" / name), View(vehicle / "ni" / name), View(vehicle / "th" / name))
    assert ds.query[0].path == vehicle / "vis" / name


def test_msvr310_vehicle_folder_that_is_not_a_number(tmp_path):
    msvr310_tree(tmp_path)
    (tmp_path / "bounding_box_test" / "thumbs").mkdir()
    with pytest.raises(UsageError, match=r"1 folders in .*bounding_box_test are not vehicle ids .*: thumbs"):
        load_msvr310(tmp_path)


def test_msvr310_vehicle_without_a_modality_folder(tmp_path):
    msvr310_tree(tmp_path)
    touch(tmp_path / "query3" / "0302" / "vis", "0302_s001_v1_000.jpg")
    with pytest.raises(UsageError) as err:
        load_msvr310(tmp_path)
    assert f"{tmp_path / 'query3' / '0302'} has no ni/ and no th/" in str(err.value)
    assert "with vis/, ni/ and th/" in str(err.value)


def test_msvr310_names_that_differ_and_bad_cameras(tmp_path):
    msvr310_tree(tmp_path)
    touch(tmp_path / "query3" / "0300" / "th", "0300_s002_v1_000.jpg")
    (tmp_path / "query3" / "0300" / "th" / "0300_s002_v1_000.jpg").rename(tmp_path / "query3" / "0300" / "th" / "t.jpg")
    with pytest.raises(UsageError) as err:
        load_msvr310(tmp_path)
    assert "no sample in" in str(err.value) and "1 of 1 vis/ images have no file of the same name" in str(err.value)
    assert "(e.g. 0300/vis/0300_s002_v1_000.jpg, 0300/ni/0300_s002_v1_000.jpg, 0300/th/t.jpg)" in str(err.value)
    msvr310_sample(tmp_path / "query3", "0300_s002_v8_003.jpg")  # camera 8: upstream asserts 0..7
    with pytest.raises(UsageError, match=r"1 of 1 samples in .*query3 have file names .* 0300_s002_v8_003.jpg"):
        load_msvr310(tmp_path)


def test_msvr310_parent_folder_gets_a_hint(tmp_path):
    msvr310_tree(tmp_path / "MSVR310")
    with pytest.raises(UsageError, match=r"It exists under .*MSVR310: pass that folder as the root"):
        load_msvr310(tmp_path)
