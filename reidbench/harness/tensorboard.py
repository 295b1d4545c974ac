"""TensorBoard event files for a run: each cell's training curves, and its final metrics beside its settings.

Layout: each cell folder, RUN/cells/<cell>/seed<k>/, holds its own event files,
so it is one TensorBoard run per cell and seed (named by that path),
`tensorboard --logdir RUN` overlays the grid's curves, its HParams tab lists
every finished cell with its settings and final metrics side by side, and a job
of a fanned-out run writes only its own cell folder.

- `tensorboard_hook` builds the `TrainHook` that writes, per epoch (the step is
  the 1-based epoch), what the trainer's epoch entry holds: the loss parts,
  training accuracy, learning rate and img/s, and the periodic evaluation's mAP
  and rank-1 after the epochs it scored (eval.period).
- `write_cell_hparams` writes, once a cell is evaluated, its final metrics
  (mAP, rank-1/5/10, mINP) with its settings as hparams.

Only rank 0 writes: under torchrun every rank trains, so the caller builds the
hook and calls `write_cell_hparams` only where `world.is_main`, as it does for
train_log.jsonl; neither function checks the rank itself.

TensorBoard is optional. Without it neither function writes anything, and the
run says once, in one line, how to get it; training is never stopped by its
absence. Nor by a failure to write the events (a full disk, a folder TensorBoard
cannot name): the run says so once and the cells train on.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from reidbench.harness.trainer import TrainContext, TrainHook
from reidbench.profiles import TrainConfig
from reidbench.rundir import RunDir
from reidbench.schema import CellRecord, EpochEntry, is_number
from reidbench.runtime.progress import Log


INSTALL_HINT = "TensorBoard logs are off: the tensorboard package is missing; `pip install tensorboard` turns them on."
EPOCH_TAGS = {
    "loss": "train/loss",
    "id_loss": "train/id_loss",
    "triplet_loss": "train/triplet_loss",
    "accuracy": "train/accuracy",
    "lr": "train/lr",
    "img_per_s": "speed/img_per_s",
    "val_map": "validation/mAP",
    "val_rank1": "validation/rank1",
}
"""`EpochEntry` field -> scalar tag; grouped by prefix so TensorBoard shows training, speed and the periodic evaluation
(eval.period, on the split the cell's record names; fractions, as final/) in separate sections. A value an epoch does
not have (no periodic evaluation after it) is not written: the validation curve has a point per scored epoch."""
FINAL_METRICS = ("mAP", "rank1", "rank5", "rank10", "mINP")
FINAL_PREFIX = "final/"
"""Final metrics get their own tags: the HParams tab must not mistake an epoch curve for a cell's result."""

_hinted: set[str] = set()
"""Run directories already told that tensorboard is missing: one line per run, not one per cell."""


def tensorboard_dir(run_root: Path, cell: str, seed: int) -> Path:
    return RunDir(Path(run_root)).cell(cell, seed).events


def summary_writer_class(run_root: Path, log: Log) -> Optional[type]:
    """torch's `SummaryWriter`, or None (after a one-line reason, once per run) when it cannot be imported.

    Besides a missing package, an installed tensorboard can fail to import
    (a protobuf it does not support); that also switches the logs off, with
    the error, rather than failing the cell.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # noqa: BLE001 - optional logging never stops a run
        key = str(Path(run_root).resolve())
        if key not in _hinted:
            _hinted.add(key)
            log(INSTALL_HINT if isinstance(exc, ImportError) else f"TensorBoard logs are off: {type(exc).__name__}: {exc}")
        return None
    return SummaryWriter


def tensorboard_hook(run_root: Path, cell: str, seed: int, log: Log) -> Optional[TrainHook]:
    """The epoch-curve hook for one cell and seed, or None when tensorboard is missing.

    Place it after `ResumeFromCheckpoint` in the hook list: its `on_start` reads
    the epoch the loop resumes from.
    """
    writer_class = summary_writer_class(run_root, log)
    if writer_class is None:
        return None
    return TensorBoardLog(tensorboard_dir(run_root, cell, seed), writer_class, lambda exc: warn_unwritable(run_root, log, exc))


def warn_unwritable(run_root: Path, log: Log, exc: Exception) -> None:
    """Say once per run that event files could not be written, and why; the cells train on without them."""
    key = f"unwritable:{Path(run_root).resolve()}"
    if key not in _hinted:
        _hinted.add(key)
        log(f"TensorBoard event files cannot be written ({type(exc).__name__}: {exc}); the cells train on without them.")


def open_writer(writer_class: type, log_dir: Path, **options: Any) -> tuple[Any, Optional[int]]:
    """(a writer on `log_dir`, the descriptor to close after it, or None).

    TensorBoard's file layer encodes every path as UTF-8, so a folder whose name holds a byte that is
    not (a run or grid named on a non-UTF-8 file system) is handed over as /proc/self/fd/N, a name
    of the open folder; where there is no /proc the writer fails, and the caller warns.
    """
    name, fd = str(log_dir), None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY)
        name = f"/proc/self/fd/{fd}"
    try:
        return writer_class(log_dir=name, **options), fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


class TensorBoardLog(TrainHook):
    """Writes each epoch's entry as scalars, step = epoch; a resumed cell continues its curves without repeating them.

    Why the purge step: epochs trained after the last checkpoint were written
    here by the interrupted process but are trained again after the resume, so
    the writer marks the first epoch it will write (`purge_step`) and
    TensorBoard drops the orphaned points from that epoch on. Epochs up to the
    checkpoint are never written again; if this folder has no events yet
    (TensorBoard installed after the interruption) they are filled in once from
    the checkpoint's epoch log, so the curves start at epoch 1.
    """

    def __init__(self, log_dir: Path, writer_class: type, warn: Callable[[Exception], None]) -> None:
        """`warn`: told when the events cannot be written; the curves stop, training goes on."""
        self.log_dir, self.writer_class, self.warn = log_dir, writer_class, warn
        self.writer: Any = None
        self.fd: Optional[int] = None

    def on_start(self, ctx: TrainContext) -> None:
        if ctx.start_epoch >= ctx.cfg.epochs:
            return  # nothing left to train: nothing to write
        try:
            had_events = any(self.log_dir.glob("events.out.tfevents.*"))
            self.log_dir.mkdir(parents=True, exist_ok=True)
            purge = ctx.start_epoch + 1 if had_events else None
            self.writer, self.fd = open_writer(self.writer_class, self.log_dir, purge_step=purge)
            if not had_events:
                for entry in ctx.log[: ctx.start_epoch]:
                    self.write(entry)
        except Exception as exc:  # noqa: BLE001 - the curves are optional, the cell is not
            self.stop(exc)

    def on_epoch(self, ctx: TrainContext, entry: EpochEntry) -> None:
        if self.writer is None:
            return
        try:
            self.write(entry)
            if entry.epoch >= ctx.cfg.epochs:
                self.close()
            else:
                # Flushed every epoch: a cell that fails or is killed later keeps the curves up to here.
                self.writer.flush()
        except Exception as exc:  # noqa: BLE001 - the curves are optional, the cell is not
            self.stop(exc)

    def close(self) -> None:
        writer, fd, self.writer, self.fd = self.writer, self.fd, None, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if fd is not None:
                os.close(fd)

    def stop(self, exc: Exception) -> None:
        """Writing failed: warn, and write no more for this cell."""
        self.warn(exc)
        with contextlib.suppress(Exception):
            self.close()

    def write(self, entry: EpochEntry) -> None:
        for key, tag in EPOCH_TAGS.items():
            if is_number(value := getattr(entry, key)):
                self.writer.add_scalar(tag, float(value), entry.epoch)


def cell_hparams(record: CellRecord, extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The cell's identity and variant settings (plus `extra`, e.g. the profile's training settings) as hparam values.

    TensorBoard takes numbers, text and booleans; lists (img_size, neck_scales)
    become text such as "64x32" so that equal settings group together, and
    booleans become "true"/"false" so the HParams tab offers them as choices.
    """
    values: dict[str, Any] = {"cell": record.cell, "backbone": record.backbone, "neck": record.neck}
    if record.seed is not None:
        values["seed"] = record.seed
    values.update(record.settings)
    values.update(extra or {})
    return {name: _hparam_value(name, value) for name, value in values.items() if value is not None}


def train_hparams(cfg: TrainConfig, profile: Optional[str] = None) -> dict[str, Any]:
    """The training recipe as hparams ("train.lr", ...), for `write_cell_hparams`'s `extra`.

    Every cell of a run shares them; they tell runs apart when one logdir
    holds several. Checkpoint timing is left out: it does not change what is
    learned.
    """
    values = {f"train.{k}": v for k, v in asdict(cfg).items() if not k.startswith("checkpoint")}
    return {**({"profile": profile} if profile else {}), **values}


def _hparam_value(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ("x" if name == "img_size" else ",").join(str(v) for v in value) or "-"
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def final_metrics(record: CellRecord) -> dict[str, float]:
    metrics = record.metrics or {}
    return {FINAL_PREFIX + name: float(metrics[name]) for name in FINAL_METRICS if is_number(metrics.get(name))}


def write_cell_hparams(run_root: Path, record: CellRecord, log: Log, extra: Optional[Mapping[str, Any]] = None) -> bool:
    """Write an evaluated cell's final metrics and its settings as hparams into its TensorBoard run; whether it wrote.

    The metrics are logged at the cell's last epoch, so they line up with the
    end of its curves. Every cell writes the same hparam and metric names (the
    HParams tab reads its columns from the first cell it finds). Nothing is
    written for a cell without metrics, or without tensorboard installed.
    """
    metrics = final_metrics(record)
    if not metrics:
        return False
    writer_class = summary_writer_class(run_root, log)
    if writer_class is None:
        return False
    from torch.utils.tensorboard.summary import hparams

    step = int((record.training or {}).get("epochs_done") or 0)
    log_dir = tensorboard_dir(run_root, record.cell, record.seed or 0)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        writer, fd = open_writer(writer_class, log_dir)
        try:
            with writer:
                for summary in hparams(cell_hparams(record, extra), metrics):
                    writer.file_writer.add_summary(summary, step)
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, step)
        finally:
            if fd is not None:
                os.close(fd)
    except Exception as exc:  # noqa: BLE001 - the cell's results are in its record; the events are extra
        warn_unwritable(run_root, log, exc)
        return False
    return True
