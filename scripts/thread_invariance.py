"""Which of a training step's numbers change with the CPU thread count, with PyTorch's kernels and with fixed-order reductions.

For each cell, one training step (ID loss with label smoothing + batch-hard triplet, then gradient
clipping at norm 1) is run on one and on two torch threads from the same weights and batch, and
every parameter's gradient and every floating-point buffer (BatchNorm statistics) is compared bit
for bit. Prints one Markdown row per cell and mode: how many tensors differ, and which. Usage
(repository root):

  python scripts/thread_invariance.py [--size 64 32] [--batch 64] vit768-none clip512proj-none ...
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from reidbench.training.losses import batch_hard_triplet, id_loss
from reidbench.variants import create_variant
from reidbench.variants.fixed_order import clip_grad_norm_fixed_order, use_fixed_order_reductions


def step_numbers(cell: str, fixed: bool, threads: int, size: tuple[int, int], batch: int) -> dict[str, torch.Tensor]:
    """Gradients after clipping and floating-point buffers after one step on `threads` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_variant(cell, depth=1, img_size=size, num_classes=16, num_cameras=6, camera_embedding_scale=0.3, neck_scales=(1, 2, 4))
    if fixed:
        use_fixed_order_reductions(model)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, *size, generator=generator)
    pids = torch.arange(16).repeat_interleave(batch // 16)
    out = model.train()(images, torch.randint(0, 6, (batch,), generator=generator))
    (id_loss(out.logits, pids, 0.1) + batch_hard_triplet(out.features, pids, 0.3)).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    clip: Callable = clip_grad_norm_fixed_order if fixed else lambda ps, n: torch.nn.utils.clip_grad_norm_(ps, n, foreach=True)
    clip(params, 1.0)
    numbers = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    numbers.update({name: b.clone() for name, b in model.named_buffers() if b.is_floating_point()})
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+")
    parser.add_argument("--size", nargs=2, type=int, default=(64, 32))
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    size = tuple(args.size)
    print("| cell | reductions | tensors that differ between 1 and 2 threads | which |")
    print("|---|---|---|---|")
    for cell in args.cells:
        for fixed in (False, True):
            one, two = (step_numbers(cell, fixed, threads, size, args.batch) for threads in (1, 2))
            differ = [name for name in one if not torch.equal(one[name], two[name])]
            mode = "fixed order" if fixed else "PyTorch's"
            print(f"| {cell} | {mode} | {len(differ)} of {len(one)} | {', '.join(differ) or '-'} |")


if __name__ == "__main__":
    main()
