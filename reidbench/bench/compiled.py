"""Faster forward passes of a `ReidModel`: regional torch.compile and whole-forward CUDA-graph replay.

Regional compilation: each repeated transformer block is compiled in place
(`block.compile`), not the whole model. The blocks share one class and one
`forward`, and dynamo does not guard on which module instance runs it, so the
first block's compiled code serves all 12 -- compile time is that of one
block (seconds), not of the whole network (a minute or more per cell and batch
size), and the patch embedding, neck and head stay eager. Parameter names, and
so `state_dict()` and optimizers, are unchanged.

CUDA graphs: batch-1 inference is launch-bound (hundreds of small kernels,
~5 ms of launches for ~1 ms of work on an H200), so the whole forward is
captured once and replayed. This is done here for the whole model rather than
by inductor's `mode="reduce-overhead"`, which under regional compilation would
make one graph per block and still launch the eager parts one by one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from reidbench.bench.environment import DTYPES, autocast
from reidbench.errors import UsageError
from reidbench.variants.model import ReidModel

COMPILE_MODES = (None, "default", "max-autotune-no-cudagraphs")
"""torch.compile modes allowed per block; the others make inductor capture one CUDA graph per block."""


@dataclass
class CompileInfo:
    """What `compile_model` compiled, and how: recorded beside every compiled number."""

    backend: str
    mode: str
    dynamic: Optional[bool]
    """False: one static-shape compile per input shape (what the bench and CUDA graphs want)."""
    region: str
    """The compiled block class, e.g. timm.models.vision_transformer.Block."""
    regions: int
    """How many blocks share that compiled code."""
    drop_paths_unified: int
    """timm DropPath modules swapped for `TensorDropPath` so that one graph serves every block."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TensorDropPath(nn.Module):
    """Stochastic depth with the keep probability held in a tensor, not a Python float.

    timm's `DropPath` stores its rate as a float and every block of a ViT has a
    different one (linearly increasing with depth), and dynamo specializes on
    float attributes: each block would be a new compile and the 9th would hit
    dynamo's recompile limit and silently run eagerly. As a (non-persistent)
    buffer the rate is a graph input instead. Same distribution as timm's
    (per-sample Bernoulli mask, scaled by 1/keep), not the same random stream.
    """

    def __init__(self, drop_prob: float, scale_by_keep: bool = True, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.register_buffer("keep_prob", torch.tensor(1.0 - drop_prob, device=device), persistent=False)
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(self.keep_prob)
        if self.scale_by_keep:
            mask.div_(self.keep_prob)
        return x * mask


def check_backend(backend: str) -> str:
    """`backend` if torch.compile knows it, else a UsageError listing the ones it does."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise UsageError(
            f"unknown torch.compile backend {backend!r}; this torch knows {', '.join(sorted(known))}. "
            "Use inductor for real numbers, aot_eager to check that a model traces."
        )
    return backend


def compile_model(
    model: ReidModel, backend: str = "inductor", *, dynamic: Optional[bool] = False, mode: Optional[str] = None,
) -> CompileInfo:
    """Compile each repeated block of `model.backbone` in place; call before building an optimizer.

    dynamic=False: every new batch shape compiles its own static-shape kernels
    (seconds, once per shape, shared by all blocks). The bench measures fixed
    shapes and CUDA graphs need them, and static kernels are the fastest; a
    training loop whose batches vary in size beyond a handful of shapes should
    pass dynamic=None, which generalizes after the second shape. Forward and
    backward both run compiled; train/eval and autocast changes recompile once each.

    Dynamo's cache is emptied first. Its entries hang off the block class's
    forward code, shared by every model built from that class in this process,
    and are capped (8 per code object): after earlier cells or tests compiled the
    same block at other shapes and modes, a new compile hit the cap and, under
    `strict_recompiles`, failed (seen in the test suite). Emptied, each model's
    compile starts alike, and its recorded compile time is its own rather than
    what an earlier cell left cached. Models compiled before recompile on their
    next call.
    """
    import torch._dynamo

    check_backend(backend)
    if mode not in COMPILE_MODES:
        raise UsageError(
            f"compile mode {mode!r} is not allowed for regional compilation; use one of "
            f"{', '.join(str(m) for m in COMPILE_MODES)}. reduce-overhead and max-autotune would capture one "
            "CUDA graph per block; for CUDA graphs capture the whole forward with capture_cuda_graph."
        )
    blocks = model.backbone.blocks()
    if not blocks:
        raise UsageError(f"{type(model.backbone).__name__}.blocks() is empty: there is no repeated block to compile.")
    torch._dynamo.reset()
    unified = unify_drop_paths(blocks)
    for block in blocks:
        block.compile(backend=backend, dynamic=dynamic, mode=mode)
    kind = type(blocks[0])
    return CompileInfo(
        backend=backend, mode=mode or "default", dynamic=dynamic, region=f"{kind.__module__}.{kind.__qualname__}",
        regions=len(blocks), drop_paths_unified=unified,
    )


def uncompile_model(model: nn.Module) -> int:
    """Undo `compile_model` (or any `Module.compile` inside `model`): those modules run eagerly again.

    Returns how many there were. Relies on `nn.Module._compiled_call_impl`, where
    `Module.compile` keeps its compiled callable (torch 2.2 on). Drop paths stay
    unified: same distribution, and no effect at inference.
    """
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    for module in compiled:
        module._compiled_call_impl = None
    return len(compiled)


def unify_drop_paths(blocks: list[nn.Module]) -> int:
    """Give every block the same drop-path module (`TensorDropPath`) where any block has a timm DropPath.

    Block 0 of a timm ViT has `nn.Identity` (rate 0) where the others have
    `DropPath`; it gets a rate-0 `TensorDropPath` too, so all blocks are one
    graph. Returns how many modules were replaced (0: nothing to unify).
    """
    from timm.layers import DropPath

    slots = [(block, name, child) for block in blocks for name, child in block.named_children() if name.startswith("drop_path")]
    if not any(isinstance(child, DropPath) for _, _, child in slots):
        return 0
    replaced = 0
    for block, name, child in slots:
        if isinstance(child, (DropPath, nn.Identity)):
            device = next(block.parameters()).device
            rate = child.drop_prob if isinstance(child, DropPath) else 0.0
            setattr(block, name, TensorDropPath(rate, getattr(child, "scale_by_keep", True), device).train(block.training))
            replaced += 1
    return replaced


def compile_counters() -> dict[str, int]:
    """Dynamo graphs compiled and inductor FX-graph cache hits/misses so far in this process.

    The difference across a first call says what it cost: 1 graph for all blocks,
    0 when an earlier cell of the same block class and shape already compiled it,
    cache hits when an earlier process left its kernels in the on-disk cache.
    """
    from torch._dynamo.utils import counters

    return {
        "graphs_compiled": int(counters["stats"]["unique_graphs"]),
        "fx_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fx_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"]),
    }


def strict_recompiles():
    """A context in which reaching dynamo's recompile limit raises instead of silently running eager code."""
    import torch._dynamo

    return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)


def first_call_seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one synchronized call: with a fresh compile, compile plus one run."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
