"""ONNX Runtime on the CPU: a session over an exported cell, its features, and its latency under bench's timer rules.

The latency entries have the shape of eager PyTorch's (`reidbench.bench.suite`)
with `"mode": "onnxruntime"`, timed by the same `time_callable` (warm-up
excluded, repeats up to a time budget, median and p90, noise marked), so the
two stand side by side in a record or a table.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from reidbench.bench.options import BenchOptions
from reidbench.bench.timing import time_callable
from reidbench.runtime.text import first_line

MODE = "onnxruntime"
"""The latency entries' mode, beside eager, compiled and graph."""
PROVIDER = "CPUExecutionProvider"
IMAGES, CAM_IDS, FEATURES = "images", "cam_ids", "features"
"""The exported graph's input and output names (`reidbench.bench.export`)."""
INSTALL_HINT = "onnxruntime is not installed; `pip install onnxruntime` runs and times exported models."


def onnxruntime_missing() -> Optional[str]:
    """The one-line way to get onnxruntime when it cannot be imported, else None."""
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return INSTALL_HINT
    return None


def ort_session(path: Path, threads: Optional[int] = None) -> Any:
    """An `InferenceSession` on the CPU provider for the exported model at `path`.

    Intra-op threads default to torch's own count: eager PyTorch latency is
    measured with that many, and ONNX Runtime would otherwise take every
    physical core, which makes the two columns incomparable. Only errors are
    logged, so the console keeps to reidbench's lines.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=[PROVIDER])


def session_threads(session: Any) -> int:
    return int(session.get_session_options().intra_op_num_threads)


def input_names(session: Any) -> list[str]:
    return [i.name for i in session.get_inputs()]


def ort_feeds(session: Any, images: torch.Tensor, cam_ids: Optional[torch.Tensor]) -> dict[str, np.ndarray]:
    """The session's inputs from PyTorch tensors: images as float32, camera ids as int64 where the graph takes them."""
    feeds = {IMAGES: images.detach().cpu().float().numpy()}
    if CAM_IDS in input_names(session):
        if cam_ids is None:
            raise ValueError("the exported model takes camera ids (it was exported with_cameras); pass cam_ids")
        feeds[CAM_IDS] = cam_ids.detach().cpu().long().numpy()
    return feeds


def ort_features(session: Any, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> np.ndarray:
    (features,) = session.run([FEATURES], ort_feeds(session, images, cam_ids))
    return features


def example_feeds(session: Any, batch_size: int) -> dict[str, np.ndarray]:
    """Random images of the exported input size (read from the graph) and camera ids 0, 0, ... for timing."""
    shape = session.get_inputs()[0].shape  # ["batch", 3M, H, W]: three channels per modality
    channels, height, width = int(shape[1]), int(shape[2]), int(shape[3])
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, channels, height, width, generator=generator)
    return ort_feeds(session, images, torch.zeros(batch_size, dtype=torch.long))


def ort_latency(session: Any, batch_size: int, options: BenchOptions) -> dict[str, Any]:
    """One latency entry for `session` at `batch_size`: bench's timer, warm-up, repeats and time budget.

    An input the graph refuses at this batch size (a batch axis that is not
    dynamic) is an entry with the error, not a crash.
    """
    entry: dict[str, Any] = {
        "batch_size": batch_size, "mode": MODE, "provider": PROVIDER, "threads": session_threads(session), "dtype": "fp32",
    }
    try:
        feeds = example_feeds(session, batch_size)
        timing = time_callable(
            lambda: session.run([FEATURES], feeds), torch.device("cpu"), options.warmup, options.repeats, options.max_seconds,
        )
    except Exception as exc:  # noqa: BLE001 - a batch size the graph cannot take is a finding
        return {**entry, "error": describe_error(exc)}
    return {**entry, **timing.to_dict(), "img_per_s": batch_size / timing.median_ms * 1e3}


def describe_error(exc: BaseException) -> str:
    """`Type: first line`, followed by the innermost cause when the exception wraps one.

    torch.onnx wraps what went wrong (an operator, a shape error in the traced
    forward) in a generic "failed at step k/3" error; the cause is what a
    reader needs, the wrapper says which step.
    """
    text = f"{type(exc).__name__}: {first_line(str(exc), type(exc).__name__, 400)}"
    cause, seen = exc, {id(exc)}
    while (inner := cause.__cause__ or cause.__context__) is not None and id(inner) not in seen:
        cause = inner
        seen.add(id(inner))
    return text if cause is exc else f"{text} <- {type(cause).__name__}: {first_line(str(cause), type(cause).__name__, 400)}"
