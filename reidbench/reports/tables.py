"""Tables of measurement records: plain text for `bench` in the terminal, structured rows for `report`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import pandas as pd

from reidbench.reports.compare import Comparison, format_change
from reidbench.bench.export import onnx_table_text
from reidbench.bench.memory import KIND_WORDS, headline_mib
from reidbench.schema import axis_text
from reidbench.reports.quantities import ACCURACY, COMPILE_SECONDS, MODE_COST, QUANTITIES, RERANKED, Quantity, format_params
from reidbench.reports.summary import IDENTITY_BOOTSTRAP, CellSummary, Stat, short_reason


ONNX_COLUMN = "ONNX (export / parity)"
"""The export column, on the console (`bench --runtime onnxruntime`) as in the report."""


def _millions(n: Any) -> str:
    return "" if n in (None, "") else format_params(n)


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
        latency = r.get("latency", [])
        for entry in latency:
            if entry.get("mode", "eager") != "eager":
                continue
            key = f"bs{entry['batch_size']}"
            if "median_ms" in entry:
                row[f"{key} ms med/p90"] = f"{entry['median_ms']:.2f}/{entry['p90_ms']:.2f}"
                row[f"{key} img/s"] = f"{entry['img_per_s']:.0f}"
            else:
                row[f"{key} ms med/p90"] = "OOM"
        row.update(_mode_columns(latency))
        if (seconds := (r.get("compile") or {}).get("seconds")) is not None:
            row[COMPILE_SECONDS.label] = f"{seconds:.1f}"
        memory = r.get("memory") or {}
        for kind in ("inference", "train_step"):
            m = memory.get(kind) or {}
            value = headline_mib(m)
            if value is not None:
                row[f"{kind} MiB ({KIND_WORDS.get(m.get('kind'), 'peak')}, bs{m['batch_size']})"] = f"{value:.0f}"
        if r.get("onnx"):
            row[ONNX_COLUMN] = onnx_table_text(r["onnx"])
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _mode_columns(latency: list[dict[str, Any]]) -> dict[str, str]:
    """Beside eager, each faster mode's median ms at the smallest batch and img/s at the largest.

    Batch 1 is launch-bound and large batches are about throughput: these two
    numbers are where a mode can differ from eager; the record holds all of them.
    """
    sizes = sorted({e["batch_size"] for e in latency})
    out: dict[str, str] = {}
    if not sizes:
        return out
    for mode, (ms, rate) in MODE_COST.items():
        entries = {e["batch_size"]: e for e in latency if e.get("mode") == mode}
        if sizes[0] in entries:
            out[f"bs{sizes[0]} {ms.label}"] = _mode_text(entries[sizes[0]], "median_ms", ".2f")
        if sizes[-1] in entries:
            out[f"bs{sizes[-1]} {rate.label}"] = _mode_text(entries[sizes[-1]], "img_per_s", ".0f")
    return out


def _mode_text(entry: dict[str, Any], key: str, spec: str) -> str:
    if key in entry:
        return format(entry[key], spec)
    return "skipped" if "skipped" in entry else "OOM" if "out of memory" in entry.get("error", "") else "error"


def _mode_lines(records: list[dict[str, Any]]) -> list[str]:
    """What was compiled, why a mode was skipped (once per reason), and each mode's errors."""
    lines, skipped = [], {}
    for r in records:
        info = r.get("compile") or {}
        if "regions" in info:
            lines.append(
                f"{r['cell']} compiled: {info['regions']} x {info['region']} ({info['backend']}, mode {info['mode']}, "
                f"dynamic={info['dynamic']}), {info.get('drop_paths_unified', 0)} drop paths unified; compile {info.get('seconds', 0):.1f} s in all"
            )
        for e in r.get("latency", []):
            if "skipped" in e:
                skipped.setdefault(e["skipped"], set()).add(e["mode"])
            elif "error" in e and e.get("mode", "eager") != "eager":
                lines.append(f"{r['cell']} bs{e['batch_size']} {e['mode']}: {e['error']}")
    lines += [f"{', '.join(sorted(modes))}: skipped ({reason})" for reason, modes in skipped.items()]
    return lines


def bench_table(records: list[dict[str, Any]]) -> str:
    """The table, then the messages and notes it has no room for."""
    lines = [bench_frame(records).to_string(index=False)]
    for r in records:
        if r.get("error"):
            lines.append(f"{r['cell']} [{r['status']}]: {r['error']}")
    lines += _mode_lines(records)
    for r in records:
        for ref in r.get("reference", []):
            lines.append(
                f"{r['cell']} bs{ref['batch_size']}: bare {ref['model']} loop {ref['mean_ms']:.2f} ms "
                f"({ref['img_per_s']:.0f} img/s); harness / bare = {ref['harness_over_bare']:.3f}"
            )
    for r in records:
        lines.extend(f"{r['cell']} {_train_line(t)}" for t in r.get("train_throughput", []))
    notes = sorted({n for r in records for n in r.get("notes", []) if " neck: " in n})
    notes += sorted({w for r in records for w in r.get("warnings", [])})
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines)


def _train_line(entry: dict[str, Any]) -> str:
    """One measured training batch: harness img/s, and its ratio to the bare loop or to eager."""
    head = f"train bs{entry['batch_size']} {entry['mode']}:"
    if "img_per_s" not in entry:
        return f"{head} {entry.get('error') or entry.get('skipped') or 'not measured'}"
    text = f"{head} harness {entry['img_per_s']:.0f} img/s"
    if entry.get("bare"):
        text += f", bare {entry['bare']['model']} loop {entry['bare']['img_per_s']:.0f} img/s, harness / bare = {entry['ratio_to_bare']:.3f}"
    if entry.get("ops_per_step") and (entry.get("bare") or {}).get("ops_per_step"):
        text += f" ({entry['ops_per_step']} vs {entry['bare']['ops_per_step']} ops dispatched per step)"
    if entry.get("ratio_to_eager"):
        text += f", {entry['ratio_to_eager']:.2f}x eager"
    if entry.get("compile_seconds") is not None:
        text += f", compile {entry['compile_seconds']:.1f} s"
    if entry.get("capture_seconds") is not None:
        text += f", capture {entry['capture_seconds']:.1f} s"
    return text


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


NOISY_TIMING_MARK = "(noisy)"
"""After a latency whose p90 / median or repeat count says the machine disturbed it (`reidbench.bench.timing`)."""
MISSING_VALUE = "—"


BELOW_CHANCE_MARK = "(below chance)"
"""After an mAP at or below the chance level (`summary.below_chance`)."""
Value = Callable[..., TableCell]


def _valuer(comparison: Optional[Comparison], marks: Optional[dict[str, str]] = None) -> Value:
    """A table cell for a summary's quantity: its mean and interval (`interval=False`: the mean alone), its change
    against the baseline under it, and `marks` (cell -> mark) after an mAP."""
    def value(s: CellSummary, name: str, batch: Optional[int] = None, interval: bool = True) -> TableCell:
        q = QUANTITIES[name]
        stat = s.stat(q, batch)
        cell = TableCell(_stat_text(stat if interval or stat is None else Stat(stat.mean, stat.n), q))
        if name == "mAP" and s.cell in (marks or {}):
            cell.text += f" {marks[s.cell]}"
        if comparison is not None and (d := comparison.delta(s, q, batch)) is not None:
            cell.delta, cell.better = format_change(d, q), d.better
        return cell

    return value


def report_table(
    summaries: list[CellSummary], batch_sizes: list[int], comparison: Optional[Comparison] = None,
    below_chance: Optional[dict[str, str]] = None,
) -> Table:
    """One row per cell: status, accuracy, parameters per part, FLOPs, latency per batch, memory, training time.

    Numbers are means over seeds with their 95 % interval `mean [low, high]`; the
    footnotes say how each interval was made and which cells have none.
    `below_chance`: cell -> why its mAP is no better than chance (marked and footnoted).
    """
    several = any(s.seeds > 1 for s in summaries)
    keys, summaries = grouped_by_axes(summaries)
    accuracy = ACCURACY + [q for q in RERANKED if any(s.stat(q) is not None for s in summaries)]
    columns = ["cell", "backbone", "neck", *keys, "status"] + (["seeds"] if several else [])
    columns += [q.label for q in accuracy]
    columns += ["params M total (backbone / neck / head)", "GMACs", "GFLOPs"]
    for b in batch_sizes:
        columns += [f"bs{b} ms median / p90", f"bs{b} img/s"]
    modes = _mode_quantities(summaries, batch_sizes)
    columns += [q.label if b is None else f"bs{b} {q.label}" for q, b in modes]
    columns += [_memory_header(summaries, "infer"), _memory_header(summaries, "train"), "train s"]
    exported = any(s.onnx for s in summaries)
    columns += [ONNX_COLUMN] if exported else []
    value = _valuer(comparison, dict.fromkeys(below_chance or {}, BELOW_CHANCE_MARK))
    rows = []
    for s in summaries:
        row = [TableCell(s.cell), TableCell(s.backbone), TableCell(s.neck), *(TableCell(axis_text(s.axes.get(k, ""))) for k in keys),
               TableCell(s.status, status=s.status, message=s.message)]
        if several:
            row.append(TableCell(_seeds_text(s)))
        row += [value(s, q.name) for q in accuracy]
        params = value(s, "params")
        parts = [s.values.get(f"params_{p}") for p in ("backbone", "neck", "head")]
        if all(parts):
            params.text += " (" + " / ".join(format_params(p.mean) for p in parts) + ")"
        row += [params, value(s, "gmacs"), value(s, "gflops")]
        for b in batch_sizes:
            row += _latency_cells(s, b, value)
        row += [value(s, q.name, b) for q, b in modes]
        row += [value(s, "peak_infer_mib"), value(s, "peak_train_mib"), value(s, "train_seconds")]
        row += [TableCell(onnx_table_text(s.onnx) if s.onnx else MISSING_VALUE)] if exported else []
        rows.append(row)
    footnotes = interval_notes(summaries)
    if any(" of " in _seeds_text(s) for s in summaries):
        footnotes.append("Seeds 'k of n': only k of the n seeds run gave an accuracy; its mean and interval use those k.")
    footnotes += noise_notes(summaries, batch_sizes) + chance_notes(below_chance) + window_notes(summaries)
    return Table(columns, rows, [s.cell for s in summaries], footnotes)


def compact_table(
    summaries: list[CellSummary], batch_sizes: list[int], comparison: Optional[Comparison] = None,
    below_chance: Optional[dict[str, str]] = None,
) -> Table:
    """The table a pull request has room for, one row per cell: status, mAP with its 95 % interval, rank-1, GFLOPs,
    parameters and the median latency at the smallest batch; the full table follows it in the report."""
    _, summaries = grouped_by_axes(summaries)
    batch = batch_sizes[0] if batch_sizes else None
    columns = ["cell", "status", "mAP % [95 % CI]", "R-1 %", "GFLOPs", "params M"] + ([f"bs{batch} ms median"] if batch else [])
    value = _valuer(comparison, dict.fromkeys(below_chance or {}, BELOW_CHANCE_MARK))
    rows = []
    for s in summaries:
        why = short_reason(s) if s.status != "done" else None
        row = [TableCell(s.cell), TableCell(s.status, status=s.status, message=why or None), value(s, "mAP"),
               value(s, "rank1", interval=False), value(s, "gflops"), value(s, "params")]
        if batch is not None:
            latency = value(s, "latency_ms", batch, interval=False)
            latency.text += f" {NOISY_TIMING_MARK}" if batch in s.noise and latency.text != MISSING_VALUE else ""
            row.append(latency)
        rows.append(row)
    footnotes = ["mAP: the mean over seeds with its 95 % interval; R-1 and latency: the means. Every column, with how "
                 "each interval was made, is in the full table below."]
    footnotes += noise_notes(summaries, batch_sizes[:1]) + chance_notes(below_chance)
    return Table(columns, rows, [s.cell for s in summaries], footnotes)


def noise_notes(summaries: list[CellSummary], batch_sizes: list[int]) -> list[str]:
    """Why each latency marked noisy at these batch sizes cannot be trusted."""
    return [f"{NOISY_TIMING_MARK} {s.cell} bs{b}: {why}; the CI gate skips this latency"
            for s in summaries for b, why in s.noise.items() if b in batch_sizes]


def chance_notes(below_chance: Optional[dict[str, str]]) -> list[str]:
    return [f"{BELOW_CHANCE_MARK} {cell}: {why}." for cell, why in (below_chance or {}).items()]


def interval_notes(summaries: list[CellSummary]) -> list[str]:
    """How the table's intervals were made, and the cells whose accuracy has none."""
    m_ap = QUANTITIES["mAP"]
    bootstrapped = [s.cell for s in summaries if (st := s.stat(m_ap)) is not None and st.method == IDENTITY_BOOTSTRAP]
    bare = [s.cell for s in summaries if (st := s.stat(m_ap)) is not None and st.low is None]
    notes = ["Numbers are means over seeds with their 95 % interval, mean [low, high]: Student's t over the seeds "
             "(n − 1 degrees of freedom), cut at 0 (nothing here is negative) and an accuracy's at 100 %; parameters and FLOPs are the same for every "
             "seed and have none."]
    if bootstrapped:
        notes.append("One seed, accuracy: the interval is the percentile bootstrap over query identities (2000 resamples) — "
                     "the test set's uncertainty only, not the seed's: " + ", ".join(bootstrapped) + ".")
    if bare:
        notes.append("One seed and no per-query scores (queries.npz), so no interval: " + ", ".join(bare) + ".")
    return notes


def window_notes(summaries: list[CellSummary]) -> list[str]:
    """The neck notes that change how the table reads -- clamped or identical windows, uncovered tokens, whole-grid
    readouts -- beside it rather than at the end of the report."""
    telling = ("clamped", "uncovered", "whole-grid", "copies of one window")
    notes = dict.fromkeys(n for s in summaries for n in s.notes if " neck: " in n and any(word in n for word in telling))
    return [f"Neck: {note}" for note in notes]


def grouped_by_axes(summaries: list[CellSummary]) -> tuple[list[str], list[CellSummary]]:
    """The axes any cell has, and the cells grouped by their values (first axis first), the grid's order within a group."""
    keys = list(dict.fromkeys(key for s in summaries for key in s.axes))
    if not keys:
        return keys, summaries
    values = {key: list(dict.fromkeys(axis_text(s.axes[key]) for s in summaries if key in s.axes)) for key in keys}

    def position(s: CellSummary) -> tuple[int, ...]:
        return tuple(values[k].index(axis_text(s.axes[k])) if k in s.axes else -1 for k in keys)

    return keys, sorted(summaries, key=position)


def _latency_cells(s: CellSummary, batch: int, value: Value) -> list[TableCell]:
    """Median / p90 and img/s at one batch size; a timing that cannot be trusted is marked, its reason footnoted."""
    latency = value(s, "latency_ms", batch)
    p90 = s.stat(QUANTITIES["latency_p90_ms"], batch)
    if p90 is not None:
        latency.text += " / " + _stat_text(p90, QUANTITIES["latency_p90_ms"])
    if batch in s.noise:
        latency.text += " " + NOISY_TIMING_MARK
    return [latency, value(s, "img_per_s", batch)]


def _mode_quantities(summaries: list[CellSummary], batch_sizes: list[int]) -> list[tuple[Quantity, Optional[int]]]:
    """The faster modes' columns any cell has: ms at the smallest batch, img/s at the largest, then compile s.

    Eager keeps the headline columns; without compiled or graph numbers the table is as it always was.
    """
    if not batch_sizes:
        return []
    wanted = [(q, b) for ms, rate in MODE_COST.values() for q, b in ((ms, batch_sizes[0]), (rate, batch_sizes[-1]))]
    wanted.append((COMPILE_SECONDS, None))
    return [(q, b) for q, b in wanted if any(s.stat(q, b) is not None for s in summaries)]


def _stat_text(stat: Optional[Stat], q: Quantity) -> str:
    if stat is None:
        return MISSING_VALUE
    text = q.shown(stat.mean)
    if stat.low is not None and stat.high is not None and not q.deterministic:
        decimals = len(text.partition(".")[2])
        text += f" [{_fixed(stat.low * q.scale, decimals)}, {_fixed(stat.high * q.scale, decimals)}]"
    return text


def _fixed(value: float, decimals: int) -> str:
    """`value` to `decimals` places, without the sign of a value that rounds to zero ('-0')."""
    text = f"{value:.{decimals}f}"
    return text.removeprefix("-") if float(text) == 0 else text


def _seeds_text(s: CellSummary) -> str:
    """The seeds behind the cell's accuracy means (mAP's count), 'k of n' where only some of its seeds gave one;
    a cell with no accuracy at all (an expected failure) shows the seeds it ran."""
    behind = s.stat(ACCURACY[0])
    counted = behind.n if behind is not None else 0
    return f"{counted} of {s.seeds}" if 0 < counted < s.seeds else str(s.seeds)


def _memory_header(summaries: list[CellSummary], which: str) -> str:
    """'peak infer MiB (RSS, bs 8)': what kind of peak it is, and at which batch, when all cells agree."""
    kinds = {s.memory_kind for s in summaries if s.memory_kind}
    kind = KIND_WORDS.get(next(iter(kinds)), "") if len(kinds) == 1 else ""
    batches = {int(st.mean) for s in summaries if (st := s.values.get(f"peak_{which}_mib_batch"))}
    detail = ", ".join(x for x in (kind, f"bs {next(iter(batches))}" if len(batches) == 1 else "") if x)
    return f"peak {which} MiB" + (f" ({detail})" if detail else "")
