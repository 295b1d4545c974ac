"""The declared comparisons as a reader sees them: a forest plot per metric and a section with the table.

A forest plot puts every comparison's A − B on one axis with its 95 % interval, over the
shaded equivalence band ±margin: an interval clear of 0 is a difference, one inside the band
an equivalence, one straddling the band's edge neither; the verdict (after Holm) is written
beside it.
"""
from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure

from reidbench.reports.comparisons import METRICS, Family, Row
from reidbench.reports.plots import STYLE, Plot, _png
from reidbench.reports.quantities import QUANTITIES
from reidbench.reports.render import Section
from reidbench.reports.statistics import CONFIDENCE
from reidbench.reports.tables import Table, TableCell

VERDICT_COLOURS = {"a-better": "#1a7f37", "b-better": "#cf222e", "equivalent": "#0969da", "undecided": "#57606a"}
TESTS = ("paired-t: the same seeds in both cells (≥ 2); welch: ≥ 2 seeds each, not the same ones; "
         "bootstrap: a cell with one seed, resampling seeds then query identities from queries.npz")


def forest_plots(found: Family) -> list[Plot]:
    """One figure per metric with at least one test; none when the family has none."""
    with matplotlib.rc_context(STYLE):
        return [_forest(found, metric, rows) for metric in METRICS
                if (rows := [r for r in found.tested if r.metric == metric])]


def _forest(found: Family, metric: str, rows: list[Row]) -> Plot:
    label = QUANTITIES[metric].label.removesuffix(" %")
    fig = Figure(figsize=(10, 1.6 + 0.5 * len(rows)))
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    ax.axvspan(-found.margin, found.margin, color="#dbe9f6", zorder=0)
    ax.axvline(0, color="#333333", linewidth=1.0, zorder=1)
    for y, row, c in ((y, r, r.result) for y, r in zip(ys, rows) if r.result is not None):
        colour = VERDICT_COLOURS.get(row.verdict or "", "#57606a")
        ax.errorbar([c.diff], [y], xerr=[[c.diff - c.ci_low], [c.ci_high - c.diff]], fmt="o", color=colour, capsize=4, zorder=3)
        ax.annotate(f"{row.verdict} ({c.test})", xy=(1.01, y), xycoords=("axes fraction", "data"), va="center",
                    color=colour, fontsize=10)
    ax.set_yticks(ys, [f"{r.a} − {r.b}" for r in rows])
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_xlabel(f"A − B, {label} in percentage points (bars: {CONFIDENCE:.0%} interval; shaded: equivalence band ±{found.margin:g})")
    ax.set_title(f"{label}: declared comparisons")
    fig.subplots_adjust(left=0.32, right=0.8, top=1 - 0.5 / fig.get_figheight(), bottom=0.7 / fig.get_figheight())
    return Plot(f"forest-{metric}.png", f"Declared comparisons: {label}",
                f"Each declared comparison's {label} difference A − B with its {CONFIDENCE:.0%} interval; the shaded band "
                f"is the equivalence margin ±{found.margin:g} points; the verdict beside each is after Holm's correction "
                "over the report's family (see the Comparisons section).", _png(fig))


def comparisons_section(found: Family) -> Section:
    """The family, its table and the comparisons that could not be made, with their reasons."""
    metrics = " and ".join(QUANTITIES[m].label.removesuffix(" %") for m in METRICS)
    origin = f"{found.source} ([compare])" + (f", {found.added} of them added by --compare" if found.added else "")
    intro = (
        f"The family: {found.pairs} declared comparison(s) from {origin}, each on {metrics}; {len(found.tested)} of the "
        f"{len(found.rows)} tests could be made and Holm's correction runs over those {len(found.tested)}. "
        f"A − B in percentage points with its {CONFIDENCE:.0%} interval. Tests — {TESTS}. Verdicts: a-better / "
        f"b-better when the Holm-adjusted p < {1 - CONFIDENCE:.2f}; equivalent when the Holm-adjusted equivalence test "
        f"(TOST) shows the difference within ±{found.margin:g} points; else undecided. P(A > B): how often a run of A "
        "beats a run of B. Seeds needed: per cell, for a t test to detect max(|A − B|, margin) with power 0.8."
    ) if found.pairs else (f"{found.source[0].upper()}{found.source[1:]} declares no comparison ([compare]) between this "
                           "run's cells and none was asked with --compare A,B: no difference in this report is tested.")
    skipped = list(dict.fromkeys(f"{r.a} vs {r.b}: not tested — {r.skipped}" for r in found.rows if r.skipped))
    tables = [("Comparisons", _table(found.tested))] if found.tested else []
    return Section("Comparisons", intro, skipped, tables=tables)


def _table(rows: list[Row]) -> Table:
    columns = ["A", "B", "metric", "test", "seeds A / B", "A − B [95 % CI]", "p", "p Holm", "P(A > B)", "verdict", "seeds needed"]
    body = []
    for r, c in ((r, r.result) for r in rows if r.result is not None):
        body.append([TableCell(t) for t in (
            r.a, r.b, QUANTITIES[r.metric].label, c.test, f"{c.n_a} / {c.n_b}",
            f"{c.diff:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}]", f"{c.p:.3g}", f"{r.p_holm:.3g}",
            f"{c.p_improvement:.2f}", str(r.verdict), "—" if c.seeds_needed is None else str(c.seeds_needed),
        )])
    return Table(columns, body, [f"{r.a} vs {r.b}" for r in rows])
