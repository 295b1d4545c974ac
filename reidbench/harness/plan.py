"""The run plan: everything that defines a run, built from the command line, checked, saved to run.json, read back.

A new run's plan comes from `RunRequest` (the options as given) with the
defaults filled in; `--resume` reads the plan from the run directory and
refuses any option that would change it, naming the option.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import torch

from reidbench.data import PERSON_SIZE, ReidDataset, load_dataset, parse_dataset_spec
from reidbench.data.validation import carve_validation
from reidbench.errors import UsageError
from reidbench.harness.placement import check_cache_policy
from reidbench.harness.recipe_choice import RecipeChoice, choose_recipe
from reidbench.rundir import RunDir, new_run_dir
from reidbench.config import coerce_mapping, from_mapping, named_source, tomllib
from reidbench.profiles import Profile, TrainConfig, builtin_profiles, load_profile, resolve_profile_name, split_sets, with_sets
from reidbench.runtime.device import memory_capacity, resolve_dtype
from reidbench.runtime.distributed import World
from reidbench.runtime.files import now_utc, write_atomic, write_json
from reidbench.runtime.plugins import import_plugins
from reidbench.schema import MAX_SEED, AutoSeeds, GridRef, RunMeta, RunState, axis_text, seed_range
from reidbench.training.step import ranks_batch
from reidbench.variants.factory import parse_weights_options
from reidbench.variants.footprint import estimate_footprint
from reidbench.variants.pretrained import fetch_named, pretrained_weights
from reidbench.variants.grid import VARIANT_KEYS, GRIDS_DIR, Cell, Grid, load_grid, parse_grid, train_axes
from reidbench.variants.settings import PATCH_SIZE, VariantSettings


@dataclass(frozen=True)
class RunRequest:
    """`reidbench run`'s options as the user gave them; None (or empty) where not given."""

    grid: Optional[str] = None
    data: Optional[str] = None
    profile: Optional[str] = None
    dtype: Optional[str] = None
    seeds: Optional[str] = None
    """`--seeds N` or `--seeds auto[:MAX]`, as typed."""
    only: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    compile: Optional[bool] = None
    data_cache: Optional[str] = None
    sync_bn: Optional[bool] = None
    cuda_graphs: Optional[bool] = None
    test_data: tuple[str, ...] = ()
    axes: tuple[str, ...] = ()
    """`--axis KEY=V1,V2`: more axes over the grid's cells."""
    pretrained: Optional[bool] = None
    """`--pretrained/--no-pretrained`; None: as the grid says."""
    precision: Optional[float] = None
    """`--precision P`: with `--seeds auto`, the mAP half-width (points) at which a cell needs no more seeds."""
    imports: tuple[str, ...] = ()
    """`--import MODULE`: plugin modules that register components."""
    first_seed: Optional[str] = None
    """`--first-seed S`, as typed: the seeds count up from S instead of 0."""

    def given(self) -> list[str]:
        """The options given, as typed on the command line."""
        flags = {"overrides": "--set", "data_cache": "--data-cache", "sync_bn": "--sync-bn", "test_data": "--test-data", "axes": "--axis",
                 "imports": "--import"}
        return [flags.get(f.name, f"--{f.name.replace('_', '-')}") for f in fields(self) if getattr(self, f.name) not in (None, ())]


@dataclass
class RunPlan:
    """Everything that defines a run; written to run.json, read back by --resume."""

    grid: Grid
    grid_text: str
    profile: Profile
    profile_text: str
    dataset: str
    device: torch.device
    dtype: str
    seeds: int
    """How many seeds every cell trains (`first_seed` on); with `auto_seeds`, the first round's."""
    first_seed: int = 0
    """`--first-seed`: the lowest seed. Fresh seeds (say 5..9 after settings were chosen on 0..4) replicate a
    result independently; a seed's number, not its position, decides its randomness."""
    only: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    """`--set` as given: variant settings (`depth`) and profile-table keys (`train.epochs`; see `split_sets`)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Backbone name -> local checkpoint or weights name (--pretrained's, the grid's [weights] table, then --weights)."""
    compile: bool = False
    """Train with the backbone's transformer blocks compiled (torch.compile, regional)."""
    data_cache: str = "auto"
    """Where the decoded uint8 images live: auto, device, host, or stream (see `harness.placement`)."""
    sync_bn: bool = False
    """Under torchrun, batch norm with statistics over all ranks (SyncBatchNorm; CUDA only)."""
    cuda_graphs: bool = False
    """Train with each step after the first few replayed as a CUDA graph (`reidbench.training.graph_step`)."""
    test_data: list[str] = field(default_factory=list)
    """More test sets every trained cell is also evaluated on (cross-domain), each with its own protocol."""
    cli_axes: dict[str, list[Any]] = field(default_factory=dict)
    """Axes added with --axis (already in `grid`; kept so that --resume adds them again)."""
    auto_seeds: Optional[AutoSeeds] = None
    """`--seeds auto`: more seeds in rounds until each cell is precise (`harness.seed_rounds`); its `cells` grow."""
    plugins: list[str] = field(default_factory=list)
    """The plugin modules imported (`reidbench.runtime.plugins`); every process that rebuilds a cell imports them."""
    now_only: list[str] = field(default_factory=list)
    """This invocation runs only these of the planned cells (`--resume --only`); not saved."""

    @property
    def cells(self) -> list[Cell]:
        return self.grid.select(self.only)

    @property
    def variant_overrides(self) -> dict[str, Any]:
        """The `--set` values that are variant settings (the others are laid over the profile)."""
        return split_sets(self.overrides)[0]

    @property
    def cells_now(self) -> list[Cell]:
        return [c for c in self.cells if not self.now_only or c.id in self.now_only or c.pair in self.now_only]

    def seeds_of(self, cell: str) -> int:
        """How many seeds `cell` is planned with so far."""
        return self.auto_seeds.cells.get(cell, self.seeds) if self.auto_seeds is not None else self.seeds

    def cell_seeds(self, cell: str) -> list[int]:
        """The seeds `cell` is planned with so far: what every caller trains, checks or lists, never a range of its own."""
        return seed_range(self.first_seed, self.seeds_of(cell))

    @property
    def first_round_seeds(self) -> list[int]:
        """The seeds every cell has (run.json's `seeds`): all of them with `--seeds N`, the first round's with auto."""
        return seed_range(self.first_seed, self.seeds)


FIRST_ROUND_SEEDS = 3
"""Seeds every cell trains in the first round of `--seeds auto`: the fewest whose Student t interval has a
usable width (the 95 % factor is 12.7 standard errors at 2 seeds, 4.3 at 3). `--seeds N` gives a fixed N
instead, so the two do not combine."""
DEFAULT_MAX_SEEDS = 10
DEFAULT_PRECISION = 2.0
"""mAP points: the default target half-width of a cell's 95 % interval over seeds."""


def parse_seeds(text: Optional[str], precision: Optional[float]) -> tuple[int, Optional[AutoSeeds]]:
    """`--seeds N` or `--seeds auto[:MAX]` with `--precision P`: (seeds of the first round, the auto setting or None)."""
    head, _, tail = (text or "").strip().partition(":")
    if head.lower() != "auto":
        if precision is not None:
            raise UsageError("--precision says when --seeds auto stops adding seeds; give it with --seeds auto (or auto:MAX), or drop it.")
        try:
            seeds = 1 if text is None else int(text)
        except ValueError:
            raise UsageError(f"--seeds {text!r}: give a number of seeds (e.g. --seeds 3) or auto[:MAX] (e.g. --seeds auto:10: "
                             "seeds are added until each cell's mAP is known to --precision points, at most MAX).") from None
        if seeds < 1:
            raise UsageError(f"--seeds must be at least 1 (got {seeds}).")
        return seeds, None
    try:
        max_seeds = int(tail) if tail else DEFAULT_MAX_SEEDS
    except ValueError:
        max_seeds = 0
    if max_seeds < 2:
        raise UsageError(f"--seeds {text}: MAX in auto:MAX must be a whole number of at least 2 (an interval over seeds needs two), "
                         f"e.g. --seeds auto:{DEFAULT_MAX_SEEDS}.")
    target = DEFAULT_PRECISION if precision is None else precision
    if not math.isfinite(target) or target <= 0:
        raise UsageError(f"--precision {precision}: give the half-width of a cell's 95 % interval of mAP that is precise enough, "
                         f"in points, a positive number (default {DEFAULT_PRECISION}); for a fixed number of seeds use --seeds N.")
    return min(FIRST_ROUND_SEEDS, max_seeds), AutoSeeds(max_seeds, float(target))


def parse_first_seed(text: Optional[str]) -> int:
    """`--first-seed S`: the lowest seed of the run, a whole number from 0 (the default) to `MAX_SEED`."""
    if text is None:
        return 0
    try:
        first = int(text)
    except ValueError:
        first = -1
    if not 0 <= first <= MAX_SEED:
        raise UsageError(
            f"--first-seed {text!r}: give the lowest seed as a whole number from 0 to {MAX_SEED}; with --seeds N the run "
            "trains seeds S..S+N-1 (e.g. --first-seed 5 --seeds 5 trains seeds 5-9: fresh seeds that replicate a result "
            "chosen on seeds 0-4), and --seeds auto starts its rounds at S."
        )
    return first


def new_plan(request: RunRequest, device: torch.device, cell_world: World) -> RunPlan:
    """The plan of a new run: the request with every default filled in."""
    seeds, auto_seeds = parse_seeds(request.seeds, request.precision)
    first_seed = parse_first_seed(request.first_seed)
    plugins = import_plugins(request.imports)  # before the grid: it may name what they register
    cli_axes = parse_axes(request.axes)
    grid = load_grid(request.grid or "default")
    grid = grid.with_axes(cli_axes, "--axis") if cli_axes else grid
    check_axes(grid)
    overrides = parse_overrides(request.overrides)
    check_overrides_axes(grid, overrides)
    profile = load_profile(resolve_profile_name(request.profile or "auto", device))
    return RunPlan(
        grid=grid, grid_text=source_text(grid.source, GRIDS_DIR), profile=with_sets(profile, split_sets(overrides)[1]),
        profile_text=profile.to_toml(), dataset=request.data or grid.data or "synthetic", device=device,
        dtype=resolve_dtype(request.dtype or "auto", device), seeds=seeds, first_seed=first_seed, only=list(request.only),
        overrides=overrides, weights=merged_weights(grid, request.weights, request.pretrained, request.only),
        compile=bool(request.compile), data_cache=request.data_cache or "auto", sync_bn=bool(request.sync_bn),
        cuda_graphs=request.cuda_graphs if request.cuda_graphs is not None else default_cuda_graphs(device, cell_world),
        test_data=list(request.test_data), cli_axes=cli_axes, auto_seeds=auto_seeds, plugins=plugins,
    )


def resume_plan(run: RunDir, request: RunRequest, device: Optional[torch.device]) -> RunPlan:
    """The plan stored in `run`, for --resume; an option that would change it is refused by name.

    `--only` is safe: it narrows what this invocation runs (to cells the run
    planned) and leaves the plan as it is.
    """
    plan = load_plan(run, device)
    conflicting = [flag for flag in request.given() if flag not in ("--only", "--cuda-graphs", "--import")]
    if conflicting:
        seeds = f" (its seeds start at {plan.first_seed})" if "--first-seed" in conflicting else ""
        raise UsageError(
            f"--resume {run.root} continues the run as it was planned (run.json{seeds}); {', '.join(conflicting)} would change it. "
            f"Drop {'it' if len(conflicting) == 1 else 'them'}, or start a new run with --out."
        )
    if request.cuda_graphs is not None and request.cuda_graphs != plan.cuda_graphs:
        raise UsageError(
            f"--resume {run.root} continues the run as it was started, with training steps "
            f"{'replayed as CUDA graphs' if plan.cuda_graphs else 'run eagerly'} (its checkpoints hold that optimizer); "
            f"drop {'--no-cuda-graphs' if plan.cuda_graphs else '--cuda-graphs'}, or start a new run with it."
        )
    fetch_named({c.backbone: plan.weights[c.backbone] for c in plan.cells if c.backbone in plan.weights}, f"--resume {run.root}: weights")
    planned = [c.id for c in plan.cells]
    unknown = [c for c in request.only if c not in planned and c not in {cell.pair for cell in plan.cells}]
    if unknown:
        raise UsageError(f"--resume {run.root} --only {', '.join(unknown)}: the run plans no such cell; its cells are {', '.join(planned)}.")
    return replace(plan, now_only=list(request.only))


def source_text(source: str, builtin_dir: Path) -> str:
    """The TOML text behind a grid, copied into the run directory so --resume needs nothing else."""
    if source.startswith("builtin:"):
        return (builtin_dir / f"{source.split(':', 1)[1]}.toml").read_text()
    return Path(source).read_text()


def parse_overrides(assignments: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--set depth=2 --set img_size=[128,64]`: values are TOML literals."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} must look like key=value, e.g. --set depth=2 or --set img_size=[128,64].")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise UsageError(f"--set {key.strip()}: {shown!r} is not a TOML value (numbers, true/false, \"strings\", [lists]).") from None
    return out


def parse_axes(items: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """`--axis stride=12,16 --axis neck_scales=[4,8,16],[2,4,8]`: a setting and its values (TOML literals)."""
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise UsageError(f"--axis {item!r} must look like key=value,value, e.g. --axis stride=12,16.")
        try:
            parsed = tomllib.loads(f"v = [{values}]")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            raise UsageError(f"--axis {key.strip()}: {values!r} is not a list of TOML values (e.g. 12,16 or [4,8,16],[2,4,8]).") from None
        if key.strip() in out:
            raise UsageError(f"--axis {key.strip()} is given twice; list all its values in one --axis.")
        out[key.strip()] = parsed
    return out


def merged_weights(
    grid: Grid, options: tuple[str, ...] | list[str], pretrained: Optional[bool] = None, only: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """Each backbone's weights: its upstream's with --pretrained (or the grid's `pretrained = true`), overridden by
    the grid file's [weights], then by --weights.

    The names of the backbones the cells in `only` (default: all) use are
    fetched into the Hugging Face cache here, so that one that is not cached
    (offline) or cannot be downloaded stops the command before a run directory
    exists or a cell is measured.
    """
    used = dict.fromkeys(c.backbone for c in grid.select(only))
    upstream = pretrained_weights(used) if (grid.pretrained if pretrained is None else pretrained) else {}
    merged = {**upstream, **grid.weights, **parse_weights_options(list(options))}
    fetch_named({b: v for b, v in merged.items() if b in used}, "weights")
    return merged


def default_cuda_graphs(device: torch.device, world: World) -> bool:
    """Whether a run replays its training steps as CUDA graphs when neither --cuda-graphs nor --no-cuda-graphs is given.

    On wherever it can be (a CUDA device, one process per cell): replayed steps
    remove the host's launch cost, which bounds a ViT-B step at batch 64 on a
    fast GPU, and replaying compiled steps is what makes --compile pay
    (docs/benchmarks). Off under DDP, whose all-reduce a graph would have to capture.
    """
    return device.type == "cuda" and world.world_size == 1


def check_plan(plan: RunPlan, world: World = World()) -> ReidDataset:
    """Everything that can be wrong with the input, found before a run directory is created."""
    plan.cells  # noqa: B018 - raises for an unknown --only cell
    if plan.sync_bn and plan.device.type != "cuda":
        raise UsageError(
            f"--sync-bn needs CUDA devices: PyTorch's SyncBatchNorm refuses {plan.device.type} tensors (the gloo "
            "backend has no synchronized batch norm); drop --sync-bn, or run on GPUs with --device cuda."
        )
    if plan.cuda_graphs:
        check_cuda_graphs(plan, world)
    check_recipe_profiles(plan)
    check_cache_policy(plan.data_cache)
    dataset = run_dataset(plan)
    check_modalities(plan.grid, dataset)
    check_dataset_axes(plan.grid, dataset)
    for cell in plan.cells:  # every cell's recipe, [train] axes and settings are checked before anything runs
        profile = cell_profile(plan, cell)
        ranks_batch(profile.train, world)  # raises when P does not split over the ranks
        check_period(plan, profile)
        check_identities(dataset, profile.train.p, world)
        check_memory(plan, cell, cell_settings(plan, cell, dataset), profile)
    for spec in plan.test_data:
        test = load_dataset(spec)  # a test set that cannot be loaded is named before anything runs
        if tuple(test.modalities) != tuple(dataset.modalities):
            raise UsageError(
                f"--test-data {spec}: its samples hold {', '.join(test.modalities)}, the training set's "
                f"{', '.join(dataset.modalities)}; a model takes the modalities it was trained on. "
                "Give test sets with the same modalities (e.g. rgbnt201:PATH for a multi-modal run)."
            )
    resolve_settings(plan, dataset)
    return dataset


def run_dataset(plan: RunPlan) -> ReidDataset:
    """The dataset a run trains and scores on: as loaded, less the identities of a validation split where the profile
    scores on one during training (eval.period > 0 with eval.split "val", or "auto" on a dataset on disk)."""
    dataset = load_dataset(plan.dataset)
    kind, _ = parse_dataset_spec(plan.dataset)
    return carve_validation(dataset) if plan.profile.eval.validation_split(kind) == "val" else dataset


def check_period(plan: RunPlan, profile: Profile) -> None:
    """A period longer than the training would score nothing during it: a typo, named before the run starts."""
    period, epochs = plan.profile.eval.period, profile.train.epochs
    if period > epochs:
        raise UsageError(
            f"eval.period {period} is longer than train.epochs {epochs}: no epoch would be scored during training. "
            f"Use a period between 1 and {epochs}, or 0 for the final evaluation alone."
        )


def check_modalities(grid: Grid, dataset: ReidDataset) -> None:
    """A grid that declares multi-modal samples cannot run on a dataset whose samples hold other modalities:
    its cells would silently become single-modal models."""
    wanted = grid.settings.modalities
    if len(wanted) > 1 and tuple(dataset.modalities) != tuple(wanted):
        raise UsageError(
            f"grid {grid.name} is multi-modal ({', '.join(wanted)} per sample) but {dataset.name} holds "
            f"{', '.join(dataset.modalities)} samples; give it multi-modal data: --data synthetic-rgbnt, rgbnt201:PATH, "
            "rgbnt100:PATH or msvr310:PATH."
        )


def check_dataset_axes(grid: Grid, dataset: ReidDataset) -> None:
    """An axis over a setting the dataset dictates would name values its cells never train with: every cell
    gets the dataset's value, so cells named apart would be the same model."""
    dictated = dataset_settings(dataset)
    for key, values in grid.axes:
        if key in dictated:
            raise UsageError(
                f"grid {grid.name}: axis {key!r} ({', '.join(axis_text(v) for v in values)}) varies a setting that the "
                f"dataset dictates: {dataset.name} gives every cell {key} = {axis_text(dictated[key])}, so the cells "
                f"would be named for values they never trained with. Drop the axis; to vary {key}, choose the data "
                "(--data) instead."
            )


def check_memory(plan: RunPlan, cell: Cell, settings: VariantSettings, profile: Profile) -> None:
    """A cell whose parameters, batch and token grid cannot fit in the device's memory is refused with the
    estimate, before any model or batch is built (building it is what would exhaust the host)."""
    train_batch = max(profile.train.batch_size, profile.measure.train_batch_size)
    infer_batch = max(profile.eval.batch_size, *profile.measure.batch_sizes)
    footprint = estimate_footprint(settings, train_batch, infer_batch, 2 if plan.dtype == "bf16" else 4, profile.train.freeze_backbone)
    known = memory_capacity(plan.device)
    if known is None:
        return  # a GPU on the machine the launcher's jobs go to: not known here
    capacity, what = known
    if footprint.peak > capacity:
        rows, cols = settings.grid_size
        raise UsageError(
            f"cell {cell.id} needs at least {_size(footprint.peak)} of memory ({footprint.parameters:,} parameters at "
            f"depth {settings.depth}; {rows}x{cols} tokens per image at {settings.img_size[0]}x{settings.img_size[1]}, "
            f"stride {settings.stride}; batches of {train_batch} to train, {infer_batch} to embed; estimated before "
            f"building it), more than the {_size(capacity)} of {what}. Lower img_size or depth, raise stride, or give "
            "smaller batches (train.p x train.k, eval.batch_size, measure.batch_sizes)."
        )


def _size(num_bytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:,.1f} {unit}"
    return f"{num_bytes / 2**20:,.1f} MiB"


def check_overrides_axes(grid: Grid, overrides: dict[str, Any]) -> None:
    """--set on an axis key would give every cell of that axis the same value under different names
    (a variant setting), or be undone by the axis in every cell (`train.KEY`, `model.KEY`)."""
    axis_keys = {key for key, _ in grid.axes}
    clash = sorted(k for k in overrides if k.rpartition(".")[2] in axis_keys and k.partition(".")[0] in ("model", "train", k))
    if clash:
        raise UsageError(
            f"--set {', '.join(clash)}: grid {grid.name} varies {'this setting' if len(clash) == 1 else 'these settings'} "
            "as an axis, so one value for every cell would make its cells identical under different names. "
            "Drop --set for it, or give the axis the values you want with --axis KEY=V1,V2."
        )


def check_recipe_profiles(plan: RunPlan) -> None:
    """A recipe under a profile name no run can have is a typo that would silently never apply."""
    known = set(builtin_profiles()) | {plan.profile.name}
    for backbone, recipes in plan.grid.recipes.items():
        unknown = sorted(set(recipes) - known)
        if unknown:
            raise UsageError(
                f"grid {plan.grid.name} [backbone.{backbone}] recipe names profile {', '.join(map(repr, unknown))}, "
                f"which is neither a built-in profile ({', '.join(builtin_profiles())}) nor this run's profile "
                f"({plan.profile.name!r}); fix the name, e.g. recipe = {{ full = \"clipreid\" }}."
            )


def check_identities(dataset: ReidDataset, p: int, world: World) -> None:
    """A PK batch draws P identities (per rank, P / ranks); ID and triplet losses need at least two."""
    ids, needed = dataset.num_train_pids, max(2, p)
    carved = f" (after {len(dataset.validation.pids)} went to the validation split)" if dataset.validation else ""
    if ids < needed:
        raise UsageError(
            f"{dataset.name} has {ids} training identit{'y' if ids == 1 else 'ies'}{carved} and needs at least {needed}: every "
            f"batch draws P = {p} distinct identities (train.p{f', over {world.world_size} processes' if world.distributed else ''}), "
            "and the ID and triplet losses compare identities, so P >= 2. Use a dataset with more identities, or a profile "
            f"with train.p between 2 and {max(ids, 2)}."
        )


def check_cuda_graphs(plan: RunPlan, world: World) -> None:
    """--cuda-graphs trains one network in one process on a GPU; anything else is named before the run starts."""
    if world.world_size > 1:
        raise UsageError(
            f"--cuda-graphs does not capture DDP's all-reduce: train each cell in one process (this run has "
            f"{world.world_size}: torchrun --nproc-per-node or --gpus-per-cell > 1), or leave --cuda-graphs off."
        )
    if plan.device.type != "cuda":
        raise UsageError(f"--cuda-graphs needs a CUDA device; this run is on {plan.device.type}. Drop --cuda-graphs, or run with --device cuda.")


def resolve_settings(plan: RunPlan, dataset: ReidDataset) -> VariantSettings:
    """The run's base settings (no cell's own): grid settings, the profile's model overrides, --set, the dataset."""
    settings = sized_for(plan, dataset, plan.grid.settings.with_overrides(plan.profile.model, f"profile {plan.profile.name} [model]"))
    settings = settings.with_overrides(plan.variant_overrides, "--set")
    return settings.with_overrides(dataset_settings(dataset), "dataset")


def check_axes(grid: Grid) -> None:
    """Every axis names a variant setting or a [train] setting, with values of its type; else exit 2 naming it."""
    train_keys = {f.name for f in fields(TrainConfig)}
    for key, values in grid.axes:
        if key in VARIANT_KEYS:
            continue
        if key not in train_keys:
            raise UsageError(
                f"grid {grid.name}: axis {key!r} is neither a variant setting ({', '.join(sorted(f.name for f in fields(VariantSettings)))}) "
                f"nor a [train] setting ({', '.join(sorted(train_keys))})."
            )
        for value in values:  # each cell's resolved [train] judges the value against its epochs (check_plan)
            coerce_mapping(TrainConfig, {key: list(value) if isinstance(value, tuple) else value}, f"grid {grid.name} axis {key!r}")


def cell_recipe(plan: RunPlan, cell: Cell) -> RecipeChoice:
    """The recipe a cell trains with and why (`recipe_choice`): its backbone's recipe for this profile when it was
    written for the cell's initialisation, else the profile's own."""
    asked = plan.grid.recipes.get(cell.backbone, {}).get(plan.profile.name)
    return choose_recipe(plan.profile, asked, plan.weights.get(cell.backbone), parse_dataset_spec(plan.dataset)[0])


def cell_profile(plan: RunPlan, cell: Cell) -> Profile:
    """The profile a cell trains with: the run's (with `--set TABLE.KEY`), the recipe `cell_recipe` chose, `--set
    TABLE.KEY` again over the recipe (the command line has the last word), then the cell's [train] axes."""
    profile = with_sets(cell_recipe(plan, cell).profile, split_sets(plan.overrides)[1])
    axes = train_axes(cell)
    if axes:
        with named_source(f"grid {plan.grid.name} cell {cell.id}"):
            profile = replace(profile, train=from_mapping(TrainConfig, axes, f"[axes] of grid {plan.grid.name}", base=profile.train))
    return profile


def cell_settings(plan: RunPlan, cell: Cell, dataset: ReidDataset) -> VariantSettings:
    """A cell's settings: the grid's [settings], the profile's [model] (with the backbone's recipe), the input size
    the dataset asks for (`follow_dataset_size`), the grid's [backbone.<name>] table, the cell's variant-setting axes,
    --set, then what the dataset dictates."""
    profile = cell_profile(plan, cell)
    settings = sized_for(plan, dataset, plan.grid.settings.with_overrides(profile.model, f"profile {profile.name} [model]"))
    settings = plan.grid.variant_settings(cell, settings).with_overrides(plan.variant_overrides, "--set")
    return settings.with_overrides(dataset_settings(dataset), "dataset")


def sized_for(plan: RunPlan, dataset: ReidDataset, settings: VariantSettings) -> VariantSettings:
    """`settings` with the input size scaled from the person sets' to the dataset's own where the run follows it.

    The grid's and profile's img_size are written for a person set (256x128):
    quick's 64x32 is a quarter of it on each side, so on a vehicle set
    (128x256) it becomes 32x64; each side is rounded to the patch size.
    Sizes given explicitly per cell ([backbone.<name>], an axis, --set) win.
    """
    follow = plan.grid.follow_dataset_size
    if not (plan.profile.follow_dataset_size if follow is None else follow) or dataset.native_size == PERSON_SIZE:
        return settings
    size = [max(PATCH_SIZE, round(side * native / person / PATCH_SIZE) * PATCH_SIZE)
            for side, native, person in zip(settings.img_size, dataset.native_size, PERSON_SIZE)]
    return settings.with_overrides({"img_size": size}, f"{dataset.name}'s input size")


def dataset_settings(dataset: ReidDataset) -> dict[str, Any]:
    """What the dataset dictates to every model: classifier size, camera table, what a sample holds."""
    return {"num_classes": dataset.num_train_pids, "num_cameras": dataset.num_cameras, "modalities": list(dataset.modalities)}


def cells_in_size_order(plan: RunPlan, dataset: ReidDataset) -> list[Cell]:
    """This invocation's cells, those of one input size together (grid order otherwise), so that an img_size
    axis decodes each size once."""
    return sorted(plan.cells_now, key=lambda cell: cell_settings(plan, cell, dataset).img_size)


def create_run_dir(out: Optional[Path], grid_name: str) -> RunDir:
    """`--out` (new, or an empty folder) or a fresh runs/<time>-<grid>/."""
    if out is None:
        return RunDir(new_run_dir(Path("runs"), grid_name))
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the run directory.")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} already exists and is not empty; choose a new folder, or continue it with --resume {out}.")
    out.mkdir(parents=True, exist_ok=True)
    return RunDir(out)


def start_run(plan: RunPlan, run: RunDir) -> RunDir:
    """Write what defines the run into its directory: the grid and profile files and run.json."""
    write_atomic(run.grid_toml, plan.grid_text)
    write_atomic(run.profile_toml, plan.profile_text)
    meta = RunMeta(
        status=RunState.RUNNING, grid=GridRef(plan.grid.name, plan.grid.source, [c.id for c in plan.cells]),
        seeds=plan.first_round_seeds, first_seed=plan.first_seed, device=str(plan.device), dtype=plan.dtype,
        profile={"name": plan.profile.name, "source": plan.profile.source, **plan.profile.to_dict()},
        dataset={"spec": plan.dataset}, started=now_utc(), command=" ".join(sys.argv), only=plan.only,
        overrides=plan.overrides, weights=plan.weights, compile=plan.compile, data_cache=plan.data_cache,
        sync_bn=plan.sync_bn, cuda_graphs=plan.cuda_graphs, test_data=plan.test_data, cli_axes=plan.cli_axes,
        auto_seeds=plan.auto_seeds,
        plugins=plan.plugins,
    )
    write_json(run.run_json, meta.to_dict())
    return run


def load_plan(run: RunDir, device: Optional[torch.device] = None) -> RunPlan:
    """The plan of an existing run directory, for --resume and for the jobs of a fanned-out run."""
    meta = run.meta()
    import_plugins(meta.plugins, needed_by=f"the run {run.root}")  # before the grid: it may name what they register
    if not run.grid_toml.exists() or not run.profile_toml.exists():
        raise UsageError(f"{run.root} is not a reidbench run directory ({run.grid_toml.name} or {run.profile_toml.name} is missing).")
    grid_text, profile_text = run.grid_toml.read_text(), run.profile_toml.read_text()
    grid = parse_grid(grid_text.encode(), source=meta.grid.source, name=meta.grid.name)
    grid = grid.with_axes(meta.cli_axes, "--axis (stored in run.json)") if meta.cli_axes else grid
    profile = replace(load_profile(str(run.profile_toml)), name=meta.profile.get("name", "stored"),
                      source=meta.profile.get("source", str(run.profile_toml)))
    profile = with_sets(profile, split_sets(meta.overrides)[1])
    stored = torch.device(meta.device)
    if device is not None and device.type != stored.type:
        raise UsageError(f"{run.root} was run on {stored}; resuming on {device} would mix numbers from two devices.")
    if stored.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{run.root} was run on CUDA and no CUDA device is visible now; resume it on a GPU machine.")
    return RunPlan(
        grid=grid, grid_text=grid_text, profile=profile, profile_text=profile_text, dataset=meta.dataset.get("spec", "synthetic"),
        device=stored, dtype=meta.dtype, seeds=len(meta.seeds), first_seed=meta.first_seed, only=meta.only, overrides=meta.overrides,
        weights=meta.weights, compile=meta.compile, data_cache=meta.data_cache, sync_bn=meta.sync_bn,
        cuda_graphs=meta.cuda_graphs, test_data=meta.test_data, cli_axes=meta.cli_axes, auto_seeds=meta.auto_seeds, plugins=meta.plugins,
    )


def import_run_plugins(root: Path) -> list[str]:
    """Import the plugins a run directory's run.json records, before reading its cells (export, report, status);
    a run.json that is missing or damaged records none (those commands say what else it costs)."""
    try:
        meta = RunDir(root).read_meta()
    except UsageError:
        return []
    return import_plugins(meta.plugins if meta is not None else [], needed_by=f"the run {root}")
