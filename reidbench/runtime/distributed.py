"""Which process of a multi-process (torchrun / DDP) run this is, and the collectives the harness needs.

One run is one process unless it was started by ``torchrun`` (or a SLURM job
that exported the same variables): then ``WORLD_SIZE`` processes train the same
cell together, each on its own GPU (or CPU with the gloo backend), and only
rank 0 writes the run directory. Everything that differs between ranks is
decided from a :class:`World`, so a single process is simply ``World()``.

Failures: whatever rank 0 decides for everyone (the run directory's name,
whether a cell is finished, the metrics) goes through :func:`from_main`, which
delivers rank 0's error to every rank instead of leaving them waiting; each
step of a cell ends with the ranks agreeing on its outcome (``_agreed`` in the
runner). What no agreement can cover is one rank failing alone *inside* a
collective, e.g. out of memory half-way through a DDP step while the others
wait in the gradient all-reduce: those wait until the backend's timeout (or
torchrun stops the job when that rank's process dies), and ``--resume``
continues from the last checkpoint. The run directory must be on a file
system every rank sees (every rank loads the checkpoint; one node always does).
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from reidbench.errors import ReidbenchError, UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train one cell together."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and records."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK); a plain process is World()."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), world_size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_mean(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `tensor` over ranks (in place and returned); the tensor itself in one process."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= world.world_size
    return tensor


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when `flag` is true on any: one decision for a branch that holds collectives."""
    if not world.distributed:
        return flag
    agreed = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())


# --- the process group --------------------------------------------------------------------------


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes: the two backends torch ships for each."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(world: World, device: torch.device) -> torch.device:
    """Join torchrun's process group (once per process) and return this rank's device.

    On CUDA every rank takes ``cuda:LOCAL_RANK`` whatever index was asked for
    (torchrun starts one process per GPU of a node) and makes it the current
    device, so NCCL and ``broadcast_object_list`` use that GPU. A plain
    process returns ``device`` and starts nothing. The group is destroyed at
    exit, so an error path needs no teardown of its own.
    """
    if not world.distributed:
        return device
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world.local_rank + 1))
        if max(per_node, world.local_rank + 1) > visible:  # every rank of the node fails alike, rank 0 included
            raise UsageError(
                f"torchrun started {per_node} processes on this node, but it shows only {visible} CUDA device(s); "
                f"use --nproc-per-node {visible} or fewer (one process per GPU)."
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), device_id=device if device.type == "cuda" else None)
        atexit.register(close_distributed)
    return device


def close_distributed() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe_world(world: World) -> dict[str, Any]:
    """What a record says about the processes behind its numbers."""
    return {
        "world_size": world.world_size,
        "backend": dist.get_backend() if world.distributed and dist.is_initialized() else None,
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (the module itself otherwise).

    Evaluation and measurement run the plain module: DDP's forward hooks
    would wait for gradients of the other ranks, which do not run it.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def batchnorm_kinds(model: torch.nn.Module) -> dict[str, type]:
    """The class of every batch-norm layer by name: what :func:`revert_sync_batchnorm` restores."""
    return {name: type(m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


def revert_sync_batchnorm(model: torch.nn.Module, kinds: dict[str, type]) -> torch.nn.Module:
    """Put back the batch-norm classes `kinds` recorded before --sync-bn training, keeping the trained state.

    A SyncBatchNorm in training mode all-reduces with every rank, so rank 0's
    measured training step would wait forever for ranks that are not running
    it. torch has ``convert_sync_batchnorm`` but no inverse, and a
    SyncBatchNorm does not remember whether it was a BatchNorm1d or 2d: hence
    the names and classes taken beforehand. Works in place on sub-modules.
    """
    for name, layer in list(model.named_modules()):
        kind = kinds.get(name)
        if not name or not isinstance(layer, torch.nn.SyncBatchNorm) or kind in (None, torch.nn.SyncBatchNorm):
            continue
        reference = layer.weight if layer.weight is not None else layer.running_mean
        plain = kind(
            layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats,
            **({} if reference is None else {"device": reference.device, "dtype": reference.dtype}),
        )
        plain.load_state_dict(layer.state_dict())
        plain.train(layer.training)
        parent, _, leaf = name.rpartition(".")
        model.get_submodule(parent).add_module(leaf, plain)
    return model


# --- collectives the runner needs -------------------------------------------------------------


def broadcast_object(obj: T, world: World, src: int = 0) -> T:
    """Rank `src`'s picklable `obj` on every rank (the object itself in one process)."""
    if not world.distributed:
        return obj
    box = [obj if world.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: T, world: World) -> list[T]:
    """Every rank's picklable `obj`, in rank order, on every rank (``[obj]`` in one process)."""
    if not world.distributed:
        return [obj]
    objects: list[Any] = [None] * world.world_size
    dist.all_gather_object(objects, obj)
    return objects


def shard(length: int, world: World) -> slice:
    """This rank's contiguous share of ``range(length)``: sizes differ by at most one, earlier ranks larger.

    Contiguous so that concatenating the shards in rank order gives the
    original order back (what :func:`gather_rows` does on rank 0).
    """
    base, extra = divmod(length, world.world_size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


def gather_rows(tensor: torch.Tensor, world: World, dst: int = 0) -> Optional[torch.Tensor]:
    """Every rank's rows concatenated in rank order on rank `dst` (None elsewhere); `tensor` itself in one process.

    Ranks may hold different numbers of rows (zero included); the trailing
    dimensions and the dtype must agree. The rows travel padded to the
    longest share, because ``dist.gather`` needs equal shapes.
    """
    if not world.distributed:
        return tensor
    comm = _collective_device()
    sizes = [int(n) for n in gather_objects(int(tensor.shape[0]), world)]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]), device=comm)
    padded[: tensor.shape[0]] = tensor
    received = [torch.empty_like(padded) for _ in sizes] if world.rank == dst else None
    dist.gather(padded, received, dst=dst)
    if received is None:
        return None
    return torch.cat([rows[:n] for rows, n in zip(received, sizes)]).to(tensor.device)


def _collective_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# --- rank 0 decides, every rank learns ------------------------------------------------------------


class FailedOnMain(ReidbenchError):
    """Raised on ranks 1..N-1 when what rank 0 was doing for all of them raised.

    Carries rank 0's message and exit code, so every process of a torchrun
    job stops the same way instead of waiting for a value that never comes.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def from_main(world: World, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; its (picklable) result on every rank, or its error raised on every rank.

    Rank 0 re-raises its own exception with the original traceback; the
    other ranks raise :class:`FailedOnMain` with the same message and exit
    code (1 for anything that is not a ReidbenchError).
    """
    if not world.distributed:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    error: Optional[Exception] = None
    if world.is_main:
        try:
            outcome = (True, fn())
        except Exception as exc:  # noqa: BLE001 - every error must reach the other ranks before it propagates
            error = exc
            code = exc.exit_code if isinstance(exc, ReidbenchError) else 1
            outcome = (False, (f"{exc}" if isinstance(exc, ReidbenchError) else f"{type(exc).__name__}: {exc}", code))
    ok, value = broadcast_object(outcome, world)
    if error is not None:
        raise error
    if not ok:
        raise FailedOnMain(*value)
    return value


def main_first(world: World, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks once it succeeded; an error on rank 0 stops every rank.

    For work whose first run leaves something behind that the others reuse
    (the synthetic data set is generated once into a cache), and whose result
    is not worth sending (a dataset's record lists).
    """
    if not world.distributed:
        return fn()
    kept: list[T] = []
    from_main(world, lambda: kept.append(fn()))
    return kept[0] if world.is_main else fn()
