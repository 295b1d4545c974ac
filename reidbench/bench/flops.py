"""FLOP counting with two independent counters that must agree.

Convention: a multiply-add is one MAC and two FLOPs. `gmacs` comes from fvcore
(which counts MACs and calls them "flops"); `gflops` comes from
torch.utils.flop_counter.FlopCounterMode (which counts 2 x MACs). Both count
the same operations -- matrix multiplies, convolutions and attention; norms,
pooling and elementwise ops are excluded -- so `gflops / 2` must equal `gmacs`,
and a gap over 0.5 % is recorded as a warning.

The pitfalls this module exists for: fvcore has no handler for
`aten::scaled_dot_product_attention` nor for `nn.MultiheadAttention`'s fused
`aten::_native_multi_head_attention`, so out of the box it drops every attention
matmul; FlopCounterMode on CPU misses SDPA's fused kernels unless the math
backend is forced, and the MHA fast path (eval + no_grad) hides open_clip's
projections. Counting therefore runs with the math SDPA backend and the MHA fast
path off, and fvcore gets handlers for both attention ops.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from reidbench.variants.model import PARTS

AGREEMENT_TOLERANCE = 0.005
"""Largest relative gap between the two counters before a warning is recorded."""



def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError("attention input without a complete static shape")
    return list(shape)


def sdpa_macs(inputs: list, outputs: list) -> int:
    """fvcore handler for aten::scaled_dot_product_attention: Q K^T plus attention x V."""
    q, k, v = (_shape(x) for x in inputs[:3])
    rows = math.prod(q[:-1])
    return rows * k[-2] * q[-1] + rows * k[-2] * v[-1]


def native_mha_macs(inputs: list, outputs: list) -> int:
    """fvcore handler for aten::_native_multi_head_attention (batch-first self-attention fast path).

    In-projection of query, key and value, the two attention matmuls summed over
    heads, and the output projection.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    embed = q[-1]
    q_rows, kv_rows = math.prod(q[:-1]), math.prod(k[:-1])
    in_proj = q_rows * embed * embed + 2 * kv_rows * embed * embed
    attention = q_rows * k[-2] * embed + q_rows * k[-2] * v[-1]
    out_proj = q_rows * embed * embed
    return in_proj + attention + out_proj


def _fvcore_handles() -> dict[str, Any]:
    """fvcore's matmul and convolution handlers plus ours for attention; norms and pooling left out.

    Built on JitModelAnalysis rather than FlopCountAnalysis because the latter
    registers norm and pooling handlers that FlopCounterMode has no match for.
    """
    from fvcore.nn import jit_handles as h

    return {
        "aten::addmm": h.addmm_flop_jit,
        "aten::bmm": h.bmm_flop_jit,
        "aten::_convolution": h.conv_flop_jit,
        "aten::einsum": h.einsum_flop_jit,
        "aten::matmul": h.matmul_flop_jit,
        "aten::mm": h.matmul_flop_jit,
        "aten::linear": h.linear_flop_jit,
        "aten::scaled_dot_product_attention": sdpa_macs,
        "aten::_native_multi_head_attention": native_mha_macs,
    }


@dataclass
class FlopCount:
    gmacs: float
    gflops: float
    gmacs_by_part: dict[str, float]
    batch_size: int
    relative_gap: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def counting_mode() -> Iterator[None]:
    """Math SDPA backend and no MHA fast path, so every attention matmul is visible to both counters."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def fvcore_macs(model: nn.Module, images: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Total MACs and MACs per top-level part, by fvcore with the attention handlers added."""
    from fvcore.nn.jit_analysis import JitModelAnalysis

    analysis = JitModelAnalysis(model, (images,))
    analysis.set_op_handle(**_fvcore_handles())
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    by_module = analysis.by_module()
    parts = {part: float(by_module.get(part, 0)) for part in PARTS if hasattr(model, part)}
    return float(analysis.total()), parts


def flop_counter_flops(model: nn.Module, images: torch.Tensor) -> float:
    """Total FLOPs (2 x MACs) by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(images)
    return float(counter.get_total_flops())


def count_flops(model: nn.Module, images: torch.Tensor) -> FlopCount:
    """Count an inference forward pass of `model` on `images` with both counters and compare them."""
    was_training = model.training
    model.eval()
    try:
        with counting_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, parts = fvcore_macs(model, images)
            flops = flop_counter_flops(model, images)
    finally:
        model.train(was_training)
    gap = abs(flops / 2 - macs) / max(macs, 1.0)
    problems = []
    if gap > AGREEMENT_TOLERANCE:
        problems.append(
            f"FLOP counters disagree by {gap:.2%}: fvcore {macs / 1e9:.3f} GMACs vs "
            f"FlopCounterMode {flops / 2e9:.3f} GMACs (= {flops / 1e9:.3f} GFLOPs / 2); "
            "an operation is counted by one and not the other"
        )
    return FlopCount(
        gmacs=macs / 1e9,
        gflops=flops / 1e9,
        gmacs_by_part={k: v / 1e9 for k, v in parts.items()},
        batch_size=images.shape[0],
        relative_gap=gap,
        warnings=problems,
    )
