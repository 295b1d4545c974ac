"""Grids: the product of listed backbones and necks, with shared settings and per-cell expectations.

A grid is data -- a TOML file. Named grids ship in `reidbench/variants/grids/`;
`--grid PATH` takes a user's file with the same keys:

    description = "..."            # optional
    backbones = ["vit768", ...]    # registered backbone names
    necks = ["none", "ms"]         # registered neck names
    [settings]                     # optional, see VariantSettings
    stride = 12
    [expect.<backbone>-<neck>]     # optional, a cell expected to fail
    status = "xfail"
    match = "regex the error message must match"
    reason = "why it fails"
    [weights]                      # optional, pretrained weights per backbone (local files only)
    vit768 = "jx_vit_base_p16_224-80ecf9dd.pth"   # relative paths start at the grid file's folder

A `[weights]` entry must name a backbone of the grid and an existing file; the
path is stored resolved (absolute), so a run directory records which file it was.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from reidbench.errors import UsageError
from reidbench.variants.backbones import BACKBONES
from reidbench.variants.necks import NECKS
from reidbench.variants.settings import VariantSettings
from reidbench.variants.weights import resolve_weights_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

GRIDS_DIR = Path(__file__).parent / "grids"
GRID_KEYS = ("description", "backbones", "necks", "settings", "expect", "weights")
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

    @property
    def id(self) -> str:
        return f"{self.backbone}-{self.neck}"


@dataclass(frozen=True)
class Grid:
    name: str
    source: str
    description: str
    settings: VariantSettings
    cells: tuple[Cell, ...]
    weights: dict[str, str] = field(default_factory=dict, hash=False)
    """Backbone -> absolute path of its pretrained weights; backbones not named start from random weights."""

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise UsageError(
            f"grid {self.name!r} has no cell {cell_id!r}; its cells are: {', '.join(c.id for c in self.cells)}."
        )

    def select(self, only: Optional[Iterable[str]]) -> list[Cell]:
        """The cells named in `only` (all cells when it is empty), in grid order."""
        wanted = list(only or [])
        if not wanted:
            return list(self.cells)
        for cell_id in wanted:
            self.cell(cell_id)
        return [c for c in self.cells if c.id in wanted]

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
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"grid file {source} is not valid TOML: {exc}.") from None
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise UsageError(f"grid file {source}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(GRID_KEYS)}.")
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
    cells = tuple(Cell(b, n, expectations.get(f"{b}-{n}")) for b in backbones for n in necks)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"grid file {source}: description must be a string.")
    if base_dir is None:
        base_dir = GRIDS_DIR if source.startswith("builtin:") else Path(source).parent
    weights = _weights(raw.get("weights", {}), backbones, source, base_dir)
    return Grid(name=name, source=source, description=description, settings=settings, cells=cells, weights=weights)


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
        raise UsageError(f"grid file {source}: unknown {registry.kind} {name!r}; valid {registry.kind}s are: {', '.join(registry.names())}.")


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
            raise UsageError(f"{where}: {backbone} must be a path string, got {value!r}.")
        out[backbone] = str(resolve_weights_path(value, backbone, where, base_dir=base_dir))
    return out
