"""A grid's declared comparisons: the `[compare]` table, checked against the grid's cells.

Declaring the comparisons with the grid, before any number exists, is what makes the
report's multiple-comparison correction honest: the family is what was planned, not every
pair a reader could pick after seeing the table.

    [compare]
    pairs = [["clip512proj-ms", "vit768-ms"]]   # A against B, cell ids or <backbone>-<neck> pairs
    each_neck_against = "none"                  # every other neck against this one, same backbone
    neck_pairs = [["ms", "ms16"]]               # this neck against that one, on every backbone
    each_subset_against = "RNT"                 # multi-modal: every modality subset against this one, per cell
    margin = 1.0                                # equivalence margin, in the metric's points (default 1.0)

A `<backbone>-<neck>` pair in a grid with axes names that pair at every axis value, compared
at the same values. An operand is written `CELL` or `CELL:SUBSET` (a modality subset's
evaluation of that cell).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from reidbench.errors import UsageError

COMPARE_KEYS = ("pairs", "each_neck_against", "neck_pairs", "each_subset_against", "margin")
DEFAULT_MARGIN = 1.0
"""Percentage points of mAP (or rank-1) below which a difference changes nobody's choice."""
SUBSET_SEPARATOR = ":"


@dataclass(frozen=True)
class CompareSpec:
    """The [compare] table as given; `declared` turns it into operand pairs for a set of cells."""

    pairs: tuple[tuple[str, str], ...] = ()
    each_neck_against: Optional[str] = None
    neck_pairs: tuple[tuple[str, str], ...] = ()
    each_subset_against: Optional[str] = None
    margin: float = DEFAULT_MARGIN

    @property
    def empty(self) -> bool:
        return not (self.pairs or self.each_neck_against or self.neck_pairs or self.each_subset_against)


def split_cell(cell_id: str) -> tuple[str, str, str]:
    """(backbone, neck, axes text) of '<backbone>-<neck>[@key=value,...]' (backbone names hold no '-')."""
    pair, _, axes = cell_id.partition("@")
    backbone, _, neck = pair.partition("-")
    return backbone, neck, axes


def parse_compare(table: Any, cell_ids: list[str], source: str) -> CompareSpec:
    """The [compare] table, each name checked against the grid's cells; anything else is a one-paragraph UsageError."""
    spec = read_compare(table, source)
    check_names(spec, cell_ids, f"{source} [compare]")
    return spec


def read_compare(table: Any, source: str) -> CompareSpec:
    """The [compare] table's shape and margin, its names unchecked (a run's report reads a grid checked when it ran)."""
    where = f"{source} [compare]"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table, e.g. [compare] pairs = [[\"clip512proj-ms\", \"vit768-ms\"]].")
    unknown = sorted(set(table) - set(COMPARE_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(COMPARE_KEYS)}.")
    margin = table.get("margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise UsageError(f"{where}: margin must be a number ≥ 0 (percentage points), got {margin!r}.")
    return CompareSpec(
        pairs=_name_pairs(table.get("pairs", []), "pairs", where),
        each_neck_against=_name(table.get("each_neck_against"), "each_neck_against", where),
        neck_pairs=_name_pairs(table.get("neck_pairs", []), "neck_pairs", where),
        each_subset_against=_name(table.get("each_subset_against"), "each_subset_against", where),
        margin=float(margin),
    )


def check_names(spec: CompareSpec, cell_ids: list[str], where: str) -> None:
    """Every cell and neck the spec names is one of the grid's."""
    necks = list(dict.fromkeys(split_cell(c)[1] for c in cell_ids))
    for a, b in spec.pairs:
        for name in (a, b):
            if not cells_of(name, cell_ids):
                raise UsageError(f"{where}: pairs names {name!r}, which is not a cell of this grid; its cells are: {', '.join(cell_ids)}.")
    for neck in [spec.each_neck_against] + [n for pair in spec.neck_pairs for n in pair]:
        if neck is not None and neck not in necks:
            raise UsageError(f"{where}: {neck!r} is not one of this grid's necks ({', '.join(necks)}).")


def _name(value: Any, key: str, where: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: {key} must be a name, e.g. {key} = \"none\"; got {value!r}.")
    return value


def _name_pairs(value: Any, key: str, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) and n for n in p) for p in value
    ):
        raise UsageError(f"{where}: {key} must be a list of [A, B] name pairs, e.g. {key} = [[\"a\", \"b\"]]; got {value!r}.")
    if any(a == b for a, b in value):
        raise UsageError(f"{where}: {key} compares a name with itself: {value!r}.")
    return tuple((a, b) for a, b in value)


def cells_of(name: str, cell_ids: list[str]) -> list[str]:
    """The cells a name stands for: the cell itself, or a '<backbone>-<neck>' pair at every axis value."""
    if name in cell_ids:
        return [name]
    return [c for c in cell_ids if c.partition("@")[0] == name]


def declared(spec: CompareSpec, cell_ids: list[str], subsets: Optional[dict[str, list[str]]] = None) -> list[tuple[str, str]]:
    """(A, B) operands in the spec's order (pairs, necks, subsets), each once; `subsets`: cell -> its subset names."""
    found: list[tuple[str, str]] = []
    for a, b in spec.pairs:
        found += _matched(cells_of(a, cell_ids), cells_of(b, cell_ids))
    index = {(bb, neck, axes): c for c in cell_ids for bb, neck, axes in [split_cell(c)]}
    if spec.each_neck_against is not None:
        base = spec.each_neck_against
        found += [(c, index[(bb, base, axes)]) for (bb, neck, axes), c in index.items()
                  if neck != base and (bb, base, axes) in index]
    for neck_a, neck_b in spec.neck_pairs:
        found += [(c, index[(bb, neck_b, axes)]) for (bb, neck, axes), c in index.items()
                  if neck == neck_a and (bb, neck_b, axes) in index]
    if spec.each_subset_against is not None:
        full = spec.each_subset_against
        for cell in cell_ids:
            found += [(f"{cell}{SUBSET_SEPARATOR}{s}", f"{cell}{SUBSET_SEPARATOR}{full}")
                      for s in (subsets or {}).get(cell, []) if s != full]
    return list(dict.fromkeys(found))


def _matched(first: list[str], second: list[str]) -> list[tuple[str, str]]:
    """Pair each A with the B at the same axis values (or the one B, when B names a single cell)."""
    if len(second) == 1:
        return [(a, second[0]) for a in first if a != second[0]]
    by_axes = {split_cell(b)[2]: b for b in second}
    return [(a, by_axes[split_cell(a)[2]]) for a in first if split_cell(a)[2] in by_axes]
