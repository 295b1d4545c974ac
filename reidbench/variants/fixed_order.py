"""Training arithmetic whose result does not depend on the number of CPU threads.

Why: on the CPU, PyTorch splits some sums over its threads and adds the
threads' partial sums at the end, so the same step on one and on two threads
differs in the last bits -- and a training from scratch amplifies the last bits
into another run (a thread count acts like another seed; measured in
docs/results/2026-12-07-quick-profile-stability-cpu.md). Measured on torch 2.14.1,
one training step of every backbone, every parameter's gradient compared bit for
bit between one and two threads, the sums that differ are:

- LayerNorm's weight and bias gradients (native kernel: a partial sum per thread);
- the patch-embedding convolution's weight gradient;
- a camera or modality table's gradient, which indexing accumulates;
- BatchNorm1d's batch statistics in training mode (a sum over the batch;
  vit768-ms's head at batch 64 differed already in the forward);
- the gradient norm that clipping divides by (a sum to one number);
- on an AVX-512 CPU (MKL 2024.2), a matrix multiply with a long inner
  dimension and few output rows: the ms neck's larger windows.

Matrix multiplies, row-wise reductions and reductions over the leading
dimension of a matrix were the same on both thread counts: PyTorch splits those
over their outputs, so each output's sum runs in one thread in a fixed order
(on the AVX2 CPU where this was first measured; see the last item for the
exception on an AVX-512 CPU). The replacements below compute each of these sums
that way; forward values are unchanged (the same library calls, or an exact
one-hot product), except BatchNorm1d's training-mode output, which is computed
from its formula, and the neck's long matrix multiplies, summed in chunks.

Applied by `use_fixed_order_reductions` when a recipe asks for it
(`train.fixed_order_reductions`); only while gradients are recorded, in
float32 outside autocast, where a CPU recipe trains -- elsewhere (inference,
bf16) each module runs its library forward.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

_NORM_ROWS = 64
"""Rows a large gradient is folded into for its squared norm: one row per output of a row-wise sum."""


def _plain_fp32(x: torch.Tensor) -> bool:
    """Where the replacements apply: a float32 computation outside autocast that records gradients (inference
    has no backward to fix, so it keeps the library's kernels and their speed)."""
    return x.dtype == torch.float32 and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


class _LayerNormFn(torch.autograd.Function):
    """Library layer norm forward and input gradient; weight and bias gradients summed over the leading dimension."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], shape: tuple[int, ...], eps: float):
        y, mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        dx = None
        if want_x:
            dx = torch.ops.aten.native_layer_norm_backward(dy, x, ctx.shape, mean, rstd, weight, bias, [True, False, False])[0]
        width = math.prod(ctx.shape)
        rows = dy.reshape(-1, width)
        dw = ((x - mean) * rstd).reshape(-1, width).mul(rows).sum(0).view(ctx.shape) if want_w else None
        db = rows.sum(0).view(ctx.shape) if want_b else None
        return dx, dw, db, None, None


def _fixed_layer_norm_forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    if not _plain_fp32(x):
        return self._library_forward(x)
    return _LayerNormFn.apply(x, self.weight, self.bias, tuple(self.normalized_shape), self.eps)


class _PatchConvFn(torch.autograd.Function):
    """Library convolution forward and input gradient; the weight gradient as one matrix multiply over unfolded patches."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: tuple[int, int]):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.has_bias = stride, bias is not None
        return F.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = torch.nn.grad.conv2d_input(x.shape, weight, dy, ctx.stride) if ctx.needs_input_grad[0] else None
        out_channels = weight.shape[0]
        per_output = dy.flatten(2).transpose(0, 1).reshape(out_channels, -1)  # [C_out, B * L]
        dw = None
        if ctx.needs_input_grad[1]:
            patches = F.unfold(x, weight.shape[2:], stride=ctx.stride).transpose(1, 2).reshape(per_output.shape[1], -1)
            dw = (per_output @ patches).view_as(weight)
        db = per_output.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None


def _fixed_patch_conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    plain = self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
    if not (plain and _plain_fp32(x)):
        return self._library_forward(x)
    return _PatchConvFn.apply(x, self.weight, self.bias, self.stride)


def _fixed_batch_norm_forward(self: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of [batch, channels] from its formula: every statistic a sum over the batch dimension."""
    if not (self.training and x.dim() == 2 and x.shape[0] > 1 and self.track_running_stats and _plain_fp32(x)):
        return self._library_forward(x)
    mean = x.mean(0)
    centred = x - mean
    var = centred.square().mean(0)
    with torch.no_grad():
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * (x.shape[0] / (x.shape[0] - 1))
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)
    y = centred * torch.rsqrt(var + self.eps)
    return y * self.weight + self.bias if self.affine else y


_GEMM_DEPTH = 768
"""The longest inner dimension a fixed-order matrix multiply hands to the BLAS in one call."""


def fixed_order_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], fixed_order: bool) -> torch.Tensor:
    """`F.linear`; with `fixed_order`, the inner dimension summed in chunks of `_GEMM_DEPTH`, in order.

    MKL on an AVX-512 CPU splits a long inner dimension over threads when the
    output is small (the ms neck's 2x2 and 4x2 windows: 3072 and 6144 inputs to a
    few rows per image), where on an AVX2 CPU it did not; a chunk of 768 was
    computed whole on every shape measured. Each chunk's gradients are products
    over the batch rows or over 768 columns, so the backward is fixed as well.
    """
    depth = weight.shape[1]
    if not fixed_order or depth <= _GEMM_DEPTH or not _plain_fp32(x):
        return F.linear(x, weight, bias)
    # Split views (their backward is one concatenation, not a zero-filled copy per chunk), summed in order.
    pieces = zip(x.split(_GEMM_DEPTH, dim=-1), weight.split(_GEMM_DEPTH, dim=1))
    rows, columns = next(pieces)
    out = F.linear(rows, columns, bias)
    for rows, columns in pieces:
        out = out + F.linear(rows, columns)
    return out


def gather_rows(table: torch.Tensor, ids: torch.Tensor, fixed_order: bool) -> torch.Tensor:
    """`table[ids]`; with `fixed_order`, as a one-hot matrix product, whose gradient is a matrix multiply, not an indexed accumulation.

    The product's forward value equals the indexing exactly (one 1 x row and zeros).
    """
    if not fixed_order or not _plain_fp32(table):
        return table[ids]
    one_hot = F.one_hot(ids.long(), table.shape[0]).to(table.dtype)
    return (one_hot.reshape(-1, table.shape[0]) @ table.reshape(table.shape[0], -1)).reshape(*ids.shape, *table.shape[1:])


_FORWARDS = ((nn.LayerNorm, _fixed_layer_norm_forward), (nn.BatchNorm1d, _fixed_batch_norm_forward))


def _fixed_class(cls: type, forward) -> type:
    """A subclass of the module's own class whose forward is `forward` (its library forward kept as `_library_forward`)."""
    cached = _FIXED_CLASSES.get(cls)
    if cached is None:
        cached = type(f"FixedOrder{cls.__name__}", (cls,), {"forward": forward, "_library_forward": cls.forward, "__module__": __name__})
        _FIXED_CLASSES[cls] = cached
    return cached


_FIXED_CLASSES: dict[type, type] = {}


def use_fixed_order_reductions(model: nn.Module) -> nn.Module:
    """Make `model`'s training step independent of the CPU thread count (see the module docstring); returns `model`.

    Swaps the class of each LayerNorm, BatchNorm1d and patch-embedding convolution
    (a module a backbone lists in `patch_convs()`) for a subclass with a fixed-order
    backward, and sets `fixed_order_reductions` on modules that gather table rows.
    Parameters, buffers and state dicts are untouched, so checkpoints load either way.
    """
    patch_convs = {id(conv) for module in model.modules() for conv in getattr(module, "patch_convs", lambda: ())()}
    for module in model.modules():
        cls = type(module)
        if cls in _FIXED_CLASSES.values():  # swapped already
            continue
        if id(module) in patch_convs:
            module.__class__ = _fixed_class(cls, _fixed_patch_conv_forward)
            continue
        for base, forward in _FORWARDS:
            if isinstance(module, base):
                module.__class__ = _fixed_class(cls, forward)
                break
        if hasattr(module, "fixed_order_reductions"):
            module.fixed_order_reductions = True
    return model


def clip_grad_norm_fixed_order(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2, foreach) with the norm summed in a fixed order; returns the total norm.

    Each gradient's squared norm is a row-wise sum over a fixed number of rows
    (zero-padded), then a sum of those few partial sums: no sum is split by thread.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.stack([_squared_norm(g) for g in grads]).sum().sqrt()
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coefficient.to(grads[0].device))
    return total


def _squared_norm(grad: torch.Tensor) -> torch.Tensor:
    flat = grad.reshape(-1).float()
    padding = (-flat.numel()) % _NORM_ROWS
    if padding:
        flat = F.pad(flat, (0, padding))
    return flat.view(_NORM_ROWS, -1).square().sum(1).sum()
