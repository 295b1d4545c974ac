"""Tables of measurement records: plain text for `bench` in the terminal, structured rows for `report`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import pandas as pd

from reidbench.reports.compare import Comparison, format_change
from reidbench.reports.quantities import ACCURACY, QUANTITIES, Quantity, format_number
from reidbench.reports.summary import NOISE_RULE, CellSummary, Stat, noise_pairs


def _millions(n: Any) -> str:
    return "" if n in (None, "") else f"{n / 1e6:.1f}"


def _fmt(x: Any, spec: str) -> str:
    return "" if x is None else format(x, spec)


def bench_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell; latency columns per batch size; memory in MiB."""
    rows = []
    for r in records:
        params = r.get("params") or {}
        row = {
            "cell": r["cell"],
            "status": r["status"],
            "dim": _fmt(r.get("feature_dim"), "d"),
            "params M (bb/neck/head)": "/".join(_millions(params.get(k)) for k in ("backbone", "neck", "head")) if params else "",
            "GMACs": _fmt(r.get("gmacs"), ".2f"),
            "GFLOPs": _fmt(r.get("gflops"), ".2f"),
            "neck GMACs": _fmt((r.get("flops") or {}).get("gmacs_by_part", {}).get("neck"), ".3f"),
        }
        for entry in r.get("latency", []):
            key = f"bs{entry['batch_size']}"
            if "median_ms" in entry:
                row[f"{key} ms med/p90"] = f"{entry['median_ms']:.2f}/{entry['p90_ms']:.2f}"
                row[f"{key} img/s"] = f"{entry['img_per_s']:.0f}"
            else:
                row[f"{key} ms med/p90"] = "OOM"
        memory = r.get("memory") or {}
        for kind in ("inference", "train_step"):
            m = memory.get(kind) or {}
            value = m.get("peak_allocated_mib", m.get("peak_rss_mib"))
            label = "alloc" if "peak_allocated_mib" in m else "rss"
            if value is not None:
                row[f"{kind} MiB ({label}, bs{m['batch_size']})"] = f"{value:.0f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def bench_table(records: list[dict[str, Any]]) -> str:
    """The table, then the messages and notes it has no room for."""
    lines = [bench_frame(records).to_string(index=False)]
    for r in records:
        if r.get("error"):
            lines.append(f"{r['cell']} [{r['status']}]: {r['error']}")
    for r in records:
        for ref in r.get("reference", []):
            lines.append(
                f"{r['cell']} bs{ref['batch_size']}: bare {ref['model']} loop {ref['mean_ms']:.2f} ms "
                f"({ref['img_per_s']:.0f} img/s); harness / bare = {ref['harness_over_bare']:.3f}"
            )
    notes = sorted({n for r in records for n in r.get("notes", []) if n.startswith("ms neck")})
    notes += sorted({w for r in records for w in r.get("warnings", [])})
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines)


@dataclass
class TableCell:
    """One table cell, rendered as Markdown or HTML: a value, its delta against a baseline, a status message."""

    text: str
    delta: Optional[str] = None
    better: Optional[bool] = None
    """True: improved on the baseline, False: regressed, None: unchanged or no baseline."""
    status: Optional[str] = None
    """Set on the status column, for colouring."""
    message: Optional[str] = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[TableCell]]
    cells: list[str]
    """The cell id of each row."""
    footnotes: list[str] = field(default_factory=list)


NOISE_MARK = "≈"
MISSING_VALUE = "—"


def report_table(
    summaries: list[CellSummary], batch_sizes: list[int], comparison: Optional[Comparison] = None
) -> Table:
    """One row per cell: status, accuracy, parameters per part, FLOPs, latency per batch, memory, training time.

    Numbers are means over seeds, with ± std where a cell has several; accuracy
    values within seed noise of another cell's carry NOISE_MARK, and the
    footnotes name the pairs and the rule.
    """
    several = any(s.seeds > 1 for s in summaries)
    pairs = {q.name: noise_pairs(summaries, q) for q in ACCURACY}
    noisy = {name: {c for pair in found for c in pair} for name, found in pairs.items()}
    columns = ["cell", "backbone", "neck", "status"] + (["seeds"] if several else [])
    columns += [q.label for q in ACCURACY]
    columns += ["params M total (backbone / neck / head)", "GMACs", "GFLOPs"]
    for b in batch_sizes:
        columns += [f"bs{b} ms median / p90", f"bs{b} img/s"]
    columns += [_memory_header(summaries, "infer"), _memory_header(summaries, "train"), "train s"]

    def value(s: CellSummary, name: str, batch: Optional[int] = None) -> TableCell:
        q = QUANTITIES[name]
        cell = TableCell(_stat_text(s.stat(q, batch), q))
        if comparison is not None and (d := comparison.delta(s, q, batch)) is not None:
            cell.delta, cell.better = format_change(d, q), d.better
        return cell

    rows = []
    for s in summaries:
        row = [TableCell(s.cell), TableCell(s.backbone), TableCell(s.neck), TableCell(s.status, status=s.status, message=s.message)]
        if several:
            row.append(TableCell(str(s.seeds)))
        for q in ACCURACY:
            cell = value(s, q.name)
            if s.cell in noisy[q.name]:
                cell.text += " " + NOISE_MARK
            row.append(cell)
        params = value(s, "params")
        parts = [s.values.get(f"params_{p}") for p in ("backbone", "neck", "head")]
        if all(parts):
            params.text += " (" + " / ".join(format_number(p.mean * 1e-6) for p in parts) + ")"
        row += [params, value(s, "gmacs"), value(s, "gflops")]
        for b in batch_sizes:
            latency = value(s, "latency_ms", b)
            p90 = s.stat(QUANTITIES["latency_p90_ms"], b)
            if p90 is not None:
                latency.text += " / " + _stat_text(p90, QUANTITIES["latency_p90_ms"])
            row += [latency, value(s, "img_per_s", b)]
        row += [value(s, "peak_infer_mib"), value(s, "peak_train_mib"), value(s, "train_seconds")]
        rows.append(row)
    footnotes = []
    if several:
        footnotes.append(f"Numbers are mean ± std over seeds. {NOISE_MARK}: within seed noise of another cell — {NOISE_RULE}.")
        for q in ACCURACY:
            if pairs[q.name]:
                footnotes.append(f"{NOISE_MARK} {q.label}: " + "; ".join(f"{a} vs {b}" for a, b in pairs[q.name]))
        if not any(pairs.values()):
            footnotes.append("No two cells are within seed noise of each other on any accuracy metric.")
    return Table(columns, rows, [s.cell for s in summaries], footnotes)


def _stat_text(stat: Optional[Stat], q: Quantity) -> str:
    if stat is None:
        return MISSING_VALUE
    text = format_number(stat.mean * q.scale, q.digits)
    if stat.std is not None and not q.deterministic:
        decimals = len(text.partition(".")[2])
        text += f" ± {stat.std * q.scale:.{decimals}f}"
    return text


def _memory_header(summaries: list[CellSummary], which: str) -> str:
    """'peak infer MiB (RSS, bs 8)': what kind of peak it is, and at which batch, when all cells agree."""
    kinds = {s.memory_kind for s in summaries if s.memory_kind}
    kind = {"peak-rss": "process RSS", "cuda-allocator": "allocated"}.get(next(iter(kinds)), "") if len(kinds) == 1 else ""
    batches = {int(st.mean) for s in summaries if (st := s.values.get(f"peak_{which}_mib_batch"))}
    detail = ", ".join(x for x in (kind, f"bs {next(iter(batches))}" if len(batches) == 1 else "") if x)
    return f"peak {which} MiB" + (f" ({detail})" if detail else "")
