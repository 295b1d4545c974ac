"""Results per axis: for a grid with [axes], how accuracy and cost move with each axis's value.

One figure per axis: mAP (with its 95 % interval), GFLOPs and latency at the
smallest batch against the axis's values, one line per backbone-neck pair (and
per value of the other axes, which the line's label names), so a reader sees
whether an axis changes what a module buys or only what it costs.
"""
from __future__ import annotations

from typing import Any, Optional

import matplotlib
from matplotlib.figure import Figure

from reidbench.reports.plots import COLOURS, MARKERS, STYLE, Plot, _png, interval_error
from reidbench.reports.quantities import QUANTITIES
from reidbench.reports.summary import CellSummary
from reidbench.schema import axis_text


def axis_keys(summaries: list[CellSummary]) -> list[str]:
    """Every axis any cell has, in the order the cells name them."""
    return list(dict.fromkeys(key for s in summaries for key in s.axes))


def axis_plots(summaries: list[CellSummary], batch_sizes: list[int]) -> list[Plot]:
    """One figure per axis; none for a grid without axes."""
    with matplotlib.rc_context(STYLE):
        return [axis_plot(summaries, key, batch_sizes[0] if batch_sizes else None) for key in axis_keys(summaries)]


def _lines(summaries: list[CellSummary], key: str) -> dict[str, list[CellSummary]]:
    """Line label -> its cells along the axis: the pair, and the other axes' values that stay fixed along it."""
    lines: dict[str, list[CellSummary]] = {}
    for s in summaries:
        if key not in s.axes:
            continue
        others = ",".join(f"{k}={axis_text(v)}" for k, v in s.axes.items() if k != key)
        lines.setdefault(s.pair + (f" @{others}" if others else ""), []).append(s)
    return lines


def axis_plot(summaries: list[CellSummary], key: str, batch: Optional[int]) -> Plot:
    values = list(dict.fromkeys(axis_text(s.axes[key]) for s in summaries if key in s.axes))
    panels = [("mAP", None, "mAP % (95 % interval)"), ("gflops", None, "GFLOPs")]
    if batch is not None:
        panels.append(("latency_ms", batch, f"latency at batch {batch}, ms median"))
    fig = Figure(figsize=(5 * len(panels), 4.4))
    for index, (name, at, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        _draw(ax, _lines(summaries, key), key, values, name, at)
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(len(labels), 1)), frameon=False, fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.16 + 0.05 * ((len(labels) + 2) // 3), wspace=0.28)
    fig.suptitle(f"Per axis: {key}")
    return Plot(
        filename=f"axis-{key}.png", title=f"Accuracy and cost against {key}",
        caption=f"Each line holds one backbone-neck pair (and the other axes' values) fixed and varies {key}; "
                "a point missing on a line is a cell without that number (failed, expected to fail, not measured).",
        png=_png(fig),
    )


def _draw(ax: Any, lines: dict[str, list[CellSummary]], key: str, values: list[str], name: str, batch: Optional[int]) -> None:
    quantity = QUANTITIES[name]
    for number, (label, cells) in enumerate(lines.items()):
        points = [(values.index(axis_text(s.axes[key])), s.stat(quantity, batch)) for s in cells]
        points = [(x, stat) for x, stat in points if stat is not None]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [stat.mean * quantity.scale for _, stat in points]
        bars = [interval_error(stat, quantity.scale) or [[0.0], [0.0]] for _, stat in points]
        errors = [[low for (low,), _ in bars], [high for _, (high,) in bars]]
        ax.errorbar(xs, ys, yerr=errors if name == "mAP" else None, label=label, capsize=3,
                    color=COLOURS[number % len(COLOURS)], marker=MARKERS[number % len(MARKERS)])
