"""Training steps replayed as one CUDA graph: forward, losses, backward and update for one host launch.

Why: a ViT-B training step launches a few thousand kernels. At batch 64 on a
fast GPU the host needs longer to queue them than the GPU needs to run them
(docs/benchmarks), so eager img/s measures Python and launch overhead, not the
network. Captured once and replayed, a step costs the host one launch plus
the eager augmentation of its batch and three copies into static buffers.

What capture requires, and how it is met:
- fixed shapes and addresses: the batch is P x K on every step, and the
  augmented batch, targets and cameras are copied into buffers allocated once;
- no host work inside: the augmentation (indexed by the step number on the
  host) stays eager before the replay, the scheduler's step after it;
- an optimizer that reads its learning rate from device memory and keeps its
  state there (`build_optimizer(..., graph_safe_on=device)`), so the scheduler
  filling the lr tensor in place steers the replayed update;
- gradients allocated by the captured backward: they are set to None once
  before capture and are then overwritten, not accumulated, by every replay;
- warm-up steps run eagerly on a side stream first (cuBLAS handles, autograd's
  streams, the allocator, the optimizer's state), as PyTorch's CUDA-graph notes
  require. They are real training steps on real batches.

Random numbers (drop path) are drawn by the graph from the CUDA generator's
graph-safe state, so they differ from an eager run with the same seed. Not for
DDP (the all-reduce would have to be captured too). Compiled blocks and losses
are compiled during the warm-up steps; the graph then records their kernels like
eager ones (`bench --compile --cuda-graphs` times that as mode `compiled+graph`; `run --compile`
trains that way on CUDA).
"""
from __future__ import annotations

import time
import warnings
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from reidbench.errors import ReidbenchError, UsageError
from reidbench.runtime.device import synchronize
from reidbench.runtime.text import first_line
from reidbench.data.images import LabelledBatch
from reidbench.training.step import TrainStep

#: Eager steps before the capture.
WARMUP_STEPS = 3


class GraphCaptureFailed(ReidbenchError):
    """The training step could not be recorded as a CUDA graph; the cell fails, naming the eager way out."""

    exit_code = 1


def graph_capture_refusal(step: TrainStep) -> Optional[str]:
    """None where `step` can be captured, else why not, in one sentence naming the fix."""
    if step.device.type != "cuda" or not torch.cuda.is_available():
        return f"training steps replay as CUDA graphs only on a CUDA device; this step runs on {step.device.type}"
    if isinstance(step.model, DistributedDataParallel):
        return "graph-replayed training steps do not support DDP (torchrun); run one process, or leave CUDA graphs off"
    lr = step.optimizer.param_groups[0]["lr"]
    if not (isinstance(lr, torch.Tensor) and lr.device.type == "cuda"):
        return "the optimizer reads its learning rate from the host; build it with build_optimizer(..., graph_safe_on=device)"
    return None


class GraphedTrainStep:
    """`TrainStep`'s interface (`begin_epoch`, `__call__(number, batch) -> stats`) with the update replayed as a graph."""

    def __init__(self, step: TrainStep, warmup_steps: int = WARMUP_STEPS) -> None:
        reason = graph_capture_refusal(step)
        if reason is not None:
            raise UsageError(reason)
        self.step = step
        self.warmup_steps = max(1, warmup_steps)
        self.calls = 0
        self.replays = 0
        """Steps that ran as graph replays (the capture's step included)."""
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self.static_stats: Optional[torch.Tensor] = None
        self.capture_seconds: Optional[float] = None
        """Wall time of the capture call (recording plus its first replay)."""
        self.side_stream = torch.cuda.Stream(device=step.device)

    @property
    def stat_names(self) -> tuple[str, ...]:
        return self.step.stat_names

    def begin_epoch(self, batches: torch.Tensor) -> None:
        self.step.begin_epoch(batches)

    def __call__(self, number: int, batch: LabelledBatch) -> torch.Tensor:
        """Train on `batch`; returns [loss, id loss, triplet loss, accuracy] on the device (a copy, safe to keep)."""
        step = self.step
        inputs = step.inputs(number, batch)
        if self.calls < self.warmup_steps:
            stats = self._eager_on_side_stream(inputs)
        elif self.graph is None:
            stats = self._capture(inputs)
        else:
            for static, new in zip(self.static, inputs):
                static.copy_(new, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            stats = self.static_stats.clone()
        step.scheduler.step()
        self.calls += 1
        return stats

    def _eager_on_side_stream(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        device, side = self.step.device, self.side_stream
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():
            # AdamW(capturable=True) warns that an uncaptured step is slower: these few are meant to be.
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
            self.step.optimizer.zero_grad(set_to_none=True)
            stats = self.step.update(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        return stats

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        started = time.perf_counter()
        device = self.step.device
        synchronize(device)
        self.static = tuple(t.clone() for t in inputs)
        self.step.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients it then overwrites
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a streamed set's DataLoader pins the next batches in a thread of its own meanwhile,
        # and in the default (global) mode its pinned allocations would invalidate this capture.
        try:
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.static_stats = self.step.update(*self.static)
        except torch.cuda.OutOfMemoryError:
            raise  # the run's own advice for that (a smaller batch) applies, not graph-specific advice
        except RuntimeError as error:  # e.g. an operation that syncs with the host, which a graph cannot hold
            raise GraphCaptureFailed(
                f"recording this cell's training step as a CUDA graph failed ({first_line(str(error), type(error).__name__)}); its modules may do "
                "host work inside the step. Train eagerly instead: start the run with --no-cuda-graphs."
            ) from error
        self.graph.replay()  # capture only records: this call's step runs now
        self.replays += 1
        synchronize(device)
        self.capture_seconds = time.perf_counter() - started
        return self.static_stats.clone()
