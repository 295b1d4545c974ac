"""Regional torch.compile of a model's repeated blocks.

Each repeated transformer block is compiled in place (`block.compile`), not
the whole model. The blocks share one class and one `forward`, and dynamo does
not guard on which module instance runs it, so the first block's compiled code
serves all 12 -- compile time is that of one block (seconds), not of the whole
network (a minute or more per cell and batch size), and the patch embedding,
neck and head stay eager. Parameter names, and so `state_dict()` and
optimizers, are unchanged.

Training (`run --compile`) and measurement (`bench --compile`) both compile
this way, so it lives below both.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from reidbench.errors import UsageError
from reidbench.runtime.device import synchronize

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
    model: nn.Module, backend: str = "inductor", *, dynamic: Optional[bool] = False, mode: Optional[str] = None,
) -> CompileInfo:
    """Compile each repeated block of `model.backbone` (its `blocks()`) in place; call before building an optimizer.

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
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start
