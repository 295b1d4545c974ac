"""ONNX export of a cell's inference model, its parity with PyTorch under ONNX Runtime, and a run's done cells exported.

The exported graph maps `images` [batch, 3, H, W] float32 (and `cam_ids`
[batch] int64 where the variant has a camera embedding) to `features`
[batch, D], with the batch axis dynamic. The default exporter is torch.onnx's
torch.export-based one (`dynamo=True`, torch's default and recommended path);
the TorchScript tracer (`exporter="torchscript"`) is kept for comparison. Each
result records the exporter, the opset the file declares and the versions
that made it.

Nothing here raises for a model that does not export or does not match: an
operator the exporter cannot handle is a result with the error, and a graph
whose features drift from PyTorch's is a parity failure in the result
(`Parity.ok`), so a grid is exported and judged cell by cell.
"""
from __future__ import annotations

import importlib
import math
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from reidbench.bench.options import BenchOptions
from reidbench.bench.ort import (
    CAM_IDS, FEATURES, IMAGES, describe_error, input_names, onnxruntime_missing, ort_features, ort_latency, ort_session,
)
from reidbench.errors import UsageError
from reidbench.profiles import MeasureConfig
from reidbench.rundir import RunDir
from reidbench.runtime.files import probe_write, write_json
from reidbench.runtime.text import first_line
from reidbench.schema import CellRecord, CellState
from reidbench.variants.factory import create_variant
from reidbench.variants.model import ReidModel
from reidbench.variants.settings import VariantSettings

Log = Callable[[str], None]

EXPORTERS = ("dynamo", "torchscript")
MIN_COSINE = 0.9999
"""fp32 features whose cosine with PyTorch's falls below this for any image are a parity failure."""
PARITY_BATCH_SIZES = (1, 3)
"""Both differ from the traced batch (2): matching at each shows the batch axis is dynamic, not baked in."""
EXTERNAL_DATA_BYTES = 1_500_000_000
"""Above this many bytes of weights they go to a side file: one ONNX protobuf cannot exceed 2 GiB."""
INSTALL_HINT = "ONNX export needs onnx and onnxscript; `pip install onnx onnxscript onnxruntime` installs them."


@dataclass
class OnnxExport:
    """How one export went: the file, who made it, and what it takes."""

    exported: bool
    exporter: str
    opset: Optional[int]
    torch_version: str
    path: Optional[str]
    inputs: list[str]
    example_batch: int
    seconds: float
    external_data: bool = False
    error: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    """The exporter's distinct warnings (a tracer's constant-folded branch, say), first lines only."""
    versions: dict[str, Optional[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Parity:
    """ONNX Runtime's features against PyTorch's on the same images, over every image of every batch checked."""

    ok: bool
    max_abs_diff: Optional[float]
    min_cosine: Optional[float]
    batch_sizes: list[int]
    threshold: float = MIN_COSINE
    message: str = ""
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uses_cameras(model: ReidModel) -> bool:
    """Whether the variant has a camera embedding, i.e. whether its features depend on camera ids."""
    return model.settings.num_cameras > 0


def example_args(model: ReidModel, batch_size: int, with_cameras: bool) -> tuple[torch.Tensor, ...]:
    images = model.example_input(batch_size)
    if not with_cameras:
        return (images,)
    return images, torch.arange(batch_size) % max(model.settings.num_cameras, 1)


def package_versions() -> dict[str, Optional[str]]:
    found: dict[str, Optional[str]] = {}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def export_missing() -> Optional[str]:
    """The one-line way to get what torch.onnx's exporter imports (onnx, onnxscript), when either cannot be imported."""
    try:
        for name in ("onnx", "onnxscript"):
            importlib.import_module(name)
    except ImportError:
        return INSTALL_HINT
    return None


def _dynamo_export(model: ReidModel, args: tuple, path: Path, opset: Optional[int], external: bool) -> None:
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model, args, str(path), dynamo=True, verbose=False, opset_version=opset, external_data=external,
        input_names=[IMAGES, CAM_IDS][: len(args)], output_names=[FEATURES],
        dynamic_shapes=tuple({0: batch} for _ in args),
    )


def _torchscript_export(model: ReidModel, args: tuple, path: Path, opset: Optional[int], external: bool) -> None:
    names = [IMAGES, CAM_IDS][: len(args)]
    torch.onnx.export(
        model, args, str(path), dynamo=False, opset_version=opset, input_names=names, output_names=[FEATURES],
        dynamic_axes={name: {0: "batch"} for name in [*names, FEATURES]},
    )


_EXPORT = {"dynamo": _dynamo_export, "torchscript": _torchscript_export}


def read_opset(path: Path) -> Optional[int]:
    """The default-domain opset the file declares (what a runtime must support), read without its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def export_onnx(
    model: ReidModel, path: Path, batch_size: int = 2, with_cameras: Optional[bool] = None,
    exporter: str = "dynamo", opset: Optional[int] = None,
) -> OnnxExport:
    """Export `model`'s inference forward (images [+ camera ids] -> feature) to `path`, batch axis dynamic.

    `with_cameras` defaults to whether the variant has a camera embedding.
    The model must sit on the CPU in float32; it is exported in eval mode and
    left in the mode it came in. The example batch must be at least 2:
    torch.export treats a size-1 dimension as the constant 1.
    """
    if exporter not in _EXPORT:
        raise UsageError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}.")
    if batch_size < 2:
        raise UsageError(f"export batch_size {batch_size} must be at least 2: a size-1 batch axis is exported as a constant.")
    path = Path(path)
    with_cameras = uses_cameras(model) if with_cameras is None else with_cameras
    args = example_args(model, batch_size, with_cameras)
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    result = OnnxExport(
        exported=False, exporter=exporter, opset=None, torch_version=torch.__version__, path=None,
        inputs=[IMAGES, CAM_IDS][: len(args)], example_batch=batch_size, seconds=0.0,
        external_data=external, versions=package_versions(),
    )
    if (missing := export_missing()) is not None:
        return replace(result, error=missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    started, was_training = time.perf_counter(), model.training
    model.eval()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _EXPORT[exporter](model, args, path, opset, external)
    except Exception as exc:  # noqa: BLE001 - a model the exporter cannot handle is a result, not a crash
        path.unlink(missing_ok=True)
        return replace(result, seconds=time.perf_counter() - started, error=describe_error(exc))
    finally:
        model.train(was_training)
    return replace(
        result, exported=True, path=str(path), opset=read_opset(path), seconds=time.perf_counter() - started,
        warnings=_distinct(caught),
    )


BENIGN_WARNINGS = ("shares the same shape constraints with another axis",)
"""Exporter warnings that say nothing about the file: images and cam_ids share the one batch axis by design."""


def _distinct(caught: list[warnings.WarningMessage], limit: int = 10) -> list[str]:
    """The exporter's warnings worth keeping with the result: first lines, each once, benign ones dropped."""
    lines = dict.fromkeys(
        f"{w.category.__name__}: {first_line(str(w.message), w.category.__name__, 240)}" for w in caught
        if not any(text in str(w.message) for text in BENIGN_WARNINGS)
    )
    return list(lines)[:limit]


def check_parity(
    model: ReidModel, session: Any, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None,
    min_cosine: float = MIN_COSINE,
) -> Parity:
    """PyTorch's fp32 features against the exported model's under ONNX Runtime, on the same images.

    `session` is an `InferenceSession` or the path of an exported model. Camera
    ids go to both sides when the graph takes them. Reports the largest
    absolute difference and the smallest per-image cosine similarity; below
    `min_cosine` the result says parity failure. A graph that refuses the
    batch is a failed parity with the error.
    """
    batch = int(images.shape[0])
    try:
        session = ort_session(Path(session)) if isinstance(session, (str, Path)) else session
        cams = cam_ids if CAM_IDS in input_names(session) else None
        exported = ort_features(session, images, cams).astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - a runtime refusal is the finding
        message = f"parity failure: ONNX Runtime failed at batch {batch}"
        return Parity(False, None, None, [batch], min_cosine, message, describe_error(exc))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(images.float(), cams).double().cpu().numpy()
    finally:
        model.train(was_training)
    if reference.shape != exported.shape:
        error = f"features of shape {list(exported.shape)} from ONNX Runtime, {list(reference.shape)} from PyTorch"
        return Parity(False, None, None, [batch], min_cosine, f"parity failure at batch {batch}", error)
    return _judge(reference, exported, [batch], min_cosine)


def _judge(reference: np.ndarray, exported: np.ndarray, batch_sizes: list[int], min_cosine: float) -> Parity:
    max_abs = float(np.abs(reference - exported).max()) if reference.size else 0.0
    cosine = float(_cosines(reference, exported).min()) if reference.size else 1.0
    return _verdict(max_abs, cosine, batch_sizes, min_cosine)


def _verdict(max_abs: float, cosine: float, batch_sizes: list[int], min_cosine: float) -> Parity:
    ok = math.isfinite(max_abs) and math.isfinite(cosine) and cosine >= min_cosine
    head = f"ok: min cosine {cosine:.7f} >= {min_cosine}" if ok else f"parity failure: min cosine {cosine:.7f} < {min_cosine}"
    message = f"{head}, max |diff| {max_abs:.3g} (batch sizes {', '.join(map(str, batch_sizes))})"
    return Parity(ok, max_abs, cosine, batch_sizes, min_cosine, message)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity; two zero rows agree (1), one zero row does not (0)."""
    a_norm, b_norm = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denominator = a_norm * b_norm
    agree = np.where((a_norm == 0) & (b_norm == 0), 1.0, 0.0)
    return np.divide((a * b).sum(axis=1), denominator, out=agree, where=denominator > 0)


def merge_parity(parts: Sequence[Parity]) -> Parity:
    """One verdict over several batches: the largest difference, the smallest cosine; a batch that failed to run fails it."""
    sizes = [b for p in parts for b in p.batch_sizes]
    failed = next((p for p in parts if p.error is not None), None)
    if failed is not None:
        return replace(failed, batch_sizes=sizes)
    max_abs = max(p.max_abs_diff for p in parts if p.max_abs_diff is not None)
    cosine = min(p.min_cosine for p in parts if p.min_cosine is not None)
    return _verdict(max_abs, cosine, sizes, parts[0].threshold)


def check_parity_at(
    model: ReidModel, session: Any, batch_sizes: Sequence[int] = PARITY_BATCH_SIZES, min_cosine: float = MIN_COSINE,
) -> Parity:
    """`check_parity` on the variant's example images at each batch size (camera ids 0, 1, ... where it has cameras), merged."""
    parts = []
    for batch_size in batch_sizes:
        images, *cams = example_args(model, batch_size, uses_cameras(model))
        parts.append(check_parity(model, session, images, cams[0] if cams else None, min_cosine))
    return merge_parity(parts)


# --------------------------------------------------------------------------- a run's cells


def export_name(cell: str, seed: int) -> str:
    return f"{cell}-seed{seed}"


def load_cell_model(record: CellRecord, weights: Path) -> ReidModel:
    """The trained model of a done cell: its variant rebuilt from the record's settings, then its trained weights."""
    settings = VariantSettings.from_mapping(record.settings, f"{record.cell} seed {record.seed}: record.json settings")
    model = create_variant(f"{record.backbone}-{record.neck}", settings=settings)  # the cell id may carry axes
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def _skip(base: dict[str, Any], record: CellRecord) -> dict[str, Any]:
    if record.status == CellState.XFAIL:
        why = "expected failure (xfail): " + (record.error or "failed as the grid expects")
    else:
        why = f"cell {record.status.value}" + (f": {record.error}" if record.error else "")
    return {**base, "status": record.status.value, "skipped": why}


def _read_cell(run_dir: Path, cell: str, seed: int) -> tuple[Optional[CellRecord], dict[str, Any]]:
    """The cell's record, or None and the result that says why there is nothing to export."""
    base = {"cell": cell, "seed": seed, "exported": False}
    run = RunDir(Path(run_dir))
    files = run.cell(cell, seed)
    try:
        record = run.read_record(cell, seed)
    except UsageError as exc:
        return None, {**base, "status": CellState.DAMAGED.value, "skipped": str(exc)}
    if record is None:
        return None, {**base, "status": CellState.MISSING.value, "skipped": f"no record at {files.record}"}
    if record.status != CellState.DONE:
        return None, _skip(base, record)
    if not files.model.exists():
        return None, {**base, "status": record.status.value, "skipped": f"no trained weights at {files.model}"}
    return record, {**base, "status": record.status.value}


def export_cell(
    run_dir: Path, cell: str, seed: int, out_dir: Path, batch_sizes: Sequence[int] = (1, 8),
    measure: Optional[MeasureConfig] = None, exporter: str = "dynamo",
) -> dict[str, Any]:
    """Export a done cell's trained model to OUT/<cell>-seed<k>.onnx, check its parity, time it under ONNX Runtime.

    The result (also written beside the model as <cell>-seed<k>.json) holds:
    exported, exporter, opset, path, parity {max_abs_diff, min_cosine, ok,
    message}, latency (one onnxruntime entry per batch size), error. Cells that
    are not done (xfail, failed, interrupted, ...) are skipped with their status
    and why; nothing here raises for a cell. `measure` gives warm-up, repeats
    and time budget (the CPU defaults of `MeasureConfig.for_device` otherwise).
    """
    record, result = _read_cell(Path(run_dir), cell, seed)
    if record is None:
        return result
    try:
        model = load_cell_model(record, RunDir(Path(run_dir)).cell(cell, seed).model)
    except Exception as exc:  # noqa: BLE001 - weights that no longer fit the variant are a result
        return {**result, "error": f"cannot rebuild the trained model: {describe_error(exc)}"}
    out_dir = Path(out_dir)
    exported = export_onnx(model, out_dir / f"{export_name(cell, seed)}.onnx", exporter=exporter)
    result.update(exported.to_dict(), parity=None, latency=[])
    if exported.exported:
        result.update(_run_exported(model, Path(exported.path or ""), batch_sizes, measure))
    write_json(out_dir / f"{export_name(cell, seed)}.json", result)
    return result


def _run_exported(
    model: ReidModel, path: Path, batch_sizes: Sequence[int], measure: Optional[MeasureConfig],
) -> dict[str, Any]:
    """Parity and ONNX Runtime latency of an exported model, or the error that kept them from running."""
    if (missing := onnxruntime_missing()) is not None:
        return {"error": missing}
    try:
        session = ort_session(path)
    except Exception as exc:  # noqa: BLE001 - a file the runtime refuses is a result
        return {"error": f"ONNX Runtime cannot load {path.name}: {describe_error(exc)}"}
    parity = check_parity_at(model, session)
    config = replace(measure or MeasureConfig.for_device(torch.device("cpu")), batch_sizes=tuple(batch_sizes))
    options = BenchOptions(torch.device("cpu"), "fp32", config)
    return {"parity": parity.to_dict(), "latency": [ort_latency(session, b, options) for b in batch_sizes]}


def run_cells(run_dir: Path, only: Optional[Sequence[str]] = None) -> list[tuple[str, int]]:
    """(cell, seed) pairs of a run in plan order, from its run.json; `only` keeps the cells it names."""
    meta = RunDir(Path(run_dir)).meta()
    cells = [c for c in meta.grid.cells if not only or c in only]
    unknown = sorted(set(only or []) - set(meta.grid.cells))
    if unknown:
        raise UsageError(f"{', '.join(unknown)}: not a cell of this run; its cells are: {', '.join(meta.grid.cells)}.")
    pairs = [(cell, seed) for cell in cells for seed in meta.cell_seeds(cell)]
    for cell in only or []:
        reasons = [_read_cell(Path(run_dir), cell, seed) for seed in meta.cell_seeds(cell)]
        if all(record is None for record, _ in reasons):
            why = "; ".join(f"seed {r['seed']}: {r['skipped']}" for _, r in reasons)
            raise UsageError(f"{cell} has nothing to export ({why}); name a cell that is done (`reidbench status {run_dir}`).")
    return pairs


def check_export_folder(out_dir: Path) -> None:
    """Refuse a folder that cannot take the exports before the first model is traced, not after."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the .onnx and .json files.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe_write(out_dir)
    except OSError as exc:
        raise UsageError(f"--out {out_dir} cannot be written ({exc.strerror or exc}); choose a folder you may write.") from None


def export_run(
    run_dir: Path, out_dir: Path, batch_sizes: Sequence[int] = (1, 8), only: Optional[Sequence[str]] = None,
    log: Log = print, measure: Optional[MeasureConfig] = None, exporter: str = "dynamo",
) -> list[dict[str, Any]]:
    """`export_cell` for every (cell, seed) of a run, one console line each; the results in plan order.

    An unknown or not-done `only` cell and an unwritable `out_dir` are refused before anything is exported.
    """
    pairs = run_cells(run_dir, only)
    check_export_folder(Path(out_dir))
    results = []
    for cell, seed in pairs:
        result = export_cell(run_dir, cell, seed, out_dir, batch_sizes, measure, exporter)
        log(f"{cell} seed {seed}: {summary_line(result)}")
        results.append(result)
    return results


def export_problems(results: Sequence[dict[str, Any]]) -> list[str]:
    """Done cells that did not export, or exported with a parity failure or an error: what makes `reidbench export` exit 1.

    Skipped cells (xfail, failed, ...) are not problems of the export: their
    own status already says what happened to them.
    """
    problems = []
    for result in results:
        if "skipped" in result:
            continue
        parity = result.get("parity") or {}
        if not result.get("exported") or result.get("error") or not parity.get("ok"):
            problems.append(f"{result['cell']} seed {result['seed']}: {summary_line(result)}")
    return problems


def summary_line(result: dict[str, Any]) -> str:
    """What `reidbench export` prints per cell: skipped and why, the export error, or parity and latency."""
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    if not result.get("exported"):
        return f"not exported: {result.get('error')}"
    parity = result.get("parity") or {}
    timed = ", ".join(
        f"bs{e['batch_size']} {e['median_ms']:.2f} ms" for e in result.get("latency") or [] if "median_ms" in e
    )
    line = f"exported ({result['exporter']}, opset {result['opset']}); {parity.get('message') or result.get('error')}"
    return line + (f"; onnxruntime {timed}" if timed else "")


def measure_onnxruntime(
    model: ReidModel, options: BenchOptions, work_dir: Optional[Path] = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """For `bench` and a run's measurement: export `model`, check parity, time it under ONNX Runtime at the batch sizes.

    Returns the latency entries (mode "onnxruntime", to stand beside eager's)
    and the export's summary (exporter, opset, parity, error). The file goes to
    `work_dir`, or to a temporary folder removed afterwards. The model is
    exported and checked on the CPU, then returned to its device: the runtime
    here is ONNX Runtime's CPU provider, which each entry names.
    """
    device = next(model.parameters()).device
    model.cpu()
    try:
        with tempfile.TemporaryDirectory(prefix="reidbench-onnx-") as scratch:
            folder = Path(work_dir) if work_dir is not None else Path(scratch)
            exported = export_onnx(model, folder / f"{model.cell_id}.onnx")
            summary: dict[str, Any] = {k: v for k, v in exported.to_dict().items() if k not in ("path", "warnings")}
            if not exported.exported:
                return [], summary
            ran = _run_exported(model, Path(exported.path or ""), options.batch_sizes, options.measure)
            return ran.get("latency", []), {**summary, "parity": ran.get("parity"), "error": ran.get("error")}
    finally:
        model.to(device)


def onnx_table_text(summary: Optional[dict[str, Any]]) -> str:
    """A report cell for an export summary or result: "ok (opset 20, min cos 0.9999998)", the parity failure, or why not."""
    if not summary:
        return ""
    if "skipped" in summary:
        return "skipped"
    if not summary.get("exported"):
        return "not exported: " + first_line(str(summary.get("error") or "unknown error"), limit=80)
    parity = summary.get("parity") or {}
    if parity.get("min_cosine") is None:
        return "exported, parity not checked: " + first_line(str(parity.get("error") or summary.get("error")), limit=80)
    verdict = "ok" if parity.get("ok") else "parity failure"
    return f"{verdict} (opset {summary.get('opset')}, min cos {parity['min_cosine']:.7f})"
