"""The report's figures, as PNG bytes: accuracy against cost, latency and throughput, memory, parameters, training.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global
backend switch), so reports render the same on a headless CI box. A cell
without a number to plot (an expected failure, a failed or missing cell) is
never dropped silently: a categorical axis shows it as a hatched placeholder,
and every figure lists the cells it could not draw, with why, under the axes.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator, NullLocator

from reidbench.bench.memory import CPU_TENSORS, CUDA_ALLOCATOR, RSS_DELTA
from reidbench.schema import EpochEntry, is_number
from reidbench.reports.quantities import QUANTITIES, format_params
from reidbench.reports.summary import CellSummary, short_reason

STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
"""One per cell, in the grid's order; a grid with more cells than colours repeats them with another line style."""
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
"""One per seed."""
LINESTYLES = ["-", "--", ":", "-."]
DPI = 110
PLACEHOLDER = dict(facecolor="#f2f2f2", edgecolor="#999999", hatch="///", linewidth=0.8)
SEED_GREY = "#555555"


@dataclass
class Plot:
    filename: str
    title: str
    caption: str
    png: bytes


class Styles:
    """Colour by cell (the grid's order, the same cell the same colour in every figure), marker by seed.

    Beyond the palette's 20 colours, cells that share one differ in line style.
    """

    def __init__(self, summaries: Sequence[CellSummary]) -> None:
        self.cells = list(dict.fromkeys(s.cell for s in summaries))
        self.seeds = sorted({seed for s in summaries for seed in s.statuses if seed >= 0})

    def colour(self, s: CellSummary) -> str:
        return COLOURS[self.cells.index(s.cell) % len(COLOURS)]

    def linestyle(self, s: CellSummary) -> str:
        return LINESTYLES[self.cells.index(s.cell) // len(COLOURS) % len(LINESTYLES)]

    def marker(self, seed: int) -> str:
        return MARKERS[self.seeds.index(seed) % len(MARKERS)] if seed in self.seeds else MARKERS[0]

    def seed_handles(self) -> list[Line2D]:
        """Legend entries for the seeds' markers, in grey: the colour belongs to the cell."""
        return [Line2D([], [], color=SEED_GREY, marker=self.marker(seed), linestyle="none", markersize=6, label=f"seed {seed}")
                for seed in self.seeds]


def colour_cell_labels(ax: Any, summaries: Sequence[CellSummary], styles: Styles) -> None:
    """A categorical axis's cell names in their cells' colours, tying a bar chart to the other figures."""
    for label, s in zip(ax.get_yticklabels(), summaries):
        label.set_color(styles.colour(s))


def all_plots(
    summaries: list[CellSummary], logs: dict[tuple[str, int], list[EpochEntry]], batch_sizes: list[int],
    chance_map: Optional[float] = None,
) -> list[Plot]:
    """Every figure of the report, in the order it shows them; no training curves where no log was read (a run
    archived as its results.csv keeps none)."""
    styles = Styles(summaries)
    with matplotlib.rc_context(STYLE):
        return [
            accuracy_vs_flops(summaries, styles, chance_map),
            latency_vs_batch(summaries, styles, batch_sizes),
            memory_bars(summaries, styles),
            params_bars(summaries, styles),
            *([training_curves(summaries, styles, logs)] if logs else []),
        ]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _why_absent(s: CellSummary, missing: str) -> str:
    reason = short_reason(s)
    return f"{s.cell}: {s.status}" + (f" ({reason})" if reason else "") + f" — {missing}"


def _footer(fig: Figure, lines: list[str]) -> float:
    """List the cells a figure could not draw under its axes, in a framed box; returns the figure fraction it takes."""
    if not lines:
        return 0.0
    text = "Not on this figure:\n" + "\n".join("  \u2022 " + line for line in lines)
    fig.text(0.012, 0.015, text, ha="left", va="bottom", fontsize=10, color="#8a1c1c", linespacing=1.45,
             bbox=dict(facecolor="#fff5f5", edgecolor="#d9a3a3", boxstyle="round,pad=0.4"))
    height_in = (len(lines) + 1) * 10 * 1.45 / 72 + 0.25
    return height_in / fig.get_figheight()


def _cell_label(s: CellSummary) -> str:
    return s.cell if s.status == "done" else f"{s.cell} ({s.status})"


def accuracy_vs_flops(summaries: list[CellSummary], styles: Styles, chance_map: Optional[float] = None) -> Plot:
    """mAP against GFLOPs, with error bars over seeds, labelled points and the Pareto frontier."""
    gflops, m_ap = QUANTITIES["gflops"], QUANTITIES["mAP"]
    points = [(s, s.scaled(gflops), s.scaled(m_ap), s.stat(m_ap)) for s in summaries]
    drawn = [(s, x, y, st) for s, x, y, st in points if x is not None and y is not None]
    absent = [
        _why_absent(s, " and ".join(w for w, v in (("no GFLOPs", x), ("no mAP", y)) if v is None))
        for s, x, y, _ in points if x is None or y is None
    ]
    fig = Figure(figsize=(9, 6))
    ax = fig.add_subplot()
    for s, x, y, st in drawn:
        ax.errorbar([x], [y], yerr=interval_error(st, m_ap.scale), fmt="_", color=styles.colour(s), markersize=22,
                    markeredgewidth=2.5, capsize=4, zorder=3)
        for seed, value in sorted(s.seed_values.get(m_ap.column, {}).items()):
            ax.plot([x], [value * m_ap.scale], marker=styles.marker(seed), color=styles.colour(s), linestyle="none",
                    markersize=6, alpha=0.85, zorder=3)
    frontier = pareto_frontier([(x, y) for _, x, y, _ in drawn])
    if len(frontier) >= 1:
        fx, fy = zip(*frontier)
        ax.step(fx, fy, where="post", color="#555555", linestyle="--", linewidth=1.2, zorder=2,
                label="Pareto frontier (no cell has higher mAP at fewer GFLOPs)")
    if chance_map is not None:
        ax.axhline(chance_map * 100, color="#aa3333", linestyle=":", linewidth=1.2, label=f"chance level ({chance_map * 100:.1f}%)")
    ax.set_xlabel("GFLOPs per image (inference, batch 1; 1 MAC = 2 FLOPs)")
    ax.set_ylabel("mAP (%)")
    ax.set_title("Accuracy against compute")
    if drawn:
        ax.margins(x=0.25, y=0.25)
    else:
        ax.text(0.5, 0.5, "no cell has both mAP and GFLOPs", transform=ax.transAxes, ha="center", va="center", color="#666666")
    if drawn:
        mean = Line2D([], [], color=SEED_GREY, marker="_", markersize=16, markeredgewidth=2.5, linestyle="none",
                      label="mean over seeds (bar: 95 % interval)")
        ax.legend(handles=ax.get_legend_handles_labels()[0] + [mean] + styles.seed_handles(), loc="best", framealpha=0.9)
    bottom = _footer(fig, absent)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.93, bottom=0.1 + bottom)
    _place_labels(fig, ax, [(_cell_label(s), x, y) for s, x, y, _ in drawn], lines=ax.get_lines(),
                  colours=[styles.colour(s) for s, *_ in drawn])
    return Plot("map_vs_gflops.png", "mAP against GFLOPs",
                "Each cell's mAP against its inference GFLOPs, in the cell's colour: the bar is the mean over seeds with its "
                "95 % interval, the small markers each seed's mAP (one marker shape per seed); the dashed step is the "
                "Pareto frontier. Cells without numbers are listed under the axes.", _png(fig))


def interval_error(stat: Any, scale: float) -> Optional[list[list[float]]]:
    """matplotlib's asymmetric error bar for a Stat's interval (None without one)."""
    if stat is None or stat.low is None or stat.high is None:
        return None
    return [[(stat.mean - stat.low) * scale], [(stat.high - stat.mean) * scale]]


def pareto_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with no more GFLOPs and more mAP, by increasing GFLOPs."""
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    return frontier


def _place_labels(
    fig: Figure, ax: Any, labels: list[tuple[str, float, float]], lines: Sequence[Any] = (), colours: Sequence[str] = (),
) -> None:
    """Put each label next to its point where it overlaps no other label, point or the axes edge, in its colour.

    Tries eight directions at growing distances (a thin leader line joins a label that
    had to move away); when none is free it takes the least crowded place.
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # settles the autoscaled limits, so data -> pixel transforms are final
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for _, x, y in labels]
    taken = [(mx - 8, my - 8, mx + 8, my + 8) for mx, my in markers]
    for line in lines:  # the frontier and reference lines: sample them as small boxes
        pixels = line.get_transform().transform(line.get_xydata())
        if line.get_drawstyle().startswith("steps"):
            corners = [pixels[0]]
            for (x0, y0), (x1, y1) in zip(pixels[:-1], pixels[1:]):
                corners += [(x1, y0), (x1, y1)]
            pixels = corners
        for (x0, y0), (x1, y1) in zip(pixels[:-1], pixels[1:]):
            steps = max(int(max(abs(x1 - x0), abs(y1 - y0)) / 6), 1)
            for i in range(steps + 1):
                px, py = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
                taken.append((px - 2, py - 2, px + 2, py + 2))
    legend = ax.get_legend()
    if legend is not None:
        box = legend.get_window_extent(renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0)]
    for index, (text, x, y) in enumerate(labels):
        best: Optional[tuple[float, tuple[float, float], str, str, tuple[float, float, float, float]]] = None
        for distance in (9, 18, 30, 44):
            for dx, dy in directions:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                offset = (dx * distance, dy * distance)
                trial = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=10)
                box = trial.get_window_extent(renderer)
                trial.remove()
                rect = (box.x0 - 2, box.y0 - 2, box.x1 + 2, box.y1 + 2)
                outside = rect[0] < frame.x0 or rect[2] > frame.x1 or rect[1] < frame.y0 or rect[3] > frame.y1
                crowding = sum(_overlap(rect, other) for other in taken) + (1e6 if outside else 0)
                if best is None or crowding < best[0]:
                    best = (crowding, offset, ha, va, rect)
                if crowding == 0:
                    break
            if best is not None and best[0] == 0:
                break
        crowding, offset, ha, va, rect = best
        far = max(abs(offset[0]), abs(offset[1])) > 9
        ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=10, zorder=4,
                    color=colours[index] if index < len(colours) else "black",
                    arrowprops=dict(arrowstyle="-", color="#888888", linewidth=0.8, shrinkA=1, shrinkB=6) if far else None)
        taken.append(rect)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def latency_vs_batch(summaries: list[CellSummary], styles: Styles, batch_sizes: list[int]) -> Plot:
    """Median latency (band up to p90) and throughput per batch size, both axes logarithmic; each seed's own median
    beside the mean, and where the seeds disagree (`summary.latency_noise`) a hollow mean and the seeds' range."""
    latency, p90, rate = QUANTITIES["latency_ms"], QUANTITIES["latency_p90_ms"], QUANTITIES["img_per_s"]
    fig = Figure(figsize=(12, 6.2))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    absent, handles = [], []
    for s in summaries:
        batches = [b for b in batch_sizes if s.scaled(latency, b) is not None]
        if not batches:
            absent.append(_why_absent(s, "no latency measured"))
            continue
        handles.append(_draw_timings(left, s, styles, batches, latency))
        _draw_timings(right, s, styles, batches, rate)
        highs = [s.scaled(p90, b) for b in batches]
        if all(h is not None for h in highs):
            left.fill_between(batches, [s.scaled(latency, b) for b in batches], highs, color=styles.colour(s), alpha=0.12, linewidth=0)
    for ax, ylabel, title in (
        (left, "ms per batch (line: mean of the seeds' medians, band: to p90)", "Latency"),
        (right, "images per second (at the median)", "Throughput"),
    ):
        _log_batch_axes(ax, batch_sizes, ylabel, title)
        if not handles:
            ax.text(0.5, 0.5, "no latency measurements", transform=ax.transAxes, ha="center", va="center", color="#666666")
    noisy = any(b in s.noise for s in summaries for b in batch_sizes)
    extra = styles.seed_handles() + ([Line2D([], [], color=SEED_GREY, marker="o", markerfacecolor="white", linestyle="none",
                                             markersize=9, label="noisy: seeds disagree or a timing was disturbed")] if noisy else [])
    _legend_below(fig, absent, handles + extra, wspace=0.28)
    return Plot("latency_throughput.png", "Latency and throughput against batch size",
                "Per cell (one colour each): the mean of its seeds' median latency per batch, band up to p90, and images per "
                "second; the small markers are each seed's own median (one shape per seed). A hollow circle with a vertical "
                "line marks a latency the table calls noisy (its seeds' medians more than 1.5x apart, or one timing "
                "disturbed): the line spans the seeds, and cells whose spans overlap there cannot be ordered. Log axes.", _png(fig))


def _draw_timings(ax: Any, s: CellSummary, styles: Styles, batches: list[int], quantity: Any) -> Any:
    """One cell's line through its means, its seeds' own values, and the noisy batches hollow with the seeds' span."""
    colour = styles.colour(s)
    means = [s.scaled(quantity, b) for b in batches]
    (line,) = ax.plot(batches, means, color=colour, linestyle=styles.linestyle(s), linewidth=1.6, label=_cell_label(s),
                      marker="_", markersize=14, markeredgewidth=2.2)
    for b, mean in zip(batches, means):
        seeds = s.seed_values.get(quantity.column_at(b), {})
        for seed, value in sorted(seeds.items()):
            ax.plot([b], [value * quantity.scale], marker=styles.marker(seed), color=colour, linestyle="none", markersize=5, alpha=0.8)
        if b in s.noise:
            ax.plot([b], [mean], marker="o", markersize=11, markerfacecolor="white", markeredgecolor=colour, markeredgewidth=1.8,
                    linestyle="none", zorder=4)
            if len(seeds) > 1:
                ax.vlines(b, min(seeds.values()) * quantity.scale, max(seeds.values()) * quantity.scale, color=colour, linewidth=1.2)
    return line


def _log_batch_axes(ax: Any, batch_sizes: list[int], ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.6)))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.6)))
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if batch_sizes:
        ax.set_xticks(batch_sizes)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        low, high = min(batch_sizes), max(batch_sizes)
        ax.set_xlim(low / 1.6, high * 1.6)


def _legend_below(fig: Any, absent: Any, handles: list, wspace: float) -> None:
    """The absent-cells footer, then a 3-column legend above it, then room for both under the axes."""
    bottom = _footer(fig, absent)
    legend_rows = -(-len(handles) // 3)
    legend_height = (legend_rows * 0.25 + 0.1) / fig.get_figheight() if handles else 0
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=3, bbox_to_anchor=(0.5, bottom), frameon=False)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.92, wspace=wspace, bottom=0.11 + bottom + legend_height)


MEMORY_AXIS = {CUDA_ALLOCATOR: "peak CUDA memory allocated (MiB)", "peak-rss": "peak resident set size of the process (MiB)",
               RSS_DELTA: "peak resident memory added by the region (MiB)", CPU_TENSORS: "peak tensor memory the region allocated (MiB)"}


def _memory_kind_label(summaries: list[CellSummary]) -> str:
    kinds = {s.memory_kind for s in summaries if s.memory_kind}
    return MEMORY_AXIS.get(next(iter(kinds)), "peak memory (MiB)") if len(kinds) == 1 else "peak memory (MiB)"


def _memory_caption(summaries: list[CellSummary]) -> str:
    """What the bars measure, in words: on a CPU the tensors each region allocates, not the process's memory."""
    kinds = {s.memory_kind for s in summaries if s.memory_kind}
    if kinds == {CPU_TENSORS}:
        return ("On the CPU each bar is the most tensor memory the region itself allocated at one time (activations, and "
                "for the training step its gradients), from PyTorch's CPU allocator; weights and data allocated before "
                "it are not counted, nor memory a math library keeps outside PyTorch's allocator.")
    if kinds == {RSS_DELTA}:
        return "On the CPU each bar is the region's increase of the process's resident memory (a record from before tensors were counted)."
    return ""


def _category_axes(summaries: list[CellSummary], height_per_cell: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(10, max(3.5, 1.4 + height_per_cell * len(summaries))))
    return fig, fig.add_subplot()


def _placeholder_row(ax: Any, y: float, text: str) -> None:
    """A hatched band across the plot where a cell has no bar, with the reason written on it."""
    ax.axhspan(y - 0.4, y + 0.4, zorder=0, **PLACEHOLDER)
    ax.text(0.02, y, text, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=10, color="#333333",
            bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.5))


def _finish_bars(fig: Figure, ax: Any, summaries: list[CellSummary], largest: float, xlabel: str, title: str) -> None:
    """Cell labels top to bottom, room for the value labels right of the longest bar, legend below."""
    ax.set_yticks(range(len(summaries)), [_cell_label(s) for s in summaries])
    ax.set_ylim(len(summaries) - 0.5, -0.5)
    ax.set_xlim(0, largest * 1.15 if largest else 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="y", visible=False)
    _bars_legend(fig, ax)


def _bars_legend(fig: Figure, ax: Any) -> None:
    """One legend entry per bar kind, under the axes where it cannot cover a bar; margins in inches."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    height = fig.get_figheight()
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), frameon=False, bbox_to_anchor=(0.5, 0.1 / height))
    fig.subplots_adjust(left=0.22, right=0.96, top=1 - 0.5 / height, bottom=(0.75 + (0.35 if unique else 0)) / height)


def memory_bars(summaries: list[CellSummary], styles: Styles) -> Plot:
    """Peak memory of inference and of one training step, side by side per cell."""
    fig, ax = _category_axes(summaries, 0.75)
    kinds = (("peak_infer_mib", "inference", "#4c72b0"), ("peak_train_mib", "training step", "#dd8452"))
    heights = 0.38
    largest = max((s.scaled(QUANTITIES[c]) or 0 for s in summaries for c, _, _ in kinds), default=0)
    for row, s in enumerate(summaries):
        values = [(s.scaled(QUANTITIES[c]), label, colour, s.values.get(f"{c}_batch")) for c, label, colour in kinds]
        if all(v is None for v, *_ in values):
            _placeholder_row(ax, row, f"{s.cell}: {s.status} — not measured" + (f" ({short_reason(s)})" if short_reason(s) else ""))
            continue
        for offset, (v, label, colour, batch) in zip((-heights / 2, heights / 2), values):
            if v is None:
                continue
            bar_label = f"{label} (bs {int(batch.mean)})" if batch else label
            ax.barh(row + offset, v, height=heights, color=colour, label=bar_label)
            ax.text(v + largest * 0.01, row + offset, f"{v:,.0f}", va="center", ha="left", fontsize=9)
    _finish_bars(fig, ax, summaries, largest, _memory_kind_label(summaries), "Peak memory: inference and one training step")
    colour_cell_labels(ax, summaries, styles)
    return Plot("memory.png", "Peak memory",
                "Peak memory of inference (largest batch) and of one SGD training step, per cell (cell names in their "
                "colours); hatched rows were not measured. " + _memory_caption(summaries), _png(fig))


def params_bars(summaries: list[CellSummary], styles: Styles) -> Plot:
    """Parameters per part, stacked: a neck that outweighs its backbone is seen at a glance."""
    fig, ax = _category_axes(summaries, 0.6)
    parts = (("backbone", "#4c72b0"), ("neck", "#dd8452"), ("head", "#55a868"))
    totals = [s.values["params"].mean / 1e6 if "params" in s.values else None for s in summaries]
    largest = max((t for t in totals if t), default=0)
    for row, s in enumerate(summaries):
        if totals[row] is None:
            _placeholder_row(ax, row, f"{s.cell}: {s.status} — no model built" + (f" ({short_reason(s)})" if short_reason(s) else ""))
            continue
        left = 0.0
        for part, colour in parts:
            stat = s.values.get(f"params_{part}")
            width = stat.mean / 1e6 if stat else 0.0
            ax.barh(row, width, left=left, height=0.6, color=colour, label=part)
            left += width
        shown = format_params(totals[row] * 1e6)
        ax.text(left + largest * 0.01, row, shown if shown.endswith(("params", "param")) else f"{shown} M", va="center", ha="left", fontsize=9)
    _finish_bars(fig, ax, summaries, largest, "parameters (millions)", "Parameters by part")
    colour_cell_labels(ax, summaries, styles)
    return Plot("params.png", "Parameters by part",
                "Backbone, neck and head parameters per cell (an expected failure still builds, so its parameters are counted).",
                _png(fig))


def _number(value: Any) -> float:
    """A logged value as a float; NaN (a gap in the line) for anything else."""
    return float(value) if is_number(value) else math.nan


def _split_stages(entries: list[EpochEntry]) -> tuple[list[EpochEntry], list[EpochEntry]]:
    """A train log's own epochs, and the lines of an earlier stage (CLIP-ReID's prompt learning, marked `stage`)."""
    return [e for e in entries if e.stage is None], [e for e in entries if e.stage is not None]


def _epoch_axis(ax: Any, last_epoch: int) -> None:
    ax.set_xlabel("epoch")
    if last_epoch:
        ax.set_xlim(0.5, last_epoch + 0.5)
        if last_epoch <= 12:
            ax.set_xticks(range(1, last_epoch + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves(summaries: list[CellSummary], styles: Styles, logs: dict[tuple[str, int], list[EpochEntry]]) -> Plot:
    """Loss and training accuracy per epoch, one line per cell and seed; a third panel with stage 1's loss where a
    cell trained CLIP-ReID's prompts first."""
    split = {key: _split_stages(entries) for key, entries in logs.items()}
    staged = any(stage1 for _, stage1 in split.values())
    fig = Figure(figsize=(18 if staged else 12, 5.8))
    loss_ax, acc_ax = fig.add_subplot(1, 3 if staged else 2, 1), fig.add_subplot(1, 3 if staged else 2, 2)
    stage_ax = fig.add_subplot(1, 3, 3) if staged else None
    absent, handles = [], []
    last_epoch = int(max((e.epoch for entries, _ in split.values() for e in entries), default=0))
    for s in summaries:
        runs = [(key[1], *split[key]) for key in sorted(split) if key[0] == s.cell and logs[key]]
        if not runs:
            absent.append(_why_absent(s, "no training log"))
            continue
        for index, (seed, entries, stage1) in enumerate(runs):
            kw = dict(color=styles.colour(s), marker=styles.marker(seed), linestyle=styles.linestyle(s), markersize=5, linewidth=1.4)
            epochs = [e.epoch for e in entries]
            label = _cell_label(s) if index == 0 else None
            (line,) = loss_ax.plot(epochs, [_number(e.loss) for e in entries], label=label, **kw)
            acc_ax.plot(epochs, [100 * _number(e.accuracy) for e in entries], **kw)
            if stage_ax is not None and stage1:
                stage_ax.plot([e.epoch for e in stage1], [_number(e.loss) for e in stage1], **{**kw, "markersize": 3})
            if index == 0:
                handles.append(line)
    for ax, ylabel, title in ((loss_ax, "training loss (ID + triplet)", "Training loss"),
                              (acc_ax, "training accuracy (%, ID classifier)", "Training accuracy")):
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _epoch_axis(ax, last_epoch)
        if not handles:
            ax.text(0.5, 0.5, "no training logs", transform=ax.transAxes, ha="center", va="center", color="#666666")
    if stage_ax is not None:
        stage_ax.set_ylabel("image-to-text + text-to-image contrastive loss")
        stage_ax.set_title("Stage 1: identity prompts (CLIP-ReID)")
        _epoch_axis(stage_ax, int(max(e.epoch for _, stage1 in split.values() for e in stage1)))
    _legend_below(fig, absent, [Line2D([], [], color=h.get_color(), linestyle=h.get_linestyle(), label=h.get_label())
                                 for h in handles] + (styles.seed_handles() if handles else []), wspace=0.25)
    return Plot("training.png", "Training curves",
                "Loss and training accuracy per epoch, one line per cell and seed (colour: the cell; marker: the seed), "
                "from each cell's train_log.jsonl"
                + ("; for cells with CLIP-ReID's head, the loss of stage 1 (prompt learning, encoders frozen) beside "
                   "them, the other panels being stage 2." if staged else "."), _png(fig))
