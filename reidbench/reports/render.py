"""The report as Markdown (for a README or a pull request) and as one self-contained HTML file.

Both are rendered from the same `ReportDoc`, so they never disagree. The HTML
embeds its PNGs as data URIs and its CSS inline: it opens from a mail
attachment or a CI artifact, without a server and without the internet.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Optional

from reidbench.reports.plots import Plot
from reidbench.reports.tables import Table, TableCell

BETTER, WORSE = "✓", "✗"


@dataclass
class Section:
    title: str
    intro: str = ""
    items: list[str] = field(default_factory=list)
    tone: str = ""
    """'bad', 'good' or 'warn': how the HTML colours the section's frame."""
    tables: list[tuple[str, Table]] = field(default_factory=list)
    """(caption, table) pairs after the items: e.g. one missing-modality table per cell."""
    figures: list[Plot] = field(default_factory=list)
    """PNGs shown after the items and before the tables (e.g. rank lists), written beside report.md like the plots."""


@dataclass
class ReportDoc:
    title: str
    header: list[tuple[str, str]]
    table: Table
    compact: Optional[Table] = None
    """The short table shown first, under Results; the full `table` then follows under its own heading."""
    banner: str = ""
    """What every reader must know before reading a number (random initialisation, synthetic data); top of the page."""
    warnings: list[str] = field(default_factory=list)
    before_plots: list[Section] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    after_plots: list[Section] = field(default_factory=list)


RESULTS, ALL_COLUMNS = "Results", "All columns"
"""The headings of the short table and of the full one after it (the full one is under Results when alone)."""


def _tables(doc: ReportDoc) -> list[tuple[str, Table]]:
    return [(RESULTS, doc.compact), (ALL_COLUMNS, doc.table)] if doc.compact is not None else [(RESULTS, doc.table)]


# ---------------------------------------------------------------- Markdown


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _md_cell(cell: TableCell) -> str:
    if cell.status is not None:
        return f"**{cell.status}**" + (": " + _md_escape(cell.message) if cell.message else "")
    text = cell.text
    if cell.delta is not None:
        mark = {True: f" {BETTER}", False: f" {WORSE}"}.get(cell.better, "")
        text += f" ({cell.delta}{mark})"
    return _md_escape(text)


def table_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.intro:
        lines += [section.intro, ""]
    lines += [f"- {item}" for item in section.items]
    lines += [""] if section.items else []
    for figure in section.figures:
        lines += [f"### {figure.title}", "", f"![{figure.title}]({figure.filename})", "", figure.caption, ""]
    for caption, table in section.tables:
        lines += [f"**{_md_escape(caption)}**", "", table_markdown(table), ""]
    return lines


def to_markdown(doc: ReportDoc) -> str:
    """Markdown with the PNGs referenced by file name: keep report.md beside them."""
    lines = [f"# {doc.title}", ""]
    lines += [f"> **Read this first:** {doc.banner}", ""] if doc.banner else []
    lines += [f"- **{key}**: {value}" for key, value in doc.header] + [""]
    lines += [f"> **warning**: {w}" for w in doc.warnings] + ([""] if doc.warnings else [])
    for heading, table in _tables(doc):
        lines += [f"## {heading}", "", table_markdown(table), ""]
        lines += [f"{note}  " for note in table.footnotes] + ([""] if table.footnotes else [])
    for section in doc.before_plots:
        lines += _md_section(section)
    if doc.plots:
        lines += ["## Plots", ""]
        for plot in doc.plots:
            lines += [f"### {plot.title}", "", f"![{plot.title}]({plot.filename})", "", plot.caption, ""]
    for section in doc.after_plots:
        lines += _md_section(section)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1500px; padding: 0 1.5rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 1px solid #d0d7de; padding-bottom: .4rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #eaeef2; padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin-bottom: .3rem; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; font-size: .92rem; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
.scroll { overflow-x: auto; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { padding: .35rem .55rem; border-bottom: 1px solid #eaeef2; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; font-weight: 600; white-space: normal; min-width: 6.5rem; vertical-align: bottom; }
td.text, th.text { text-align: left; }
td.status { white-space: normal; min-width: 14rem; max-width: 26rem; text-align: left; }
tr:hover td { background: #f6f8fa; }
.msg { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .78rem; color: #57606a; margin-top: .15rem; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-weight: 600; font-size: .8rem; }
.st-done { background: #dafbe1; color: #116329; } .st-xfail { background: #fff8c5; color: #7d4e00; }
.st-failed, .st-xpass, .st-damaged { background: #ffebe9; color: #a40e26; }
.st-missing, .st-running, .st-interrupted { background: #eaeef2; color: #57606a; }
.delta { display: block; font-size: .75rem; } .better { color: #1a7f37; } .worse { color: #cf222e; } .same { color: #8c959f; }
.footnote { font-size: .85rem; color: #57606a; margin: .3rem 0; }
.warning { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .4rem .8rem; margin: .4rem 0; }
section.box { border-left: 4px solid #d0d7de; padding: .1rem 1rem; margin: 1rem 0; }
section.bad { border-color: #cf222e; background: #fff5f5; } section.good { border-color: #1a7f37; background: #f5fff7; }
section.warn { border-color: #d4a72c; background: #fffdf0; }
.banner { border: 2px solid #b35900; background: #fff4e5; padding: 0.7em 1em; margin: 0.8em 0 1.2em; font-size: 1.05em; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .88rem; color: #57606a; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _html_cell(cell: TableCell, column: int, text_cells: int = 3) -> str:
    if cell.status is not None:
        message = f'<div class="msg">{_e(cell.message)}</div>' if cell.message else ""
        return f'<td class="status"><span class="badge st-{_e(cell.status)}">{_e(cell.status)}</span>{message}</td>'
    css = "text" if column < text_cells else ""
    body = _e(cell.text)
    if cell.delta is not None:
        tone, mark = {True: ("better", BETTER), False: ("worse", WORSE)}.get(cell.better, ("same", ""))
        body += f'<span class="delta {tone}">{_e(cell.delta)} {mark}</span>'
    return f'<td class="{css}">{body}</td>' if css else f"<td>{body}</td>"


def table_html(table: Table, text_columns: Optional[int] = None) -> str:
    """`text_columns`: how many leading columns hold text, left-aligned (default: the results table's)."""
    heads, cells = (4, 3) if text_columns is None else (text_columns, text_columns)
    head = "".join(f'<th class="text">{_e(c)}</th>' if i < heads else f"<th>{_e(c)}</th>" for i, c in enumerate(table.columns))
    rows = "\n".join(
        f'<tr data-cell="{_e(cell_id)}">' + "".join(_html_cell(c, i, cells) for i, c in enumerate(row)) + "</tr>"
        for cell_id, row in zip(table.cells, table.rows)
    )
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>'


def _html_section(section: Section) -> str:
    tone = f" {section.tone}" if section.tone else ""
    intro = f"<p>{_e(section.intro)}</p>" if section.intro else ""
    items = "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in section.items) + "</ul>" if section.items else ""
    tables = "".join(f"<h3>{_e(caption)}</h3>{table_html(table, text_columns=1)}" for caption, table in section.tables)
    figures = "".join(_html_figure(figure) for figure in section.figures)
    return f'<section class="box{tone}"><h2>{_e(section.title)}</h2>{intro}{items}{figures}{tables}</section>'


def _html_figure(plot: Plot) -> str:
    return (f'<figure><h3>{_e(plot.title)}</h3><img src="{data_uri(plot.png)}" alt="{_e(plot.title)}">'
            f"<figcaption>{_e(plot.caption)}</figcaption></figure>")


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def to_html(doc: ReportDoc) -> str:
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{_e(doc.title)}</h1>",
        *([f'<div class="banner"><strong>Read this first:</strong> {_e(doc.banner)}</div>'] if doc.banner else []),
        '<dl class="header">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in doc.header) + "</dl>",
    ]
    parts += [f'<div class="warning"><strong>warning:</strong> {_e(w)}</div>' for w in doc.warnings]
    for heading, table in _tables(doc):
        parts += [f"<h2>{_e(heading)}</h2>", table_html(table, text_columns=1 if table is doc.compact else None)]
        parts += [f'<p class="footnote">{_e(n)}</p>' for n in table.footnotes]
    parts += [_html_section(s) for s in doc.before_plots]
    if doc.plots:
        parts.append("<h2>Plots</h2>")
        parts += [_html_figure(plot) for plot in doc.plots]
    parts += [_html_section(s) for s in doc.after_plots]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
