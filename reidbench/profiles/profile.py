"""Profiles: how hard to train and measure, declared as TOML files beside this module.

A profile holds everything about a run that is not the variant itself: model
overrides that size it for the machine (depth, input size), the training
recipe, the evaluation protocol and the measurement settings. `auto` picks
`full` on CUDA and `quick` elsewhere.

One home per default. The field defaults of `TrainConfig`, `EvalConfig` and
`MeasureConfig` below ARE the base: TransReID's ViT-B/16 recipe and the GPU
measurement, the values the `full` profile trains, evaluates and measures with.
A profile file states only what it changes, on top of what it extends:

- `extends = "NAME"` (a built-in profile) or `extends = "PATH.toml"` (relative
  to the extending file): that profile's resolved values, [model] included;
- no `extends`: the base alone. Its [model] is empty (the grid's sizes), so
  base and `full` differ only in full.toml's [model] (depth 12 at 256x128),
  which overrides the grid rather than defaulting anything.

So full.toml holds its [model], its description and its departures and
nothing the base already says; quick.toml says `extends = "full"` and lists
what it changes. `description`, `follows` and `departures` are a file's own
and never inherited: they describe that file's departures. No profile mixes two
sets of defaults, and `Profile.origins` records where each value came from
(`reidbench list --profile P` prints it).

A recipe (recipes/NAME.toml) is laid over the profile a cell runs with: what it
states wins, what it leaves out stays the profile's. It therefore states every
value its upstream fixes, also those equal to the base, because it may be laid
over a profile (quick) that changed them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from reidbench.config import from_mapping, read_toml
from reidbench.data.formats import GENERATED
from reidbench.errors import UsageError
from reidbench.schema import DISTANCES, MAX_SEED
from reidbench.variants.settings import VariantSettings

PROFILES_DIR = Path(__file__).parent
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "multistep")
SCHEDULE_UNITS = ("step", "epoch")
EPOCH_COVERS = ("identities", "images")
STANDARD_RERANK = (20, 6, 0.3)
"""k1, k2 and lambda of Zhong et al.'s paper, and the default of fast-reid and torchreid."""
TRIPLETS = ("soft", "margin", "none")
EVAL_SPLITS = ("auto", "test", "val")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=120, metadata={"max": 1_000_000})
    p: int = field(default=16, metadata={"max": 4096})
    """Identities per batch (PK sampler)."""
    k: int = field(default=4, metadata={"max": 1024})
    """Images per identity per batch."""
    optimizer: str = "sgd"
    """sgd (with momentum), adamw, or adam (L2 weight decay, as CLIP-ReID's Adam)."""
    lr: float = 0.008
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0
    """Bias parameters train at lr x this (TransReID's and CLIP-ReID's BIAS_LR_FACTOR: 2)."""
    weight_decay_bias: Optional[float] = field(default=None, metadata={"type": float})
    """Weight decay of bias parameters; None: weight_decay (TransReID's WEIGHT_DECAY_BIAS equals its WEIGHT_DECAY)."""
    epoch_covers: str = "images"
    """What an epoch covers: 'identities' (one PK pass over the training identities) or 'images' (every identity's
    images in chunks of K, as TransReID's RandomIdentitySampler: about one pass over the images)."""
    warmup_epochs: int = 5
    """Linear warm-up from warmup_from x lr, then `schedule`."""
    warmup_from: float = 0.01
    schedule: str = "cosine"
    """'cosine' (down to lr_floor x lr at the last epoch) or 'multistep' (x gamma at each of `milestones`)."""
    schedule_unit: str = "epoch"
    """'step': the learning rate changes every step; 'epoch': it is set at the start of each epoch from the
    1-based epoch number and held through it, as TransReID's and CLIP-ReID's schedulers are stepped."""
    lr_floor: float = 0.002
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0
    triplet: str = "soft"
    """'soft' (soft-margin), 'margin' (hinge with triplet_margin) or 'none'."""
    triplet_margin: float = 0.3
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    i2t_weight: float = 1.0
    """Weight of the image-to-text cross-entropy against the identity text features (CLIP-ReID's I2T_LOSS_WEIGHT);
    used by models with head = "clipreid" only, as are the prompt_* settings of its stage 1."""
    prompt_epochs: int = 120
    """CLIP-ReID's stage 1 (prompt learning, both encoders frozen): its epochs, batch, Adam learning rate and decay,
    and its cosine schedule (warm-up from prompt_warmup_lr over prompt_warmup_epochs, floor prompt_lr_min)."""
    prompt_batch_size: int = 64
    prompt_lr: float = 0.00035
    prompt_weight_decay: float = 0.0001
    prompt_warmup_epochs: int = 5
    prompt_warmup_lr: float = 0.00001
    prompt_lr_min: float = 0.000001
    augment: bool = True
    """Random flip and pad-and-crop (padding scaled with the input height), then random erasing."""
    erase_p: float = 0.5
    """Probability of random erasing per image (when augment is on)."""
    grad_clip_norm: float = 0.0
    """Scale each step's gradients down to this total L2 norm when above it, before the update (0: off, as
    TransReID and CLIP-ReID train). One outlying batch then moves the weights no further than a typical one."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights, updated after every step with this decay (0: off, as
    TransReID and CLIP-ReID train); the average is what is evaluated, measured and saved. The decay ramps up as
    (1 + t) / (10 + t) over the first steps t, so the random initial weights do not linger in it."""
    fixed_order_reductions: bool = False
    """Sum the training step's thread-split reductions (LayerNorm, BatchNorm1d and patch-embedding gradients, camera
    table rows, the clipping norm) in a fixed order, so that one and two CPU threads train bit for bit the same
    weights (`reidbench.variants.fixed_order`). Off: PyTorch's own kernels, as TransReID and CLIP-ReID train."""
    init_seed: Optional[int] = field(default=None, metadata={"type": int, "max": MAX_SEED})
    """Draw the initial weights from this seed instead of the cell's (None: the cell's seed). With init_seed fixed,
    the spread of a cell over the run's seeds is the spread of its data order alone (see data_seed)."""
    data_seed: Optional[int] = field(default=None, metadata={"type": int, "max": MAX_SEED})
    """Draw the training's batches, augmentations and any other training-time randomness from this seed instead of
    the cell's (None: the cell's seed). With data_seed fixed, a cell's spread over the run's seeds is its
    initialisation's alone: the two settings split a seed's effect in two (docs/statistics.md)."""
    checkpoint_minutes: float = 1.0
    """Most training minutes an interruption may lose: a resumable checkpoint is written at the end of the
    first epoch that ends this long after the last one (0: every epoch), and always after the last epoch."""
    checkpoint_every: int = 0
    """Also write one every this many epochs (0: by time alone)."""
    freeze_backbone: bool = False
    """Train without the backbone's pretrained network (MambaPro's FROZEN): its parameters are left out of the
    optimizer and get no gradient; camera and modality embeddings, projections, neck and head still train."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.p < 2 or self.k < 2:
            raise UsageError("epochs must be >= 1, p >= 2 and k >= 2 (the triplet loss needs 2 ids x 2 images).")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer {self.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}.")
        self._check_schedule()
        self._check_prompt_stage()
        if self.triplet not in TRIPLETS:
            raise UsageError(f"triplet {self.triplet!r} is unknown; choose one of {', '.join(TRIPLETS)}.")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise UsageError("lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1).")
        if self.grad_clip_norm < 0 or not 0 <= self.ema_decay < 1:
            raise UsageError(
                f"grad_clip_norm {self.grad_clip_norm} must be >= 0 (0: off) and ema_decay {self.ema_decay} in [0, 1) (0: off)."
            )
        if not 0 <= self.erase_p <= 1:
            raise UsageError(f"erase_p {self.erase_p} must lie in [0, 1].")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(f"warmup_epochs {self.warmup_epochs} must be in [0, epochs = {self.epochs}).")
        if any(seed is not None and seed < 0 for seed in (self.init_seed, self.data_seed)):
            raise UsageError(f"init_seed {self.init_seed} and data_seed {self.data_seed} must be >= 0 (or left out: the cell's seed).")
        if self.checkpoint_minutes < 0 or self.checkpoint_every < 0:
            raise UsageError(
                f"checkpoint_minutes {self.checkpoint_minutes} and checkpoint_every {self.checkpoint_every} must be >= 0 "
                "(checkpoint_minutes = 0 saves every epoch)."
            )

    def _check_schedule(self) -> None:
        for name, value, choices in (("schedule", self.schedule, SCHEDULES), ("schedule_unit", self.schedule_unit, SCHEDULE_UNITS),
                                     ("epoch_covers", self.epoch_covers, EPOCH_COVERS)):
            if value not in choices:
                raise UsageError(f"{name} {value!r} is unknown; choose one of {', '.join(choices)}.")
        if not 0 <= self.warmup_from <= 1 or not 0 <= self.lr_floor < 1 or not 0 < self.gamma <= 1 or self.bias_lr_factor <= 0:
            raise UsageError(
                f"warmup_from {self.warmup_from} and lr_floor {self.lr_floor} must lie in [0, 1) (fractions of lr), "
                f"gamma {self.gamma} in (0, 1], bias_lr_factor {self.bias_lr_factor} above 0."
            )
        if list(self.milestones) != sorted(set(self.milestones)) or any(not 0 < m < self.epochs for m in self.milestones):
            raise UsageError(f"milestones {list(self.milestones)} must be increasing epochs between 1 and epochs - 1 = {self.epochs - 1}.")
        if self.weight_decay_bias is not None and self.weight_decay_bias < 0:
            raise UsageError(f"weight_decay_bias {self.weight_decay_bias} must be >= 0.")

    def _check_prompt_stage(self) -> None:
        if self.prompt_epochs < 1 or self.prompt_batch_size < 2 or not 0 <= self.prompt_warmup_epochs < self.prompt_epochs:
            raise UsageError(
                f"prompt_epochs {self.prompt_epochs} must be >= 1, prompt_batch_size {self.prompt_batch_size} >= 2 and "
                f"prompt_warmup_epochs {self.prompt_warmup_epochs} in [0, prompt_epochs)."
            )
        if self.prompt_lr <= 0 or min(self.prompt_weight_decay, self.prompt_warmup_lr, self.prompt_lr_min, self.i2t_weight) < 0:
            raise UsageError("prompt_lr must be > 0; prompt_weight_decay, prompt_warmup_lr, prompt_lr_min and i2t_weight >= 0.")

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
    batch_size: int = field(default=256, metadata={"max": 65_536})
    rerank: bool = False
    """Also score k-reciprocal re-ranked distances (Zhong et al., CVPR 2017): mAP_rr, rank1_rr, ... beside the plain ones."""
    rerank_k1: int = field(default=20, metadata={"max": 1000})
    rerank_k2: int = field(default=6, metadata={"max": 1000})
    rerank_lambda: float = 0.3
    """The standard setting is k1 20, k2 6, lambda 0.3; TransReID, CLIP-ReID and MambaPro use k1 50, k2 15."""
    period: int = field(default=0, metadata={"max": 1_000_000})
    """Also score the model after every `period`-th epoch of training, for validation curves (0: only the final
    evaluation after the last epoch). TransReID's SOLVER.EVAL_PERIOD (configs/Market/vit_sie.yml: 120, i.e. once,
    at the end; processor/processor.py scores when epoch % EVAL_PERIOD == 0) and CLIP-ReID's SOLVER.STAGE2.EVAL_PERIOD
    (configs/person/vit_clipreid.yml: 60, its last epoch). The scores are curves only: no checkpoint is ever chosen
    by them, the weights evaluated, measured and saved are always the last epoch's."""
    split: str = "auto"
    """What the periodic evaluation scores on (with period > 0): 'val', a validation split carved from the training
    identities (`reidbench.data.validation`: they are then left out of training), or 'test', the test split's
    query and gallery. 'auto' is 'val' for a dataset on disk (Market-1501, DukeMTMC-reID, MSMT17, VeRi-776, RGBNT201,
    RGBNT100, MSVR310), so that nobody reads a curve on the test split and picks an epoch by it, and 'test' for
    reidbench's generated synthetic sets, whose test split is drawn by the same generator as the training split and
    never tuned on, and where every training identity is worth keeping. The final evaluation is always on the test split."""

    def __post_init__(self) -> None:
        if self.period < 0 or self.split not in EVAL_SPLITS:
            raise UsageError(
                f"eval period {self.period} must be >= 0 (0: only the final evaluation) and eval split {self.split!r} one of "
                f"{', '.join(EVAL_SPLITS)}."
            )
        if self.metric not in DISTANCES:
            raise UsageError(f"metric {self.metric!r} is unknown; choose one of {', '.join(DISTANCES)}.")
        if self.batch_size < 1:
            raise UsageError("eval batch_size must be >= 1.")
        if self.rerank_k1 < 1 or not 1 <= self.rerank_k2 <= self.rerank_k1 or not 0 <= self.rerank_lambda <= 1:
            raise UsageError(
                f"re-ranking needs rerank_k1 >= 1 (got {self.rerank_k1}), 1 <= rerank_k2 <= rerank_k1 (got {self.rerank_k2}) "
                f"and rerank_lambda in [0, 1] (got {self.rerank_lambda}); the standard setting is 20, 6, 0.3."
            )

    @property
    def standard_rerank(self) -> bool:
        return (self.rerank_k1, self.rerank_k2, self.rerank_lambda) == STANDARD_RERANK

    def validation_split(self, dataset_kind: str) -> Optional[str]:
        """Where the periodic evaluation scores for a dataset of `dataset_kind` (`parse_dataset_spec`'s kind):
        'val' or 'test'; None with period 0, when nothing is scored during training and nothing is carved."""
        if not self.period:
            return None
        if self.split != "auto":
            return self.split
        return "test" if dataset_kind in GENERATED else "val"


@dataclass(frozen=True)
class MeasureConfig:
    batch_sizes: tuple[int, ...] = field(default=(1, 64, 256), metadata={"max": 65_536, "max_length": 32})
    train_batch_size: int = field(default=64, metadata={"max": 65_536})
    repeats: int = field(default=50, metadata={"max": 1_000_000})
    warmup: int = field(default=3, metadata={"max": 10_000})
    max_seconds: float = 5.0
    compile: bool = False
    """Also time a compiled copy at every batch size (compile time recorded), as `bench --compile`."""
    cuda_graphs: bool = False
    """Also time CUDA-graph replay at every batch size, as `bench --cuda-graphs` (skipped, with the reason, off CUDA)."""
    reference: bool = False
    """Also time the bare library network at each eager batch size (`*-none` cells at stride 16), as `bench --reference`."""
    onnx: bool = False
    """Also export to ONNX, check parity with PyTorch and time it under ONNX Runtime (CPU) at every batch size."""

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
        """`bench`'s defaults: these field defaults and CUDA-graph replay on a GPU; small batches on a CPU, where
        batch 256 takes minutes (and CUDA graphs do not exist)."""
        return cls(cuda_graphs=True) if device.type == "cuda" else cls(batch_sizes=(1, 8), train_batch_size=4)


BASE = "base"
"""The origin of a value no profile file states: the field defaults below, TransReID's recipe."""

INITS = ("scratch", "pretrained")
INIT_KEYS = ("init", "weights", "weights_file")


@dataclass(frozen=True)
class Init:
    """The initialisation a recipe was written for: a fine-tuning recipe belongs to its pretrained weights.

    A cell that starts otherwise trains with its profile's own recipe instead
    (`reidbench.harness.recipe_choice`). The base's is TransReID's: ImageNet
    ViT-B/16 weights (timm's copy of jx_vit_base_p16_224-80ecf9dd.pth).
    """

    kind: str = "pretrained"
    """'scratch' (random initialisation) or 'pretrained'."""
    weights: str = "timm/vit_base_patch16_224.orig_in21k_ft_in1k"
    """The weights' name, as --weights and --pretrained take it ('' for scratch)."""
    weights_file: str = "jx_vit_base_p16_224-80ecf9dd.pth"
    """The upstream's file of those weights: a --weights file of this name counts as them ('' for scratch)."""

    @property
    def pretrained(self) -> bool:
        return self.kind == "pretrained"

    def describe(self) -> str:
        return f"pretrained weights ({self.weights or self.weights_file})" if self.pretrained else "random initialisation"

    def owns(self, spec: str) -> bool:
        """Whether a weights value (a name or a file) is the weights this recipe was written for."""
        return self.pretrained and bool(spec) and (spec == self.weights or (bool(self.weights_file) and Path(spec).name == self.weights_file))

    def to_toml(self) -> list[str]:
        return [f"{key} = {_toml_value(value)}" for key, value in (("init", self.kind), ("weights", self.weights),
                                                                     ("weights_file", self.weights_file))]


def read_init(raw: dict[str, Any], where: str, inherited: Optional[Init]) -> Init:
    """A file's `init`, `weights` and `weights_file`; without `init`, `inherited` (None: the file must state it)."""
    if "init" not in raw:
        if any(key in raw for key in INIT_KEYS[1:]) or inherited is None:
            raise UsageError(
                f"{where}: state the initialisation it was written for: init = \"scratch\", or init = \"pretrained\" with "
                "weights = \"NAME\" (e.g. \"openai\") and, optionally, weights_file = \"FILE\" (the upstream's file name)."
            )
        return inherited
    kind, weights, weights_file = raw["init"], raw.get("weights", ""), raw.get("weights_file", "")
    if kind not in INITS or not isinstance(weights, str) or not isinstance(weights_file, str):
        raise UsageError(f"{where}: init must be one of {', '.join(INITS)}, and weights and weights_file strings (got init = {kind!r}).")
    if (kind == "pretrained") != bool(weights or weights_file):
        raise UsageError(
            f"{where}: init = {kind!r} " + ("needs weights = \"NAME\", the weights it was written for." if kind == "pretrained"
                                              else "takes no weights or weights_file: it starts from random initialisation.")
        )
    return Init(kind, weights, weights_file)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    description: str
    model: dict[str, Any]
    """Overrides of the grid's variant settings (checked against VariantSettings on load)."""
    follows: str = ""
    """The upstream recipe the profile follows, e.g. TransReID's config it was read from ('' for none)."""
    departures: tuple[str, ...] = ()
    """Where a run with it departs from that recipe, and why: shown in the run header and the report."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    extends: str = ""
    """The profile this one's file extends ('' for the base)."""
    init: Init = field(default_factory=Init)
    """The initialisation its recipe was written for (the base's: TransReID's ImageNet weights)."""
    follow_dataset_size: bool = False
    """Scale the input size its [model] (or the grid) gives for a person set (256x128) to the dataset's own
    (`reidbench.data.native_size`): 128x256 for the vehicle sets. A grid's `follow_dataset_size` wins."""
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    """'train.lr' -> where that value came from: BASE, or the source of the profile or recipe file that set it."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["origins"], data["extends"]
        data["measure"]["batch_sizes"] = list(self.measure.batch_sizes)
        return data

    def resolved(self) -> list[tuple[str, Any, str]]:
        """(key, value, origin) of every setting: the [model] overrides, then each section's fields."""
        rows = [(f"model.{k}", v, self.origins.get(f"model.{k}", BASE)) for k, v in self.model.items()]
        for section in SECTIONS:
            for key, value in asdict(getattr(self, section)).items():
                rows.append((f"{section}.{key}", value, self.origins.get(f"{section}.{key}", BASE)))
        return rows

    def to_toml(self) -> str:
        """Every resolved value spelled out, no `extends`: the run directory's copy, which --resume reads back
        and which stays the same profile whatever the files it extended say later."""
        lines = [f"# profile {self.name} as resolved from {self.source}: every value spelled out, nothing extended",
                 *(f"{key} = {_toml_value(getattr(self, key))}" for key in ("description", "follows", "follow_dataset_size")),
                 *self.init.to_toml(),
                 "departures = [", *(f"    {_toml_value(d)}," for d in self.departures), "]"]
        for section in ("model", *SECTIONS):
            values = self.model if section == "model" else asdict(getattr(self, section))
            lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None)]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers, booleans and arrays are TOML's (finite numbers only, checked on load)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


SECTIONS = {"train": TrainConfig, "eval": EvalConfig, "measure": MeasureConfig}
PROFILE_KEYS = ("extends", "description", "follows", "departures", *INIT_KEYS, "follow_dataset_size", "model", *SECTIONS)
SET_ORIGIN = "--set"
"""The origin of a value given on the command line as `--set TABLE.KEY=VALUE`."""


def split_sets(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`--set` values as (variant settings, {table: {key: value}}): `depth` is a variant setting, as it always
    was; `train.epochs` is a key of the profile's [train] table (likewise eval, measure and model)."""
    variant: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        table, dot, key = dotted.partition(".")
        if not dot:
            variant[dotted] = value
        elif table in ("model", *SECTIONS) and key and "." not in key:
            tables.setdefault(table, {})[key] = value
        else:
            raise UsageError(
                f"--set {dotted}: a dotted key names a profile table and one of its keys -- model, "
                f"{', '.join(SECTIONS)} (e.g. --set train.epochs=5, --set eval.rerank=true); a key without a dot is a "
                "variant setting (e.g. --set depth=2)."
            )
    return variant, tables


def with_sets(profile: Profile, tables: Mapping[str, Mapping[str, Any]]) -> Profile:
    """`profile` with `--set TABLE.KEY` values laid over it, checked as a profile file's are (names, types, bounds)."""
    if not tables:
        return profile
    model = tables.get("model", {})
    VariantSettings().with_overrides(model, "--set model.*")
    sections = {key: from_mapping(cls, tables[key], f"--set {key}.*", base=getattr(profile, key))
                for key, cls in SECTIONS.items() if key in tables}
    origins = {**profile.origins, **{f"{table}.{key}": SET_ORIGIN for table, values in tables.items() for key in values}}
    return replace(profile, model={**profile.model, **model}, **sections, origins=origins)


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile_name(name: str, device: torch.device) -> str:
    """`auto` means the full recipe where a GPU makes it affordable, the quick one elsewhere."""
    if name == "auto":
        return "full" if device.type == "cuda" else "quick"
    return name


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name or a profile file by path, resolved through its `extends` chain onto the base."""
    return _load_profile(name_or_path, Path.cwd(), ())


def _locate_profile(name_or_path: str, folder: Path) -> tuple[Path, str, str]:
    """(file, source, name) of a built-in name or a .toml path (relative to `folder`, the extending file's)."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise UsageError(f"profile file {name_or_path!r} does not exist; pass a TOML file or one of: auto, {', '.join(builtin_profiles())}.")
        return path, str(Path(name_or_path) if folder == Path.cwd() else path), path.stem
    path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise UsageError(f"unknown profile {name_or_path!r}; choose auto, {', '.join(builtin_profiles())} or a path to a .toml file.")
    return path, f"builtin:{name_or_path}", name_or_path


def _load_profile(name_or_path: str, folder: Path, chain: tuple[str, ...]) -> Profile:
    path, source, name = _locate_profile(name_or_path, folder)
    if source in chain:
        raise UsageError(f"profile {source} extends itself ({' -> '.join((*chain, source))}); one of them must extend another profile or nothing.")
    raw = _read_profile(path, source)
    extends = raw.get("extends", "")
    if "extends" in raw and (not isinstance(extends, str) or not extends):
        raise UsageError(f"profile file {source}: extends must name a profile (e.g. extends = \"full\") or be left out (the base).")
    parent = _load_profile(extends, path.parent, (*chain, source)) if "extends" in raw else None
    departures = raw.get("departures", [])
    if not isinstance(departures, list) or not all(isinstance(d, str) for d in departures):
        raise UsageError(f"profile file {source}: departures must be a list of sentences (strings).")
    model = raw.get("model", {})
    VariantSettings().with_overrides(model, f"profile file {source} [model]")  # names and types checked now
    sections = {key: from_mapping(cls, raw.get(key, {}), f"profile file {source} [{key}]", base=getattr(parent, key, None))
                for key, cls in SECTIONS.items()}
    origins = dict(parent.origins) if parent else {}
    origins.update({f"{table}.{key}": source for table in ("model", *SECTIONS) for key in raw.get(table, {})})
    follow = raw.get("follow_dataset_size", parent.follow_dataset_size if parent else False)
    if not isinstance(follow, bool):
        raise UsageError(f"profile file {source}: follow_dataset_size must be true or false.")
    return Profile(
        name=name, source=source, description=str(raw.get("description", "")), model={**(parent.model if parent else {}), **model},
        follows=str(raw.get("follows", "")), departures=tuple(departures), **sections, extends=extends,
        init=read_init(raw, f"profile file {source}", parent.init if parent else Init()), follow_dataset_size=follow, origins=origins,
    )


def _read_profile(path: Path, source: str) -> dict[str, Any]:
    return read_toml(path.read_bytes(), f"profile file {source}", PROFILE_KEYS)


RECIPES_DIR = PROFILES_DIR / "recipes"


RECIPE_KEYS = ("follows", "departures", *INIT_KEYS, "model", "train", "dataset")
DATASET_TABLE_KEYS = ("follows", "departures", "model", "train")


@dataclass(frozen=True)
class Recipe:
    """A named training recipe laid over a profile for some cells: [train] and [model] overrides, with what it
    follows, the initialisation it was written for and, per dataset kind, what its upstream changes there."""

    name: str
    source: str
    follows: str
    departures: tuple[str, ...]
    model: dict[str, Any]
    train: dict[str, Any]
    init: Init = field(default_factory=Init)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Dataset kind ('rgbnt100', ...) -> its [dataset.<kind>] table: follows, departures, model, train."""

    def for_dataset(self, kind: str) -> "Recipe":
        """The recipe as its upstream runs it on `kind`: that table's values win, its departures are added."""
        table = self.datasets.get(kind)
        if table is None:
            return self
        return replace(
            self, follows=table.get("follows", self.follows), departures=(*self.departures, *table.get("departures", [])),
            model={**self.model, **table.get("model", {})}, train={**self.train, **table.get("train", {})}, datasets={},
        )


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name: str) -> Recipe:
    """A built-in recipe by name (reidbench/profiles/recipes/NAME.toml) or a recipe file by path, checked against
    the settings it overrides."""
    path = Path(name) if name.endswith(".toml") else RECIPES_DIR / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown recipe {name!r}; built-in recipes are: {', '.join(builtin_recipes()) or 'none'} (or a path to a .toml recipe file).")
    raw = read_toml(path.read_bytes(), f"recipe file {path}", RECIPE_KEYS)
    source = str(path) if name.endswith(".toml") else f"builtin-recipe:{name}"
    name = path.stem
    datasets = raw.get("dataset", {})
    for where, table in [(f"recipe {name}", raw), *((f"recipe {name} [dataset.{k}]", t) for k, t in datasets.items())]:
        _check_recipe_table(table, where, top=table is raw)
    return Recipe(name, source, str(raw.get("follows", "")), tuple(raw.get("departures", [])),
                  dict(raw.get("model", {})), dict(raw.get("train", {})), read_init(raw, f"recipe {name}", None),
                  {kind: dict(table) for kind, table in datasets.items()})


def _check_recipe_table(table: Any, where: str, top: bool) -> None:
    if not isinstance(table, dict) or (not top and set(table) - set(DATASET_TABLE_KEYS)):
        raise UsageError(f"{where}: must be a table of {', '.join(DATASET_TABLE_KEYS)} (dataset kinds: rgbnt201, rgbnt100, ...).")
    departures = table.get("departures", [])
    if not isinstance(departures, list) or not all(isinstance(d, str) for d in departures):
        raise UsageError(f"{where}: departures must be a list of sentences (strings).")
    VariantSettings().with_overrides(table.get("model", {}), f"{where} [model]")
    from_mapping(TrainConfig, table.get("train", {}), f"{where} [train]")


def with_recipe(profile: Profile, recipe: Recipe) -> Profile:
    """`profile` with `recipe` laid over its [train] and [model] tables; it follows the recipe's upstream instead, and
    was written for the recipe's initialisation. Per-dataset tables are applied first (`Recipe.for_dataset`)."""
    train = from_mapping(TrainConfig, recipe.train, f"recipe {recipe.name} [train] over profile {profile.name}", base=profile.train)
    origins = {**profile.origins, **{f"{table}.{key}": recipe.source for table in ("model", "train") for key in getattr(recipe, table)}}
    return replace(
        profile, name=f"{profile.name}+{recipe.name}", model={**profile.model, **recipe.model}, train=train,
        follows=recipe.follows, departures=recipe.departures, init=recipe.init, origins=origins,
    )
