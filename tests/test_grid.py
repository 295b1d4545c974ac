"""Grid files: the shipped default, user files, and the errors a malformed file gets."""
from __future__ import annotations

from pathlib import Path

import pytest

from reidbench.errors import UsageError
from reidbench.variants import BACKBONES, NECKS, builtin_grids, load_grid


def test_default_grid_is_the_3x2_product_with_the_expected_failure() -> None:
    grid = load_grid("default")
    assert [c.id for c in grid.cells] == [
        "vit768-none", "vit768-ms", "clip512-none", "clip512-ms", "clip512proj-none", "clip512proj-ms",
    ]
    expected = {c.id: c.expect.status for c in grid.cells if c.expect}
    assert expected == {"clip512-ms": "xfail"}
    assert grid.settings.img_size == (256, 128) and grid.settings.stride == 16 and grid.settings.depth == 12
    assert grid.settings.grid_size == (16, 8)


@pytest.mark.parametrize("name", builtin_grids())
def test_every_builtin_grid_names_registered_components(name: str) -> None:
    grid = load_grid(name)
    assert grid.cells
    assert all(c.backbone in BACKBONES and c.neck in NECKS for c in grid.cells)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_user_grid_file_with_settings_and_expectations(tmp_path: Path) -> None:
    path = write(tmp_path, """
backbones = ["vit768"]
necks = ["none", "ms"]
[settings]
stride = 12
depth = 2
img_size = [128, 64]
[expect.vit768-ms]
status = "xfail"
match = "boom"
reason = "testing"
""")
    grid = load_grid(str(path))
    assert grid.name == "mine" and grid.source == str(path)
    assert [c.id for c in grid.cells] == ["vit768-none", "vit768-ms"]
    assert grid.settings.stride == 12 and grid.settings.img_size == (128, 64)
    assert grid.settings.grid_size == (10, 5)
    assert grid.cell("vit768-ms").expect.reason == "testing"
    assert [c.id for c in grid.select(["vit768-ms"])] == ["vit768-ms"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("backbones = [vit768", "not valid TOML"),
        ('backbones = ["vit768"]', "missing 'necks'"),
        ('backbones = []\nnecks = ["none"]', "must be a non-empty list"),
        ('backbones = ["vit768", "vit768"]\nnecks = ["none"]', "lists a name twice"),
        ('backbones = ["resnet"]\nnecks = ["none"]', "unknown backbone 'resnet'; valid backbones are: vit768"),
        ('backbones = ["vit768"]\nnecks = ["gem"]', "unknown neck 'gem'; valid necks are: none, ms"),
        ('backbones = ["vit768"]\nnecks = ["none"]\nbackbonez = 1', "unknown key\\(s\\) backbonez"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[axes]\nstride = []', "axis 'stride' must be a non-empty list"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[axes]\nstride = 12', "axis 'stride' must be a non-empty list"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[axes]\nstride = ["twelve"]', "'stride' = 'twelve' has the wrong type"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[settings]\nstride = 12\n[axes]\nstride = [12, 16]', "repeats a \\[settings\\] key"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[axes]\nstride = [12, 12]', "lists a value twice"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[backbone.clip512]\ndepth = 2', "'clip512' is not one of this grid's backbones"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[backbone.vit768]\nrecipe = "clipreid"', "recipe must map profile names"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[settings]\nstride = 20', "stride 20 is impossible"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[settings]\nimg_size = [250, 128]', "not divisible"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[settings]\ndepth = "deep"', "'depth' = 'deep' has the wrong type"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[settings]\nwidth = 3', "unknown setting 'width'"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[expect.clip512-ms]\nstatus = "xfail"', "no such cell in this grid"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[expect.vit768-none]\nstatus = "pass"', "status 'pass' is unknown"),
        ('backbones = ["vit768"]\nnecks = ["none"]\n[expect.vit768-none]\nmatch = "("', "not a valid regular expression"),
    ],
)
def test_malformed_grid_files_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=message) as info:
        load_grid(str(path))
    assert str(path) in str(info.value)


def test_unknown_grid_name_and_missing_file() -> None:
    with pytest.raises(UsageError, match="unknown grid 'nosuch'; built-in grids are: default"):
        load_grid("nosuch")
    with pytest.raises(UsageError, match="does not exist"):
        load_grid("missing/grid.toml")
    with pytest.raises(UsageError, match="has no cell 'vit768-gem'; its cells are: vit768-none"):
        load_grid("default").select(["vit768-gem"])


def test_every_shipped_grid_declares_its_comparisons() -> None:
    from reidbench.variants.compare import declared

    def pairs(name: str, subsets: list[str] = ()) -> list[tuple[str, str]]:
        grid = load_grid(name)
        ids = [c.id for c in grid.cells]
        return declared(grid.compare, ids, {cell: list(subsets) for cell in ids})

    assert pairs("default") == [("clip512proj-ms", "vit768-ms"), ("vit768-ms", "vit768-none"),
                                ("clip512-ms", "clip512-none"), ("clip512proj-ms", "clip512proj-none")]
    controls = pairs("ms-controls")
    assert ("vit768-ms8", "vit768-ms4") in controls and ("clip768-ms", "clip768-ms16") in controls
    assert ("vit768-gap", "vit768-none") in controls and len(controls) == 10
    assert {b for _, b in pairs("ms-on-clip")} == {"vit768-ms"} and len(pairs("ms-on-clip")) == 4
    modal = pairs("multimodal", ["R", "N", "T", "RN", "RT", "NT", "RNT"])
    assert ("vit768-none:R", "vit768-none:RNT") in modal and len(modal) == 6 * 6
    assert all(load_grid(name).compare.margin == 1.0 for name in builtin_grids())


def test_compare_pairs_with_axes_match_the_same_axis_values(tmp_path: Path) -> None:
    from reidbench.variants.compare import declared

    grid = load_grid(write(tmp_path, """
backbones = ["vit768"]
necks = ["none", "ms"]
[axes]
stride = [12, 16]
[compare]
pairs = [["vit768-ms", "vit768-none"]]
margin = 0.5
"""))
    assert declared(grid.compare, [c.id for c in grid.cells]) == [
        ("vit768-ms@stride=12", "vit768-none@stride=12"), ("vit768-ms@stride=16", "vit768-none@stride=16")]
    assert grid.compare.margin == 0.5


@pytest.mark.parametrize("table, message", [
    ('pairs = [["vit768-ms", "clip512-ms"]]', "pairs names 'clip512-ms', which is not a cell of this grid"),
    ('pairs = [["vit768-ms"]]', "must be a list of [A, B] name pairs"),
    ('pairs = [["vit768-ms", "vit768-ms"]]', "compares a name with itself"),
    ('each_neck_against = "gap"', "'gap' is not one of this grid's necks"),
    ('neck_pairs = [["ms", "ms16"]]', "'ms16' is not one of this grid's necks"),
    ("margin = -1", "margin must be a number ≥ 0"),
    ('margin = "one"', "margin must be a number ≥ 0"),
    ("against = 1", "unknown key(s) against"),
])
def test_a_malformed_compare_table_is_a_clear_error(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, f'backbones = ["vit768"]\nnecks = ["none", "ms"]\n[compare]\n{table}\n')
    with pytest.raises(UsageError) as error:
        load_grid(path)
    assert message in str(error.value) and "[compare]" in str(error.value)
