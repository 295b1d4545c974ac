"""Whole-forward CUDA-graph replay for inference latency.

Batch-1 inference is launch-bound (hundreds of small kernels whose launches take
longer than their work on a fast GPU), so the whole forward is captured once and
replayed. This is done here for the whole model rather than by inductor's
`mode="reduce-overhead"`, which under regional compilation would make one graph
per block and still launch the eager parts one by one.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.runtime.device import DTYPES, autocast

def cuda_graph_unavailable(device: torch.device) -> Optional[str]:
    """None where a CUDA graph can be captured on `device`, else why not (recorded as the mode's skip reason)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; this runs on {device.type}"
    if not torch.cuda.is_available():
        return "CUDA graphs need a CUDA device; torch sees none"
    return None


class GraphedForward:
    """An inference forward pass captured as one CUDA graph, replayed on static input buffers.

    Calling copies new inputs into the static buffers (skipped when given the
    buffers themselves) and replays; the result is the static output tensor,
    overwritten by the next replay, so clone it to keep it. Replay reads the
    weights in place: in-place updates are seen, replaced parameter tensors are
    not. Shapes are fixed: capture one graph per batch size.
    """

    def __init__(
        self, graph: torch.cuda.CUDAGraph, images: torch.Tensor, cam_ids: Optional[torch.Tensor],
        output: torch.Tensor, capture_s: float,
    ) -> None:
        self.graph = graph
        self.images = images
        self.cam_ids = cam_ids
        self.output = output
        self.capture_s = capture_s
        """Wall time of the warm-up calls and the capture."""

    def __call__(self, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        _load(self.images, images, "images")
        if (cam_ids is None) != (self.cam_ids is None):
            raise UsageError(
                "this CUDA graph was captured " + ("with" if self.cam_ids is not None else "without")
                + " camera ids; call it the same way, or capture another graph."
            )
        if cam_ids is not None:
            _load(self.cam_ids, cam_ids, "cam_ids")
        return self.replay()

    def replay(self) -> torch.Tensor:
        """Run the captured forward on whatever the static buffers hold now."""
        self.graph.replay()
        return self.output


def capture_cuda_graph(
    model: nn.Module, images: torch.Tensor, cam_ids: Optional[torch.Tensor] = None, dtype: str = "fp32", warmup: int = 3,
) -> GraphedForward:
    """Capture `model(images, cam_ids)` under inference mode and the bench's autocast (`dtype` fp32 or bf16).

    Warm-up calls (at least one) run first on a side stream, as CUDA graphs
    require: they compile any compiled blocks for this shape, let cuDNN pick its
    algorithms and settle the allocator. The autocast is the bench's own, opened
    here: the same autocast state as the compiled timing, so compiled blocks are
    not recompiled for the capture (dynamo guards on autocast's cache flag), and
    a fresh region, so no weight cast made before the capture is baked into the
    graph -- which is why an enclosing autocast region is refused. The weight
    casts are captured and replayed each call. Works with eager and compiled blocks.
    """
    reason = cuda_graph_unavailable(images.device)
    if reason is not None:
        raise UsageError(reason)
    if model.training:
        raise UsageError("capture_cuda_graph captures inference: call model.eval() first.")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}.")
    if torch.is_autocast_enabled("cuda"):
        raise UsageError(
            "capture_cuda_graph was called inside an autocast region; call it outside and pass dtype: it opens its own, "
            "so that no weight cast cached before the capture is baked into the graph."
        )
    static_images = images.detach().clone()
    static_cams = None if cam_ids is None else cam_ids.detach().clone()
    device = images.device
    started = time.perf_counter()
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode(), autocast(device, dtype):
        for _ in range(max(1, warmup)):
            model(static_images, static_cams)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph), autocast(device, dtype):
        output = model(static_images, static_cams)
    torch.cuda.synchronize(device)
    return GraphedForward(graph, static_images, static_cams, output, time.perf_counter() - started)


def _load(static: torch.Tensor, new: torch.Tensor, name: str) -> None:
    if new is static:
        return
    if new.shape != static.shape:
        raise UsageError(
            f"a CUDA graph replays fixed shapes: it was captured with {name} {list(static.shape)}, "
            f"got {list(new.shape)}; capture one graph per batch size."
        )
    static.copy_(new, non_blocking=True)
