"""A rank list as a picture: each query, then its first gallery images in rank order, right ones and wrong ones marked.

Drawn on matplotlib's Agg canvas (no pyplot), as the report's other figures.
A correct gallery image has a thick green frame and a ✓ in its label, a wrong
one a thin red frame and a ✗: the mark and the frame's width say it without
the colour, for readers who cannot tell green from red. A multi-modal sample
(RGB, near-infrared, thermal) is one column whose rows are its modalities, so
that one modality reads across the ranks in one line and a sample's pictures
stay in one column under one label.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from reidbench.data.records import DISTRACTOR_PID

CORRECT, WRONG, QUERY = "#1a7f37", "#cf222e", "#57606a"
MARKS = {True: "✓", False: "✗"}
FRAME_WIDTH = {True: 4.0, False: 1.6}
TILE_HEIGHT_IN = 1.35
"""The height of one picture, in inches, before a wide figure is scaled down to MAX_WIDTH_IN."""
MAX_WIDTH_IN = 14.0
LABEL_IN, FOOTER_IN, TITLE_IN = 0.42, 0.42, 0.35
"""Room above each block's pictures (two label lines), below them (the query's scores) and for the figure's title."""
DPI = 100
MODALITY_NAMES = {"rgb": "RGB", "nir": "NIR", "tir": "TIR"}


@dataclass(frozen=True)
class Entry:
    """One gallery image of a rank list: its row in the gallery, identity, camera (0-based) and whether it is right."""

    index: int
    pid: int
    camid: int
    correct: bool


@dataclass(frozen=True)
class RankList:
    """One query's first gallery images, as a cell ranked them."""

    query: int
    """The query's row in the query set (0-based), as `reidbench inspect --query` takes it."""
    pid: int
    camid: int
    ap: float
    """NaN for a query the protocol did not score (no correct match left)."""
    first_rank: int
    """1-based rank of the first correct match; 0 for a query the protocol did not score."""
    entries: list[Entry]


Pictures = Callable[[str, int], list[Optional[np.ndarray]]]
"""(split, row) -> one [H, W, 3] uint8 picture per modality, None for one that cannot be read."""


def rank_list_png(lists: Sequence[RankList], pictures: Pictures, modalities: Sequence[str], title: str) -> bytes:
    """One block per query (its modalities as rows), the query first, then its entries; a PNG."""
    rows, columns = len(modalities), 2 + max(max(len(rank.entries) for rank in lists), 5)
    height, width = _picture_shape(lists, pictures)
    tile_h = TILE_HEIGHT_IN * (0.8 if rows > 1 else 1.0)
    tile_w = tile_h * width / height
    scale = min(1.0, MAX_WIDTH_IN / (columns * tile_w * 1.12 + 0.6))
    pictures_h = rows * tile_h * 1.04 * scale
    block_h = pictures_h + LABEL_IN + FOOTER_IN
    figure = Figure(figsize=(columns * tile_w * 1.12 * scale + 0.6, block_h * len(lists) + TITLE_IN), dpi=DPI)
    FigureCanvasAgg(figure)
    with matplotlib.rc_context({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8}):
        head, *blocks = figure.subfigures(len(lists) + 1, 1, height_ratios=[TITLE_IN] + [block_h] * len(lists), squeeze=False)[:, 0]
        head.text(0.005, 0.5, title, fontsize=10.5, ha="left", va="center")
        for block, rank in zip(blocks, lists):
            _draw_block(block, rank, pictures, modalities, columns, (FOOTER_IN / block_h, 1 - LABEL_IN / block_h))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return _paletted(buffer.getvalue())


def _paletted(png: bytes) -> bytes:
    """The PNG in 256 colours, for a report.html that embeds one per cell: a rank list is mostly photographs, which
    PNG packs badly (the default synthetic set's: 870 kB in full colour, 220 kB paletted). Labels and frames keep
    their colours."""
    with Image.open(io.BytesIO(png)) as image:
        paletted = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    paletted.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _picture_shape(lists: Sequence[RankList], pictures: Pictures) -> tuple[int, int]:
    """(height, width) of the pictures: the first readable query's."""
    for rank in lists:
        found = next((p for p in pictures("query", rank.query) if p is not None), None)
        if found is not None:
            return found.shape[0], found.shape[1]
    return 2, 1


def _draw_block(
    block, rank: RankList, pictures: Pictures, modalities: Sequence[str], columns: int, span: tuple[float, float],
) -> None:
    """One query's row(s): the query's pictures, a gap, then each entry's, framed and labelled; `span` the
    (bottom, top) of the pictures in the block, leaving room for the labels."""
    rows = len(modalities)
    axes = block.subplots(rows, columns, squeeze=False, gridspec_kw={
        "width_ratios": [1.0, 0.22] + [1.0] * (columns - 2), "wspace": 0.06, "hspace": 0.04,
        "left": 0.035 if rows > 1 else 0.01, "right": 0.995, "bottom": span[0], "top": span[1]})
    for row in range(rows):
        axes[row, 1].set_axis_off()
        for column in range(len(rank.entries) + 2, columns):
            axes[row, column].set_axis_off()
    query = pictures("query", rank.query)
    for row in range(rows):
        _tile(axes[row, 0], query[row], QUERY, 1.6)
        if rows > 1:
            axes[row, 0].set_ylabel(MODALITY_NAMES.get(modalities[row], modalities[row].upper()), fontsize=8)
    axes[0, 0].set_title(f"query {rank.query}\n{_identity(rank.pid, rank.camid)}", color=QUERY, fontweight="bold")
    axes[rows - 1, 0].set_xlabel(_scores_text(rank, len(rank.entries)), color=QUERY)
    for column, entry in enumerate(rank.entries, start=2):
        colour = CORRECT if entry.correct else WRONG
        shown = pictures("gallery", entry.index)
        for row in range(rows):
            _tile(axes[row, column], shown[row], colour, FRAME_WIDTH[entry.correct])
        axes[0, column].set_title(f"{column - 1} {MARKS[entry.correct]}\n{_identity(entry.pid, entry.camid)}",
                                  color=colour, fontweight="bold" if entry.correct else "normal")


def _tile(axes: Axes, picture: Optional[np.ndarray], colour: str, width: float) -> None:
    """A picture filling its axes, framed; a grey square saying so when the file cannot be read now."""
    if picture is None:
        axes.set_facecolor("#eaeef2")
        axes.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=6, transform=axes.transAxes, rotation=90)
    else:
        axes.imshow(picture, aspect="auto", interpolation="bilinear")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(True)
        spine.set_color(colour)
        spine.set_linewidth(width)


def _identity(pid: int, camid: int) -> str:
    """'id 12 · c3': the identity (or 'distr.', a distractor) and the camera as the file names number it (1-based)."""
    who = "distr." if pid == DISTRACTOR_PID else f"id {pid}"
    return f"{who} · c{camid + 1}"


def _scores_text(rank: RankList, shown: int) -> str:
    if rank.first_rank <= 0:
        return "not scored:\nno correct match left"
    return f"AP {100 * rank.ap:.1f} %\nfirst ✓ at {rank.first_rank}"
