"""Plain-text tables of measurement records, for the terminal."""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd


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
