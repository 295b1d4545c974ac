"""Profiles: how hard to train and measure, declared as TOML files beside this module.

A profile holds everything about a run that is not the variant itself: model
overrides that size it for the machine (depth, input size), the training
recipe, the evaluation protocol and the measurement settings. `auto` picks
`full` on CUDA and `quick` elsewhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reidbench.config import from_mapping
from reidbench.errors import UsageError
from reidbench.schema import DISTANCES
from reidbench.variants.grid import tomllib
from reidbench.variants.settings import VariantSettings

PROFILES_DIR = Path(__file__).parent
OPTIMIZERS = ("sgd", "adamw")
TRIPLETS = ("soft", "margin", "none")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 120
    p: int = 16
    """Identities per batch (PK sampler)."""
    k: int = 4
    """Images per identity per batch."""
    optimizer: str = "sgd"
    lr: float = 0.008
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    """Linear warm-up, then cosine decay to zero at the last epoch."""
    label_smoothing: float = 0.0
    triplet: str = "soft"
    """'soft' (soft-margin), 'margin' (hinge with triplet_margin) or 'none'."""
    triplet_margin: float = 0.3
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    augment: bool = True
    """Random flip and pad-and-crop (padding scaled with the input height), then random erasing."""
    erase_p: float = 0.5
    """Probability of random erasing per image (when augment is on)."""
    checkpoint_minutes: float = 1.0
    """Most training minutes an interruption may lose: a resumable checkpoint is written at the end of the
    first epoch that ends this long after the last one (0: every epoch), and always after the last epoch."""
    checkpoint_every: int = 0
    """Also write one every this many epochs (0: by time alone)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.p < 2 or self.k < 2:
            raise UsageError("epochs must be >= 1, p >= 2 and k >= 2 (the triplet loss needs 2 ids x 2 images).")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer {self.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}.")
        if self.triplet not in TRIPLETS:
            raise UsageError(f"triplet {self.triplet!r} is unknown; choose one of {', '.join(TRIPLETS)}.")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise UsageError("lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1).")
        if not 0 <= self.erase_p <= 1:
            raise UsageError(f"erase_p {self.erase_p} must lie in [0, 1].")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(f"warmup_epochs {self.warmup_epochs} must be in [0, epochs = {self.epochs}).")
        if self.checkpoint_minutes < 0 or self.checkpoint_every < 0:
            raise UsageError(
                f"checkpoint_minutes {self.checkpoint_minutes} and checkpoint_every {self.checkpoint_every} must be >= 0 "
                "(checkpoint_minutes = 0 saves every epoch)."
            )

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def checkpoint_due(self, epochs_done: int, minutes_since_checkpoint: float) -> bool:
        """Whether to write a resumable checkpoint after `epochs_done` epochs.

        By time rather than every epoch: a checkpoint holds the model and the
        optimizer's state (gigabytes for a full-size ms cell with SGD momentum), and
        writing one after every short epoch costs a sizeable share of a cell's wall
        time (docs/benchmarks, checkpoint cost).
        """
        if epochs_done >= self.epochs or minutes_since_checkpoint >= self.checkpoint_minutes:
            return True
        return bool(self.checkpoint_every) and epochs_done % self.checkpoint_every == 0


@dataclass(frozen=True)
class EvalConfig:
    metric: str = "euclidean"
    normalize: bool = True
    """L2-normalize features before computing distances (TransReID's FEAT_NORM)."""
    flip: bool = False
    """Average each image's feature with its horizontal flip's."""
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.metric not in DISTANCES:
            raise UsageError(f"metric {self.metric!r} is unknown; choose one of {', '.join(DISTANCES)}.")
        if self.batch_size < 1:
            raise UsageError("eval batch_size must be >= 1.")


@dataclass(frozen=True)
class MeasureConfig:
    batch_sizes: tuple[int, ...] = (1, 64, 256)
    train_batch_size: int = 64
    repeats: int = 50
    warmup: int = 3
    max_seconds: float = 5.0
    compile: bool = False
    """Also time a compiled copy at every batch size (compile time recorded), as `bench --compile`."""
    cuda_graphs: bool = False
    """Also time CUDA-graph replay at every batch size, as `bench --cuda-graphs` (skipped, with the reason, off CUDA)."""
    reference: bool = False
    """Also time the bare library network at each eager batch size (`*-none` cells at stride 16), as `bench --reference`."""

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UsageError(f"measure batch_sizes {list(self.batch_sizes)} must be a non-empty list of positive batch sizes.")
        if self.train_batch_size < 2:
            raise UsageError(
                f"measure train_batch_size {self.train_batch_size} must be at least 2: the BNNeck's batch norm needs two "
                "samples in training mode."
            )
        if self.repeats < 1 or self.warmup < 0 or not self.max_seconds > 0:
            raise UsageError(
                f"measure repeats {self.repeats}, warmup {self.warmup}, max_seconds {self.max_seconds}: repeats must be >= 1, "
                "warmup >= 0 and max_seconds > 0."
            )

    @classmethod
    def for_device(cls, device: torch.device) -> "MeasureConfig":
        """`bench`'s defaults: these field defaults on a GPU; small batches on a CPU, where batch 256 takes minutes."""
        return cls() if device.type == "cuda" else cls(batch_sizes=(1, 8), train_batch_size=4)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    description: str
    model: dict[str, Any]
    """Overrides of the grid's variant settings (checked against VariantSettings on load)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["measure"]["batch_sizes"] = list(self.measure.batch_sizes)
        return data


SECTIONS = {"train": TrainConfig, "eval": EvalConfig, "measure": MeasureConfig}


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile_name(name: str, device: torch.device) -> str:
    """`auto` means the full recipe where a GPU makes it affordable, the quick one elsewhere."""
    if name == "auto":
        return "full" if device.type == "cuda" else "quick"
    return name


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise UsageError(f"profile file {name_or_path!r} does not exist; pass a TOML file or one of: auto, {', '.join(builtin_profiles())}.")
        source, name = str(path), path.stem
    else:
        path = PROFILES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise UsageError(f"unknown profile {name_or_path!r}; choose auto, {', '.join(builtin_profiles())} or a path to a .toml file.")
        source, name = f"builtin:{name_or_path}", name_or_path
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"profile file {source} is not valid TOML: {exc}.") from None
    except RecursionError:
        raise UsageError(f"profile file {source} nests its tables or lists too deeply to read; a profile needs two levels.") from None
    unknown = sorted(set(raw) - {"description", "model", *SECTIONS})
    if unknown:
        raise UsageError(f"profile file {source}: unknown key(s) {', '.join(unknown)}; valid: description, model, {', '.join(SECTIONS)}.")
    model = raw.get("model", {})
    VariantSettings().with_overrides(model, f"profile file {source} [model]")  # names and types checked now
    sections = {key: from_mapping(cls, raw.get(key, {}), f"profile file {source} [{key}]") for key, cls in SECTIONS.items()}
    return Profile(name=name, source=source, description=str(raw.get("description", "")), model=dict(model), **sections)
