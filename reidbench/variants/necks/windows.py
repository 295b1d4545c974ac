"""Where a neck's windows fall on the patch-token grid, what they cost, and the note a record keeps about them.

Windows tile without overlap (stride = kernel), so their arithmetic is exact:
a window of k tokens at P positions costs P * k * D^2 multiply-adds with a
D -> D map, and whatever the last whole window does not reach is left out
(the floor rule of Conv1d and Conv2d). A window as large as the grid has one
position: a whole-grid readout, one position-specific linear map of every
token, however it was named.
"""
from __future__ import annotations

from dataclasses import dataclass

READOUT = "a whole-grid readout (one position-specific linear map of every token)"


def clamp_window(scale: int, grid_size: tuple[int, int]) -> tuple[int, int]:
    """A window larger than the token grid along an axis covers the whole axis.

    At 256x128 with stride 16 the grid is 16x8, so a literal 16x16 window cannot
    slide over the width (PyTorch: "Kernel size can't be greater than actual input
    size"). Clamping per axis keeps the window's intent -- as coarse as the image
    allows -- and gives 16x8 there, 16x10 on the 21x10 grid of stride 12.
    """
    rows, cols = grid_size
    return min(scale, rows), min(scale, cols)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class GridWindow:
    """A scale x scale window (stride = kernel) over the rows x cols token grid, clamped per axis."""

    scale: int
    grid: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return clamp_window(self.scale, self.grid)

    @property
    def positions(self) -> tuple[int, int]:
        (rows, cols), (kr, kc) = self.grid, self.shape
        return rows // kr, cols // kc

    @property
    def uncovered(self) -> tuple[int, int]:
        """Rows and columns past the last whole window."""
        (rows, cols), (kr, kc) = self.grid, self.shape
        return rows % kr, cols % kc

    def params(self, width: int) -> int:
        kr, kc = self.shape
        return width * width * kr * kc + width

    def macs(self, width: int) -> int:
        (pr, pc), (kr, kc) = self.positions, self.shape
        return pr * pc * width * width * kr * kc

    def note(self) -> str:
        """Window shape (and its clamp), positions, what is left uncovered, and whether it reads out the whole grid."""
        (rows, cols), (kr, kc), (pr, pc) = self.grid, self.shape, self.positions
        shape = f"{kr}x{kc}" if (kr, kc) == (self.scale, self.scale) else f"{self.scale}x{self.scale} clamped per axis to {kr}x{kc}"
        left_rows, left_cols = self.uncovered
        covered = (
            f"leaves the last {left_rows} row(s) and {left_cols} column(s) uncovered" if left_rows or left_cols
            else "every token covered"
        )
        text = f"window {shape} on the {rows}x{cols} grid: {pr}x{pc} position(s), {covered}"
        if (pr, pc) == (1, 1):
            text += f" -- {READOUT}" if (kr, kc) == (rows, cols) else " -- one position: a position-specific linear map of the tokens it covers"
        return text


@dataclass(frozen=True)
class FlatWindow:
    """`size` consecutive tokens of the grid flattened row by row (a Conv1d with stride = kernel)."""

    size: int
    grid: tuple[int, int]

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def slides(self) -> bool:
        """False when the sequence is shorter than the window: the fork then takes the tokens' mean instead."""
        return self.size <= self.tokens

    def params(self, width: int) -> int:
        """The window's Conv1d exists whether or not it slides."""
        return width * width * self.size + width

    def macs(self, width: int) -> int:
        return (self.tokens // self.size) * width * width * self.size if self.slides else 0

    def note(self) -> str:
        """Window length in rows of the grid, positions, what is left uncovered, and whether it reads out the whole grid."""
        (rows, cols), n = self.grid, self.tokens
        where = f"on the {n} tokens of the {rows}x{cols} grid, row by row"
        if not self.slides:
            return f"window {self.size} {where} is longer than the sequence: the tokens' mean instead (its Conv1d is unused)"
        if self.size % cols == 0:
            span = f"{_plural(self.size // cols, 'whole row')} each"
        elif cols % self.size == 0:
            span = f"1/{cols // self.size} of a row each"
        else:
            span = f"straddling row ends ({cols} tokens a row)"
        left = n % self.size
        covered = f"leaves the last {_plural(left, 'token')} uncovered" if left else "every token covered"
        text = f"window {self.size} {where}: {_plural(n // self.size, 'position')}, {span}, {covered}"
        return text + (f" -- {READOUT}" if self.size == n else "")


def repeated_windows_notes(scales: tuple[int, ...], shapes: list[tuple[int, int]]) -> list[str]:
    """Scales that clamp to the same window are one window learned several times, not distinct scales; say so."""
    notes = []
    for shape in dict.fromkeys(shapes):
        same = [str(s) for s, k in zip(scales, shapes) if k == shape]
        if len(same) > 1:
            notes.append(f"scales {', '.join(same)} all give the {shape[0]}x{shape[1]} window: {len(same)} copies of one window, not distinct scales")
    return notes
