"""Grids: the product of listed backbones and necks, with shared settings and per-cell expectations.

A grid is data -- a TOML file. Named grids ship in `reidbench/variants/grids/`;
`--grid PATH` takes a user's file with the same keys:

    description = "..."            # optional
    data = "synthetic-rgbnt"       # optional: the dataset a run uses when --data is not given (default: synthetic)
    follow_dataset_size = true     # optional: scale the person-set img_size to the dataset's own (default: the profile's)
    backbones = ["vit768", ...]    # registered backbone names
    necks = ["none", "ms"]         # registered neck names
    [settings]                     # optional, see VariantSettings
    stride = 12
    [expect.<backbone>-<neck>]     # optional, a cell expected to fail
    status = "xfail"
    match = "regex the error message must match"
    reason = "why it fails"
    pretrained = true              # optional: every backbone starts from its upstream weights (`reidbench list`)
    [weights]                      # optional, pretrained weights per backbone: a local file or a name
    vit768 = "jx_vit_base_p16_224-80ecf9dd.pth"   # relative paths start at the grid file's folder
    clip512 = "openai"             # names: timm/ARCH.TAG, an open_clip tag, hf-hub:ORG/REPO[/FILE][@REVISION]
    [axes]                         # optional: every combination is a cell (backbones x necks x the axes)
    stride = [12, 16]              # a variant setting ...
    lr = [0.008, 0.004]            # ... or a [train] setting of the profile (checked when a run is planned)
    [backbone.clip512]             # optional, per backbone: its own settings, and a recipe per profile
    camera_embedding_scale = 0.0
    recipe = { full = "clipreid" } # under the full profile, clip512's cells train with the clipreid recipe
    [compare]                      # optional: the comparisons the report tests (see reidbench.variants.compare)
    pairs = [["clip512proj-ms", "vit768-ms"]]
    each_neck_against = "none"

A `[weights]` entry must name a backbone of the grid and an existing file or a
weights name; a path is stored resolved (absolute), a name as written (fetched
when a run or bench starts), so a run directory records which file it was.
`[weights]` entries win over `pretrained = true` for their backbones.
A cell with axes is named `<backbone>-<neck>@key=value,key=value` (lists as
`4-8-16`): readable, stable and safe as a folder name; `[expect.<backbone>-<neck>]`
applies to that pair at every axis value.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Optional

from reidbench.errors import UsageError
from reidbench.schema import axis_text
from reidbench.config import read_toml
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.compare import CompareSpec, parse_compare
from reidbench.variants.necks import NECKS
from reidbench.variants.settings import VariantSettings
from reidbench.variants.pretrained import check_weights_value

GRIDS_DIR = Path(__file__).parent / "grids"
GRID_KEYS = (
    "description", "data", "follow_dataset_size", "backbones", "necks", "settings", "expect", "pretrained", "weights", "axes",
    "backbone", "compare",
)
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,@+-]*$")
"""What a cell id may hold: it names a folder of the run directory."""
MAX_ID_LENGTH = 200
"""The longest cell id: it names a folder (255 bytes at most on common file systems) and files such as
`<cell>.onnx`. Longer ids are refused rather than shortened with a hash: an id is how a user names a cell
(--only, [expect], reports, the axis columns), and a hash would make it unreadable and unguessable."""
EXPECT_STATUSES = ("xfail",)


@dataclass(frozen=True)
class Expectation:
    """A cell that must fail, with a regex its error message must match."""

    status: str
    match: str
    reason: str

    def matches(self, message: str) -> bool:
        return re.search(self.match, message) is not None


@dataclass(frozen=True)
class Cell:
    backbone: str
    neck: str
    expect: Optional[Expectation] = None
    axes: tuple[tuple[str, Any], ...] = ()
    """(setting, value) of every axis of the grid, in the grid file's order."""

    @property
    def pair(self) -> str:
        """'<backbone>-<neck>': what [expect] tables and the per-axis plots group by."""
        return f"{self.backbone}-{self.neck}"

    @property
    def id(self) -> str:
        if not self.axes:
            return self.pair
        return self.pair + "@" + ",".join(f"{key}={axis_text(value)}" for key, value in self.axes)


@dataclass(frozen=True)
class Grid:
    name: str
    source: str
    description: str
    settings: VariantSettings
    cells: tuple[Cell, ...]
    weights: dict[str, str] = field(default_factory=dict, hash=False)
    """Backbone -> absolute path or name of its pretrained weights; backbones not named start from random weights
    (or, with `pretrained`, from their upstream weights)."""
    pretrained: bool = False
    """`pretrained = true`: every backbone the [weights] table leaves out starts from its upstream weights."""
    axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """(setting, values) per axis; the cells are backbones x necks x their product."""
    backbone_settings: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    """Backbone -> its own variant settings, laid over [settings]."""
    recipes: dict[str, dict[str, str]] = field(default_factory=dict, hash=False)
    """Backbone -> {profile name: recipe name}: under that profile the backbone's cells train with that recipe."""
    settings_table: dict[str, Any] = field(default_factory=dict, hash=False)
    """The [settings] the file gave (an axis may not repeat one of them)."""
    data: Optional[str] = None
    """The dataset spec a run of this grid uses unless --data names another (multi-modal grids need multi-modal data)."""
    compare: CompareSpec = field(default_factory=CompareSpec, hash=False)
    """The comparisons the report makes, declared before any number exists ([compare], `reidbench.variants.compare`)."""
    follow_dataset_size: Optional[bool] = None
    """Whether the input size follows the dataset's (`Profile.follow_dataset_size`); None: as the profile says."""

    def variant_settings(self, cell: Cell, base: Optional[VariantSettings] = None) -> VariantSettings:
        """`base` (default: the grid's [settings]) with the cell's backbone table and its variant-setting axes laid over it."""
        settings = (base or self.settings).with_overrides(self.backbone_settings.get(cell.backbone, {}), f"grid {self.name} [backbone.{cell.backbone}]")
        return settings.with_overrides(model_axes(cell), f"grid {self.name} cell {cell.id}")

    def with_axes(self, axes: dict[str, list[Any]], source: str) -> "Grid":
        """This grid with more axes (`--axis`), checked as a grid file's are."""
        merged = {key: list(values) for key, values in self.axes}
        for key, values in axes.items():
            if key in merged:
                raise UsageError(f"{source}: the grid already has an axis {key!r}; give its values once.")
            merged[key] = list(values)
        checked = tuple(_check_axes(merged, self.settings_table, source).items())
        pairs = list({cell.pair: cell for cell in self.cells}.values())
        return replace(self, axes=checked, cells=_product(pairs, checked, source))

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise UsageError(
            f"grid {self.name!r} has no cell {cell_id!r}; its cells are: {', '.join(c.id for c in self.cells)}."
        )

    def select(self, only: Optional[Iterable[str]]) -> list[Cell]:
        """The cells named in `only` (all cells when it is empty), in grid order; a '<backbone>-<neck>' pair names
        that pair at every axis value."""
        wanted = list(only or [])
        if not wanted:
            return list(self.cells)
        pairs = {cell.pair for cell in self.cells}
        for cell_id in wanted:
            if cell_id not in pairs:
                self.cell(cell_id)
        return [c for c in self.cells if c.id in wanted or c.pair in wanted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "settings": self.settings.to_dict(),
            "cells": [
                {
                    "id": c.id,
                    "backbone": c.backbone,
                    "neck": c.neck,
                    "expect": None if c.expect is None else vars(c.expect),
                }
                for c in self.cells
            ],
            "weights": dict(self.weights),
            "pretrained": self.pretrained,
            "axes": {key: list(values) for key, values in self.axes},
            "data": self.data,
        }


def builtin_grids() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.toml"))


def load_grid(name_or_path: str | Path) -> Grid:
    """A built-in grid by name, or a grid file by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".toml" or path.exists() or "/" in text:
        if not path.is_file():
            raise UsageError(f"grid file {text!r} does not exist; pass a TOML grid file or one of: {', '.join(builtin_grids())}.")
        return parse_grid(path.read_bytes(), source=str(path), name=path.stem, base_dir=path.parent)
    builtin = GRIDS_DIR / f"{text}.toml"
    if not builtin.is_file():
        raise UsageError(f"unknown grid {text!r}; built-in grids are: {', '.join(builtin_grids())} (or pass a path to a .toml grid file).")
    return parse_grid(builtin.read_bytes(), source=f"builtin:{text}", name=text, base_dir=GRIDS_DIR)


def parse_grid(data: bytes, source: str, name: str, base_dir: Optional[Path] = None) -> Grid:
    """A grid from TOML bytes; `base_dir` anchors relative [weights] paths (default: the source file's folder)."""
    raw = read_toml(data, f"grid file {source}", GRID_KEYS)
    backbones = _name_list(raw, "backbones", source)
    necks = _name_list(raw, "necks", source)
    for backbone in backbones:
        _in_registry(BACKBONES, backbone, source)
    for neck in necks:
        _in_registry(NECKS, neck, source)
    settings_table = raw.get("settings", {})
    if not isinstance(settings_table, dict):
        raise UsageError(f"grid file {source}: [settings] must be a table of setting = value lines.")
    settings = VariantSettings.from_mapping(settings_table, f"grid file {source} [settings]")
    cell_ids = [f"{b}-{n}" for b in backbones for n in necks]
    expectations = _expectations(raw.get("expect", {}), cell_ids, source)
    pairs = [Cell(b, n, expectations.get(f"{b}-{n}")) for b in backbones for n in necks]
    axes = tuple(_check_axes(_table(raw, "axes", source), settings_table, f"grid file {source} [axes]").items())
    description, data = raw.get("description", ""), raw.get("data")
    if not isinstance(description, str):
        raise UsageError(f"grid file {source}: description must be a string.")
    if data is not None and (not isinstance(data, str) or not data.strip()):
        raise UsageError(f"grid file {source}: data must be a dataset spec string, e.g. data = \"synthetic-rgbnt\".")
    if not isinstance(raw.get("pretrained", False), bool):
        raise UsageError(f"grid file {source}: pretrained must be true or false.")
    if not isinstance(raw.get("follow_dataset_size", False), bool):
        raise UsageError(f"grid file {source}: follow_dataset_size must be true or false.")
    if base_dir is None:
        base_dir = GRIDS_DIR if source.startswith("builtin:") else Path(source).parent
    weights = _weights(raw.get("weights", {}), backbones, source, base_dir)
    backbone_settings, recipes = _backbone_tables(_table(raw, "backbone", source), backbones, settings, source, base_dir)
    cells = _product(pairs, axes, source)
    return Grid(
        name=name, source=source, description=description, settings=settings, cells=cells,
        weights=weights, axes=axes, backbone_settings=backbone_settings, recipes=recipes, settings_table=dict(settings_table),
        data=data, pretrained=raw.get("pretrained", False), follow_dataset_size=raw.get("follow_dataset_size"),
        compare=parse_compare(raw.get("compare", {}), [c.id for c in cells], f"grid file {source}"),
    )


VARIANT_KEYS = frozenset({f.name for f in fields(VariantSettings)} | set(VariantSettings.ALIASES))
"""Axis keys that are variant settings; any other key is a [train] setting of the profile."""


def model_axes(cell: Cell) -> dict[str, Any]:
    """The cell's axis values that are variant settings."""
    return {key: value for key, value in cell.axes if key in VARIANT_KEYS}


def train_axes(cell: Cell) -> dict[str, Any]:
    """The cell's axis values that are [train] settings of the profile."""
    return {key: value for key, value in cell.axes if key not in VARIANT_KEYS}


def _table(raw: dict, key: str, source: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"grid file {source}: [{key}] must be a table.")
    return value


def _check_axes(table: dict, settings_table: dict, source: str) -> dict[str, tuple[Any, ...]]:
    """Each axis a non-empty list of distinct values; a variant setting's values checked now, a [train] one when planned."""
    given = {VariantSettings.ALIASES.get(key, key) for key in settings_table}
    out = {}
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{source}: axis {key!r} must be a non-empty list of values, e.g. {key} = [12, 16]; got {values!r}.")
        if VariantSettings.ALIASES.get(key, key) in given:
            raise UsageError(f"{source}: axis {key!r} repeats a [settings] key; give it as an axis or as a setting, not both.")
        values = list(values)
        if len({_parsed_value(v) for v in values}) != len(values):
            raise UsageError(f"{source}: axis {key!r} lists a value twice: {values!r} (1 and 1.0 are one value).")
        if key in VARIANT_KEYS:
            for value in values:
                VariantSettings().with_overrides({key: value}, f"{source} axis {key!r}")
        out[key] = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in values)
    return out


def _parsed_value(value: Any) -> Any:
    """What an axis value means, for telling values apart: 1 and 1.0 are one number (Python's == and hash agree),
    a boolean is not a number, a list is its items."""
    if isinstance(value, (list, tuple)):
        return tuple(_parsed_value(v) for v in value)
    return (type(value).__name__, value) if isinstance(value, (bool, str)) else ("number", value)


def _product(pairs: list[Cell], axes: tuple[tuple[str, tuple[Any, ...]], ...], source: str) -> tuple[Cell, ...]:
    """Every (backbone, neck) at every combination of the axis values, with safe, distinct ids."""
    keys = [key for key, _ in axes]
    cells = tuple(
        replace(pair, axes=tuple(zip(keys, combo)))
        for pair in pairs for combo in itertools.product(*(values for _, values in axes))
    )
    ids = [cell.id for cell in cells]
    unsafe = [cell_id for cell_id in ids if not SAFE_ID.match(cell_id)]
    if unsafe:
        raise UsageError(f"grid {source}: cell id {unsafe[0]!r} is not safe as a folder name; use plain numbers and names as axis values.")
    long = [cell_id for cell_id in ids if len(cell_id) > MAX_ID_LENGTH]
    if long:
        raise UsageError(
            f"grid {source}: cell id {long[0][:60]!r}... ({len(long[0])} characters) is too long for a folder name: a cell "
            f"id names its folder and its exported files and may have at most {MAX_ID_LENGTH}. Give the axes fewer or "
            "shorter values (a long list is better split into a grid of its own)."
        )
    if len(set(ids)) != len(ids):
        raise UsageError(f"grid {source}: two cells would have the same id ({sorted({i for i in ids if ids.count(i) > 1})[0]!r}); make the axis values distinct.")
    return cells


def _backbone_tables(
    table: dict, backbones: list[str], settings: VariantSettings, source: str, base_dir: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """[backbone.<name>]: that backbone's settings (checked now) and `recipe = {profile = "recipe"}` (named when
    planned): a built-in recipe's name, or a .toml file, relative to the grid file's folder."""
    overrides, recipes = {}, {}
    for backbone, spec in table.items():
        where = f"grid file {source} [backbone.{backbone}]"
        if backbone not in backbones:
            raise UsageError(f"{where}: {backbone!r} is not one of this grid's backbones ({', '.join(backbones)}).")
        if not isinstance(spec, dict):
            raise UsageError(f"{where}: must be a table of settings and, optionally, recipe = {{ profile = \"recipe\" }}.")
        recipe = spec.get("recipe", {})
        if not isinstance(recipe, dict) or not all(isinstance(v, str) for v in recipe.values()):
            raise UsageError(f"{where}: recipe must map profile names to recipe names, e.g. recipe = {{ full = \"clipreid\" }}.")
        values = {k: v for k, v in spec.items() if k != "recipe"}
        settings.with_overrides(values, where)
        overrides[backbone] = values
        recipes[backbone] = {profile: str((base_dir / r).resolve()) if r.endswith(".toml") else r for profile, r in recipe.items()}
    return overrides, recipes


def _name_list(raw: dict, key: str, source: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        raise UsageError(f"grid file {source}: missing {key!r}, a list of registered names such as {key} = [\"...\"].")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"grid file {source}: {key!r} must be a non-empty list of names, got {value!r}.")
    if len(set(value)) != len(value):
        raise UsageError(f"grid file {source}: {key!r} lists a name twice: {value!r}.")
    return value


def _in_registry(registry, name: str, source: str) -> None:
    if name not in registry:
        raise UsageError(f"grid file {source}: {registry.unknown(name)}")


def _expectations(table: Any, cell_ids: list[str], source: str) -> dict[str, Expectation]:
    if not isinstance(table, dict):
        raise UsageError(f"grid file {source}: [expect] must hold one table per cell, e.g. [expect.clip512-ms].")
    out = {}
    for cell_id, spec in table.items():
        where = f"grid file {source} [expect.{cell_id}]"
        if cell_id not in cell_ids:
            raise UsageError(f"{where}: no such cell in this grid; its cells are: {', '.join(cell_ids)}.")
        if not isinstance(spec, dict):
            raise UsageError(f"{where}: must be a table with status, match and reason.")
        extra = sorted(set(spec) - {"status", "match", "reason"})
        if extra:
            raise UsageError(f"{where}: unknown key(s) {', '.join(extra)}; valid keys are status, match, reason.")
        status = spec.get("status", "xfail")
        if status not in EXPECT_STATUSES:
            raise UsageError(f"{where}: status {status!r} is unknown; valid: {', '.join(EXPECT_STATUSES)}.")
        match = spec.get("match", "")
        if not isinstance(match, str):
            raise UsageError(f"{where}: match must be a string (a regular expression).")
        try:
            re.compile(match)
        except re.error as exc:
            raise UsageError(f"{where}: match {match!r} is not a valid regular expression: {exc}.") from None
        out[cell_id] = Expectation(status=status, match=match, reason=str(spec.get("reason", "")))
    return out


def _weights(table: Any, backbones: list[str], source: str, base_dir: Path) -> dict[str, str]:
    where = f"grid file {source} [weights]"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: must be a table of backbone = \"path\" lines, e.g. vit768 = \"jx_vit_base_p16_224-80ecf9dd.pth\".")
    out = {}
    for backbone, value in table.items():
        _in_registry(BACKBONES, backbone, f"{source} [weights]")
        if backbone not in backbones:
            raise UsageError(f"{where}: weights for {backbone}, which is not one of this grid's backbones ({', '.join(backbones)}).")
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: {backbone} must be a path or weights-name string, got {value!r}.")
        out[backbone] = check_weights_value(value, backbone, where, base_dir=base_dir)
    return out
