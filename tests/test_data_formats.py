"""Dataset parsers on small fake trees: counts, the protocol's drops, relabelling, and every error."""
from __future__ import annotations

from pathlib import Path

import pytest

from reidbench.errors import UsageError
from reidbench.data import (
    DATASET_KINDS, ImageRecord, ReidDataset, load_dataset, load_dukemtmc, load_market1501, load_msmt17, load_veri776, parse_dataset_spec,
)


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def market_tree(root: Path) -> Path:
    touch(
        root / "bounding_box_train",
        "0007_c3s1_000100_01.jpg",
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0000_c1s1_000001_01.jpg",  # distractor: dropped from train
        "-1_c1s1_000002_01.jpg",  # junk: dropped
        "Thumbs.db",  # not an image: ignored
    )
    touch(root / "query", "0002_c1s1_001000_01.jpg", "0007_c2s1_001100_01.jpg", "-1_c2s1_001101_01.jpg")
    touch(
        root / "bounding_box_test",
        "0002_c6s1_002000_01.jpg",
        "0007_c1s1_002100_01.jpg",
        "0000_c3s1_002200_01.jpg",  # distractor: kept
        "0000_c4s1_002300_01.jpg",
        "-1_c4s1_002400_01.jpg",  # junk: dropped
    )
    return root


def test_market1501_counts_protocol_and_relabelling(tmp_path):
    ds = load_market1501(market_tree(tmp_path))
    assert ds.name == "market1501" and ds.root == tmp_path and ds.version is None
    assert ds.counts() == {
        "train": {"ids": 2, "images": 3, "cameras": 3, "distractors": 0},
        "query": {"ids": 2, "images": 2, "cameras": 2, "distractors": 0},
        "gallery": {"ids": 2, "images": 4, "cameras": 4, "distractors": 2},
    }
    assert ds.dropped == {"train": 2, "query": 1, "gallery": 1}
    # train pids are contiguous labels, in order of the original pid; the map keeps the original
    assert ds.train_pid_map == {2: 0, 7: 1}
    assert ds.num_train_pids == 2
    assert [(r.path.name, r.pid, r.camid) for r in ds.train] == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c3s1_000100_01.jpg", 1, 2),
    ]
    # query and gallery keep the original pids; cameras are 0-based
    assert [(r.pid, r.camid) for r in ds.query] == [(2, 0), (7, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 2), (0, 3), (2, 5), (7, 0)]
    assert all(isinstance(r, ImageRecord) and r.path.is_file() for r in ds.gallery)
    assert ds.num_cameras == 6
    assert "distractor" in ds.describe() and "1 query" in ds.describe()


def test_records_are_frozen_and_from_splits_relabels(tmp_path):
    record = ImageRecord(tmp_path / "a.jpg", 5, 0)
    with pytest.raises(AttributeError):
        record.pid = 1  # type: ignore[misc]
    ds = ReidDataset.from_splits("x", tmp_path, [record, ImageRecord(tmp_path / "b.jpg", 9, 1)], [], [])
    assert [r.pid for r in ds.train] == [0, 1] and ds.train_pid_map == {5: 0, 9: 1}
    assert ds.counts()["train"]["ids"] == 2  # label 0 is an identity, not a distractor


def test_dukemtmc_uses_market_layout(tmp_path):
    touch(tmp_path / "bounding_box_train", "0001_c2_f0046182.jpg", "0005_c8_f0000001.jpg")
    touch(tmp_path / "query", "0010_c1_f0000002.jpg")
    touch(tmp_path / "bounding_box_test", "0010_c5_f0000003.jpg", "0000_c7_f0000004.jpg")
    ds = load_dukemtmc(tmp_path)
    assert ds.name == "dukemtmc"
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 1), (1, 7)]
    assert ds.train_pid_map == {1: 0, 5: 1}
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 6), (10, 4)]
    assert ds.num_cameras == 8


def test_veri776_three_digit_cameras(tmp_path):
    touch(tmp_path / "image_train", "0030_c008_00049745_0.jpg", "0031_c001_00000001_0.jpg")
    touch(tmp_path / "image_query", "0002_c002_00030600_0.jpg")
    touch(tmp_path / "image_test", "0002_c020_00084180_0.jpg", "0002_c002_00030605_1.jpg")
    ds = load_veri776(tmp_path)
    assert ds.name == "veri776"
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 7), (1, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(2, 1), (2, 19)]
    assert ds.num_cameras == 20


def msmt_tree(root: Path, version: str = "V1") -> Path:
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": (train_dir, ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                                       "0001/0001_003_15_0303afternoon_0001_1.jpg 1"]),
        "list_val.txt": (train_dir, ["0000/0000_001_05_0303morning_0020_0.jpg 0"]),
        "list_query.txt": (test_dir, ["0000/0000_000_02_0303noon_0001_0.jpg 0"]),
        "list_gallery.txt": (test_dir, ["0000/0000_001_03_0303noon_0002_0.jpg 0",
                                        "0003/0003_000_12_0303noon_0003_0.jpg 3", ""]),
    }
    for list_name, (folder, lines) in lists.items():
        touch(root / folder, *[line.split()[0] for line in lines if line])
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_versions_merge_train_val(tmp_path, version):
    ds = load_msmt17(msmt_tree(tmp_path, version))
    assert ds.name == "msmt17" and ds.version == version
    # train + val merged; cameras are the 3rd '_' field, 1-based in the file
    assert sorted((r.path.name, r.pid, r.camid) for r in ds.train) == [
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("0000_001_05_0303morning_0020_0.jpg", 0, 4),
        ("0001_003_15_0303afternoon_0001_1.jpg", 1, 14),
    ]
    # MSMT17 label 0 is a real identity: stored as pid 1, because pid 0 means distractor
    assert ds.train_pid_map == {1: 0, 2: 1}
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 1)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 2), (4, 11)]
    assert ds.counts()["gallery"]["distractors"] == 0
    assert all(r.path.is_file() for r in ds.train + ds.query + ds.gallery)


def test_msmt17_errors(tmp_path):
    root = msmt_tree(tmp_path / "both", "V1")
    msmt_tree(root, "V2")
    with pytest.raises(UsageError, match="both V1 and V2"):
        load_msmt17(root)

    (tmp_path / "neither").mkdir()
    with pytest.raises(UsageError, match=r"train/ \+ test/ \(V1\) or mask_train_v2/"):
        load_msmt17(tmp_path / "neither")

    nested = msmt_tree(tmp_path / "parent" / "MSMT17_V1")
    with pytest.raises(UsageError, match=f"under {nested}"):
        load_msmt17(nested.parent)

    root = msmt_tree(tmp_path / "nolist")
    (root / "list_val.txt").unlink()
    with pytest.raises(UsageError, match=r"list_val.txt is missing"):
        load_msmt17(root)

    root = msmt_tree(tmp_path / "badline")
    (root / "list_query.txt").write_text("0000/0000_000_02_x.jpg 0\njunk\n0000/nocamera.jpg 0\n")
    with pytest.raises(UsageError, match=r"2 lines of .*list_query.txt.*line 2: 'junk', line 3"):
        load_msmt17(root)

    root = msmt_tree(tmp_path / "absent")
    (root / "test" / "0003" / "0003_000_12_0303noon_0003_0.jpg").unlink()
    with pytest.raises(UsageError, match=r"list_gallery.txt names .*0003_000_12.* which does not exist"):
        load_msmt17(root)


def test_missing_folder_names_it_and_the_expectation(tmp_path):
    market_tree(tmp_path)
    (tmp_path / "query").rename(tmp_path / "queries")
    with pytest.raises(UsageError) as err:
        load_market1501(tmp_path)
    assert f"folder {tmp_path / 'query'} is missing" in str(err.value)
    assert "0002_c1s1_000451_03.jpg" in str(err.value)


def test_dataset_one_level_down_gets_a_hint(tmp_path):
    market_tree(tmp_path / "Market-1501-v15.09.15")
    with pytest.raises(UsageError, match=r"It exists under .*Market-1501-v15.09.15: pass that folder"):
        load_market1501(tmp_path)


def test_empty_folder(tmp_path):
    market_tree(tmp_path)
    for f in (tmp_path / "bounding_box_test").iterdir():
        f.unlink()
    with pytest.raises(UsageError, match=r"bounding_box_test has no .jpg/.jpeg/.png images \(it is empty\)"):
        load_market1501(tmp_path)
    touch(tmp_path / "bounding_box_test", "readme.txt")
    with pytest.raises(UsageError, match=r"it holds 1 other files"):
        load_market1501(tmp_path)


def test_bad_names_are_quoted_and_counted(tmp_path):
    market_tree(tmp_path)
    bad = [f"img{i}.jpg" for i in range(7)] + ["0002_x1s1_0.jpg"]
    touch(tmp_path / "query", *bad)
    with pytest.raises(UsageError) as err:
        load_market1501(tmp_path)
    msg = str(err.value)
    assert "8 of 11 files" in msg and str(tmp_path / "query") in msg
    assert "0002_x1s1_0.jpg, img0.jpg, img1.jpg, img2.jpg, img3.jpg and 3 more" in msg
    assert "img6.jpg" not in msg


@pytest.mark.parametrize("name", ["1-2_c1s1_0.jpg", "0002_c0s1_0.jpg", "-5_c1s1_0.jpg"])
def test_unparseable_numbers_are_bad_names(tmp_path, name):
    market_tree(tmp_path)
    touch(tmp_path / "bounding_box_test", name)
    with pytest.raises(UsageError, match=f"1 of 6 files .*: {name}"):
        load_market1501(tmp_path)


def test_split_left_empty_by_the_protocol(tmp_path):
    market_tree(tmp_path)
    for f in (tmp_path / "query").iterdir():
        f.unlink()
    touch(tmp_path / "query", "-1_c1s1_0.jpg", "0000_c1s1_0.jpg")
    with pytest.raises(UsageError, match=r"all 2 images in .*query are junk .* query split would be empty"):
        load_market1501(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(UsageError, match=r"VeRi-776 dataset root .*nowhere does not exist"):
        load_veri776(tmp_path / "nowhere")


def test_parse_dataset_spec(tmp_path):
    assert parse_dataset_spec("synthetic") == ("synthetic", None)
    assert parse_dataset_spec("synthetic:/data/s") == ("synthetic", Path("/data/s"))
    assert parse_dataset_spec("Market1501:/data/m") == ("market1501", Path("/data/m"))
    assert parse_dataset_spec("veri776:/a:b") == ("veri776", Path("/a:b"))
    assert parse_dataset_spec("msmt17:~/x")[1] == Path.home() / "x"
    assert set(DATASET_KINDS) == {
        "synthetic", "synthetic-rgbnt", "market1501", "dukemtmc", "msmt17", "veri776", "rgbnt201", "rgbnt100", "msvr310",
    }
    assert parse_dataset_spec("synthetic-rgbnt") == ("synthetic-rgbnt", None)
    with pytest.raises(UsageError) as err:
        parse_dataset_spec("market:/x")
    assert "unknown dataset 'market'" in str(err.value)
    assert all(kind in str(err.value) for kind in DATASET_KINDS)
    with pytest.raises(UsageError, match=r"needs the path of its root folder: dukemtmc:PATH"):
        parse_dataset_spec("dukemtmc")
    with pytest.raises(UsageError, match="empty path"):
        parse_dataset_spec("msmt17:")


def test_load_dataset_dispatches(tmp_path):
    market_tree(tmp_path / "m")
    ds = load_dataset(f"dukemtmc:{tmp_path / 'm'}")
    assert ds.name == "dukemtmc" and ds.counts()["query"]["images"] == 2
    assert load_dataset(f"msmt17:{msmt_tree(tmp_path / 's', 'V2')}").version == "V2"
