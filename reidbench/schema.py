"""What a run writes, and how every reader parses it back: one definition of each file's shape.

- run.json: `RunMeta` (the plan, the dataset facts, where the run stands, who owns it);
- cells/<cell>/seed<k>/record.json: `CellRecord` (one cell and seed: status, metrics, costs, notes);
- train_log.jsonl: one `EpochEntry` per line;
- results.csv: `RESULT_COLUMNS`, one row per `CellRecord`;
- cells/<cell>/seed<k>/queries.npz: `QueryScores` per evaluation (what a bootstrap over query identities needs).

Writers (the grid runner, the trainer, `bench`) build these records and write `to_dict()`;
readers (`report`, `status`, `--resume`) parse through `from_dict`, which
refuses a file of the wrong shape with a `SchemaError` naming the file and the
field, instead of a traceback somewhere downstream. The states a cell can be
in and the modes a measurement can run in are the enums below, and nothing
else spells them. Where each file lives, and what a missing one means, is
`reidbench.rundir`'s.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Optional, TypeVar, Union

from reidbench.errors import UsageError

T = TypeVar("T")


class SchemaError(UsageError):
    """A run file that parses as JSON but does not hold what reidbench writes there."""


class Text(str, Enum):
    """An enum whose members are their text: in JSON, f-strings and comparisons with plain strings."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


class CellState(Text):
    """Where one (cell, seed) stands. The runner writes the first six into records; readers derive the rest."""

    DONE = "done"
    XFAIL = "xfail"
    """Failed as the grid expected (e.g. clip512-ms's channel mismatch)."""
    XPASS = "xpass"
    """Expected to fail but ran: the command exits non-zero."""
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    RUNNING = "running"
    PENDING = "pending"
    """Planned, no record yet (`status`)."""
    MISSING = "missing"
    """Planned or started, but its record.json is absent (`report`)."""
    DAMAGED = "damaged"
    """Its record.json cannot be read (`report`, `status`)."""

    @property
    def finished(self) -> bool:
        """`--resume` leaves it alone; failed and interrupted cells run again."""
        return self in FINISHED

    @property
    def ok(self) -> bool:
        """A run whose cells all end so exits 0."""
        return self in OK


FINISHED = frozenset({CellState.DONE, CellState.XFAIL, CellState.XPASS})
OK = frozenset({CellState.DONE, CellState.XFAIL})
ACTIVE = frozenset({CellState.PENDING, CellState.RUNNING})
WRITTEN = (CellState.DONE, CellState.XFAIL, CellState.XPASS, CellState.FAILED, CellState.INTERRUPTED, CellState.RUNNING)
"""The states a record.json may hold."""


class RunState(Text):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    FAILED = "failed"
    """Stopped by bad input or an error after its run directory existed."""


class MeasureMode(Text):
    """How a forward pass or a training step was run when it was timed; eager is the headline everywhere."""

    EAGER = "eager"
    COMPILED = "compiled"
    GRAPH = "graph"
    """Replayed as one CUDA graph."""
    COMPILED_GRAPH = "compiled+graph"
    ONNXRUNTIME = "onnxruntime"
    """ONNX Runtime (CPU provider) running the exported graph; not a PyTorch mode."""

    @classmethod
    def of(cls, compiled: bool, graphed: bool) -> "MeasureMode":
        return (cls.EAGER, cls.COMPILED, cls.GRAPH, cls.COMPILED_GRAPH)[int(compiled) + 2 * int(graphed)]

    @classmethod
    def parse(cls, value: Any) -> "MeasureMode":
        """A mode as written: entries without one are eager, and training entries once said 'graphed'."""
        legacy = {None: cls.EAGER, "graphed": cls.GRAPH, "compiled+graphed": cls.COMPILED_GRAPH}
        return legacy[value] if value in legacy else cls(value)


DISTANCES = ("euclidean", "cosine")
"""Distances the evaluation can rank by (recorded with every metric)."""


# --------------------------------------------------------------------------- checking values against annotations


def check_value(value: Any, kind: Any, where: str) -> Any:
    """`value` checked against the annotation `kind` and converted (enums, nested records); SchemaError otherwise."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        return check_value(value, next(k for k in options if k is not type(None)), where)
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind.parse(value) if hasattr(kind, "parse") else kind(value)
        except (ValueError, KeyError, TypeError):
            raise SchemaError(f"{where} is {value!r}; expected one of {', '.join(m.value for m in kind)}.") from None
    if dataclasses.is_dataclass(kind):
        return from_mapping(kind, value, where)
    if origin in (list, tuple):
        _expect(isinstance(value, list), value, "a list", where)
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _expect(isinstance(value, dict), value, "a table", where)
        _, item = typing.get_args(kind)
        return {k: check_value(v, item, f"{where}.{k}") for k, v in value.items()}
    return _check_scalar(value, kind, where)


def _check_scalar(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        _expect(isinstance(value, bool), value, "true or false", where)
    elif kind is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), value, "a whole number", where)
    elif kind is float:
        _expect(isinstance(value, (int, float)) and not isinstance(value, bool), value, "a number", where)
        return float(value)
    elif kind is str:
        _expect(isinstance(value, str), value, "text", where)
    elif kind is dict:
        _expect(isinstance(value, dict), value, "a table", where)
    elif kind is list:
        _expect(isinstance(value, list), value, "a list", where)
    return value


def _expect(ok: bool, value: Any, what: str, where: str) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__} ({repr(value)[:37]}...)"
        raise SchemaError(f"{where} is {shown}; expected {what}.")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """A record dataclass from parsed JSON: every declared field type-checked, missing ones defaulted.

    Required fields (no default) must be present; keys the dataclass does not
    declare are kept in its `extra` field where it has one, and refused otherwise.
    """
    _expect(isinstance(data, dict), data, "a JSON object", where)
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name == "extra":
            continue
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where} lacks the field {name!r}.")
            continue
        values[name] = check_value(data[name], hints[name], f"{where}: {name}")
    unknown = {k: v for k, v in data.items() if k not in declared}
    if "extra" in declared:
        values["extra"] = unknown
    elif unknown:
        raise SchemaError(f"{where} has unknown field(s) {', '.join(sorted(unknown))}.")
    return cls(**values)


def to_plain(record: Any) -> dict[str, Any]:
    """A record dataclass as JSON-ready data (enums as text, `extra` merged back in)."""
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "extra"}
    return {**_plain(data), **getattr(record, "extra", {})}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_plain(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- the records


NUMERIC = {
    "metrics": ("mAP", "rank1", "rank5", "rank10", "mINP", "mAP_rr", "rank1_rr", "rank5_rr", "rank10_rr", "mINP_rr"),
    "training": ("seconds", "img_per_s", "steady_img_per_s", "first_epoch_seconds", "epochs_done"),
    "params": ("total", "backbone", "neck", "head"),
}
"""Nested values the readers compute with: checked as numbers (or absent, or null) when a record is read."""


@dataclass
class CellRecord:
    """One (cell, seed): how it ended, what it scored, what it costs, and what a reader must know about it.

    `bench` writes the same record without training (seed, metrics and training stay empty).
    """

    cell: str
    backbone: str
    neck: str
    status: CellState
    seed: Optional[int] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    expected: Optional[dict[str, Any]] = None
    """The grid's expectation for this cell (status, match, reason), if it has one."""
    notes: list[str] = field(default_factory=list)
    """Facts about the variant a reader of its numbers must know (clamped windows, projections, weights)."""
    warnings: list[str] = field(default_factory=list)
    feature_dim: Optional[int] = None
    weights: Optional[dict[str, Any]] = None
    """Which checkpoint filled the backbone (path, SHA-256, loaded, new, ignored); None: random initialisation."""
    params: dict[str, int] = field(default_factory=dict)
    gmacs: Optional[float] = None
    gflops: Optional[float] = None
    flops: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    """Per batch size and `MeasureMode`; eager is the headline."""
    compile: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    reference: list[dict[str, Any]] = field(default_factory=list)
    """The bare library loop beside the eager latency (`--reference`)."""
    train_throughput: list[dict[str, Any]] = field(default_factory=list)
    measure_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each measurement, in the order they ran, under the message that announced it."""
    settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    training: Optional[dict[str, Any]] = None
    metrics: Optional[dict[str, Any]] = None
    axes: dict[str, Any] = field(default_factory=dict)
    """The cell's axis values (grid [axes] and --axis); {} for a grid without axes."""
    recipe: Optional[dict[str, Any]] = None
    """What the cell trained with: the profile (and recipe) name, the [train] settings, what it follows and its departures."""
    cross_domain: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Test set spec -> its metrics and protocol, for runs with --test-data (trained on the run's dataset)."""
    onnx: Optional[dict[str, Any]] = None
    """The ONNX export's summary: exporter, opset, parity, error (`reidbench.bench.export`)."""
    distributed: Optional[dict[str, Any]] = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of probe, train, evaluate and measure."""
    validation: Optional[dict[str, Any]] = None
    """The periodic evaluation during training (eval.period > 0): split ('val' or 'test'), period, the scored epochs,
    queries and gallery size; its scores are the train log's val_map and val_rank1. None: only the final evaluation."""
    started: Optional[str] = None
    finished: Optional[str] = None
    wall_seconds: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields written by other versions of reidbench, kept as they are."""

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> "CellRecord":
        record = from_mapping(cls, data, where)
        if record.status not in WRITTEN:
            raise SchemaError(f"{where}: status is {record.status.value!r}, which no run writes.")
        for part, keys in NUMERIC.items():
            values = getattr(record, part) or {}
            for key in keys:
                if values.get(key) is not None:
                    check_value(values[key], float, f"{where}: {part}.{key}")
        for name in ("latency", "train_throughput"):
            for i, entry in enumerate(getattr(record, name)):
                check_value(entry.get("batch_size"), int, f"{where}: {name}[{i}].batch_size")
                entry["mode"] = MeasureMode.parse(entry.get("mode")).value
        return record

    def merge_failure(self, status: CellState, error: str, trace: Optional[str] = None) -> None:
        self.status, self.error = status, error
        if trace is not None:
            self.traceback = trace


@dataclass
class GridRef:
    name: str
    source: str
    cells: list[str]


@dataclass
class Owner:
    """The process that holds a run directory: `status` tells a live owner from a dead one by these."""

    pid: int
    host: str
    started: str
    started_unix: float
    start_ticks: Optional[int] = None
    """When the process started (clock ticks since boot): with the pid, it names one process for good."""


OWNER_FIELDS = ("pid", "host", "started", "started_unix", "start_ticks")


@dataclass
class AutoSeeds:
    """`--seeds auto`: seeds added in rounds until each cell's mAP is known to `precision` (see harness.seed_rounds)."""

    max_seeds: int
    precision: float
    """The target half-width of the 95 % interval of a cell's mean mAP over seeds, in percentage points."""
    cells: dict[str, int] = field(default_factory=dict)
    """Cells planned with more seeds than the first round's (`RunMeta.seeds`): cell -> N, for the N seeds from the
    run's first seed on (`seed_range`)."""


MAX_SEED = 2**31 - 1
"""The highest seed reidbench takes (`--first-seed`, `train.init_seed`, `train.data_seed`): it, and the per-rank
generators derived from it, stay within what torch's and numpy's generators take (a larger one would stop a run
at its first cell, after its directory exists)."""


def seed_range(first: int, count: int) -> list[int]:
    """The seeds of a cell planned with `count` seeds in a run whose seeds start at `first` (`--first-seed`).

    The one place that turns a count into seeds: the plan, run.json's readers, the
    rounds of `--seeds auto` and the launchers all ask it, so a run that starts at
    seed 5 trains, resumes, lists and reports seeds 5, 6, ... everywhere.
    """
    return list(range(first, first + count))


@dataclass
class RunMeta:
    """run.json: what defines a run (so --resume needs nothing else), and where it stands."""

    status: RunState
    grid: GridRef
    seeds: list[int]
    device: str
    dtype: str
    first_seed: int = 0
    """`--first-seed`: the lowest seed; `seeds` and the seeds `--seeds auto` adds count up from it."""
    profile: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    started: Optional[str] = None
    command: Optional[str] = None
    only: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    compile: bool = False
    data_cache: str = "auto"
    sync_bn: bool = False
    cuda_graphs: bool = False
    test_data: list[str] = field(default_factory=list)
    cli_axes: dict[str, list[Any]] = field(default_factory=dict)
    """Axes added on the command line (--axis), which --resume adds to the stored grid again."""
    auto_seeds: Optional[AutoSeeds] = None
    """Set by `--seeds auto`; `seeds` then lists the first round's seeds, which every cell has."""
    plugins: list[str] = field(default_factory=list)
    """Modules imported for their registrations (entry points, --import names, absolute .py paths); --resume,
    export, report, status and launcher jobs import them again before rebuilding a cell."""
    test_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """--test-data spec -> that set's facts (counts, skipped images, queries without a match, chance level)."""
    settings: dict[str, Any] = field(default_factory=dict)
    owner: Optional[Owner] = None
    finished: Optional[str] = None
    interrupted: Optional[str] = None
    error: Optional[str] = None
    """Why the run stopped, when it failed before its cells ended."""
    extra: dict[str, Any] = field(default_factory=dict)

    def cell_seeds(self, cell: str) -> list[int]:
        """The seeds planned for `cell`: `seeds`, or more where `--seeds auto` added some."""
        planned = self.auto_seeds.cells.get(cell) if self.auto_seeds is not None else None
        return seed_range(self.first_seed, planned) if planned is not None else list(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "run metadata") -> "RunMeta":
        return from_mapping(cls, data, where)


@dataclass
class EpochEntry:
    """One line of train_log.jsonl: one epoch's statistics, averaged over its steps (and over the ranks under DDP).

    The trainer builds it and the checkpoint keeps the list (as `to_dict()`s), so a resumed
    cell's log and curves continue where they stopped; `status` and `report` read it back.
    """

    epoch: int
    """1-based: the number of epochs done when it was written (within its stage)."""
    loss: float
    """The total loss; NaN or infinite only in the epoch that fails a cell."""
    lr: float
    """The learning rate at the epoch's end."""
    seconds: float
    id_loss: Optional[float] = None
    """None on the lines of an earlier stage (CLIP-ReID's prompt learning), which has no ID loss; so the next two."""
    triplet_loss: Optional[float] = None
    accuracy: Optional[float] = None
    """The ID classifier's training accuracy, 0..1."""
    img_per_s: Optional[float] = None
    i2t_loss: Optional[float] = None
    """CLIP-ReID's image-to-text loss (head = "clipreid"); None for other heads."""
    stage: Optional[int] = None
    """None: the cell's own training; 1: CLIP-ReID's prompt-learning stage, logged before it with its own epochs."""
    val_map: Optional[float] = None
    """mAP (a fraction) of the periodic evaluation after this epoch (eval.period), on the split the record's
    `validation` names; None on the epochs it skips and with period 0. So `val_rank1`."""
    val_rank1: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields written by other versions of reidbench, kept as they are."""

    def to_dict(self) -> dict[str, Any]:
        """Absent statistics are left out, so a line holds what its stage measured."""
        return {key: value for key, value in to_plain(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str = "epoch entry") -> "EpochEntry":
        return from_mapping(cls, data, where)


# --------------------------------------------------------------------------- queries.npz

QUERY_FIELDS = ("pid", "ap", "first_rank", "inp")
"""The arrays every `QueryScores` has, stored as `<key>/<field>` in queries.npz."""
RANK_LIST_FIELD = "top"
"""The optional array of a `QueryScores`: each query's rank list, `<key>/top`; runs made before rank lists were kept
have none, and a reader takes its absence as that."""


@dataclass(frozen=True, eq=False)
class QueryScores:
    """Every query's own result in one evaluation (the test set, a modality subset, re-ranked, another test set).

    Kept so that `report` can put an interval on a single run's metrics by
    resampling query identities, without recomputing anything. Queries the
    protocol skipped (no correct match left in the gallery) are kept with AP
    and INP NaN and rank 0, so the arrays line up with the query set.
    """

    pid: "np.ndarray"
    """int64: the query's identity (what a bootstrap resamples)."""
    ap: "np.ndarray"
    """float64: average precision, a fraction; NaN for a skipped query."""
    first_rank: "np.ndarray"
    """int64: 1-based rank of the first correct match (CMC); 0 for a skipped query."""
    inp: "np.ndarray"
    """float64: inverse negative penalty (matches / rank of the last match); NaN for a skipped query."""
    top: Optional["np.ndarray"] = None
    """int32 [queries, K]: each query's first K gallery indices (rows of the gallery as evaluated), closest first,
    after the protocol's removals; -1 where fewer were left. None for a run made before rank lists were kept."""

    @property
    def valid(self) -> "np.ndarray":
        return self.first_rank > 0


def query_scores_bytes(scores: dict[str, QueryScores]) -> bytes:
    """queries.npz's content: evaluation key (e.g. 'test', 'test/rr') -> its `QueryScores`."""
    import io

    import numpy as np

    arrays = {f"{key}/{name}": getattr(s, name) for key, s in scores.items() for name in QUERY_FIELDS}
    arrays.update((f"{key}/{RANK_LIST_FIELD}", s.top) for key, s in scores.items() if s.top is not None)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def query_scores_from_npz(data: Any, where: str) -> dict[str, QueryScores]:
    """Parse a loaded queries.npz (a mapping of arrays); a SchemaError names the file and what is wrong."""
    import numpy as np

    keys: dict[str, dict[str, Any]] = {}
    known = (*QUERY_FIELDS, RANK_LIST_FIELD)
    for name in data.files:
        key, _, field_name = name.rpartition("/")
        if field_name not in known or not key:
            raise SchemaError(f"{where} holds an array {name!r}; expected KEY/{'|'.join(known)}.")
        keys.setdefault(key, {})[field_name] = np.asarray(data[name])
    scores = {}
    for key, arrays in keys.items():
        top = arrays.pop(RANK_LIST_FIELD, None)
        missing = [f for f in QUERY_FIELDS if f not in arrays]
        lengths = {len(a) for a in arrays.values() if a.ndim == 1}
        if missing or len(lengths) != 1 or any(a.ndim != 1 for a in arrays.values()):
            raise SchemaError(f"{where}: the arrays of {key!r} are incomplete or of different lengths.")
        if top is not None and (top.ndim != 2 or len(top) not in lengths or top.dtype.kind not in "iu"):
            raise SchemaError(f"{where}: {key}/{RANK_LIST_FIELD} is not an integer [queries, K] array of the query set's length.")
        scores[key] = QueryScores(**{f: arrays[f] for f in QUERY_FIELDS}, top=top)
    return scores


# --------------------------------------------------------------------------- results.csv


TEXT = "text"
FRACTION = "fraction of 1 (0.4184 is 41.84 %; the report shows percent)"
PARAMETERS = "parameters, a whole count (the report shows millions)"
UNITS_ABOUT = ("Units of results.csv's columns. Accuracy (mAP, rank-k, mINP and their re-ranked _rr columns) is stored "
               "as a fraction and parameters as whole counts, as computed; the report's tables show percent and millions.")


@dataclass(frozen=True)
class ResultColumn:
    """One results.csv column: where in a record its value lives, so a row can be written from a record and a
    record rebuilt from a row (an archived run keeps only its results.csv)."""

    name: str
    part: str
    """The record's field."""
    key: Optional[str] = None
    """The key within that field (a table); None: the field itself."""
    integer: bool = False
    """A whole number (read back from a CSV as a float where the column has blanks)."""
    unit: str = TEXT
    """What its numbers are counted in, as results.units.json says it (`column_units`)."""

    def value(self, record: CellRecord) -> Any:
        found = getattr(record, self.part)
        if self.key is not None:
            return (found or {}).get(self.key)
        return found.value if isinstance(found, Enum) else found


RESULT_COLUMNS: tuple[ResultColumn, ...] = (
    ResultColumn("cell", "cell"),
    ResultColumn("backbone", "backbone"),
    ResultColumn("neck", "neck"),
    ResultColumn("seed", "seed", integer=True, unit="seed number"),
    ResultColumn("status", "status"),
    ResultColumn("error", "error"),
    *(ResultColumn(name, "metrics", name, unit=FRACTION) for name in NUMERIC["metrics"]),
    ResultColumn("params", "params", "total", integer=True, unit=PARAMETERS),
    ResultColumn("params_backbone", "params", "backbone", integer=True, unit=PARAMETERS),
    ResultColumn("params_neck", "params", "neck", integer=True, unit=PARAMETERS),
    ResultColumn("params_head", "params", "head", integer=True, unit=PARAMETERS),
    ResultColumn("gmacs", "gmacs", unit="GMACs per image (batch 1, inference; 1 MAC = 2 FLOPs)"),
    ResultColumn("gflops", "gflops", unit="GFLOPs per image (batch 1, inference)"),
    ResultColumn("train_seconds", "training", "seconds", unit="s"),
    ResultColumn("train_img_per_s", "training", "img_per_s", unit="images/s"),
    ResultColumn("train_img_per_s_steady", "training", "steady_img_per_s", unit="images/s"),
    ResultColumn("epochs", "training", "epochs_done", integer=True, unit="epochs"),
)
"""results.csv, column by column (the one definition of that file)."""
RESULT_COLUMN_NAMES = [column.name for column in RESULT_COLUMNS]


AXIS_COLUMN_PREFIX = "axis:"
"""results.csv gets one more column per axis of the grid, `axis:<key>`, after the fixed ones."""


def column_units(columns: Iterable[str], more: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Column -> its unit, for results.units.json: results.csv's own columns from `RESULT_COLUMNS`, an axis column is
    text, and `more` gives the report's extra columns (latency, memory) theirs."""
    own = {column.name: column.unit for column in RESULT_COLUMNS}
    found = {**(more or {}), **own}  # a run's own column keeps its unit whatever a report adds
    return {c: TEXT if c.startswith(AXIS_COLUMN_PREFIX) else found.get(c, "") for c in columns}


def units_document(units: dict[str, str]) -> dict[str, Any]:
    """results.units.json: what each results.csv column is counted in, beside the file (no units row in the CSV,
    so pandas reads it as it always did)."""
    return {"about": UNITS_ABOUT, "units": units}


def axis_text(value: Any) -> str:
    """An axis value as it appears in a cell id and an axis column: lists joined by '-', booleans lower case,
    numbers as written."""
    if isinstance(value, (list, tuple)):
        return "-".join(axis_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def results_row(record: CellRecord) -> dict[str, Any]:
    row = {column.name: column.value(record) for column in RESULT_COLUMNS}
    row.update({AXIS_COLUMN_PREFIX + key: axis_text(value) for key, value in record.axes.items()})
    return row


def results_columns(rows: list[dict[str, Any]]) -> list[str]:
    """results.csv's columns for these rows: the fixed ones, then the axis columns any row has, in first-seen order."""
    axes = dict.fromkeys(k for row in rows for k in row if k.startswith(AXIS_COLUMN_PREFIX))
    return RESULT_COLUMN_NAMES + list(axes)


def record_from_results_row(row: dict[str, Any], where: str) -> CellRecord:
    """The record a results.csv row was written from, as far as the row holds it (metrics, parameters, FLOPs,
    training time, axes); blank cells are absent fields. A row that does not fit the schema raises SchemaError."""
    data: dict[str, Any] = {}
    for column in RESULT_COLUMNS:
        value = row.get(column.name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if column.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        if column.key is None:
            data[column.part] = value
        else:
            data.setdefault(column.part, {})[column.key] = value
    data["axes"] = {key.removeprefix(AXIS_COLUMN_PREFIX): axis_text(value) for key, value in row.items()
                    if key.startswith(AXIS_COLUMN_PREFIX) and not (isinstance(value, float) and math.isnan(value))}
    return CellRecord.from_dict(data, where)


def is_number(value: Any) -> bool:
    """A finite real number, numpy's included (pandas turns missing values into NaN, JSON into None)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
